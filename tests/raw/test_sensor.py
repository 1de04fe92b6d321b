"""cda_manifest_sensor, called with build_sensor_context on instance_for_test."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pytest
from deltalake import DeltaTable

from guidewire_pipeline.cda.savepoint import APP_ID
from guidewire_pipeline.cda.storage import Location
from guidewire_pipeline.raw.jobs import cda_sync_job
from guidewire_pipeline.raw.partitions import GUIDEWIRE_TABLES
from guidewire_pipeline.raw.resources import CdaSource
from guidewire_pipeline.raw.sensors import ManifestUnavailable, build_cda_manifest_sensor
from guidewire_pipeline.sample.generator import advance
from tests.helpers import resources_for, settings_for

sensor = build_cda_manifest_sensor(cda_sync_job)


def tick(instance, source: CdaSource, cursor: str | None):
    context = dg.build_sensor_context(instance=instance, cursor=cursor, resources={"cda_source": source})
    return sensor(context)


def tables_of(request: dg.RunRequest) -> list[str]:
    return request.run_config["ops"]["sync_raw_tables"]["config"]["tables"]


def launch(instance, request: dg.RunRequest, resources: dict, **kwargs):
    """Run a request as the daemon would: its run key and tags on the run."""
    return cda_sync_job.execute_in_process(instance=instance, resources=resources, run_config=request.run_config,
                                           tags={**request.tags, "dagster/run_key": request.run_key}, **kwargs)


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
        assert second.skip_reason is not None and "unchanged" in second.skip_reason.skip_message
        assert calls == []


def test_only_advanced_tables_are_requested_again(sample_cda: Path, tmp_path: Path):
    resources = resources_for(settings_for(str(sample_cda / "manifest.json"), str(tmp_path / "delta")))
    source = resources["cda_source"]
    with dg.instance_for_test() as instance:
        first = tick(instance, source, None)
        # Called directly, a sensor's partition requests are not applied: apply them as the daemon would.
        instance.add_dynamic_partitions(GUIDEWIRE_TABLES, first.dynamic_partitions_requests[0].partition_keys)
        # While its runs have not run, the first tick's tables are not asked for twice.
        assert not tick(instance, source, first.cursor).run_requests
        for request in first.run_requests:
            assert launch(instance, request, resources).success
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
        assert third.skip_reason is not None and not third.run_requests


def test_a_broken_manifest_fails_the_tick_naming_the_problem(sample_cda: Path, tmp_path: Path):
    source = CdaSource(manifest_uri=str(sample_cda / "manifest.json"))
    with dg.instance_for_test() as instance:
        first = tick(instance, source, None)
        (sample_cda / "manifest.json").write_text('{"cc_claim": ')
        with pytest.raises(ManifestUnavailable, match=r"not valid JSON.*manifest\.json"):
            tick(instance, source, first.cursor)
        missing = CdaSource(manifest_uri=str(tmp_path / "nowhere" / "manifest.json"))
        with pytest.raises(ManifestUnavailable, match=r"no CDA manifest.*GW_MANIFEST_URI"):
            tick(instance, missing, None)


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
                       include_tables=["cc_claim", "cc_exposure", "cc_transaction", "cc_contact"],
                       exclude_tables=["cc_contact"], largest_tables_first=1)
    with dg.instance_for_test() as instance:
        result = tick(instance, source, None)
        assert sorted(result.dynamic_partitions_requests[0].partition_keys) == ["cc_claim", "cc_exposure", "cc_transaction"]
        first, rest = result.run_requests
        assert tables_of(first) == ["cc_transaction"] and first.tags["dagster/priority"] == "5"
        assert tables_of(rest) == ["cc_claim", "cc_exposure"] and "dagster/priority" not in rest.tags


@pytest.mark.usefixtures("ray_local")
def test_sensor_run_request_syncs_exactly_the_advanced_tables(sample_cda: Path, tmp_path: Path):
    resources = resources_for(settings_for(str(sample_cda / "manifest.json"), str(tmp_path / "delta")))
    with dg.instance_for_test() as instance:
        first = tick(instance, resources["cda_source"], None)
        instance.add_dynamic_partitions(GUIDEWIRE_TABLES, first.dynamic_partitions_requests[0].partition_keys)
        assert launch(instance, first.run_requests[0], resources).success
        before = json.loads((sample_cda / "manifest.json").read_text())
        advance(str(sample_cda), batches=1)
        after = json.loads((sample_cda / "manifest.json").read_text())
        for table in after:
            if table not in ("cc_claim", "pc_policyline"):
                after[table] = before[table]
        (sample_cda / "manifest.json").write_text(json.dumps(after, indent=2))

        second = tick(instance, resources["cda_source"], first.cursor)
        (request,) = second.run_requests
        run = launch(instance, request, resources)
        assert sorted(run.output_for_node("report_failed_tables")) == ["cc_claim", "pc_policyline"]
        for table, entry in after.items():
            if table == "cc_catastrophe":
                continue
            loaded = DeltaTable(str(tmp_path / "delta" / "raw" / table)).transaction_version(APP_ID)
            assert loaded == int(entry["lastSuccessfulWriteTimestamp"]), table


def test_a_table_whose_sync_failed_is_requested_again_after_its_backoff(sample_cda: Path, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch):
    """The sensor remembers what was loaded, not what it requested: a run that failed (after the
    instance's retries) has its failed tables asked for again once their back-off passed, even though
    no watermark moved."""
    import time

    from guidewire_pipeline import automation

    resources = resources_for(settings_for(str(sample_cda / "manifest.json"), str(tmp_path / "delta")))
    source = CdaSource(manifest_uri=str(sample_cda / "manifest.json"), include_tables=["cc_claim", "cc_exposure"])
    target = tmp_path / "delta" / "raw" / "cc_claim"
    target.parent.mkdir(parents=True)
    target.write_text("not a folder: cc_claim cannot be written")  # cc_claim fails, cc_exposure loads
    with dg.instance_for_test() as instance:
        first = tick(instance, source, None)
        instance.add_dynamic_partitions(GUIDEWIRE_TABLES, first.dynamic_partitions_requests[0].partition_keys)
        (request,) = first.run_requests
        assert not launch(instance, request, resources, raise_on_error=False).success
        second = tick(instance, source, first.cursor)  # the failure is seen; cc_claim waits out its back-off
        assert not second.run_requests and "cc_claim" in json.loads(second.cursor)["retry"]
        now = time.time()
        monkeypatch.setattr(automation.time, "time", lambda: now + automation.FIRST_BACKOFF_S + 1)
        target.unlink()
        third = tick(instance, source, second.cursor)
        (retry,) = third.run_requests
        assert tables_of(retry) == ["cc_claim"] and retry.run_key != request.run_key
        assert launch(instance, retry, resources).success
        fourth = tick(instance, source, third.cursor)
        assert not fourth.run_requests and json.loads(fourth.cursor)["retry"] == {}
        manifest_watermark = int(json.loads((sample_cda / "manifest.json").read_text())["cc_claim"]["lastSuccessfulWriteTimestamp"])
        assert DeltaTable(str(target)).transaction_version(APP_ID) == manifest_watermark


def test_backoff_doubles_and_is_bounded():
    from guidewire_pipeline.automation import MAX_BACKOFF_S, backoff_seconds

    assert [backoff_seconds(n) for n in (1, 2, 3)] == [60, 120, 240]
    assert backoff_seconds(50) == MAX_BACKOFF_S
