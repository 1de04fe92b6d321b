"""The raw layer end to end through Dagster, on local folders and on moto's S3 server."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from guidewire_pipeline.cda.savepoint import APP_ID
from guidewire_pipeline.cda.storage import Location
from guidewire_pipeline.raw.assets import build_raw_asset, raw_checks
from guidewire_pipeline.raw.partitions import GUIDEWIRE_TABLES, RAW_ASSET_KEY
from guidewire_pipeline.sample.generator import advance, generate
from guidewire_pipeline.settings import Settings
from tests.helpers import resources_for, settings_for
from tests.raw.helpers import (
    assert_exactly_once,
    change_keys,
    committed_folders,
    committed_rows,
    delta_keys,
    manifest,
)

pytestmark = pytest.mark.usefixtures("ray_local")
TABLES = ["cc_claim", "cc_exposure", "pc_policyperiod"]


cda_raw = build_raw_asset(60)


def materialize(instance, settings: Settings, partition_key: str | None = None, tags: dict | None = None):
    """The asset and its checks, every load on Ray (sample data is below the in-driver size)."""
    return dg.materialize([cda_raw, raw_checks], instance=instance, resources=resources_for(settings, driver_max_bytes=0),
                          partition_key=partition_key, tags=tags, raise_on_error=False)


def test_materialize_local_matches_committed_folders(sample_cda: Path, tmp_path: Path):
    settings = settings_for(str(sample_cda / "manifest.json"), str(tmp_path / "delta"))
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(GUIDEWIRE_TABLES, TABLES)
        for table in TABLES:
            result = materialize(instance, settings, partition_key=table)
            assert result.success
            uri = str(tmp_path / "delta" / "raw" / table)
            delta = DeltaTable(uri)
            expected = committed_rows(sample_cda, table)
            assert delta_keys(uri) == change_keys(expected)  # every committed row, nothing in flight
            assert delta.transaction_version(APP_ID) == int(manifest(sample_cda)[table]["lastSuccessfulWriteTimestamp"])
            history = sorted(delta.history(), key=lambda h: h["version"])
            assert_exactly_once(sample_cda, table, Path(uri))  # each row in its folder, each folder in one commit

            event = result.get_asset_materialization_events()[0].materialization
            assert event.partition == table
            # Progress of each commit, made on a Ray worker, is in the run's log.
            log_lines = [e.user_message for e in instance.all_logs(result.run_id) if e.dagster_event is None]
            assert any(f"{table}: commit 1/1 " in line and "MB/s" in line for line in log_lines), log_lines
            assert event.metadata["commits"].value == 1 and event.metadata["ray_task_memory_mb"].value > 0
            assert event.metadata["rows_added"].value == expected.num_rows
            assert event.metadata["dagster/row_count"].value == expected.num_rows
            assert event.metadata["delta_version"].value == len(history) - 1
            assert event.metadata["lag_ms"].value == 0
            assert {c.name for c in event.metadata["dagster/column_schema"].schema.columns} >= {"id", "gwcbi___seqval_hex"}
            checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
            assert checks == {"caught_up": True, "record_count": True, "schema_fingerprints": True,
                              "lag_within_limit": True}

        # cc_claim changed schema half-way: its earlier rows read back with a null new column.
        claims = DeltaTable(str(tmp_path / "delta" / "raw" / "cc_claim")).to_pyarrow_table()
        assert "severity" in claims.column_names
        assert 0 < claims["severity"].null_count < claims.num_rows


def test_incremental_runs_add_only_new_batches(sample_cda: Path, tmp_path: Path):
    settings = settings_for(str(sample_cda / "manifest.json"), str(tmp_path / "delta"))
    uri = str(tmp_path / "delta" / "raw" / "cc_exposure")
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(GUIDEWIRE_TABLES, ["cc_exposure"])
        assert materialize(instance, settings, "cc_exposure").success
        version = DeltaTable(uri).version()
        again = materialize(instance, settings, "cc_exposure")
        assert again.success
        assert DeltaTable(uri).version() == version  # nothing pending: no new Delta version
        assert again.get_asset_materialization_events()[0].materialization.metadata["rows_added"].value == 0

        advance(str(sample_cda), batches=2)
        after = materialize(instance, settings, "cc_exposure")
        assert after.success
        # The old in-flight folder plus two new ones: three batches in one commit.
        assert DeltaTable(uri).version() == version + 1
        assert delta_keys(uri) == change_keys(committed_rows(sample_cda, "cc_exposure"))
        assert after.get_asset_materialization_events()[0].materialization.metadata["batches_applied"].value == 3


def test_type_change_fails_only_that_table(sample_cda: Path, tmp_path: Path):
    last = committed_folders(sample_cda, "cc_contact")[-1]
    for path in last.glob("*.parquet"):
        if path.stat().st_size:
            data = pq.read_table(path)
            index = data.schema.get_field_index("gwcbi___tx_id")
            pq.write_table(data.set_column(index, "gwcbi___tx_id", data["gwcbi___tx_id"].cast(pa.string())), path)
    settings = settings_for(str(sample_cda / "manifest.json"), str(tmp_path / "delta"))
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(GUIDEWIRE_TABLES, ["cc_claim", "cc_contact"])
        result = materialize(instance, settings, tags={
            "dagster/asset_partition_range_start": "cc_claim", "dagster/asset_partition_range_end": "cc_contact"})
        assert not result.success
        failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
        message = failure.step_failure_data.error.message
        assert "cc_contact" in message and "gwcbi___tx_id" in message and "int64" in message and "string" in message
        # cc_claim succeeded, stays committed, and its materialization is recorded.
        assert [e.partition for e in result.get_asset_materialization_events()] == ["cc_claim"]
        assert DeltaTable(str(tmp_path / "delta" / "raw" / "cc_claim")).transaction_version(APP_ID) is not None
        # The bad batch was in cc_contact's one commit: nothing of that commit was written.
        assert not DeltaTable.is_deltatable(str(tmp_path / "delta" / "raw" / "cc_contact"))
        instance_materialized = instance.get_materialized_partitions(RAW_ASSET_KEY)
        assert instance_materialized == {"cc_claim"}


def test_s3_end_to_end(s3_bucket: str):
    cda = f"s3://{s3_bucket}/cda"
    generate(cda, tables=3, batches=3, rows=40, seed=4)
    settings = settings_for(f"{cda}/manifest.json", f"s3://{s3_bucket}/lake")
    raw = Location.parse(f"s3://{s3_bucket}/lake/raw/pc_policyline")
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(GUIDEWIRE_TABLES, ["pc_policyline"])
        result = materialize(instance, settings, "pc_policyline")
        assert result.success
        delta = DeltaTable(raw.delta_uri, storage_options=raw.delta_storage_options())
        assert delta.version() == 0  # three committed folders, one commit
        assert delta.transaction_version(APP_ID) == 1_700_000_000_000 + 2 * 900_000
        assert len(delta.to_pyarrow_table()) == 3 * 40
        assert materialize(instance, settings, "pc_policyline").success
        assert DeltaTable(raw.delta_uri, storage_options=raw.delta_storage_options()).version() == 0
        advance(cda, batches=1)
        assert materialize(instance, settings, "pc_policyline").success
        delta = DeltaTable(raw.delta_uri, storage_options=raw.delta_storage_options())
        assert delta.version() == 1 and len(delta.to_pyarrow_table()) == 5 * 40


def test_each_tables_checks_count_for_its_latest_materialization(sample_cda: Path, tmp_path: Path):
    """What the checks' Partitions tab shows: every table's check evaluation targets that table's
    latest materialization, whether the asset or cda_sync_job loaded it."""
    from guidewire_pipeline.raw.jobs import cda_sync_job

    settings = settings_for(str(sample_cda / "manifest.json"), str(tmp_path / "delta"))
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(GUIDEWIRE_TABLES, ["cc_claim"])
        assert materialize(instance, settings, partition_key="cc_claim").success
        synced = cda_sync_job.execute_in_process(
            instance=instance, resources=resources_for(settings),
            run_config={"ops": {"sync_raw_tables": {"config": {"tables": ["cc_exposure", "pc_policyperiod"]}}}})
        assert synced.success
        keys = [dg.AssetCheckKey(RAW_ASSET_KEY, name) for name in
                ("caught_up", "record_count", "schema_fingerprints", "lag_within_limit")]
        infos = instance.event_log_storage.get_asset_check_partition_info(keys)
        by_partition: dict[str, list] = {}
        for info in infos:
            by_partition.setdefault(info.partition_key, []).append(info)
        assert set(by_partition) == {"cc_claim", "cc_exposure", "pc_policyperiod"}
        for partition, partition_infos in by_partition.items():
            assert len(partition_infos) == 4, partition
            assert all(info.is_current and info.latest_materialization_storage_id for info in partition_infos), partition
