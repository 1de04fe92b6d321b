"""The engine on the local Spark engine (Sail): exactly-once under a crash right after a data commit (on
both silver apply steps), the Sail guards, each with a test that fails without its guard, and silver's
scaling properties observed in the Delta log (bounded chunks, pruned and clustered merges), not timed."""

# No "from __future__ import annotations": Dagster reads the context type hints at runtime.

import os
import random
import shutil
import subprocess
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
from tests.medallion.raw_tables import INSERT, UPDATE, append_raw_batch, change_rows, reference_current_state
from tests.medallion.steps import run_medallion_layers
from tests.medallion.test_silver_correctness import BUSINESS, CASES, VALUE_COLUMNS, c, silver_state

sys.path.insert(0, str(NOTEBOOKS_DIR))
import gw_medallion_engine as engine  # noqa: E402


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


@pytest.mark.parametrize(("layer", "apply"), [("bronze", None), ("silver", engine.DELTA_RS),
                                              ("silver", engine.SPARK_SQL)])
def test_a_crash_right_after_a_commit_loses_and_duplicates_nothing(
    layer, apply, delta_root: Path, medallion_settings: Settings, instance, monkeypatch
):
    """The process dies right after a chunk's data commit (for delta-rs: after the merge commit that also
    holds the savepoint, before the files are re-sorted). The re-run resumes from what the table holds."""
    if apply:
        monkeypatch.setenv(engine.SILVER_APPLY_ENV, apply)  # the local medallion process inherits it
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
    if layer == "silver":
        assert _latest(instance, SILVER_ASSET_KEY)["silver_apply"] == apply
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


def _disjoint(table: str | DeltaTable) -> tuple[int, bool]:
    """(files, whether their id ranges are pairwise disjoint), from the log's statistics."""
    ranges = sorted((f[0], f[1]) for f in engine._id_ranges(DeltaTable(table) if isinstance(table, str) else table))
    return len(ranges), all(a[1] < b[0] for a, b in zip(ranges, ranges[1:], strict=False))


def _merges(location: str) -> list[dict]:
    """delta-rs' own metrics of every MERGE commit, oldest first."""
    return [h["operationMetrics"] for h in reversed(DeltaTable(location).history()) if h["operation"] == "MERGE"]


def test_silver_merges_are_bounded_chunks_that_touch_only_the_files_holding_their_ids(spark, tmp_path):
    """Without timing, from delta-rs' metrics in the Delta log: a first load goes in chunks of at most
    ``chunk_rows`` source rows, one merge each; after every merge silver's files are disjoint id ranges; a
    later merge of recent changes reads and rewrites at most two files of many, and a change to an old id
    adds the one file that holds it. Fails if pruning (``streamed_exec``), clustering or chunking regress."""
    root = tmp_path / "delta"  # a table name of its own: the session's catalog outlives each test
    rng = random.Random(5)
    next_id, seq = 0, 1

    def folder(index: int, count: int, old_id: int | None = None) -> None:
        nonlocal next_id, seq
        changes = []
        for _ in range(count):
            if next_id < 200 or rng.random() < 0.4:  # ids grow; updates touch the 200 newest records
                id_, op, next_id = next_id, INSERT, next_id + 1
            else:
                id_, op = next_id - 1 - rng.randrange(200), UPDATE
            changes.append(c(id_, format(seq, "x"), op, f"v{seq}"))
            seq += 1
        if old_id is not None:
            changes.append(c(old_id, format(seq, "x"), UPDATE, "old record"))
            seq += 1
        append_raw_batch(root, "t_bounded", change_rows(changes, BUSINESS), 1_700_000_000_000 + index * 1000)

    for index in range(8):
        folder(index, 3000)
    eng = engine.Engine.for_session(spark, "main", str(root), chunk_rows=6000, silver_file_bytes=16 * 1024)
    eng.register_local_tables(["t_bounded"])
    eng.bronze(["t_bounded"])
    [first] = eng.silver(["t_bounded"])
    location = str(root / "silver" / "t_bounded")
    assert (first["status"], first["metadata"]["chunks"]) == ("changed", 4)
    merges = _merges(location)
    assert len(merges) == 4 and max(m["num_source_rows"] for m in merges) <= 6000
    files, disjoint = _disjoint(location)
    assert files >= 10 and disjoint, files

    folder(8, 300)  # recent changes only
    eng.bronze(["t_bounded"])
    [recent] = eng.silver(["t_bounded"])
    merge = _merges(location)[-1]
    assert merge["num_target_files_scanned"] <= 2 and merge["num_target_files_removed"] <= 2, merge
    assert recent["metadata"]["files_rewritten"] == merge["num_target_files_removed"]
    assert _disjoint(location)[1]

    folder(9, 300, old_id=3)  # plus one change to one of the oldest records
    eng.bronze(["t_bounded"])
    eng.silver(["t_bounded"])
    merge = _merges(location)[-1]
    assert merge["num_target_files_removed"] <= 3, merge
    files, disjoint = _disjoint(location)
    assert disjoint and files >= 10


@pytest.mark.parametrize("storage", ["local", "s3"])
def test_cluster_by_id_sorts_overlapping_files_in_one_commit_without_changing_a_row(storage, tmp_path, request):
    """Files whose id ranges overlap (as delta-rs writes a merge's output) are replaced by disjoint files in
    id order, bucket by bucket when they hold more rows than the budget, in one commit: the rows, the
    statistics readers prune with and the other columns' values are exactly the same (local disk and S3)."""
    from datetime import UTC, datetime

    from deltalake import write_deltalake

    location = str(tmp_path / "silver") if storage == "local" else \
        f"s3://{request.getfixturevalue('s3_bucket')}/silver"
    options = engine._storage_options(location)
    rng = random.Random(11)
    for _ in range(4):  # four appends, each spread over the whole id range
        ids = rng.sample(range(5000), 900)
        rows = pa.table({"id": pa.array(ids, pa.int64()), "v": [f"v{i}" for i in ids],
                         "gw_batch_ts": pa.array([datetime.fromtimestamp(1_700_000_000 + i / 7, UTC) for i in ids],
                                                 pa.timestamp("us", tz="UTC"))})
        write_deltalake(location, rows, mode="append", storage_options=options,
                        configuration={"delta.dataSkippingStatsColumns": "id,gw_batch_ts"})

    def table():
        return DeltaTable(location, storage_options=options)

    def content():
        return sorted(table().to_pyarrow_table().to_pylist(), key=lambda r: (r["id"], r["v"]))

    before, version = content(), table().version()
    assert not _disjoint(table())[1]

    replaced = engine.cluster_by_id(location, set(), budget_rows=1000, file_bytes=8 * 1024)  # 4 buckets

    assert replaced == 4 and table().version() == version + 1
    assert content() == before
    files, sorted_ = _disjoint(table())
    assert sorted_ and files > 1
    for action in pa.table(table().get_add_actions(flatten=True)).to_pylist():  # statistics hold the rows
        rows = [r for r in before if action["min.id"] <= r["id"] <= action["max.id"]]
        assert action["num_records"] == len(rows)
        assert action["min.gw_batch_ts"] <= min(r["gw_batch_ts"] for r in rows)
        assert action["max.gw_batch_ts"] >= max(r["gw_batch_ts"] for r in rows)
    assert engine.cluster_by_id(location, set(), budget_rows=1000, file_bytes=8 * 1024) == 0  # already sorted


def test_the_local_process_starts_without_dagster_and_before_pyarrow():
    """Start-up is most of a no-op medallion run: local_host imports neither Dagster nor pyarrow, so the
    engine's allocator settings precede pyarrow, pysail and deltalake; its notebook table is base's."""
    from guidewire_pipeline.medallion.runners import base, local_host

    assert local_host.NOTEBOOKS == base.NOTEBOOKS and tuple(local_host.NOTEBOOKS) == base.LAYER_ORDER
    assert local_host.NOTEBOOKS_DIR == base.NOTEBOOKS_DIR
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, guidewire_pipeline.medallion.runners.local_host; "
         "print(sorted(m for m in ('dagster', 'pyarrow', 'deltalake', 'pysail') if m in sys.modules))"],
        capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "[]"
