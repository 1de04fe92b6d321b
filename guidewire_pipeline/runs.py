"""Running a job from a terminal so that the Dagster UI shows it, and saying what happened in one line.

``dagster job execute`` records runs with no code location, so the UI's job page, Jobs list and
timeline never show them. ``execute_recorded`` creates the run with the origin of the workspace's
code location (``workspace.yaml``: module ``guidewire_pipeline.definitions``, location
``guidewire_pipeline``) and executes it in this process on the instance (``DAGSTER_HOME``), so the run
appears in the UI exactly like one launched there. ``summary`` is the last line a CI user reads.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import dagster as dg

from guidewire_pipeline.settings import Settings

MODULE = "guidewire_pipeline.definitions"
LOCATION = "guidewire_pipeline"  # workspace.yaml's location_name
REPOSITORY = "__repository__"  # the name Dagster gives the one Definitions of a module


@dataclass
class RunOutcome:
    run_id: str
    success: bool
    materialized: Counter  # asset (layer) -> partitions changed
    failure: str | None

    def summary(self, job_name: str) -> str:
        changed = ", ".join(f"{asset} {count}" for asset, count in sorted(self.materialized.items())) or "nothing"
        head = f"{job_name} {'succeeded' if self.success else 'FAILED'} (run {self.run_id[:8]}): changed {changed}"
        return head + (f". {self.failure}" if self.failure else ".")


def execute_recorded(job_name: str, instance: dg.DagsterInstance, run_config: dict[str, Any] | None = None,
                     tags: dict[str, str] | None = None) -> RunOutcome:
    """Execute ``job_name`` of this project's Definitions in this process, recorded on ``instance`` with
    the workspace code location's origin. Never raises for a failed run: the outcome says."""
    from dagster._core.definitions.reconstruct import ReconstructableRepository
    from dagster._core.execution.api import execute_run
    from dagster._core.remote_origin import (
        ManagedGrpcPythonEnvCodeLocationOrigin,
        RemoteJobOrigin,
        RemoteRepositoryOrigin,
    )
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin

    recon_job = ReconstructableRepository.for_module(MODULE, "defs", working_directory=os.getcwd()) \
        .get_reconstructable_job(job_name)
    location = ManagedGrpcPythonEnvCodeLocationOrigin(
        LoadableTargetOrigin(executable_path=sys.executable, module_name=MODULE, working_directory=os.getcwd()),
        location_name=LOCATION)
    run = instance.create_run_for_job(
        job_def=recon_job.get_definition(), run_config=run_config or {}, tags=tags or {},
        remote_job_origin=RemoteJobOrigin(RemoteRepositoryOrigin(location, REPOSITORY), job_name),
        job_code_origin=recon_job.get_python_origin())
    result = execute_run(recon_job, run, instance)
    materialized = Counter(
        event.asset_key.to_user_string() if event.asset_key.path[0] != "gold" else "gold"
        for event in (e.event_specific_data.materialization for e in result.all_events
                      if e.event_type_value == "ASSET_MATERIALIZATION"))
    failures = [re.sub(r"^[\w.]+(Error|Failure|Exception): ", "", e.event_specific_data.error.message.splitlines()[0])
                for e in result.all_events
                if e.event_type_value == "STEP_FAILURE" and e.event_specific_data and e.event_specific_data.error]
    return RunOutcome(run.run_id, result.success, materialized, failures[-1] if failures else None)


def quiet_console(run_config: dict[str, Any] | None = None, level: str = "INFO") -> dict[str, Any]:
    """Run config whose console log shows the pipeline's own lines (INFO and up), not Dagster's event
    bookkeeping (DEBUG)."""
    return {**(run_config or {}), "loggers": {"console": {"config": {"log_level": level}}}}


@contextlib.contextmanager
def cli_instance() -> Iterator[dg.DagsterInstance]:
    """The instance at ``DAGSTER_HOME`` (what the UI reads); without it, a throwaway one, said out loud."""
    home = os.environ.get("DAGSTER_HOME")
    if home:
        if not os.path.isdir(home):
            os.makedirs(home)
            print(f"Created DAGSTER_HOME={home} (a local instance with Dagster's defaults).", file=sys.stderr)
        with dg.DagsterInstance.get() as instance:
            yield instance
        return
    print("DAGSTER_HOME is not set: this run is not recorded for the UI (set it to the UI's instance folder).",
          file=sys.stderr)
    with dg.DagsterInstance.ephemeral() as instance:
        yield instance


def register(subparsers: argparse._SubParsersAction, settings: Settings) -> None:
    sync = subparsers.add_parser(
        "sync", help="sync tables into raw, then bronze, silver and the gold marts reading them, as one run "
        "recorded on the instance (the UI shows it); exits non-zero naming every failed table")
    sync.add_argument("tables", nargs="*", help="only these tables (default: every table the include and "
                      "exclude lists select)")
    sync.add_argument("--raw-only", action="store_true", help="only the raw sync (cda_sync_job)")
    sync.add_argument("--debug", action="store_true", help="show Dagster's DEBUG events too")
    sync.set_defaults(handler=run_sync)


def run_sync(args: argparse.Namespace) -> int:
    from guidewire_pipeline.pipeline import GUIDEWIRE_JOB
    from guidewire_pipeline.raw.jobs import CDA_SYNC_JOB, SYNC_OP

    job = CDA_SYNC_JOB if args.raw_only else GUIDEWIRE_JOB
    run_config = quiet_console({"ops": {SYNC_OP: {"config": {"tables": list(args.tables)}}}},
                               "DEBUG" if args.debug else "INFO")
    with cli_instance() as instance:
        outcome = execute_recorded(job, instance, run_config, tags={"guidewire/launched_by": "cli"})
    print(outcome.summary(job), flush=True)
    return 0 if outcome.success else 1
