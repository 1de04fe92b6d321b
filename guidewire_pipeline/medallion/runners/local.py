"""``LocalNotebookRunner``: the whole medallion of one call in one local process, on Sail.

``run_medallion`` starts ``local_host.py`` through Dagster Pipes: one process, one Sail start, the
notebooks of the requested layers executed in order with ``spark`` bound, exactly the code the
Databricks tasks run. The engine's log lines stream into the Dagster run (``pipes.log``); stdout and
stderr go to the step's compute logs. The process inherits this environment (so ``AWS_*`` reach Sail
and delta-rs without passing secrets as parameters). Terminating the step kills the process.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any

import dagster as dg
from dagster._core.pipes.utils import (
    PipesTempFileContextInjector,
    PipesTempFileMessageReader,
    open_pipes_session,
)

from guidewire_pipeline.medallion.runners.base import (
    MedallionRequest,
    MedallionRun,
    NotebookRunner,
    TaskOutcome,
    assemble_results,
    parse_notebook_output,
)


class LocalNotebookRunner(NotebookRunner):
    """Run the medallion on this machine with this virtualenv's Python unless ``python_executable`` is set."""

    python_executable: str | None = None
    chunk_rows: int | None = None  # rows per bronze/silver commit; None: the engine's default

    def run_medallion(
        self, context: dg.OpExecutionContext | dg.AssetExecutionContext, request: MedallionRequest
    ) -> MedallionRun:
        """One local process for every layer of ``request`` (see ``runners/base.py`` for the semantics).
        A process that dies (killed, crashed) fails the task it was running; nothing is raised for it."""

        started = time.monotonic()
        command = [self.python_executable or sys.executable, "-m", "guidewire_pipeline.medallion.runners.local_host"]
        # Pipes is only this runner's transport for logs and results; the caller records every table on
        # its partition itself, so the step must not be held to Pipes' one-result-per-output rule.
        step = getattr(context, "op_execution_context", context)._step_execution_context  # noqa: SLF001
        typed_event_stream = step.requires_typed_event_stream
        try:
            return self._run(context, request, command, started)
        finally:
            step._requires_typed_event_stream = typed_event_stream  # noqa: SLF001

    def _run(self, context: dg.OpExecutionContext | dg.AssetExecutionContext, request: MedallionRequest,
             command: list[str], started: float) -> MedallionRun:
        import json

        with open_pipes_session(
            context=context,
            context_injector=PipesTempFileContextInjector(),
            message_reader=PipesTempFileMessageReader(),
            extras={"request": json.dumps(request.payload(self.chunk_rows))},
        ) as session:
            process = subprocess.Popen(command, env={**os.environ, **session.get_bootstrap_env_vars()})
            try:
                returncode = process.wait()
            except BaseException:  # step terminated: the process must not outlive it
                process.terminate()
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
                raise
        outcomes = _outcomes(request, session.get_custom_messages(), returncode)
        run_metadata: dict[str, Any] = {"runner": "local", "engine": "sail", "process_exit_code": returncode,
                                        "seconds": round(time.monotonic() - started, 3)}
        failed = [o.layer for o in outcomes.values() if o.status == "failed"]
        if failed:
            run_metadata["failed_task"] = failed[0]
            run_metadata["failed_task_error"] = outcomes[failed[0]].error
        return MedallionRun(results=assemble_results(request, outcomes), run_metadata=run_metadata)


def _outcomes(request: MedallionRequest, messages: list[Any], returncode: int) -> dict[str, TaskOutcome]:
    outcomes: dict[str, TaskOutcome] = {}
    for message in messages:
        if not isinstance(message, dict) or "task" not in message:
            continue
        layer = str(message["task"])
        if message.get("status") == "ok":
            try:
                outcomes[layer] = TaskOutcome(layer, "ok", parse_notebook_output(layer, message.get("output")))
            except ValueError as error:
                outcomes[layer] = TaskOutcome(layer, "failed", error=str(error))
        else:
            outcomes[layer] = TaskOutcome(layer, "failed", error=str(message.get("error")))
    # The task that was running when the process died without reporting.
    for layer in request.payload()["layers"]:
        if layer in outcomes:
            if outcomes[layer].status == "failed":
                break
            continue
        if returncode != 0:
            outcomes[layer] = TaskOutcome(
                layer, "failed", error=f"the local medallion process exited with code {returncode} while "
                "running this task; its output is in this step's stderr")
        break
    return outcomes
