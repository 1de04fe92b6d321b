"""The raw layer: one partition per CDA table, loaded by the Ray Delta I/O manager; its checks."""


import dagster as dg

from guidewire_pipeline.cda.raw_table import read_table_state
from guidewire_pipeline.cda.sync import raw_table_location
from guidewire_pipeline.raw.io_manager import RawLoadRequest, RayDeltaIOManager
from guidewire_pipeline.raw.observability import (
    CHECK_CAUGHT_UP,
    CHECK_RECORD_COUNT,
    CHECK_SCHEMA,
    evaluate_checks,
)
from guidewire_pipeline.raw.partitions import RAW_ASSET_KEY, guidewire_tables
from guidewire_pipeline.raw.resources import CdaSource

RAW_IO_MANAGER_KEY = "raw_io_manager"
MAX_PARTITIONS_PER_RUN = 50


@dg.asset(
    key=RAW_ASSET_KEY,
    partitions_def=guidewire_tables,
    io_manager_key=RAW_IO_MANAGER_KEY,
    backfill_policy=dg.BackfillPolicy.multi_run(max_partitions_per_run=MAX_PARTITIONS_PER_RUN),
    group_name="raw",
    kinds={"delta", "ray"},
    description="Raw CDA change rows, one Delta table per Guidewire table at <GW_DELTA_ROOT>/raw/<table>: "
    "every committed CDA batch up to the manifest watermark, exactly once, one Delta commit per batch.",
)
def cda_raw(context: dg.AssetExecutionContext, cda_source: CdaSource) -> RawLoadRequest:
    """Decides what to load: the manifest entries of this run's partitions."""
    manifest = cda_source.read_manifest()
    request = RawLoadRequest(entries={})
    for table in context.partition_keys:
        entry = manifest.entries.get(table)
        if entry is not None:
            request.entries[table] = entry
            continue
        problems = manifest.problems_for(table)
        request.problems[table] = (
            "; ".join(str(p) for p in problems) if problems
            else f"table {table!r} is not in the manifest {manifest.uri}; remove the partition or fix GW_MANIFEST_URI."
        )
    context.log.info(f"{len(request.entries)} tables to sync from {manifest.uri}")
    return request


def _check(name: str, description: str) -> dg.AssetChecksDefinition:
    @dg.asset_check(asset=RAW_ASSET_KEY, name=name, partitions_def=guidewire_tables, description=description,
                    blocking=False)
    def _raw_check(context: dg.AssetCheckExecutionContext, cda_source: CdaSource,
                   raw_io_manager: dg.ResourceParam[RayDeltaIOManager]) -> dg.AssetCheckResult:
        table = context.partition_key
        entry = cda_source.read_manifest().entries.get(table)
        if entry is None:
            return dg.AssetCheckResult(passed=False, severity=dg.AssetCheckSeverity.WARN,
                                       description=f"Table {table!r} has no valid manifest entry.")
        state = read_table_state(raw_table_location(raw_io_manager.delta_root, table))
        outcome = next(o for o in evaluate_checks(entry, raw_io_manager.delta_root, state) if o.name == name)
        return dg.AssetCheckResult(passed=outcome.passed, severity=dg.AssetCheckSeverity.WARN,
                                   description=outcome.description, metadata=outcome.metadata)

    return _raw_check


raw_checks = [
    _check(CHECK_CAUGHT_UP, "The loaded watermark has reached every committed CDA folder (WARN when behind)."),
    _check(CHECK_RECORD_COUNT, "Delta row count against the manifest's totalProcessedRecordsCount (WARN)."),
    _check(CHECK_SCHEMA, "Schema changes (fingerprints) seen and pending."),
]
