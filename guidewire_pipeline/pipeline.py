"""``guidewire_job``: the whole data refresh headless, in one command for CI:
``dagster job execute -m guidewire_pipeline.definitions -j guidewire_job``.

Two steps, each the same op code the automation runs: the raw sync of every selected table
(``cda_sync_job``'s op), then the medallion for every table behind raw and the marts reading them
(``medallion_job``'s step). A failed table never stops the others; the last step fails the run
naming every failed table, so the command exits non-zero. Sharing is not part of the refresh: it
runs on its own schedule or on demand (``delta_sharing_job``).
"""

import dagster as dg

from guidewire_pipeline.automation import raise_for_failures
from guidewire_pipeline.medallion.defs import MEDALLION_POOL, medallion_for
from guidewire_pipeline.medallion.layers import describe_failures, failure_metadata
from guidewire_pipeline.medallion.runners.base import NotebookRunner
from guidewire_pipeline.raw.jobs import RawSyncOutcome, sync_raw_tables
from guidewire_pipeline.resources import LakehouseResource

GUIDEWIRE_JOB = "guidewire_job"


@dg.op(pool=MEDALLION_POOL)
def medallion_after_raw(context: dg.OpExecutionContext, raw: RawSyncOutcome, notebook_runner: NotebookRunner,
                        lakehouse: LakehouseResource) -> None:
    """The medallion for everything behind raw once the sync has run; then fail naming every table
    that failed in raw or in a medallion layer."""
    outcome, _ = medallion_for(context, [], notebook_runner, lakehouse)
    failures = {f"raw/{table}": reason for table, reason in raw.failures.items()} | outcome.failures
    raise_for_failures(f"the refresh (raw, then {describe_failures(outcome)})", failures, len(raw.requested),
                       failure_metadata(outcome))


@dg.job(
    name=GUIDEWIRE_JOB, executor_def=dg.in_process_executor,
    description="The whole refresh in one run (CI): raw sync (run config `tables`; default all), then "
    "bronze, silver and the gold marts for everything behind raw. Exits non-zero naming every failed table.",
)
def guidewire_job() -> None:
    medallion_after_raw(sync_raw_tables())
