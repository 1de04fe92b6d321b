"""The medallion step's recording rules, from the op (medallion_job) and from the asset: one runner
call for every layer, a materialization only where data changed, an observation with the reason where
it did not, failures raised after the others are recorded; and the automation that follows raw."""

# No "from __future__ import annotations": Dagster reads the context type hints at runtime.

import json
from pathlib import Path

import dagster as dg
import pyarrow as pa

from guidewire_pipeline.medallion.defs import build_medallion_asset, build_medallion_sensor, medallion_job
from guidewire_pipeline.medallion.runners.local import LocalNotebookRunner
from guidewire_pipeline.raw.partitions import (
    BRONZE_ASSET_KEY,
    GUIDEWIRE_TABLES,
    RAW_ASSET_KEY,
    SILVER_ASSET_KEY,
)
from guidewire_pipeline.raw.resources import CdaSource
from guidewire_pipeline.resources import LakehouseResource
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


def events(instance: dg.DagsterInstance, key: dg.AssetKey, observations: bool = False) -> dict[str | None, dict]:
    """partition -> metadata of what the instance stored."""
    fetch = instance.fetch_observations if observations else instance.fetch_materializations
    records = fetch(dg.AssetRecordsFilter(asset_key=key), limit=100).records
    found = {}
    for record in records:
        event = record.asset_observation if observations else record.asset_materialization
        if event is not None and event.partition not in found:
            found[event.partition] = {k: v.value for k, v in event.metadata.items()}
    return found


def resources(settings: Settings, runner: LocalNotebookRunner | None = None) -> dict:
    return {"notebook_runner": runner or LocalNotebookRunner(),
            "lakehouse": LakehouseResource(delta_root=settings.delta_root)}


def test_changed_tables_are_materialized_unchanged_and_skipped_observed_failed_named(
    delta_root: Path, medallion_settings: Settings, instance: dg.DagsterInstance
):
    write_tables(delta_root)
    calls: list[str] = []

    class CountingRunner(LocalNotebookRunner):
        def run_medallion(self, context, request):  # counts calls, runs them for real
            calls.append("/".join(request.layers))
            return super().run_medallion(context, request)

    config = {"ops": {"run_medallion": {"config": {"tables": ["t_good", "t_bad", "t_missing"]}}}}
    result = medallion_job.execute_in_process(run_config=config, instance=instance, raise_on_error=False,
                                              resources=resources(medallion_settings, CountingRunner()))
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure).event_specific_data
    assert "t_bad" in failure.error.message and "gwcbi___seqval_hex" in failure.error.message
    assert "t_good" not in failure.error.message
    assert json.loads(json.dumps(failure.user_failure_data.metadata["failed_tables"].value)) == ["t_bad"]
    assert calls == ["bronze/silver/gold"]  # one runner call for every layer, whatever the table count
    bronze = events(instance, BRONZE_ASSET_KEY)
    assert set(bronze) == {"t_good"}  # only where data changed
    assert bronze["t_good"]["dagster/row_count"] == 1 and bronze["t_good"]["dagster/table_name"] == "main.bronze.t_good"
    assert events(instance, BRONZE_ASSET_KEY, observations=True)["t_missing"]["status"] == "skipped"
    assert set(events(instance, SILVER_ASSET_KEY)) == {"t_good"}
    silver_seen = events(instance, SILVER_ASSET_KEY, observations=True)
    assert silver_seen["t_bad"]["status"] == "skipped" and "bronze" in silver_seen["t_bad"]["reason"]
    assert instance.get_materialized_partitions(SILVER_ASSET_KEY) == {"t_good"}

    # Nothing new: observations only, no materialization anywhere.
    again = medallion_job.execute_in_process(
        run_config={"ops": {"run_medallion": {"config": {"tables": ["t_good"]}}}}, instance=instance,
        resources=resources(medallion_settings))
    assert again.success and not again.get_asset_materialization_events()
    assert events(instance, BRONZE_ASSET_KEY, observations=True)["t_good"]["status"] == "unchanged"


def test_the_asset_keeps_the_good_partitions_when_one_fails(delta_root: Path, medallion_settings: Settings):
    write_tables(delta_root)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(GUIDEWIRE_TABLES, ["t_bad", "t_good"])
        result = dg.materialize(
            [build_medallion_asset()], instance=instance, resources=resources(medallion_settings),
            selection=[BRONZE_ASSET_KEY, SILVER_ASSET_KEY],
            tags={"dagster/asset_partition_range_start": "t_bad", "dagster/asset_partition_range_end": "t_good"},
            raise_on_error=False,
        )
        assert not result.success
        assert instance.get_materialized_partitions(BRONZE_ASSET_KEY) == {"t_good"}
        assert instance.get_materialized_partitions(SILVER_ASSET_KEY) == {"t_good"}


def test_the_medallion_follows_raw_for_the_tables_that_changed_only(
    delta_root: Path, medallion_settings: Settings, instance: dg.DagsterInstance
):
    """Raw materialized for table A: the sensor asks for bronze and silver of A (and the marts that
    read it), nothing for B; after that run, nothing again until raw changes."""
    write_tables(delta_root)
    instance.add_dynamic_partitions(GUIDEWIRE_TABLES, ["t_good", "t_other"])

    @dg.op
    def raw_events(context: dg.OpExecutionContext) -> None:
        context.log_event(dg.AssetMaterialization(RAW_ASSET_KEY, partition="t_other", metadata={"status": "loaded"}))
        context.log_event(dg.AssetMaterialization(RAW_ASSET_KEY, partition="t_good", metadata={"status": "loaded"}))

    @dg.job
    def raw_then() -> None:
        raw_events()

    assert raw_then.execute_in_process(instance=instance).success
    # t_other's medallion already caught up with that raw materialization: its bronze is newer.
    instance.report_runless_asset_event(dg.AssetObservation(BRONZE_ASSET_KEY, partition="t_other"))
    instance.report_runless_asset_event(dg.AssetObservation(SILVER_ASSET_KEY, partition="t_other"))

    sensor = build_medallion_sensor(automation=True)
    source = CdaSource(manifest_uri="unused", tables_per_run=10)
    tick = sensor(dg.build_sensor_context(instance=instance, resources={"cda_source": source}))
    (request,) = tick.run_requests
    assert request.run_config["ops"]["run_medallion"]["config"]["tables"] == ["t_good"]
    result = medallion_job.execute_in_process(
        run_config=request.run_config, instance=instance, resources=resources(medallion_settings),
        tags={"dagster/run_key": request.run_key})
    assert result.success and instance.get_materialized_partitions(SILVER_ASSET_KEY) == {"t_good"}
    again = sensor(dg.build_sensor_context(instance=instance, cursor=tick.cursor, resources={"cda_source": source}))
    assert not again.run_requests
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert build_medallion_sensor(automation=False).default_status == dg.DefaultSensorStatus.STOPPED
