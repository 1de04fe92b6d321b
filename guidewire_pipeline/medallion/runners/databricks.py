"""``DatabricksNotebookRunner``: one ``run_medallion`` call = ONE multi-task Databricks run.

Life cycle of one call:

1. upload: the three notebooks, the engine (``gw_medallion_engine.py``, a workspace file beside them)
   and the gold SQL files go to ``<workspace_folder>/<project version>-<content sha256[:12]>/``. The
   path depends on the content, so two deployments never run each other's code, and an unchanged
   deployment costs one ``get-status`` (the folder's ``_complete`` marker, written last);
2. submit: one ``jobs.submit`` with a task per requested layer, ``silver`` depending on ``bronze`` and
   ``gold`` on ``silver`` (``depends_on``); each notebook reads the ``request`` widget (JSON);
3. wait: poll ``jobs.get_run`` with back-off; every task state change is logged with its run page URL;
4. cleanup: if the Dagster step stops first (terminate, interrupt, any error), cancel the Databricks
   run and wait for it to end; then re-raise;
5. results: each task's ``dbutils.notebook.exit`` JSON read with ``jobs.get_run_output(<task run id>)``
   (``notebook_output.result``); a FAILED task's error and trace from the same call; a task skipped
   because an upstream task failed (UPSTREAM_FAILED) leaves its tables "skipped".

Why not Pipes across tasks: a Pipes session is one process reporting to one reader; a multi-task run
has three notebook processes and serverless cannot reach DBFS. The notebook's exit value is what the
Jobs API returns per task, on every compute, with no extra storage.

Storage access on Databricks goes through Unity Catalog (external locations): no ``AWS_*`` key is ever
passed to a job. Authentication: PAT or OAuth M2M service principal (``databricks_auth.py``), bound
from ``dg.EnvVar``s, so no secret reaches the UI, logs or metadata.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path, PurePosixPath
from typing import Any

import dagster as dg
from dagster._core.errors import raise_execution_interrupts
from dagster._utils.interrupts import capture_interrupts
from databricks.sdk import WorkspaceClient
from databricks.sdk.errors import DatabricksError, NotFound
from databricks.sdk.service import compute, jobs
from databricks.sdk.service.workspace import ImportFormat, Language
from pydantic import Field

from guidewire_pipeline.databricks_auth import DatabricksAuth
from guidewire_pipeline.medallion.runners.base import (
    ENGINE_FILE,
    GOLD_DIR,
    LAYER_ORDER,
    NOTEBOOKS,
    NOTEBOOKS_DIR,
    MedallionRequest,
    MedallionRun,
    NotebookRunner,
    TaskOutcome,
    assemble_results,
    parse_notebook_output,
)

TERMINAL_STATES = (
    jobs.RunLifeCycleState.TERMINATED,
    jobs.RunLifeCycleState.SKIPPED,
    jobs.RunLifeCycleState.INTERNAL_ERROR,
)
COMPLETE_MARKER = "_complete"


def _project_version() -> str:
    try:
        return version("guidewire-pipeline")
    except PackageNotFoundError:
        return "0.0.0"


def deployment_files() -> dict[str, tuple[str, bytes]]:
    """Relative workspace path -> (kind, content) of everything a run needs: notebooks ("notebook"),
    the engine and the gold SQL ("file"), in the same relative layout as in the package."""
    files: dict[str, tuple[str, bytes]] = {}
    for notebook in NOTEBOOKS.values():
        files[f"notebooks/{PurePosixPath(notebook).stem}"] = ("notebook", (NOTEBOOKS_DIR / notebook).read_bytes())
    files[f"notebooks/{ENGINE_FILE}"] = ("file", (NOTEBOOKS_DIR / ENGINE_FILE).read_bytes())
    for sql in sorted(Path(GOLD_DIR).glob("*.sql")):
        files[f"gold/{sql.name}"] = ("file", sql.read_bytes())
    return files


def deployment_folder(workspace_folder: str, files: dict[str, tuple[str, bytes]] | None = None) -> str:
    """``<workspace_folder>/<version>-<sha256 of every file's path and content, 12 digits>``."""
    digest = hashlib.sha256()
    for path, (kind, content) in sorted((files or deployment_files()).items()):
        digest.update(f"{path}\0{kind}\0".encode())
        digest.update(hashlib.sha256(content).digest())
    return str(PurePosixPath(workspace_folder) / f"{_project_version()}-{digest.hexdigest()[:12]}")


class DatabricksNotebookRunner(NotebookRunner):
    """Run the medallion as one multi-task Databricks run per call.

    Compute per task: ``existing_cluster_id``, or a ``new_cluster`` spec (the Jobs API dict), or neither
    for serverless. Build it with ``from_env()``: host and credentials come from ``DATABRICKS_HOST`` and
    ``DATABRICKS_TOKEN`` or ``DATABRICKS_CLIENT_ID``/``DATABRICKS_CLIENT_SECRET`` as ``dg.EnvVar``s.
    """

    host: str = Field(description="Workspace URL; bind dg.EnvVar('DATABRICKS_HOST').")
    token: str | None = Field(default=None, description="Personal access token; bind dg.EnvVar.")
    client_id: str | None = Field(default=None, description="Service principal application id; bind dg.EnvVar.")
    client_secret: str | None = Field(default=None, description="Service principal OAuth secret; bind dg.EnvVar.")
    workspace_folder: str = Field(
        default="/Shared/guidewire_pipeline",
        description="Parent folder of the deployments (<version>-<content hash>/ each).")
    existing_cluster_id: str | None = Field(default=None, description="Run every task on this cluster.")
    new_cluster: dict[str, Any] | None = Field(default=None, description="Jobs API new_cluster spec per task.")
    chunk_rows: int | None = Field(default=None, description="Rows per bronze/silver commit (engine default).")
    poll_interval_seconds: float = Field(default=5.0, description="First wait between two run-state polls.")
    max_poll_interval_seconds: float = Field(default=30.0, description="The poll interval doubles up to this.")
    cancel_timeout_seconds: float = Field(default=300.0, description="How long to wait for a cancelled run.")
    run_timeout_seconds: int = Field(default=0, description="Databricks ends the run after this long (0: never).")

    @classmethod
    def from_env(cls, **overrides: Any) -> DatabricksNotebookRunner:
        """Credentials as ``dg.EnvVar``s: the token when ``DATABRICKS_TOKEN`` is set, else the service principal."""
        import os

        credentials: dict[str, Any] = {"host": dg.EnvVar("DATABRICKS_HOST")}
        if os.environ.get("DATABRICKS_TOKEN"):
            credentials["token"] = dg.EnvVar("DATABRICKS_TOKEN")
        else:
            credentials.update(client_id=dg.EnvVar("DATABRICKS_CLIENT_ID"),
                               client_secret=dg.EnvVar("DATABRICKS_CLIENT_SECRET"))
        return cls(**credentials, **overrides)

    # ----------------------------------------------------------------- public

    def workspace_client(self) -> WorkspaceClient:
        return DatabricksAuth(host=self.host, token=self.token or None, client_id=self.client_id or None,
                              client_secret=self.client_secret or None).workspace_client()

    def upload(self, client: WorkspaceClient) -> tuple[str, bool]:
        """Upload the deployment unless its content-addressed folder is complete; ``(folder, uploaded)``."""
        files = deployment_files()
        folder = deployment_folder(self.workspace_folder, files)
        try:
            client.workspace.get_status(f"{folder}/{COMPLETE_MARKER}")
            return folder, False
        except NotFound:
            pass
        for directory in sorted({str(PurePosixPath(folder) / PurePosixPath(p).parent) for p in files}):
            client.workspace.mkdirs(directory)
        for path, (kind, content) in sorted(files.items()):
            encoded = base64.b64encode(content).decode("ascii")
            if kind == "notebook":
                client.workspace.import_(f"{folder}/{path}", content=encoded, format=ImportFormat.SOURCE,
                                         language=Language.PYTHON, overwrite=True)
            else:
                client.workspace.import_(f"{folder}/{path}", content=encoded, format=ImportFormat.AUTO,
                                         overwrite=True)
        marker = base64.b64encode(json.dumps(sorted(files)).encode()).decode("ascii")
        client.workspace.import_(f"{folder}/{COMPLETE_MARKER}", content=marker, format=ImportFormat.AUTO,
                                 overwrite=True)
        return folder, True

    def tasks(self, folder: str, request: MedallionRequest) -> list[jobs.SubmitTask]:
        """One notebook task per requested layer, each depending on the layer before it."""
        parameters = {"request": json.dumps(request.payload(self.chunk_rows))}
        layers = [layer for layer in LAYER_ORDER if layer in request.layers]
        tasks = []
        for index, layer in enumerate(layers):
            task = jobs.SubmitTask(
                task_key=layer,
                notebook_task=jobs.NotebookTask(
                    notebook_path=f"{folder}/notebooks/{PurePosixPath(NOTEBOOKS[layer]).stem}",
                    base_parameters=parameters, source=jobs.Source.WORKSPACE),
                depends_on=[jobs.TaskDependency(task_key=layers[index - 1])] if index else None,
            )
            if self.existing_cluster_id:
                task.existing_cluster_id = self.existing_cluster_id
            elif self.new_cluster:
                task.new_cluster = compute.ClusterSpec.from_dict(self.new_cluster)
            tasks.append(task)
        return tasks

    def run_medallion(
        self, context: dg.OpExecutionContext | dg.AssetExecutionContext, request: MedallionRequest
    ) -> MedallionRun:
        """Upload if needed, submit one multi-task run, wait, and return every table's result (see
        ``runners/base.py``). Raises ``dagster.Failure`` only when nothing could run: contradictory
        compute settings, a refused upload or a refused submit. Cancels the run if this step stops first."""
        if self.existing_cluster_id and self.new_cluster:
            raise dg.Failure(description="DatabricksNotebookRunner: set existing_cluster_id or new_cluster, not both.")
        client = self.workspace_client()
        try:
            folder, uploaded = self.upload(client)
        except DatabricksError as error:
            raise dg.Failure(description=(
                f"Could not upload the medallion notebooks to {self.workspace_folder} ({error.error_code}: {error}). "
                "Check workspace_folder and that this identity may write there.")) from error
        context.log.info(f"Medallion deployment {folder}: {'uploaded' if uploaded else 'unchanged, not uploaded'}")
        tasks = self.tasks(folder, request)
        with self._cancel_on_exit(context, client) as submitted:
            with capture_interrupts():  # an interrupt during the submit waits for the run id, to cancel it
                try:
                    run_id = client.jobs.submit(
                        run_name=f"guidewire_pipeline medallion (dagster run {context.run_id[:8]})",
                        tasks=tasks,
                        idempotency_token=uuid.uuid4().hex,  # the SDK's retries cannot start a second run
                        timeout_seconds=self.run_timeout_seconds or None,
                    ).bind()["run_id"]
                except DatabricksError as error:
                    raise dg.Failure(description=(
                        f"Databricks refused the medallion run ({error.error_code}: {error}). "
                        "Check existing_cluster_id / new_cluster and the workspace's compute policies.")) from error
                submitted["run_id"] = run_id
                with raise_execution_interrupts():
                    pass  # raises here an interrupt captured during the submit
            run = self._wait_until_terminal(context, client, run_id)
            submitted["terminal"] = True
        outcomes, run_metadata = self._outcomes(context, client, run, request)
        run_metadata.update(databricks_deployment=folder, notebooks_uploaded=uploaded)
        return MedallionRun(results=assemble_results(request, outcomes), run_metadata=run_metadata)

    # ----------------------------------------------------------------- wait and cancel

    def _wait_until_terminal(self, context: dg.OpExecutionContext | dg.AssetExecutionContext,
                             client: WorkspaceClient, run_id: int, deadline: float | None = None) -> jobs.Run:
        interval = self.poll_interval_seconds
        seen: dict[str, str] = {}
        while True:
            run = client.jobs.get_run(run_id)
            for item in [run, *(run.tasks or [])]:
                key = getattr(item, "task_key", None) or "run"
                state = _state_text(item.state)
                if seen.get(key) != state:
                    seen[key] = state
                    what = f"Databricks run {run_id}" if key == "run" else f"task {key}"
                    context.log.info(f"{what}: {state} {item.run_page_url or ''}".rstrip())
            life_cycle = run.state.life_cycle_state if run.state else None
            if life_cycle in TERMINAL_STATES:
                return run
            if deadline is not None and time.monotonic() + interval > deadline:
                raise TimeoutError(f"Databricks run {run_id} did not end in time; see {run.run_page_url}")
            time.sleep(interval)
            interval = min(interval * 2, self.max_poll_interval_seconds)

    @contextmanager
    def _cancel_on_exit(self, context: dg.OpExecutionContext | dg.AssetExecutionContext,
                        client: WorkspaceClient) -> Iterator[dict[str, Any]]:
        """Yield a dict the caller fills with ``run_id`` and ``terminal``; cancel a live run on any exit by error."""
        submitted: dict[str, Any] = {}
        try:
            yield submitted
        except BaseException:
            run_id = submitted.get("run_id")
            if run_id is not None and not submitted.get("terminal"):
                context.log.warning(f"Step stopped: cancelling Databricks run {run_id}.")
                try:
                    client.jobs.cancel_run(run_id)
                    run = self._wait_until_terminal(context, client, run_id,
                                                    deadline=time.monotonic() + self.cancel_timeout_seconds)
                    context.log.warning(f"Databricks run {run_id} ended {_state_text(run.state)}.")
                except (DatabricksError, TimeoutError, OSError) as error:
                    context.log.error(f"Could not confirm that Databricks run {run_id} was cancelled ({error}); "
                                      "cancel it from its run page.")
            raise

    # ----------------------------------------------------------------- results

    def _outcomes(self, context: dg.OpExecutionContext | dg.AssetExecutionContext, client: WorkspaceClient,
                  run: jobs.Run, request: MedallionRequest) -> tuple[dict[str, TaskOutcome], dict[str, Any]]:
        metadata: dict[str, Any] = {"runner": "databricks", "databricks_run_id": run.run_id,
                                    "databricks_run_state": _state_text(run.state)}
        if run.run_page_url:
            metadata["databricks_run_url"] = run.run_page_url
        if run.state and run.state.state_message:
            metadata["databricks_state_message"] = run.state.state_message
        outcomes: dict[str, TaskOutcome] = {}
        for task in run.tasks or []:
            layer = str(task.task_key)
            result = task.state.result_state if task.state else None
            task_metadata = {f"{layer}_task_state": _state_text(task.state)}
            if task.run_page_url:
                task_metadata[f"{layer}_task_run_url"] = task.run_page_url
            metadata.update(task_metadata)
            if result == jobs.RunResultState.SUCCESS and task.run_id is not None:
                try:
                    output = client.jobs.get_run_output(task.run_id)  # the TASK run id; the parent's is refused
                    results = parse_notebook_output(
                        layer, output.notebook_output.result if output.notebook_output else None)
                    outcomes[layer] = TaskOutcome(layer, "ok", results)
                except (DatabricksError, ValueError) as error:
                    outcomes[layer] = TaskOutcome(layer, "failed", error=f"its output could not be read: {error}")
            elif result in (jobs.RunResultState.UPSTREAM_FAILED, jobs.RunResultState.UPSTREAM_CANCELED, None):
                outcomes[layer] = TaskOutcome(layer, "not_run")
            else:
                outcomes[layer] = TaskOutcome(layer, "failed", error=self._task_error(client, task))
        failed = [layer for layer in LAYER_ORDER if layer in outcomes and outcomes[layer].status == "failed"]
        if failed:
            metadata["failed_task"] = failed[0]
            metadata["failed_task_error"] = outcomes[failed[0]].error
            context.log.error(f"Databricks task {failed[0]} failed: {outcomes[failed[0]].error}")
        return outcomes, metadata

    @staticmethod
    def _task_error(client: WorkspaceClient, task: jobs.RunTask) -> str:
        state = task.state
        parts = [f"{_state_text(state)}: {(state.state_message if state else None) or 'no state message'}"]
        if task.run_id is not None:
            try:
                output = client.jobs.get_run_output(task.run_id)
                if output.error:
                    parts.append(f"notebook error: {output.error}")
                if output.error_trace:
                    parts.append(f"trace (end): {output.error_trace[-1500:]}")
            except DatabricksError as error:
                parts.append(f"its output could not be read ({error})")
        if task.run_page_url:
            parts.append(f"task run page: {task.run_page_url}")
        return "; ".join(parts)


def _state_text(state: jobs.RunState | None) -> str:
    if state is None:
        return "no state"
    life_cycle = state.life_cycle_state.value if state.life_cycle_state else "UNKNOWN"
    return f"{life_cycle}/{state.result_state.value}" if state.result_state else life_cycle
