"""Dagster side of maintenance: ``maintenance_job`` (compaction and VACUUM of every layer, see
maintenance.py) and ``maintenance_schedule``, off by default (turn it on in the UI, Automation), on
``GW_MAINTENANCE_CRON`` (default Sundays 03:00 UTC)."""

import os

import dagster as dg
from pydantic import Field

from guidewire_pipeline.automation import raise_for_failures
from guidewire_pipeline.maintenance import DEFAULT_RETENTION_HOURS, MAINTAINED_LAYERS, maintain
from guidewire_pipeline.resources import LakehouseResource

DEFAULT_MAINTENANCE_CRON = "0 3 * * 0"


class MaintenanceConfig(dg.Config):
    layers: list[str] = Field(default_factory=lambda: list(MAINTAINED_LAYERS), description="Layers to maintain.")
    retention_hours: int = Field(default=DEFAULT_RETENTION_HOURS, description="VACUUM keeps files any version of "
                                 "the last N hours needs (raw also keeps what bronze has not read).")
    dry_run: bool = Field(default=False, description="Say what would be removed; change nothing.")


@dg.op(pool="guidewire_medallion")
def maintain_lakehouse(context: dg.OpExecutionContext, config: MaintenanceConfig, lakehouse: LakehouseResource) -> None:
    """Compact and vacuum every table of the configured layers; fail naming the tables that failed."""
    results = maintain(lakehouse.layout(), config.layers, retention_hours=config.retention_hours,
                       dry_run=config.dry_run, progress=context.log.info)
    context.add_output_metadata({"tables": len(results), "files_vacuumed": sum(r.vacuumed_files for r in results),
                                 "small_files_compacted": sum(r.compacted_files for r in results)})
    raise_for_failures("maintenance", {f"{r.layer}/{r.table}": r.error for r in results if r.error}, len(results))


@dg.job(executor_def=dg.in_process_executor,
        description="Compact and vacuum bronze, silver and gold; vacuum raw, keeping what bronze has not read "
        "(shallow raw tables are never vacuumed).")
def maintenance_job() -> None:
    maintain_lakehouse()


maintenance_schedule = dg.ScheduleDefinition(
    name="maintenance_schedule", job=maintenance_job,
    cron_schedule=os.environ.get("GW_MAINTENANCE_CRON") or DEFAULT_MAINTENANCE_CRON,
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Weekly compaction and VACUUM of the lakehouse. Off by default: turn it on in the UI (Automation).",
)

defs = dg.Definitions(jobs=[maintenance_job], schedules=[maintenance_schedule])
