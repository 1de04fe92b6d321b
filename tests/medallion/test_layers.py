"""The layer engine's recording rules, through an op (the lead's e2e job path) and through the assets:
one notebook run per layer, one materialization per table, failures raised after the others are recorded."""

# No "from __future__ import annotations": Dagster reads the context type hints at runtime.

from pathlib import Path

import dagster as dg
import pyarrow as pa
import pytest

from guidewire_pipeline.medallion.defs import build_medallion_assets
from guidewire_pipeline.medallion.layers import run_bronze_silver, run_gold
from guidewire_pipeline.medallion.runners.base import NotebookRunner
from guidewire_pipeline.medallion.runners.local import LocalNotebookRunner
from guidewire_pipeline.raw.partitions import (
    BRONZE_ASSET_KEY,
    GUIDEWIRE_TABLES,
    SILVER_ASSET_KEY,
    gold_asset_key,
)
from guidewire_pipeline.settings import Settings
from tests.medallion.raw_tables import INSERT, append_raw_batch, change_rows

BUSINESS = [pa.field("name", pa.string())]


def write_tables(delta_root: Path) -> None:
    append_raw_batch(
        delta_root,
        "t_good",
        change_rows([{"id": 1, "seq": "0a", "op": INSERT, "name": "ok"}], BUSINESS),
        1_700_000_000_000,
    )
    # "zz" is not hex: bronze must fail this table, and only this table.
    bad = change_rows([{"id": 1, "seq": "01", "op": INSERT, "name": "x"}], BUSINESS)
    bad = bad.set_column(
        bad.schema.get_field_index("gwcbi___seqval_hex"), "gwcbi___seqval_hex", pa.array(["zz"])
    )
    append_raw_batch(delta_root, "t_bad", bad, 1_700_000_000_000)


def materialized(instance: dg.DagsterInstance, key: dg.AssetKey) -> dict[str | None, dict]:
    """partition -> metadata of what the instance stored (a failed step's result object omits them)."""
    events = [r.asset_materialization for r in instance.fetch_materializations(key, limit=100).records]
    return {m.partition: {k: v.value for k, v in m.metadata.items()} for m in events if m is not None}


def test_op_records_each_table_then_fails_naming_the_failed_one(
    delta_root: Path, medallion_settings: Settings, instance: dg.DagsterInstance
):
    write_tables(delta_root)
    calls: list[str] = []

    class CountingRunner(LocalNotebookRunner):
        def run_medallion(self, context, request):  # counts runs, runs them for real
            calls.append("/".join(request.layers))
            return super().run_medallion(context, request)

    @dg.op
    def medallion_op(context: dg.OpExecutionContext, notebook_runner: NotebookRunner) -> None:
        try:
            run_bronze_silver(context, notebook_runner, medallion_settings, ["t_good", "t_bad", "t_missing"])
        finally:
            run_gold(context, notebook_runner, medallion_settings)

    @dg.job(resource_defs={"notebook_runner": CountingRunner()})
    def e2e() -> None:
        medallion_op()

    result = e2e.execute_in_process(raise_on_error=False, instance=instance)

    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure).event_specific_data.error
    assert (
        "t_bad" in failure.message
        and "gwcbi___seqval_hex" in failure.message
        and "t_good" not in failure.message
    )
    assert calls == ["bronze/silver", "gold"]  # one run per call, whatever the table count
    bronze = materialized(instance, BRONZE_ASSET_KEY)
    assert set(bronze) == {"t_good", "t_missing"}
    assert bronze["t_good"]["rows_out"] == 1 and bronze["t_missing"]["status"] == "skipped"
    assert bronze["t_good"]["dagster/row_count"] == 1 and bronze["t_good"]["dagster/table_name"] == "main.bronze.t_good"
    silver = materialized(instance, SILVER_ASSET_KEY)
    # t_bad failed in bronze: silver skipped it and says why.
    assert set(silver) == {"t_good", "t_missing", "t_bad"}
    assert silver["t_bad"]["status"] == "skipped" and "failed in bronze" in silver["t_bad"]["reason"]
    assert silver["t_good"]["status"] == "changed"
    gold = materialized(instance, gold_asset_key("claims_by_state_month"))
    assert gold[None]["status"] == "skipped" and "cc_claim" in gold[None]["reason"]


def test_asset_partial_failure_keeps_the_good_partitions(delta_root: Path, medallion_settings: Settings):
    write_tables(delta_root)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(GUIDEWIRE_TABLES, ["t_bad", "t_good"])
        result = dg.materialize(
            build_medallion_assets(medallion_settings)[:1],
            instance=instance,
            resources={"notebook_runner": LocalNotebookRunner()},
            tags={
                "dagster/asset_partition_range_start": "t_bad",
                "dagster/asset_partition_range_end": "t_good",
            },
            raise_on_error=False,
        )
        assert not result.success
        assert instance.get_materialized_partitions(BRONZE_ASSET_KEY) == {"t_good"}


def test_unknown_mart_fails_before_running(medallion_settings: Settings):
    @dg.op
    def gold_op(context: dg.OpExecutionContext) -> None:
        run_gold(context, LocalNotebookRunner(), medallion_settings, ["no_such_mart"])

    @dg.job
    def gold_only() -> None:
        gold_op()

    with pytest.raises(dg.Failure, match="no_such_mart"):
        gold_only.execute_in_process()
