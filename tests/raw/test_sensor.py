"""cda_manifest_sensor, called with build_sensor_context on instance_for_test."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pytest
from deltalake import DeltaTable

from guidewire_pipeline.cda.savepoint import APP_ID
from guidewire_pipeline.cda.storage import Location
from guidewire_pipeline.raw.defs import build_resources
from guidewire_pipeline.raw.jobs import cda_sync_job
from guidewire_pipeline.raw.partitions import GUIDEWIRE_TABLES
from guidewire_pipeline.raw.resources import CdaSource
from guidewire_pipeline.raw.sensors import build_cda_manifest_sensor
from guidewire_pipeline.sample.generator import advance
from guidewire_pipeline.settings import Settings

sensor = build_cda_manifest_sensor([cda_sync_job])


def tick(instance, source: CdaSource, cursor: str | None):
    context = dg.build_sensor_context(instance=instance, cursor=cursor, resources={"cda_source": source})
    return sensor(context)


def tables_of(request: dg.RunRequest) -> list[str]:
    return request.run_config["ops"]["sync_raw_tables"]["config"]["tables"]


def test_new_tables_become_partitions_and_runs_are_chunked(sample_cda: Path):
    source = CdaSource(manifest_uri=str(sample_cda / "manifest.json"), tables_per_run=3)
    with dg.instance_for_test() as instance:
        result = tick(instance, source, None)
        assert isinstance(result, dg.SensorResult)
        added = result.dynamic_partitions_requests[0]
        assert added.partitions_def_name == GUIDEWIRE_TABLES and len(added.partition_keys) == 7
        chunks = [tables_of(r) for r in result.run_requests]
        assert [len(c) for c in chunks] == [3, 3, 1]
        assert sorted(t for c in chunks for t in c) == sorted(added.partition_keys)
        assert all(r.job_name == "cda_sync_job" for r in result.run_requests)

        # The same (table, watermark) pairs give the same run keys: a replayed tick launches nothing new.
        replay = tick(instance, source, None)
        assert [r.run_key for r in replay.run_requests] == [r.run_key for r in result.run_requests]


def test_unchanged_manifest_reads_and_lists_nothing(sample_cda: Path, monkeypatch):
    source = CdaSource(manifest_uri=str(sample_cda / "manifest.json"))
    calls: list[str] = []
    for name in ("read_bytes", "list_children", "walk_batches"):
        original = getattr(Location, name)
        monkeypatch.setattr(Location, name, lambda self, *a, _n=name, _o=original, **k: (calls.append(_n), _o(self, *a, **k))[1])
    with dg.instance_for_test() as instance:
        first = tick(instance, source, None)
        assert calls == ["read_bytes"]  # the manifest itself, and no folder listing at all
        calls.clear()
        second = tick(instance, source, first.cursor)
        assert isinstance(second, dg.SkipReason) and "unchanged" in second.skip_message
        assert calls == []


def test_only_advanced_tables_are_requested_again(sample_cda: Path):
    source = CdaSource(manifest_uri=str(sample_cda / "manifest.json"))
    with dg.instance_for_test() as instance:
        first = tick(instance, source, None)
        # Called directly, a sensor's partition requests are not applied: apply them as the daemon would.
        instance.add_dynamic_partitions(GUIDEWIRE_TABLES, first.dynamic_partitions_requests[0].partition_keys)
        before = json.loads((sample_cda / "manifest.json").read_text())
        advance(str(sample_cda), batches=1)
        after = json.loads((sample_cda / "manifest.json").read_text())
        for table in after:  # keep every watermark but one table's
            if table != "cc_exposure":
                after[table] = before[table]
        (sample_cda / "manifest.json").write_text(json.dumps(after, indent=2))
        second = tick(instance, source, first.cursor)
        assert [tables_of(r) for r in second.run_requests] == [["cc_exposure"]]
        assert second.dynamic_partitions_requests == []
        third = tick(instance, source, second.cursor)  # nothing changed since: nothing requested
        assert isinstance(third, dg.SkipReason)


def test_malformed_manifest_skips_with_reason(sample_cda: Path):
    source = CdaSource(manifest_uri=str(sample_cda / "manifest.json"))
    with dg.instance_for_test() as instance:
        first = tick(instance, source, None)
        (sample_cda / "manifest.json").write_text('{"cc_claim": ')
        result = tick(instance, source, first.cursor)
        assert isinstance(result, dg.SkipReason)
        assert "not valid JSON" in result.skip_message and "manifest.json" in result.skip_message


def test_bad_entries_are_skipped_and_the_rest_requested(sample_cda: Path):
    manifest = json.loads((sample_cda / "manifest.json").read_text())
    manifest["cc_claim"]["lastSuccessfulWriteTimestamp"] = "not-a-number"
    (sample_cda / "manifest.json").write_text(json.dumps(manifest))
    with dg.instance_for_test() as instance:
        result = tick(instance, CdaSource(manifest_uri=str(sample_cda / "manifest.json")), None)
        requested = {t for r in result.run_requests for t in tables_of(r)}
        assert "cc_claim" not in requested and "cc_exposure" in requested


def test_include_exclude_and_largest_first(sample_cda: Path):
    manifest = json.loads((sample_cda / "manifest.json").read_text())
    manifest["cc_transaction"]["totalProcessedRecordsCount"] = 10_000_000
    (sample_cda / "manifest.json").write_text(json.dumps(manifest))
    source = CdaSource(manifest_uri=str(sample_cda / "manifest.json"),
                       table_names=["cc_claim", "cc_exposure", "cc_transaction", "cc_contact"],
                       exceptions=["cc_contact"], largest_tables_first_count=1)
    with dg.instance_for_test() as instance:
        result = tick(instance, source, None)
        assert sorted(result.dynamic_partitions_requests[0].partition_keys) == ["cc_claim", "cc_exposure", "cc_transaction"]
        first, rest = result.run_requests
        assert tables_of(first) == ["cc_transaction"] and first.tags["dagster/priority"] == "5"
        assert tables_of(rest) == ["cc_claim", "cc_exposure"] and "dagster/priority" not in rest.tags


@pytest.mark.usefixtures("ray_local")
def test_sensor_run_request_syncs_exactly_the_advanced_tables(sample_cda: Path, tmp_path: Path):
    settings = Settings(manifest_uri=str(sample_cda / "manifest.json"), delta_root=str(tmp_path / "delta"),
                        sharepack=None, ray_address=None, databricks_host=None)
    resources = build_resources(settings)
    with dg.instance_for_test() as instance:
        first = tick(instance, resources["cda_source"], None)
        instance.add_dynamic_partitions(GUIDEWIRE_TABLES, first.dynamic_partitions_requests[0].partition_keys)
        assert cda_sync_job.execute_in_process(instance=instance, resources=resources,
                                               run_config=first.run_requests[0].run_config).success
        before = json.loads((sample_cda / "manifest.json").read_text())
        advance(str(sample_cda), batches=1)
        after = json.loads((sample_cda / "manifest.json").read_text())
        for table in after:
            if table not in ("cc_claim", "pc_policyline"):
                after[table] = before[table]
        (sample_cda / "manifest.json").write_text(json.dumps(after, indent=2))

        second = tick(instance, resources["cda_source"], first.cursor)
        (request,) = second.run_requests
        run = cda_sync_job.execute_in_process(instance=instance, resources=resources, run_config=request.run_config)
        assert sorted(run.output_for_node("report_failed_tables")) == ["cc_claim", "pc_policyline"]
        for table, entry in after.items():
            if table == "cc_catastrophe":
                continue
            loaded = DeltaTable(str(tmp_path / "delta" / "raw" / table)).transaction_version(APP_ID)
            assert loaded == int(entry["lastSuccessfulWriteTimestamp"]), table
