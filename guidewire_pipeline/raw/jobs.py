"""Jobs of the raw layer.

- ``cda_raw_job``: the partitioned asset job, for per-table runs from the UI and for backfills.
- ``cda_sync_job``: any set of tables in one run, tables in parallel on Ray. Dagster cannot put an
  arbitrary set of dynamic partitions into one asset run (ranges must be contiguous), so this op
  job takes the tables in its run config and records each table's result as a materialization of
  that table's partition, with the same metadata as the asset path.
"""


from dataclasses import dataclass

import dagster as dg
from pydantic import Field

from guidewire_pipeline.raw.io_manager import RayDeltaIOManager
from guidewire_pipeline.raw.observability import checks_after_sync, sync_metadata
from guidewire_pipeline.raw.partitions import GUIDEWIRE_TABLES, RAW_ASSET_KEY
from guidewire_pipeline.raw.resources import CdaSource

SYNC_OP = "sync_raw_tables"  # the sensor's run config names this op, in cda_sync_job and guidewire_e2e_job

cda_raw_job = dg.define_asset_job(
    "cda_raw_job",
    selection=dg.AssetSelection.keys(RAW_ASSET_KEY),
    description="Load the selected table partitions of cda_raw (UI runs and backfills).",
    tags={"guidewire/job": "cda_raw"},
)


class SyncConfig(dg.Config):
    tables: list[str] = Field(
        default_factory=list,
        description="Tables to sync. Empty: every table in the manifest, after the include and exclude lists.")


@dataclass
class RawSyncOutcome:
    """What one raw sync did, for the ops that run after it."""

    requested: list[str]
    loaded: list[str]  # tables that committed new batches
    ok: list[str]  # loaded or already up to date
    failures: dict[str, str]  # table -> reason

    def failure_text(self) -> str:
        return "; ".join(f"{t}: {reason}" for t, reason in sorted(self.failures.items()))


def sync_raw(
    context: dg.OpExecutionContext, tables: list[str], cda_source: CdaSource, raw_io_manager: RayDeltaIOManager
) -> RawSyncOutcome:
    """Sync ``tables`` (empty: every selected table) and record each loaded table's materialization and
    checks on its partition. Never raises for a table; failures are in the outcome."""
    manifest = cda_source.read_manifest()
    for warning in manifest.warnings:
        context.log.warning(f"Manifest {manifest.uri}: {warning}")
    # A broken entry fails its table (the run then fails, naming it), unless the exclude list drops it.
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
    for result in results:
        if result.status == "loaded":
            context.log_event(dg.AssetMaterialization(
                asset_key=RAW_ASSET_KEY, partition=result.table, metadata=sync_metadata(result)))
            for outcome in checks_after_sync(manifest.entries[result.table], raw_io_manager.delta_root, result):
                context.log_event(dg.AssetCheckEvaluation(
                    asset_key=RAW_ASSET_KEY, check_name=outcome.name, passed=outcome.passed,
                    severity=dg.AssetCheckSeverity.WARN, description=outcome.description,
                    metadata=outcome.metadata, partition=result.table))

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
    context.add_output_metadata({
        "tables": len(tables), "loaded": len(outcome.loaded), "failed": len(failures),
        "rows_added": sum(r.rows_added for r in results),
        "up_to_date": sum(1 for r in results if r.status == "up_to_date"),
    })
    return outcome


@dg.op(name=SYNC_OP, out=dg.Out(RawSyncOutcome))
def sync_raw_tables(
    context: dg.OpExecutionContext, config: SyncConfig, cda_source: CdaSource,
    raw_io_manager: dg.ResourceParam[RayDeltaIOManager],
) -> RawSyncOutcome:
    """Sync the configured tables into raw Delta, recording each table's result on its partition.
    Table failures are carried in the outcome, so the steps after it still run for the others."""
    return sync_raw(context, config.tables, cda_source, raw_io_manager)


@dg.op(out=dg.Out(list[str], description="The tables that loaded new batches."))
def report_failed_tables(outcome: RawSyncOutcome) -> list[str]:
    """Fails the run naming every table that failed (the others are committed and recorded)."""
    if outcome.failures:
        raise dg.Failure(
            description=f"{len(outcome.failures)} of {len(outcome.requested)} tables failed (the others are "
            f"committed): {outcome.failure_text()}",
            metadata={"failed_tables": dg.MetadataValue.json(sorted(outcome.failures))},
        )
    return outcome.loaded


@dg.job(
    description="Sync a set of CDA tables (run config `tables`; default: all) into raw Delta in one run, "
    "tables in parallel on Ray. Used by the manifest sensor and by `dagster job execute` in CI.",
    tags={"guidewire/job": "cda_sync"},
    executor_def=dg.in_process_executor,  # one step: no subprocess to start
)
def cda_sync_job() -> None:
    report_failed_tables(sync_raw_tables())
