"""Jobs of the raw layer.

- ``cda_raw_job``: the partitioned asset job, for per-table runs from the UI and for backfills.
- ``cda_sync_job``: any set of tables in one run, tables in parallel. Dagster cannot put an arbitrary
  set of dynamic partitions into one asset run (ranges must be contiguous), and a sensor's 300
  advanced tables out of 2,500 are scattered, so this op job takes the tables in its run config and
  records each table's result on that table's partition, with the same metadata and checks as the
  asset path (``recording.py``). The manifest sensor targets it; the CI job reuses its op.
"""

from dataclasses import dataclass

import dagster as dg
from pydantic import Field

from guidewire_pipeline.automation import raise_for_failures
from guidewire_pipeline.cda.delta_writer import TableSyncResult
from guidewire_pipeline.raw.assets import RAW_POOL
from guidewire_pipeline.raw.io_manager import RayDeltaIOManager
from guidewire_pipeline.raw.observability import checks_after_sync, sync_metadata
from guidewire_pipeline.raw.partitions import GUIDEWIRE_TABLES, RAW_ASSET_KEY
from guidewire_pipeline.raw.resources import CdaSource
from guidewire_pipeline.recording import CheckRecord, PartitionRecord, record

SYNC_OP = "sync_raw_tables"  # the sensor's run config names this op, in cda_sync_job and guidewire_job
CDA_SYNC_JOB = "cda_sync_job"

cda_raw_job = dg.define_asset_job(
    "cda_raw_job",
    selection=dg.AssetSelection.keys(RAW_ASSET_KEY),
    description="Load the selected table partitions of cda_raw (UI runs and backfills).",
)


class SyncConfig(dg.Config):
    tables: list[str] = Field(
        default_factory=list,
        description="Tables to sync. Empty: every table in the manifest, after the include and exclude lists.")


@dataclass
class RawSyncOutcome:
    """What one raw sync did, for the step after it (the medallion, in the CI job)."""

    requested: list[str]
    loaded: list[str]  # tables that committed new batches
    ok: list[str]  # loaded or already up to date
    failures: dict[str, str]  # table -> reason

    def failure_text(self) -> str:
        return "; ".join(f"{t}: {reason}" for t, reason in sorted(self.failures.items()))


def sync_raw(context: dg.OpExecutionContext, tables: list[str], cda_source: CdaSource,
             raw_io_manager: RayDeltaIOManager) -> RawSyncOutcome:
    """Sync ``tables`` (empty: every selected table), record each loaded table's materialization and
    checks on its partition, and return the outcome. Never raises for a table; a broken manifest entry
    fails its table unless the exclude list drops it."""
    manifest = cda_source.read_manifest()
    for warning in manifest.warnings:
        context.log.warning(f"Manifest {manifest.uri}: {warning}")
    tables = tables or cda_source.select(manifest, include_broken=True)
    for problem in manifest.problems:
        if problem.table in tables:
            context.log.error(f"Manifest problem, table not loaded: {problem}")
    entries = [manifest.entries[t] for t in tables if t in manifest.entries]

    known = set(context.instance.get_dynamic_partitions(GUIDEWIRE_TABLES))
    new_partitions = [e.table for e in entries if e.table not in known]
    if new_partitions:
        context.instance.add_dynamic_partitions(GUIDEWIRE_TABLES, new_partitions)
        context.log.info(f"Registered {len(new_partitions)} new table partitions")

    context.log.info(f"Syncing {len(entries)} tables from {manifest.uri}")
    results = raw_io_manager.sync(entries, log=context.log)
    record(context, [
        PartitionRecord(RAW_ASSET_KEY, r.table, "changed", sync_metadata(r), [
            CheckRecord(o.name, o.passed, o.description, o.metadata)
            for o in checks_after_sync(manifest.entries[r.table], r, cda_source.max_lag_minutes)])
        for r in results if r.status == "loaded"
    ])
    failures = {r.table: r.error or "failed" for r in results if not r.ok}
    for table in sorted(set(tables) - set(manifest.entries)):
        problems = manifest.problems_for(table)
        failures[table] = "; ".join(map(str, problems)) if problems else f"table {table!r} is not in the manifest"
    outcome = RawSyncOutcome(
        requested=list(tables),
        loaded=[r.table for r in results if r.status == "loaded"],
        ok=[r.table for r in results if r.ok],
        failures=failures,
    )
    context.add_output_metadata(_summary(results, len(tables), failures))
    return outcome


def _summary(results: list[TableSyncResult], tables: int, failures: dict[str, str]) -> dict:
    return {"tables": tables, "loaded": sum(1 for r in results if r.status == "loaded"),
            "up_to_date": sum(1 for r in results if r.status == "up_to_date"), "failed": len(failures),
            "rows_added": sum(r.rows_added for r in results)}


@dg.op(name=SYNC_OP, out=dg.Out(RawSyncOutcome), pool=RAW_POOL)
def sync_raw_tables(
    context: dg.OpExecutionContext, config: SyncConfig, cda_source: CdaSource,
    raw_io_manager: dg.ResourceParam[RayDeltaIOManager],
) -> RawSyncOutcome:
    """Sync the tables of the run config (default: all) into raw Delta; record each result on its
    partition. Table failures are carried in the outcome, so the step after it still runs for the others."""
    return sync_raw(context, config.tables, cda_source, raw_io_manager)


@dg.op(out=dg.Out(list[str], description="The tables that loaded new batches."))
def report_failed_tables(outcome: RawSyncOutcome) -> list[str]:
    """Fails the run naming every table that failed (the others are committed and recorded)."""
    raise_for_failures("the raw sync", outcome.failures, len(outcome.requested))
    return outcome.loaded


@dg.job(
    name=CDA_SYNC_JOB,
    description="Sync a set of CDA tables (run config `tables`; default: all) into raw Delta in one run, "
    "tables in parallel. The manifest sensor's target.",
    executor_def=dg.in_process_executor,  # one step: no subprocess to start
)
def cda_sync_job() -> None:
    report_failed_tables(sync_raw_tables())
