"""``DatabricksNotebookRunner``: runs a notebook as a one-time Databricks job run, through Dagster Pipes.

Life cycle of one ``run_notebook`` call:

1. upload: the notebook goes to ``<workspace_folder>/<name without .py>`` with ``workspace.import_``,
   only when its content changed (see ``upload_notebook``);
2. submit: one ``jobs.submit`` run with a single ``notebook_task``; the caller's parameters and the
   Pipes bootstrap values (``DAGSTER_PIPES_CONTEXT``, ``DAGSTER_PIPES_MESSAGES``) are its
   ``base_parameters``, i.e. notebook widgets, whatever the compute;
3. wait: poll ``jobs.get_run`` with back-off until the run is terminal;
4. cleanup: if the Dagster step stops first (run terminated, interrupt, any error), cancel the
   Databricks run and wait for it to end; then re-raise;
5. report: Pipes custom messages become ``NotebookRun.table_results``; a run that did not succeed
   raises ``dagster.Failure`` with Databricks' ``state_message`` and the notebook's error, read with
   ``jobs.get_run_output`` on the TASK run id.

Pipes transport: DBFS (``PipesDbfsContextInjector`` / ``PipesDbfsMessageReader``) on clusters, or
a Unity Catalog volume (``pipes_volume_path``), which serverless compute requires. The notebook side
(the shim cell of every notebook) must read the bootstrap values from widgets
(``PipesDatabricksNotebookWidgetsParamsLoader(dbutils.widgets)``) and open the DBFS paths it is given
under ``/dbfs`` (or ``$GW_DBFS_MOUNT``), and ``/Volumes/...`` paths as they are (or under ``$GW_VOLUMES_MOUNT``).

Why not ``PipesDatabricksClient.run`` (dagster-databricks 0.29.27): after cancelling on an
interruption it swallows the interruption and returns as if the run had succeeded; it cancels only on
``DagsterExecutionInterruptedError``; it polls at a fixed interval; without ``existing_cluster_id`` it
puts the bootstrap values in ``new_cluster.spark_env_vars`` (a notebook reads widgets) and it cannot
do serverless. Its context injectors and message readers are used as they are.
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from importlib.metadata import version
from pathlib import Path, PurePosixPath
from typing import Any

import dagster as dg
from dagster._core.errors import raise_execution_interrupts
from dagster._core.pipes.client import PipesContextInjector, PipesMessageReader
from dagster._core.pipes.utils import open_pipes_session
from dagster._utils.interrupts import capture_interrupts
from dagster_databricks.pipes import (
    PipesDbfsContextInjector,
    PipesDbfsMessageReader,
    PipesUnityCatalogVolumesContextInjector,
    PipesUnityCatalogVolumesMessageReader,
)
from databricks.sdk import WorkspaceClient
from databricks.sdk.config import Config
from databricks.sdk.errors import DatabricksError, NotFound
from databricks.sdk.service import compute, jobs
from databricks.sdk.service.workspace import ExportFormat, ImportFormat, Language
from pydantic import Field

from guidewire_pipeline.medallion.runners.base import NOTEBOOKS_DIR, NotebookRun, NotebookRunner

# A comment cell appended to the uploaded notebook; it survives Databricks' re-rendering of the source.
CONTENT_HASH_MARKER = "# guidewire_pipeline notebook sha256: "
TERMINAL_STATES = (
    jobs.RunLifeCycleState.TERMINATED,
    jobs.RunLifeCycleState.SKIPPED,
    jobs.RunLifeCycleState.INTERNAL_ERROR,
)
# Same versions on the cluster as here, so the Pipes protocol and the Delta writer agree.
DEFAULT_LIBRARIES = [f"dagster-pipes=={version('dagster-pipes')}", f"deltalake=={version('deltalake')}"]


def notebook_source_with_hash(source: str) -> tuple[str, str]:
    """Return ``(content to upload, content hash line)`` for a notebook's source text."""
    digest = hashlib.sha256(source.encode("utf-8")).hexdigest()
    marker = f"{CONTENT_HASH_MARKER}{digest}"
    return f"{source.rstrip()}\n\n# COMMAND ----------\n\n{marker}\n", marker


class DatabricksNotebookRunner(NotebookRunner):
    """Run notebooks as one-time Databricks job runs.

    Compute: ``existing_cluster_id``, or a ``new_cluster`` spec (the Jobs API ``new_cluster`` dict),
    or neither for serverless (then ``pipes_volume_path`` is required, since serverless cannot reach
    the DBFS root). On clusters ``libraries`` are installed as task libraries; serverless notebooks
    must install them themselves (``%pip install`` cell): the Jobs API's ``environments`` apply to
    non-notebook tasks only.

    Build it with ``DatabricksNotebookRunner.from_env()`` so that host and token come from
    ``DATABRICKS_HOST`` / ``DATABRICKS_TOKEN`` as ``dg.EnvVar``s (never shown in the UI or logs).
    """

    host: str = Field(description="Workspace URL, e.g. https://dbc-123.cloud.databricks.com; bind dg.EnvVar.")
    token: str = Field(description="Personal access token; bind dg.EnvVar('DATABRICKS_TOKEN').")
    workspace_folder: str = Field(
        default="/Shared/guidewire_pipeline", description="Workspace folder the notebooks are uploaded to."
    )
    notebooks_dir: str = Field(
        default=str(NOTEBOOKS_DIR), description="Local folder the notebook files are read from."
    )
    existing_cluster_id: str | None = Field(default=None, description="Run on this all-purpose cluster.")
    new_cluster: dict[str, Any] | None = Field(
        default=None, description="Jobs API new_cluster spec for each run."
    )
    pipes_volume_path: str | None = Field(
        default=None,
        description="A UC volume, e.g. /Volumes/main/default/pipes, for Pipes files instead of DBFS (serverless needs it).",
    )
    libraries: list[str] = Field(
        default=DEFAULT_LIBRARIES, description="PyPI requirements installed on clusters."
    )
    poll_interval_seconds: float = Field(default=5.0, description="First wait between two run-state polls.")
    max_poll_interval_seconds: float = Field(
        default=30.0, description="The poll interval doubles up to this."
    )
    message_poll_interval_seconds: float = Field(
        default=10.0, description="How often Pipes messages are read."
    )
    cancel_timeout_seconds: float = Field(
        default=300.0, description="How long to wait for a cancelled run to end."
    )
    run_timeout_seconds: int = Field(
        default=0, description="Databricks ends the run after this long (0: never)."
    )

    @classmethod
    def from_env(cls, **overrides: Any) -> DatabricksNotebookRunner:
        """A runner whose host and token are the ``DATABRICKS_HOST`` / ``DATABRICKS_TOKEN`` env vars."""
        return cls(host=dg.EnvVar("DATABRICKS_HOST"), token=dg.EnvVar("DATABRICKS_TOKEN"), **overrides)

    # ----------------------------------------------------------------- public

    def workspace_client(self) -> WorkspaceClient:
        """A client that authenticates with the PAT only (auth_type="pat": no OAuth, no CLI, no profile auth)."""
        return WorkspaceClient(
            config=Config(
                host=self.host,
                token=self.token,
                auth_type="pat",
                product="guidewire-pipeline",
                product_version="0.1.0",
            )
        )

    def notebook_path(self, notebook: str) -> str:
        """The workspace path of ``notebook``: ``<workspace_folder>/<file name without .py>``."""
        return str(PurePosixPath(self.workspace_folder) / PurePosixPath(notebook).stem)

    def upload_notebook(self, client: WorkspaceClient, notebook: str) -> bool:
        """Upload ``notebook`` unless the workspace copy already has the same content; True if uploaded.

        Change detection: the uploaded source ends with a comment cell holding the sha256 of the local
        file (``CONTENT_HASH_MARKER``). ``workspace.export`` (SOURCE) reads the workspace copy back and
        the upload is skipped when it holds the same hash line, so an unchanged notebook costs one GET
        and no write. A comment survives Databricks' re-rendering of notebook source, unlike a byte
        comparison, and unlike a separate hash file it cannot disagree with the notebook it describes.
        A missing notebook (404) makes the folder with ``mkdirs`` first.
        """
        local = Path(self.notebooks_dir) / notebook
        if not local.is_file():
            raise dg.Failure(
                description=f"Notebook {notebook!r} does not exist in {self.notebooks_dir}: check the notebook name."
            )
        content, marker = notebook_source_with_hash(local.read_text(encoding="utf-8"))
        remote = self.notebook_path(notebook)
        try:
            exported = client.workspace.export(remote, format=ExportFormat.SOURCE)
            current: str | None = base64.b64decode(exported.content or "").decode("utf-8", errors="replace")
        except NotFound:
            current = None
        if current is not None and marker in current.splitlines():
            return False
        if current is None:
            client.workspace.mkdirs(self.workspace_folder)
        client.workspace.import_(
            remote,
            content=base64.b64encode(content.encode("utf-8")).decode("ascii"),
            format=ImportFormat.SOURCE,
            language=Language.PYTHON,
            overwrite=True,
        )
        return True

    def run_notebook(
        self,
        context: dg.OpExecutionContext | dg.AssetExecutionContext,
        notebook: str,
        parameters: Mapping[str, str],
    ) -> NotebookRun:
        """Upload ``notebook`` if changed, run it once on Databricks with ``parameters`` as widgets, and wait.

        Returns the notebook's Pipes custom messages and the run's id and page URL.
        Raises ``dagster.Failure`` when the compute settings are contradictory, when the notebook file
        is missing, or when the run does not succeed (with Databricks' state message and the
        notebook's error). Cancels the Databricks run if this step stops before it ends.
        """
        self._check_compute()
        client = self.workspace_client()
        remote = self.notebook_path(notebook)
        try:
            uploaded = self.upload_notebook(client, notebook)
        except DatabricksError as error:
            raise dg.Failure(
                description=(
                    f"Could not upload notebook {notebook} to {remote} ({error.error_code}: {error}). "
                    "Check workspace_folder and that the token may write there."
                )
            ) from error
        context.log.info(f"Notebook {remote}: {'uploaded' if uploaded else 'unchanged, not uploaded'}")

        with open_pipes_session(
            context=context,
            context_injector=self._context_injector(client),
            message_reader=self._message_reader(client),
        ) as session:
            base_parameters = {
                **{k: str(v) for k, v in parameters.items()},
                **session.get_bootstrap_env_vars(),
            }
            task = self._submit_task(notebook, remote, base_parameters)
            with self._cancel_on_exit(context, client, notebook) as submitted:
                # An interrupt while submitting waits until the run id is known, so the run can be cancelled.
                with capture_interrupts():
                    try:
                        run_id = client.jobs.submit(
                            run_name=f"guidewire_pipeline {PurePosixPath(notebook).stem} (dagster run {context.run_id[:8]})",
                            tasks=[task],
                            # One token per call: the SDK's retries of this request cannot start a second run.
                            idempotency_token=uuid.uuid4().hex,
                            timeout_seconds=self.run_timeout_seconds or None,
                        ).bind()["run_id"]
                    except DatabricksError as error:
                        raise dg.Failure(
                            description=(
                                f"Databricks refused the run of notebook {remote} ({error.error_code}: {error}). "
                                "Check existing_cluster_id / new_cluster / pipes_volume_path."
                            )
                        ) from error
                    submitted["run_id"] = run_id
                    with raise_execution_interrupts():
                        pass  # raises here an interrupt captured during the submit
                run = self._wait_until_terminal(context, client, run_id, notebook)
                submitted["terminal"] = True
            table_results = [m for m in session.get_custom_messages() if isinstance(m, dict)]

        metadata = self._run_metadata(run, remote, uploaded)
        if run.state is None or run.state.result_state != jobs.RunResultState.SUCCESS:
            raise self._failure(client, run, notebook, metadata)
        return NotebookRun(notebook=notebook, table_results=table_results, run_metadata=metadata)

    # ----------------------------------------------------------------- submit and wait

    def _check_compute(self) -> None:
        if self.existing_cluster_id and self.new_cluster:
            raise dg.Failure(
                description="DatabricksNotebookRunner: set existing_cluster_id or new_cluster, not both."
            )
        if not self.existing_cluster_id and not self.new_cluster and not self.pipes_volume_path:
            raise dg.Failure(
                description=(
                    "DatabricksNotebookRunner: serverless runs (no existing_cluster_id, no new_cluster) cannot "
                    "reach DBFS; set pipes_volume_path to a Unity Catalog volume, e.g. /Volumes/main/default/pipes."
                )
            )

    def _context_injector(self, client: WorkspaceClient) -> PipesContextInjector:
        if self.pipes_volume_path:
            return PipesUnityCatalogVolumesContextInjector(client=client, volume_path=self.pipes_volume_path)
        return PipesDbfsContextInjector(client=client)

    def _message_reader(self, client: WorkspaceClient) -> PipesMessageReader:
        if self.pipes_volume_path:
            return PipesUnityCatalogVolumesMessageReader(
                client=client,
                volume_path=self.pipes_volume_path,
                interval=self.message_poll_interval_seconds,
                include_stdio_in_messages=False,
            )
        return PipesDbfsMessageReader(client=client, interval=self.message_poll_interval_seconds)

    def _submit_task(self, notebook: str, remote: str, base_parameters: dict[str, str]) -> jobs.SubmitTask:
        task = jobs.SubmitTask(
            task_key=re.sub(r"\W", "_", PurePosixPath(notebook).stem),
            notebook_task=jobs.NotebookTask(
                notebook_path=remote, base_parameters=base_parameters, source=jobs.Source.WORKSPACE
            ),
        )
        if self.existing_cluster_id or self.new_cluster:
            task.libraries = [
                compute.Library(pypi=compute.PythonPyPiLibrary(package=p)) for p in self.libraries
            ]
        if self.existing_cluster_id:
            task.existing_cluster_id = self.existing_cluster_id
        elif self.new_cluster:
            task.new_cluster = compute.ClusterSpec.from_dict(self.new_cluster)
        return task

    def _wait_until_terminal(
        self,
        context: dg.OpExecutionContext | dg.AssetExecutionContext,
        client: WorkspaceClient,
        run_id: int,
        notebook: str,
        deadline: float | None = None,
    ) -> jobs.Run:
        """Poll ``get_run`` until the run is terminal, doubling the interval up to the maximum."""
        interval = self.poll_interval_seconds
        last_state = None
        while True:
            run = client.jobs.get_run(run_id)
            state = run.state.life_cycle_state if run.state else None
            if state != last_state:
                context.log.info(
                    f"Databricks run {run_id} ({notebook}): {state.value if state else 'no state'} {run.run_page_url or ''}"
                )
                last_state = state
            if state in TERMINAL_STATES:
                return run
            if deadline is not None and time.monotonic() + interval > deadline:
                raise TimeoutError(
                    f"Databricks run {run_id} ({notebook}) did not end in time; see {run.run_page_url}"
                )
            time.sleep(interval)
            interval = min(interval * 2, self.max_poll_interval_seconds)

    @contextmanager
    def _cancel_on_exit(
        self,
        context: dg.OpExecutionContext | dg.AssetExecutionContext,
        client: WorkspaceClient,
        notebook: str,
    ) -> Iterator[dict[str, Any]]:
        """Yield a dict the caller fills with ``run_id`` and ``terminal``; cancel a live run on any exit by error."""
        submitted: dict[str, Any] = {}
        try:
            yield submitted
        except BaseException:
            run_id = submitted.get("run_id")
            if run_id is not None and not submitted.get("terminal"):
                context.log.warning(f"Step stopped: cancelling Databricks run {run_id} ({notebook}).")
                try:
                    client.jobs.cancel_run(run_id)
                    run = self._wait_until_terminal(
                        context,
                        client,
                        run_id,
                        notebook,
                        deadline=time.monotonic() + self.cancel_timeout_seconds,
                    )
                    context.log.warning(
                        f"Databricks run {run_id} ({notebook}) ended {run.state.result_state if run.state else None}."
                    )
                except (DatabricksError, TimeoutError, OSError) as error:
                    context.log.error(
                        f"Could not confirm that Databricks run {run_id} ({notebook}) was cancelled ({error}); "
                        "cancel it from its run page."
                    )
            raise

    # ----------------------------------------------------------------- report

    @staticmethod
    def _run_metadata(run: jobs.Run, remote: str, uploaded: bool) -> dict[str, Any]:
        metadata: dict[str, Any] = {
            "runner": "databricks",
            "databricks_run_id": run.run_id,
            "databricks_notebook_path": remote,
            "notebook_uploaded": uploaded,
        }
        if run.tasks and run.tasks[0].run_id is not None:
            metadata["databricks_task_run_id"] = run.tasks[0].run_id
        if run.run_page_url:
            metadata["databricks_run_url"] = dg.MetadataValue.url(run.run_page_url)
        return metadata

    @staticmethod
    def _failure(
        client: WorkspaceClient, run: jobs.Run, notebook: str, metadata: dict[str, Any]
    ) -> dg.Failure:
        state = run.state
        result = state.result_state.value if state and state.result_state else "no result"
        life_cycle = state.life_cycle_state.value if state and state.life_cycle_state else "unknown"
        lines = [
            f"Notebook {notebook} failed on Databricks: run {run.run_id} ended {life_cycle}/{result}.",
            f"Databricks says: {(state.state_message if state else None) or '(no state message)'}",
        ]
        failure_metadata = dict(metadata)
        for task in run.tasks or []:
            if task.run_id is None:
                continue
            try:
                output = client.jobs.get_run_output(task.run_id)  # the task run id: the parent's is refused
            except DatabricksError as error:
                lines.append(f"Task {task.task_key}: its output could not be read ({error}).")
                continue
            if output.error:
                lines.append(f"Notebook error (task {task.task_key}): {output.error}")
            if output.error_trace:
                failure_metadata["notebook_error_trace"] = dg.MetadataValue.text(output.error_trace[-20_000:])
        if run.run_page_url:
            lines.append(f"Run page: {run.run_page_url}")
        lines.append("Fix the notebook or its input and re-run the same partitions.")
        return dg.Failure(description="\n".join(lines), metadata=failure_metadata)
