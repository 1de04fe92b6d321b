"""The engine on the local Spark engine (Sail): exactly-once under a crash right after a data commit,
and the Sail guards, each with a test that fails without its guard."""

# No "from __future__ import annotations": Dagster reads the context type hints at runtime.

import os
import shutil
import sys
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from guidewire_pipeline.medallion.runners.base import NOTEBOOKS_DIR, NotebookRunner
from guidewire_pipeline.medallion.runners.local import LocalNotebookRunner
from guidewire_pipeline.raw.partitions import BRONZE_ASSET_KEY, SILVER_ASSET_KEY
from guidewire_pipeline.settings import Settings
from tests.medallion.raw_tables import append_raw_batch, change_rows, reference_current_state
from tests.medallion.steps import run_medallion_layers
from tests.medallion.test_silver_correctness import BUSINESS, CASES, VALUE_COLUMNS, silver_state

sys.path.insert(0, str(NOTEBOOKS_DIR))
import gw_medallion_engine as engine  # noqa: E402


@pytest.fixture(scope="module")
def spark():
    server, session = engine.start_local_spark("main")
    yield session
    session.stop()
    server.stop()


def _job(settings: Settings, tables: list[str]) -> dg.JobDefinition:
    @dg.op
    def medallion(context: dg.OpExecutionContext, notebook_runner: NotebookRunner) -> None:
        run_medallion_layers(context, notebook_runner, settings, tables, ())

    @dg.job(name="local_medallion")
    def job() -> None:
        medallion()

    return job


def _latest(instance, key):
    record = instance.fetch_materializations(key, limit=1).records
    return {k: v.value for k, v in record[0].asset_materialization.metadata.items()} if record else None


@pytest.mark.parametrize("layer", ["bronze", "silver"])
def test_a_crash_right_after_a_commit_loses_and_duplicates_nothing(
    layer, delta_root: Path, medallion_settings: Settings, instance, monkeypatch
):
    delivered = []
    for index, batch in enumerate(CASES["t_random"]):
        rows = change_rows(batch, BUSINESS)
        append_raw_batch(delta_root, "t_random", rows, 1_700_000_000_000 + index * 1000)
        delivered.extend(rows.to_pylist())
    runner = LocalNotebookRunner(chunk_rows=150)  # 3 folders of 150/150/100 rows: one chunk each
    monkeypatch.setenv(engine.FAULT_ENV, f"{layer}:1")  # the process dies right after the first commit

    result = _job(medallion_settings, ["t_random"]).execute_in_process(
        resources={"notebook_runner": runner}, instance=instance, raise_on_error=False)

    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure).step_failure_data.user_failure_data
    assert f"Task {layer} of the medallion run failed" in failure.description and "code 137" in failure.description
    table = DeltaTable(str(delta_root / layer / "t_random"))
    assert table.version() == 1  # created, then exactly one chunk committed before the crash
    monkeypatch.delenv(engine.FAULT_ENV)

    assert _job(medallion_settings, ["t_random"]).execute_in_process(
        resources={"notebook_runner": runner}, instance=instance).success
    bronze = DeltaTable(str(delta_root / "bronze" / "t_random")).to_pyarrow_table()
    assert bronze.num_rows == len(delivered)  # every raw row once: the savepoint is bronze's own data
    assert silver_state(delta_root, "t_random") == reference_current_state(delivered, VALUE_COLUMNS)
    after = _latest(instance, BRONZE_ASSET_KEY if layer == "bronze" else SILVER_ASSET_KEY)
    assert after["savepoint_before"] == 1_700_000_000_000 and after["savepoint_after"] == 1_700_000_002_000


def test_sail_ignores_txn_options_so_the_savepoint_must_be_the_data(spark, tmp_path):
    """Why bronze does not rely on txnAppId under Sail: two identical idempotent appends both land."""
    location = str(tmp_path / "t")
    frame = spark.range(3)
    for _ in range(2):
        frame.write.format("delta").mode("append").option("txnAppId", "a").option("txnVersion", "1").save(location)
    assert DeltaTable(location).to_pyarrow_table().num_rows == 6
    assert DeltaTable(location).transaction_version("a") is None


def _shallow_raw(root: Path, cda: Path) -> None:
    """A shallow raw table as the raw layer writes it: partitioned by the lineage columns, add actions with
    absolute paths to the CDA files in place."""
    from deltalake.transaction import AddAction, create_table_with_add_actions

    actions = []
    schema = None
    for index, batch in enumerate(CASES["t_out_of_order"]):
        folder_ms = 1_700_000_000_000 + index * 1000
        rows = change_rows(batch, BUSINESS)
        path = cda / "t" / "100" / str(folder_ms) / "part-0.parquet"
        path.parent.mkdir(parents=True)
        pq.write_table(rows, path)
        schema = rows.schema
        actions.append(AddAction(path=f"file://{path}", size=path.stat().st_size,
                                 partition_values={"gw_batch_ts_ms": str(folder_ms), "gw_fingerprint": "100"},
                                 modification_time=0, data_change=True,
                                 stats=f'{{"numRecords": {rows.num_rows}}}'))
    from deltalake import Schema

    full = schema.append(pa.field("gw_batch_ts_ms", pa.int64())).append(pa.field("gw_fingerprint", pa.string()))
    create_table_with_add_actions(str(root / "raw" / "t"), Schema.from_arrow(full), actions, mode="error",
                                  partition_by=["gw_batch_ts_ms", "gw_fingerprint"])


def test_shallow_raw_tables_are_read_through_their_add_actions_under_sail(spark, tmp_path):
    _shallow_raw(tmp_path / "delta", tmp_path / "cda")
    eng = engine.Engine.for_session(spark, "main", str(tmp_path / "delta"), chunk_rows=1)
    eng.register_local_tables(["t"])
    with pytest.raises(Exception, match="empty path segment|Object at location|not found|No such file"):
        spark.table("main.raw.t").collect()  # what Sail does without the guard
    [result] = eng.bronze(["t"])
    assert result["status"] == "changed" and result["metadata"]["chunks"] == 3
    bronze = DeltaTable(str(tmp_path / "delta" / "bronze" / "t")).to_pyarrow_table().to_pylist()
    assert sorted({(r["gw_fingerprint"], r["gw_batch_ts"].timestamp()) for r in bronze}) == [
        ("100", 1_700_000_000.0), ("100", 1_700_000_001.0), ("100", 1_700_000_002.0)]
    [silver] = eng.silver(["t"])
    assert silver["status"] == "changed"
    delivered = [r for batch in CASES["t_out_of_order"] for r in change_rows(batch, BUSINESS).to_pylist()]
    assert silver_state(tmp_path / "delta", "t") == reference_current_state(delivered, VALUE_COLUMNS)


def test_gold_state_property_is_rewritten_under_sail(spark, tmp_path):
    """Sail's CREATE OR REPLACE keeps the old table properties: without the ALTER the gold state would
    never change and gold would be recomputed on every run (or never be 'unchanged')."""
    location = str(tmp_path / "g")
    for state in ("one", "two"):
        spark.sql(f"CREATE OR REPLACE TABLE main.default.g USING delta LOCATION '{location}' "
                  f"TBLPROPERTIES ('guidewire.gold_state' = '{state}') AS SELECT 1 AS x")
    assert DeltaTable(location).metadata().configuration["guidewire.gold_state"] == "one"  # the Sail defect
    eng = engine.Engine.for_session(spark, "main", str(tmp_path))
    ref = engine.TableRef("gold", "g", "main.default.g", location)
    spark.sql(f"ALTER TABLE {ref.quoted} SET TBLPROPERTIES ('guidewire.gold_state' = 'two')")
    assert eng.table_property(ref, "guidewire.gold_state") == "two"
    shutil.rmtree(location)
    assert os.path.exists(tmp_path)
