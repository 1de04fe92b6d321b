"""The raw layer: one partition per CDA table, loaded by the Ray Delta I/O manager, and its checks.

- ``cda_raw``: the asset. Its body decides what to load (the manifest entries of the run's
  partitions); the I/O manager loads them. In the ``guidewire_raw`` pool with every run that writes raw.
- ``raw_checks``: the four checks of a table (caught up, record count, schema changes, lag), one step
  for all four and one read per partition. They run in the same process as the asset (the
  Definitions' executor is in-process), so a UI materialization of one table starts one process.
- Freshness: the asset is expected to be materialized at least every ``max_lag_minutes``; the
  ``lag_within_limit`` check measures it per table, against CDA's manifest.
"""

import datetime as dt
from collections.abc import Iterator

import dagster as dg

from guidewire_pipeline.raw.io_manager import RawLoadRequest, RayDeltaIOManager
from guidewire_pipeline.raw.observability import (
    CHECK_CAUGHT_UP,
    CHECK_LAG,
    CHECK_RECORD_COUNT,
    CHECK_SCHEMA,
    checks_from_storage,
)
from guidewire_pipeline.raw.partitions import RAW_ASSET_KEY, guidewire_tables
from guidewire_pipeline.raw.resources import CdaSource
from guidewire_pipeline.recording import CheckRecord, record_checks

RAW_IO_MANAGER_KEY = "raw_io_manager"
RAW_POOL = "guidewire_raw"  # every run that writes raw tables, whichever job or asset
MAX_PARTITIONS_PER_RUN = 50
OWNERS = ["team:data-engineering"]
CHECK_DESCRIPTIONS = {
    CHECK_CAUGHT_UP: "The loaded watermark has reached every committed CDA folder (WARN when behind).",
    CHECK_RECORD_COUNT: "Delta row count against the manifest's totalProcessedRecordsCount (WARN).",
    CHECK_SCHEMA: "Schema changes (fingerprints) seen and pending (WARN while one is pending).",
    CHECK_LAG: "Raw is at most GW_MAX_LAG_MINUTES behind CDA's manifest watermark (WARN).",
}


def build_raw_asset(max_lag_minutes: int) -> dg.AssetsDefinition:
    @dg.asset(
        key=RAW_ASSET_KEY,
        partitions_def=guidewire_tables,
        io_manager_key=RAW_IO_MANAGER_KEY,
        backfill_policy=dg.BackfillPolicy.multi_run(max_partitions_per_run=MAX_PARTITIONS_PER_RUN),
        group_name="raw",
        kinds={"deltalake", "ray"},
        owners=OWNERS,
        pool=RAW_POOL,
        freshness_policy=dg.FreshnessPolicy.time_window(fail_window=dt.timedelta(minutes=max_lag_minutes)),
        description="Raw CDA change rows, one Delta table per Guidewire table at <GW_DELTA_ROOT>/raw/<table> "
        "(<GW_UC_CATALOG>.raw.<table> with Databricks): every committed CDA batch up to the manifest "
        "watermark, exactly once, each row with its CDA folder (gw_batch_ts_ms, gw_fingerprint). Metadata "
        "per table is on each partition's materialization; this asset's column schema is that of the last "
        "table loaded.",
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

    return cda_raw


@dg.multi_asset_check(
    specs=[dg.AssetCheckSpec(name, asset=RAW_ASSET_KEY, partitions_def=guidewire_tables, description=description)
           for name, description in CHECK_DESCRIPTIONS.items()],
    can_subset=True,
    name="raw_checks",
)
def raw_checks(context: dg.AssetCheckExecutionContext, cda_source: CdaSource,
               raw_io_manager: dg.ResourceParam[RayDeltaIOManager]) -> Iterator[dg.AssetCheckResult]:
    """All four checks of each of the run's tables from one read of its log (and a listing only when
    it is behind), each evaluation tied to that table's latest materialization."""
    manifest = cda_source.read_manifest()
    selected = {key.name for key in context.selected_asset_check_keys}
    evaluations = []
    for table in context.partition_keys:
        entry = manifest.entries.get(table)
        if entry is None:
            reason = "; ".join(map(str, manifest.problems_for(table))) or f"{table!r} is not in the manifest"
            checks = [CheckRecord(name, False, f"Table {table!r} has no valid manifest entry: {reason}")
                      for name in selected]
        else:
            checks = [CheckRecord(o.name, o.passed, o.description, o.metadata)
                      for o in checks_from_storage(entry, raw_io_manager.delta_root, cda_source.max_lag_minutes)
                      if o.name in selected]
        evaluations.append((RAW_ASSET_KEY, table, checks))
    record_checks(context, evaluations)
    yield from ()
