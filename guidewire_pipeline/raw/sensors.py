"""``cda_manifest_sensor``: watch the CDA manifest; register new tables; sync tables that advanced.

Each tick:
1. Stat the manifest (one HEAD on S3, one ``stat`` locally). Unchanged since the cursor: skip,
   nothing read, nothing listed.
2. Parse it. A malformed manifest gives a ``SkipReason`` naming the problem and keeps the cursor;
   bad entries are skipped and logged.
3. New tables become partitions (``dynamic_partitions_requests``).
4. Tables whose manifest watermark passed the last one requested are synced by ``cda_sync_job`` (or
   ``guidewire_e2e_job`` with ``sensor_scope: full``), at most ``tables_per_run`` tables a run, the
   ``largest_tables_first_count`` largest first with a higher priority. The run key derives from the
   (table, watermark) pairs, so a repeated tick never launches the same work twice.

The cursor is JSON: ``{"manifest": <stat token>, "requested": {table: watermark}}``.
"""


import hashlib
import json
from collections.abc import Sequence

import dagster as dg

from guidewire_pipeline.cda.manifest import ManifestError
from guidewire_pipeline.cda.storage import Location, StorageError
from guidewire_pipeline.raw.jobs import SYNC_OP
from guidewire_pipeline.raw.partitions import GUIDEWIRE_TABLES, guidewire_tables
from guidewire_pipeline.raw.resources import CdaSource

RAW_ONLY_JOB = "cda_sync_job"
FULL_PATH_JOB = "guidewire_e2e_job"
SENSOR_INTERVAL_SECONDS = 60
PRIORITY_LARGEST = "5"


def sync_run_config(tables: Sequence[str]) -> dict:
    """Run config that selects ``tables`` in ``cda_sync_job`` and ``guidewire_e2e_job`` alike."""
    return {"ops": {SYNC_OP: {"config": {"tables": list(tables)}}}}


def plan_run_requests(
    advanced: dict[str, int], records: dict[str, int], tables_per_run: int, largest_first: int, job_name: str
) -> list[dg.RunRequest]:
    """Chunk the advanced tables (table -> manifest watermark) into run requests."""
    by_size = sorted(advanced, key=lambda t: (-records.get(t, 0), t))
    largest = by_size[:largest_first] if largest_first > 0 else []
    rest = sorted(set(advanced) - set(largest))
    requests = []
    for group, priority in ((largest, PRIORITY_LARGEST), (rest, None)):
        for start in range(0, len(group), max(tables_per_run, 1)):
            chunk = group[start : start + max(tables_per_run, 1)]
            pairs = ",".join(f"{t}@{advanced[t]}" for t in sorted(chunk))
            tags = {"guidewire/tables": str(len(chunk))}
            if priority:
                tags["dagster/priority"] = priority
            requests.append(dg.RunRequest(
                run_key=f"{job_name}:{hashlib.sha256(pairs.encode()).hexdigest()[:24]}",
                job_name=job_name,
                run_config=sync_run_config(chunk),
                tags=tags,
            ))
    return requests


def evaluate_manifest(context: dg.SensorEvaluationContext, cda_source: CdaSource) -> dg.SensorResult | dg.SkipReason:
    cursor = json.loads(context.cursor) if context.cursor else {}
    location = Location.parse(cda_source.manifest_uri)
    try:
        token = location.stat()
    except StorageError as exc:
        return dg.SkipReason(f"Cannot reach the manifest: {exc}")
    if token is None:
        return dg.SkipReason(f"No manifest at {location.uri} yet; check GW_MANIFEST_URI.")
    if token == cursor.get("manifest"):
        return dg.SkipReason("Manifest unchanged since the last tick.")

    try:
        manifest = cda_source.read_manifest()
    except ManifestError as exc:
        return dg.SkipReason(f"Malformed manifest, cursor kept, will retry: {exc}")
    for problem in manifest.problems:
        context.log.warning(f"Skipped bad manifest entry: {problem}")

    selected = cda_source.select(manifest)
    known = set(context.instance.get_dynamic_partitions(GUIDEWIRE_TABLES))
    new_tables = [t for t in selected if t not in known]

    requested: dict[str, int] = cursor.get("requested", {})
    advanced = {
        t: manifest.entries[t].manifest_watermark for t in selected
        if manifest.entries[t].manifest_watermark > requested.get(t, -1)
    }
    job_name = FULL_PATH_JOB if cda_source.sensor_scope == "full" else RAW_ONLY_JOB
    run_requests = plan_run_requests(
        advanced, {t: manifest.entries[t].total_processed_records for t in advanced},
        cda_source.tables_per_run, cda_source.largest_tables_first_count, job_name,
    )
    requested.update(advanced)
    new_cursor = json.dumps({"manifest": token, "requested": requested}, separators=(",", ":"))
    if not run_requests and not new_tables:
        return dg.SensorResult(skip_reason=dg.SkipReason("Manifest changed, but no selected table advanced."),
                               cursor=new_cursor)
    context.log.info(f"{len(new_tables)} new tables, {len(advanced)} advanced, {len(run_requests)} runs")
    return dg.SensorResult(
        run_requests=run_requests,
        dynamic_partitions_requests=[guidewire_tables.build_add_request(new_tables)] if new_tables else [],
        cursor=new_cursor,
    )


def build_cda_manifest_sensor(jobs: Sequence[dg.JobDefinition]) -> dg.SensorDefinition:
    """The sensor, targeting ``jobs`` (cda_sync_job, and guidewire_e2e_job for ``sensor_scope: full``)."""

    @dg.sensor(
        name="cda_manifest_sensor",
        minimum_interval_seconds=SENSOR_INTERVAL_SECONDS,
        default_status=dg.DefaultSensorStatus.RUNNING,
        jobs=list(jobs),
        description="Watches GW_MANIFEST_URI: new tables become partitions, advanced watermarks start sync runs.",
    )
    def cda_manifest_sensor(context: dg.SensorEvaluationContext, cda_source: CdaSource) -> dg.SensorResult | dg.SkipReason:
        return evaluate_manifest(context, cda_source)

    return cda_manifest_sensor
