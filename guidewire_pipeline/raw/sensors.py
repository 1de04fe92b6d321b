"""``cda_manifest_sensor``: watch the CDA manifest; register new tables; sync tables that advanced or
whose last sync failed.

Each tick:
1. Settle the runs it launched (``automation.RunTracker``): tables of a failed run are asked for again
   after a bounded back-off, so a run that failed after its retries is not stuck until the table's
   watermark next moves.
2. Stat the manifest (one HEAD on S3, one ``stat`` locally). Unchanged since the cursor and no retry
   due: skip, nothing read, nothing listed.
3. Parse it. A missing, unreadable or malformed manifest FAILS the tick (red in the UI, with the
   reason), cursor kept; bad entries are logged and their tables not requested.
4. New tables become partitions (``dynamic_partitions_requests``).
5. Tables whose manifest watermark passed the last one synced, plus failed tables whose back-off has
   passed, are synced by ``cda_sync_job``: at most ``tables_per_run`` tables a run, the
   ``largest_tables_first`` largest first with a higher priority. Run keys derive from the
   (table, watermark, attempt) triples, so a repeated tick never launches the same work twice.

The cursor is JSON: ``{"manifest": <stat token>, "requested": {table: watermark}, "runs": ..., "retry": ...}``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import dagster as dg

from guidewire_pipeline.automation import RunTracker, run_key
from guidewire_pipeline.cda.manifest import ManifestError
from guidewire_pipeline.cda.storage import Location, StorageError
from guidewire_pipeline.raw.jobs import CDA_SYNC_JOB, SYNC_OP
from guidewire_pipeline.raw.partitions import GUIDEWIRE_TABLES, guidewire_tables
from guidewire_pipeline.raw.resources import CdaSource

SENSOR_INTERVAL_SECONDS = 60
PRIORITY_LARGEST = "5"


class ManifestUnavailable(Exception):
    """The tick cannot read a usable manifest; raised so that the tick shows as failed."""


def sync_run_config(tables: Sequence[str]) -> dict:
    """Run config that selects ``tables`` in ``cda_sync_job`` (and in ``guidewire_job``)."""
    return {"ops": {SYNC_OP: {"config": {"tables": list(tables)}}}}


def tables_of(request: dg.RunRequest) -> list[str]:
    return list(request.run_config["ops"][SYNC_OP]["config"]["tables"])


def plan_run_requests(
    advanced: dict[str, int], records: dict[str, int], tables_per_run: int, largest_first: int, job_name: str,
    attempts: dict[str, int] | None = None,
) -> list[dg.RunRequest]:
    """Chunk the tables to sync (table -> manifest watermark) into run requests."""
    attempts = attempts or {}
    by_size = sorted(advanced, key=lambda t: (-records.get(t, 0), t))
    largest = by_size[:largest_first] if largest_first > 0 else []
    rest = sorted(set(advanced) - set(largest))
    requests = []
    size = max(tables_per_run, 1)
    for group, priority in ((largest, PRIORITY_LARGEST), (rest, None)):
        for start in range(0, len(group), size):
            chunk = group[start : start + size]
            keys = ",".join(f"{t}@{advanced[t]}#{attempts.get(t, 0)}" for t in sorted(chunk))
            tags = {"guidewire/tables": str(len(chunk))}
            if priority:
                tags["dagster/priority"] = priority
            requests.append(dg.RunRequest(
                run_key=run_key(job_name, keys),
                job_name=job_name,
                run_config=sync_run_config(chunk),
                tags=tags,
            ))
    return requests


def evaluate_manifest(context: dg.SensorEvaluationContext, cda_source: CdaSource) -> dg.SensorResult | dg.SkipReason:
    cursor = json.loads(context.cursor) if context.cursor else {}
    tracker = RunTracker.from_json(cursor)
    retried = tracker.settle(context.instance)
    for table in retried:
        context.log.warning(f"The sync of {table} failed; it is asked for again after its back-off.")
    due = tracker.due()
    location = Location.parse(cda_source.manifest_uri)
    try:
        token = location.stat()
    except StorageError as exc:
        raise ManifestUnavailable(f"Cannot reach the CDA manifest (GW_MANIFEST_URI): {exc}") from exc
    if token is None:
        raise ManifestUnavailable(f"There is no CDA manifest at {location.uri}: check GW_MANIFEST_URI, and that "
                                  "CDA has written its output there.")
    if token == cursor.get("manifest") and not due:
        return dg.SensorResult(skip_reason=dg.SkipReason("Manifest unchanged since the last tick; no retry due."),
                               cursor=json.dumps({**cursor, **tracker.to_json()}, separators=(",", ":")))
    try:
        manifest = cda_source.read_manifest()
    except ManifestError as exc:
        raise ManifestUnavailable(f"The CDA manifest cannot be used, nothing requested (will retry): {exc}") from exc
    for problem in manifest.problems:
        context.log.warning(f"Skipped bad manifest entry: {problem}")

    selected = cda_source.select(manifest)
    known = set(context.instance.get_dynamic_partitions(GUIDEWIRE_TABLES))
    new_tables = [t for t in selected if t not in known]

    requested: dict[str, int] = dict(cursor.get("requested", {}))
    for table in due:
        requested.pop(table, None)  # its last run failed: ask again
    waiting, in_flight = tracker.waiting(), tracker.in_flight()
    advanced = {
        t: manifest.entries[t].manifest_watermark for t in selected
        if manifest.entries[t].manifest_watermark > requested.get(t, -1) and t not in waiting and t not in in_flight
    }
    attempts = {t: int(tracker.retry[t][0]) for t in advanced if t in tracker.retry}
    run_requests = plan_run_requests(
        advanced, {t: manifest.entries[t].total_processed_records for t in advanced},
        cda_source.tables_per_run, cda_source.largest_tables_first, CDA_SYNC_JOB, attempts,
    )
    requested.update(advanced)
    tracker.launched(run_requests, tables_of)
    new_cursor = json.dumps({"manifest": token, "requested": requested, **tracker.to_json()}, separators=(",", ":"))
    if not run_requests and not new_tables:
        return dg.SensorResult(skip_reason=dg.SkipReason("Manifest changed, but no selected table advanced."),
                               cursor=new_cursor)
    context.log.info(f"{len(new_tables)} new tables, {len(advanced)} to sync ({len(attempts)} retried), "
                     f"{len(run_requests)} runs")
    return dg.SensorResult(
        run_requests=run_requests,
        dynamic_partitions_requests=[guidewire_tables.build_add_request(new_tables)] if new_tables else [],
        cursor=new_cursor,
    )


def build_cda_manifest_sensor(job: dg.JobDefinition, automation: bool = True) -> dg.SensorDefinition:
    """The sensor, on by default; ``automation=False`` (``GW_AUTOMATION=off``) starts it stopped."""

    @dg.sensor(
        name="cda_manifest_sensor",
        minimum_interval_seconds=SENSOR_INTERVAL_SECONDS,
        default_status=dg.DefaultSensorStatus.RUNNING if automation else dg.DefaultSensorStatus.STOPPED,
        job=job,
        description="Watches GW_MANIFEST_URI: new tables become partitions; advanced watermarks, and tables "
        "whose last sync failed (after a back-off), start cda_sync_job runs. A broken manifest fails the tick.",
    )
    def cda_manifest_sensor(context: dg.SensorEvaluationContext, cda_source: CdaSource) -> dg.SensorResult | dg.SkipReason:
        return evaluate_manifest(context, cda_source)

    return cda_manifest_sensor
