"""The whole path in one run, and the sensor that starts it.

``guidewire_e2e_job``: raw sync for every table (or the tables in its run config), then bronze and
silver for them (one notebook run per layer for all tables), then the gold marts whose silver
inputs changed, then the Delta Sharing step. Every table's result is recorded on its partition at
every layer. A failed table never stops the others: each step carries the failures forward and the
last step fails the run naming all of them, so ``dagster job execute`` exits non-zero.

``cda_manifest_sensor`` targets ``cda_sync_job`` (raw only) or this job (``sensor_scope: full``),
with the advanced tables in the run config: a tick never fans out into a run per table.
"""

from dataclasses import dataclass, field

import dagster as dg

from guidewire_pipeline.medallion.layers import run_bronze_silver, run_gold
from guidewire_pipeline.medallion.marts import load_marts
from guidewire_pipeline.medallion.runners.base import NotebookRunner
from guidewire_pipeline.raw.jobs import RawSyncOutcome, cda_sync_job, sync_raw_tables
from guidewire_pipeline.raw.sensors import build_cda_manifest_sensor
from guidewire_pipeline.settings import Settings
from guidewire_pipeline.sharing.assets import DeltaSharingResource, provision_shares


@dataclass
class PathOutcome:
    """Carried from step to step: the tables still fine, the ones that changed, and every failure."""

    tables: list[str]
    changed: list[str]
    failures: dict[str, str] = field(default_factory=dict)  # "<layer> <table>" -> reason
    rows: dict[str, int] = field(default_factory=dict)  # per-layer figures for the summary


def build_e2e_job(settings: Settings) -> dg.JobDefinition:
    @dg.op(out=dg.Out(PathOutcome))
    def bronze_and_silver(context: dg.OpExecutionContext, raw: RawSyncOutcome,
                          notebook_runner: NotebookRunner) -> PathOutcome:
        """Bronze for every table the raw step left fine, then silver for those bronze did not fail."""
        bronze, silver = run_bronze_silver(context, notebook_runner, settings, raw.ok, raise_on_failure=False)
        failures = {f"raw {t}": reason for t, reason in raw.failures.items()}
        for report in (bronze, silver):
            failures.update({f"{report.layer} {r.table}": r.reason or "failed"
                             for r in report.results if r.status == "failed"})
        changed = [r.table for r in silver.results if r.status == "changed"]
        tables = [t for t in silver.succeeded if t not in bronze.failed]
        return PathOutcome(tables=tables, changed=changed, failures=failures)

    @dg.op(out=dg.Out(PathOutcome))
    def gold_marts(context: dg.OpExecutionContext, outcome: PathOutcome,
                   notebook_runner: NotebookRunner) -> PathOutcome:
        """The gold marts that read a silver table changed by this run (all of them, one notebook run)."""
        changed = set(outcome.changed)
        marts = [m.name for m in load_marts().values() if changed & set(m.inputs)]
        failures = dict(outcome.failures)
        if not marts:
            context.log.info("No silver input of any gold mart changed: gold is skipped.")
            return outcome
        try:
            run_gold(context, notebook_runner, settings, marts)
        except dg.Failure as failure:  # successes are recorded already; carry the failure to the end
            failures[f"gold {', '.join(marts)}"] = failure.description or "failed"
        return PathOutcome(tables=outcome.tables, changed=outcome.changed, failures=failures)

    @dg.op
    def delta_sharing(context: dg.OpExecutionContext, outcome: PathOutcome,
                      delta_sharing: DeltaSharingResource) -> None:
        """Apply the share pack (a dry run when no workspace is configured), then fail the run if
        anything failed anywhere on the path, naming every failure."""
        failures = dict(outcome.failures)
        try:
            result = provision_shares(context, delta_sharing, settings, apply=True)
            failures.update({f"sharing {r.action.describe()}": r.message for r in result.failed})
        except Exception as exc:  # an invalid pack: named, and the tables above stay loaded
            failures["sharing"] = str(exc)
        if failures:
            raise dg.Failure(
                description=f"{len(failures)} failure(s) on the path: "
                + "; ".join(f"{where}: {why}" for where, why in sorted(failures.items())),
                metadata={"failures": dg.MetadataValue.json(failures)},
            )

    @dg.job(
        name="guidewire_e2e_job",
        description="Raw sync (run config `tables`; default: all), bronze and silver for those tables, the gold "
        "marts whose inputs changed, then Delta Sharing. Exits non-zero if anything failed.",
        tags={"guidewire/job": "e2e"},
        executor_def=dg.in_process_executor,  # a chain of steps: one process, one Ray start
    )
    def guidewire_e2e_job() -> None:
        delta_sharing(gold_marts(bronze_and_silver(sync_raw_tables())))

    return guidewire_e2e_job


def build_defs(settings: Settings) -> dg.Definitions:
    e2e_job = build_e2e_job(settings)
    return dg.Definitions(jobs=[e2e_job], sensors=[build_cda_manifest_sensor([cda_sync_job, e2e_job])])
