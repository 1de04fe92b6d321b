"""Fake Jobs, Workspace, DBFS and Files (Volumes) endpoints: ``install(ws)`` plugs them into the fake.

What the Databricks notebook runner and dagster-databricks' Pipes pieces call, and no more:

- Jobs 2.2: ``runs/submit``, ``runs/get``, ``runs/get-output``, ``runs/cancel``, ``run-now``,
  ``jobs/get``, ``jobs/create``. Life cycle PENDING -> RUNNING -> TERMINATING -> TERMINATED with
  result_state SUCCESS / FAILED / CANCELED, or INTERNAL_ERROR when the notebook is missing.
  Every run has a parent run id and one task run id per task; ``get-output`` answers 400
  INVALID_PARAMETER_VALUE for a parent id, as Databricks does.
- Workspace: ``import``, ``export``, ``get-status``, ``mkdirs``, ``list``, ``delete``.
- DBFS 2.0: ``mkdirs``, ``put``, ``read``, ``get-status``, ``list``, ``delete``, ``create``/``add-block``/``close``.
- Files 2.0 (``/Volumes/...``): upload, download, delete, create/list/delete directory.

Tasks run in ``depends_on`` order; a task whose upstream task did not succeed is SKIPPED with
result_state UPSTREAM_FAILED and never runs. A ``notebook_task`` really runs: the imported notebook is
executed by ``notebook_host.py`` in a subprocess (its own session, so cancel kills the whole group),
with ``base_parameters`` behind ``dbutils.widgets``, ``dbutils.jobs.taskValues`` shared by the run's
tasks, and ``spark`` a local Spark engine (Sail, started when the notebook first uses it). Tables that
Spark created in the task are registered in ``ws.uc_tables``, as Unity Catalog would. The notebook process gets these environment variables:

- ``GW_DBFS_MOUNT=<root>/dbfs``: where ``/dbfs`` (the DBFS FUSE mount) lives on this machine.
- ``GW_VOLUMES_MOUNT=<root>/Volumes``: where ``/Volumes`` lives on this machine.
- ``DATABRICKS_RUNTIME_VERSION``: set, as on a Databricks cluster.
- a new cluster's ``spark_env_vars``. DATABRICKS_TOKEN / DATABRICKS_HOST are removed.

State lives on ``ws.jobs`` (a ``FakeJobsService``): runs, jobs, and helpers for tests.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.fakes.databricks_workspace import FakeApiError, FakeDatabricksWorkspace

NOTEBOOK_HOST = Path(__file__).resolve().parent / "notebook_host.py"
WORKSPACE_ID = 1234567890123456
FAKE_USER = "fake.user@example.com"
TERMINAL_LIFE_CYCLE_STATES = ("TERMINATED", "SKIPPED", "INTERNAL_ERROR")
FAILED_TASK_MESSAGE = "Workload failed, see run output for details"


def _now_ms() -> int:
    return int(time.time() * 1000)


def _param(query: dict[str, list[str]], body: dict[str, Any], name: str) -> Any:
    """A request parameter from the query string (GET) or the JSON body (POST)."""
    if name in query:
        return query[name][0]
    return body.get(name)


def _required(query: dict[str, list[str]], body: dict[str, Any], name: str) -> Any:
    value = _param(query, body, name)
    if value is None or value == "":
        raise FakeApiError(400, "INVALID_PARAMETER_VALUE", f"Missing required field: {name}")
    return value


def _int_param(query: dict[str, list[str]], body: dict[str, Any], name: str) -> int:
    value = _required(query, body, name)
    try:
        return int(value)
    except (TypeError, ValueError):
        raise FakeApiError(400, "INVALID_PARAMETER_VALUE", f"Invalid value for {name}: {value!r}") from None


# --------------------------------------------------------------------------- runs


@dataclass
class FakeTaskRun:
    """One task of a run; ``process`` is the notebook's subprocess once it started."""

    run_id: int
    task_key: str
    spec: dict[str, Any]
    life_cycle_state: str = "PENDING"
    result_state: str | None = None
    state_message: str = ""
    start_time: int = 0
    end_time: int = 0
    process: subprocess.Popen[bytes] | None = None
    output: dict[str, Any] = field(default_factory=dict)
    run_dir: Path | None = None


@dataclass
class FakeRun:
    """A submitted or triggered run; ``history`` lists the parent's life cycle states in order."""

    run_id: int
    job_id: int
    run_name: str
    run_type: str
    tasks: list[FakeTaskRun]
    submit_args: dict[str, Any]
    life_cycle_state: str = "PENDING"
    result_state: str | None = None
    state_message: str = ""
    user_cancelled: bool = False
    start_time: int = field(default_factory=_now_ms)
    end_time: int = 0
    history: list[str] = field(default_factory=lambda: ["PENDING"])
    cancel_requested: bool = False
    done: threading.Event = field(default_factory=threading.Event)


class FakeJobsService:
    """State and behaviour behind the Jobs, Workspace, DBFS and Files routes of one fake workspace."""

    def __init__(self, ws: FakeDatabricksWorkspace):
        self.ws = ws
        self.workspace_root = ws.root / "workspace"
        self.dbfs_root = ws.root / "dbfs"
        self.volumes_root = ws.root / "Volumes"
        self.runs_root = ws.root / "runs"
        for directory in (self.workspace_root, self.dbfs_root, self.volumes_root, self.runs_root):
            directory.mkdir(parents=True, exist_ok=True)
        self.runs: dict[int, FakeRun] = {}
        self.task_runs: dict[int, tuple[FakeRun, FakeTaskRun]] = {}
        self.jobs: dict[int, dict[str, Any]] = {}
        self.workspace_objects: dict[str, dict[str, Any]] = {"/": self._object("/", "DIRECTORY")}
        self.idempotency_tokens: dict[str, int] = {}
        self.task_state_changed = threading.Condition(ws.lock)
        # Tests set this to answer runs/submit only once the notebook runs (a slow submit response).
        self.answer_submit_after_start = False
        self._next_id = 1000
        self.cancel_grace_seconds = 5.0

    # ----------------------------------------------------------------- helpers for tests

    def create_job(self, settings: dict[str, Any]) -> int:
        """Create a job (as ``jobs/create`` would) and return its id."""
        with self.ws.lock:
            job_id = self._new_id()
            self.jobs[job_id] = {
                "job_id": job_id,
                "creator_user_name": FAKE_USER,
                "created_time": _now_ms(),
                "settings": settings,
            }
            return job_id

    def wait(self, run_id: int, timeout: float = 30) -> FakeRun:
        """Block until run ``run_id`` is terminal (an Event, not a sleep); raise on timeout."""
        run = self.runs[run_id]
        if not run.done.wait(timeout):
            raise TimeoutError(f"fake run {run_id} still {run.life_cycle_state} after {timeout}s")
        return run

    def wait_for_task_running(self, timeout: float = 30) -> FakeTaskRun:
        """Block until some task run has a live notebook process; for cancellation tests."""

        def running() -> FakeTaskRun | None:
            return next(
                (
                    t
                    for _, t in self.task_runs.values()
                    if t.life_cycle_state == "RUNNING" and t.process is not None
                ),
                None,
            )

        with self.task_state_changed:
            if not self.task_state_changed.wait_for(running, timeout):
                raise TimeoutError(f"no fake task run reached RUNNING within {timeout}s")
            return running()

    def workspace_file(self, path: str) -> Path:
        return self.workspace_root / path.lstrip("/")

    def dbfs_file(self, path: str) -> Path:
        path = path.removeprefix("dbfs:")
        return self.dbfs_root / path.lstrip("/")

    def volumes_file(self, path: str) -> Path:
        if not path.startswith("/Volumes/"):
            raise FakeApiError(
                400, "INVALID_PARAMETER_VALUE", f"Files API paths must start with /Volumes/: {path}"
            )
        return self.volumes_root / path.removeprefix("/Volumes/")

    def stop_all(self) -> None:
        """Kill every notebook process still running (the workspace is going away)."""
        with self.ws.lock:
            runs = list(self.runs.values())
        for run in runs:
            self._cancel(run)
        for run in runs:
            run.done.wait(self.cancel_grace_seconds + 5)

    # ----------------------------------------------------------------- internals

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def _object(self, path: str, object_type: str, language: str | None = None) -> dict[str, Any]:
        now = _now_ms()
        obj: dict[str, Any] = {
            "path": path,
            "object_type": object_type,
            "object_id": int(hashlib.sha1(path.encode()).hexdigest()[:12], 16),
            "created_at": now,
            "modified_at": now,
        }
        if language:
            obj["language"] = language
        return obj

    def run_page_url(self, job_id: int, run_id: int) -> str:
        return f"{self.ws.host}/?o={WORKSPACE_ID}#job/{job_id}/run/{run_id}"

    def start_run(
        self,
        *,
        job_id: int,
        run_name: str,
        run_type: str,
        task_specs: list[dict[str, Any]],
        submit_args: dict[str, Any],
    ) -> FakeRun:
        with self.ws.lock:
            run_id = self._new_id()
            tasks = [
                FakeTaskRun(run_id=self._new_id(), task_key=spec.get("task_key", f"task_{i}"), spec=spec)
                for i, spec in enumerate(task_specs)
            ]
            run = FakeRun(
                run_id=run_id,
                job_id=job_id,
                run_name=run_name,
                run_type=run_type,
                tasks=tasks,
                submit_args=submit_args,
            )
            self.runs[run_id] = run
            for task in tasks:
                self.task_runs[task.run_id] = (run, task)
        threading.Thread(target=self._execute, args=(run,), name=f"fake-run-{run_id}", daemon=True).start()
        return run

    def _set_run_state(self, run: FakeRun, life_cycle_state: str) -> None:
        run.life_cycle_state = life_cycle_state
        if run.history[-1] != life_cycle_state:
            run.history.append(life_cycle_state)

    def _execute(self, run: FakeRun) -> None:
        """Run the tasks in ``depends_on`` order (one at a time). A task whose upstream task did not succeed
        is SKIPPED with UPSTREAM_FAILED and never runs, as on Databricks; independent tasks still run."""
        try:
            by_key = {t.task_key: t for t in run.tasks}
            for task in self._in_dependency_order(run.tasks):
                upstream = [by_key[d["task_key"]] for d in task.spec.get("depends_on") or [] if d.get("task_key") in by_key]
                with self.ws.lock:
                    if run.cancel_requested:
                        task.life_cycle_state, task.result_state = "TERMINATED", "CANCELED"
                        continue
                    if any(u.result_state != "SUCCESS" for u in upstream):
                        task.life_cycle_state, task.result_state = "SKIPPED", "UPSTREAM_FAILED"
                        task.state_message = "Upstream task failed."
                        continue
                    self._set_run_state(run, "RUNNING")
                self._execute_task(run, task)
                with self.ws.lock:
                    if task.result_state == "FAILED" and run.result_state is None:
                        run.result_state = "FAILED"
                        run.state_message = (
                            f"Task {task.task_key} failed with message: {task.state_message}. "
                            "This caused all downstream tasks to get skipped."
                        )
                        if task.life_cycle_state == "INTERNAL_ERROR":
                            self._set_run_state(run, "INTERNAL_ERROR")
        finally:
            with self.ws.lock:
                if run.cancel_requested:
                    run.result_state, run.user_cancelled = "CANCELED", True
                    run.state_message = "Run cancelled."
                elif run.result_state is None:
                    run.result_state = "SUCCESS"
                if run.life_cycle_state != "INTERNAL_ERROR":
                    self._set_run_state(run, "TERMINATING")
                    self._set_run_state(run, "TERMINATED")
                run.end_time = _now_ms()
            run.done.set()

    @staticmethod
    def _in_dependency_order(tasks: list[FakeTaskRun]) -> list[FakeTaskRun]:
        """Tasks sorted so that each comes after the tasks it depends on (submit already refused cycles)."""
        ordered: list[FakeTaskRun] = []
        remaining = list(tasks)
        while remaining:
            done = {t.task_key for t in ordered}
            ready = [t for t in remaining
                     if all(d.get("task_key") in done for d in t.spec.get("depends_on") or [])]
            ordered += ready
            remaining = [t for t in remaining if t not in ready]
        return ordered

    def _execute_task(self, run: FakeRun, task: FakeTaskRun) -> None:
        task.start_time = _now_ms()
        notebook_task = task.spec.get("notebook_task")
        notebook_path = notebook_task.get("notebook_path", "") if notebook_task else ""
        source = self.workspace_file(notebook_path)
        if (
            self.workspace_objects.get(notebook_path, {}).get("object_type") != "NOTEBOOK"
            or not source.is_file()
        ):
            with self.ws.lock:
                task.life_cycle_state, task.result_state = "INTERNAL_ERROR", "FAILED"
                task.state_message = (
                    f'Unable to access the notebook "{notebook_path}" in the workspace. Either it does not exist, '
                    "or the identity used to run this job lacks the required permissions."
                )
                task.end_time = _now_ms()
                self.task_state_changed.notify_all()
            return
        run_dir = self.runs_root / str(task.run_id)
        run_dir.mkdir(parents=True, exist_ok=True)
        task.run_dir = run_dir
        parameters = {str(k): str(v) for k, v in (notebook_task.get("base_parameters") or {}).items()}
        (run_dir / "parameters.json").write_text(json.dumps(parameters), encoding="utf-8")
        env = {k: v for k, v in os.environ.items() if not k.startswith("DATABRICKS_")}
        env.update((task.spec.get("new_cluster") or {}).get("spark_env_vars") or {})
        env.update(
            GW_DBFS_MOUNT=str(self.dbfs_root),
            GW_VOLUMES_MOUNT=str(self.volumes_root),
            DATABRICKS_RUNTIME_VERSION=(task.spec.get("new_cluster") or {}).get("spark_version", "15.4"),
            PYTHONUNBUFFERED="1",
        )
        with self.ws.lock:
            if run.cancel_requested:
                task.life_cycle_state, task.result_state = "TERMINATED", "CANCELED"
                return
            with open(run_dir / "stdout.txt", "wb") as stdout, open(run_dir / "stderr.txt", "wb") as stderr:
                task.process = subprocess.Popen(
                    [sys.executable, str(NOTEBOOK_HOST), str(source), notebook_path]
                    + [str(run_dir / "parameters.json"), str(run_dir / "result.json")]
                    + [str(self.runs_root / str(run.run_id) / "task_values"), task.task_key]
                    + [str(run_dir / "created_tables.json")],
                    cwd=run_dir,
                    env=env,
                    stdout=stdout,
                    stderr=stderr,
                    start_new_session=True,  # its own process group, so cancel reaches the notebook's children
                )
            task.life_cycle_state = "RUNNING"
            self.task_state_changed.notify_all()
        returncode = task.process.wait()
        self._register_created_tables(run_dir / "created_tables.json")
        result_file = run_dir / "result.json"
        result = json.loads(result_file.read_text(encoding="utf-8")) if result_file.is_file() else {}
        with self.ws.lock:
            task.end_time = _now_ms()
            task.life_cycle_state = "TERMINATED"
            self.task_state_changed.notify_all()
            if run.cancel_requested:
                task.result_state, task.state_message = "CANCELED", "Run cancelled."
            elif returncode == 0:
                task.result_state, task.output = "SUCCESS", result
            else:
                task.result_state, task.state_message = "FAILED", FAILED_TASK_MESSAGE
                stderr_tail = (run_dir / "stderr.txt").read_text(errors="replace")[-2000:]
                task.output = result or {
                    "error": f"Notebook process exited with code {returncode}",
                    "error_trace": stderr_tail,
                }

    def _register_created_tables(self, listing: Path) -> None:
        """Tables the notebook's Spark created become Unity Catalog tables, as on a UC cluster."""
        if not listing.is_file():
            return
        registry = self.ws.__dict__.setdefault("uc_tables", {})
        with self.ws.lock:
            for table in json.loads(listing.read_text(encoding="utf-8")):
                registry.setdefault(table["full_name"], {**table, "created_by": "spark (notebook task)"})

    def _cancel(self, run: FakeRun) -> None:
        with self.ws.lock:
            if run.done.is_set() or run.cancel_requested:
                return
            run.cancel_requested = True
            self._set_run_state(run, "TERMINATING")
            processes = [t.process for t in run.tasks if t.process is not None and t.process.poll() is None]
        for process in processes:
            _kill_group(process, self.cancel_grace_seconds)

    # ----------------------------------------------------------------- rendering

    def _state(
        self, life_cycle_state: str, result_state: str | None, message: str, cancelled: bool
    ) -> dict[str, Any]:
        state: dict[str, Any] = {
            "life_cycle_state": life_cycle_state,
            "state_message": message,
            "user_cancelled_or_timedout": cancelled,
        }
        if life_cycle_state in TERMINAL_LIFE_CYCLE_STATES and result_state is not None:
            state["result_state"] = result_state
        return state

    def render_task(self, run: FakeRun, task: FakeTaskRun) -> dict[str, Any]:
        rendered = {
            key: value
            for key, value in task.spec.items()
            if key
            in (
                "notebook_task",
                "existing_cluster_id",
                "new_cluster",
                "libraries",
                "environment_key",
                "depends_on",
            )
        }
        rendered.update(
            run_id=task.run_id,
            task_key=task.task_key,
            attempt_number=0,
            state=self._state(
                task.life_cycle_state, task.result_state, task.state_message, run.user_cancelled
            ),
            start_time=task.start_time,
            end_time=task.end_time,
            run_page_url=self.run_page_url(run.job_id, task.run_id),
        )
        return rendered

    def render_run(self, run: FakeRun) -> dict[str, Any]:
        rendered: dict[str, Any] = {
            "job_id": run.job_id,
            "run_id": run.run_id,
            "number_in_job": run.run_id,
            "run_name": run.run_name,
            "run_type": run.run_type,
            "creator_user_name": FAKE_USER,
            "state": self._state(
                run.life_cycle_state, run.result_state, run.state_message, run.user_cancelled
            ),
            "start_time": run.start_time,
            "end_time": run.end_time,
            "run_page_url": self.run_page_url(run.job_id, run.run_id),
            "tasks": [self.render_task(run, t) for t in run.tasks],
            "format": "MULTI_TASK",
        }
        if run.submit_args.get("environments"):
            rendered["environments"] = run.submit_args["environments"]
        return rendered


def _kill_group(process: subprocess.Popen[bytes], grace_seconds: float) -> None:
    """SIGTERM the process group, then SIGKILL it if it is still alive after ``grace_seconds``."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(grace_seconds)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            return


# --------------------------------------------------------------------------- install


def install(ws: FakeDatabricksWorkspace) -> None:
    """Register the Jobs, Workspace, DBFS and Files routes; state on ``ws.jobs``."""
    service = FakeJobsService(ws)
    ws.jobs = service  # type: ignore[attr-defined]
    ws.on_stop.append(service.stop_all)
    _install_jobs(ws, service)
    _install_workspace(ws, service)
    _install_dbfs(ws, service)
    _install_files(ws, service)


def _install_jobs(ws: FakeDatabricksWorkspace, service: FakeJobsService) -> None:
    def get_run_or_400(run_id: int) -> FakeRun:
        run = service.runs.get(run_id)
        if run is None:
            raise FakeApiError(400, "INVALID_PARAMETER_VALUE", f"Run {run_id} does not exist.")
        return run

    def validate_task(spec: dict[str, Any]) -> None:
        if not spec.get("task_key"):
            raise FakeApiError(400, "INVALID_PARAMETER_VALUE", "Missing required field: task_key")
        if "notebook_task" not in spec:
            kinds = sorted(k for k in spec if k.endswith("_task"))
            raise FakeApiError(
                400,
                "INVALID_PARAMETER_VALUE",
                f"The fake workspace only runs notebook_task; task {spec['task_key']} has {kinds}",
            )
        if not str(spec["notebook_task"].get("notebook_path", "")).startswith("/"):
            raise FakeApiError(
                400,
                "INVALID_PARAMETER_VALUE",
                "notebook_task.notebook_path must be an absolute workspace path",
            )

    @ws.route("POST", r"/api/2\.[12]/jobs/runs/submit")
    def runs_submit(ws, match, query, body):
        tasks = body.get("tasks") or []
        if not tasks:
            raise FakeApiError(400, "INVALID_PARAMETER_VALUE", "At least one task is required.")
        for spec in tasks:
            validate_task(spec)
        keys = [spec["task_key"] for spec in tasks]
        for spec in tasks:
            for dependency in spec.get("depends_on") or []:
                if dependency.get("task_key") not in keys or dependency.get("task_key") == spec["task_key"]:
                    raise FakeApiError(400, "INVALID_PARAMETER_VALUE",
                                       f"Task {spec['task_key']} depends on {dependency.get('task_key')!r}, "
                                       "which is not another task of this run.")
        token = body.get("idempotency_token")
        with ws.lock:
            if token in service.idempotency_tokens:  # a retried submit returns the run it already started
                return {"run_id": service.idempotency_tokens[token]}
            job_id = service._new_id()  # a one-time run still gets an (ephemeral) job id
        submit_args = {k: v for k, v in body.items() if k != "tasks"}
        run = service.start_run(
            job_id=job_id,
            run_name=body.get("run_name") or "Untitled",
            run_type="SUBMIT_RUN",
            task_specs=tasks,
            submit_args=submit_args,
        )
        if token:
            with ws.lock:
                service.idempotency_tokens[token] = run.run_id
        if service.answer_submit_after_start:
            with service.task_state_changed:
                service.task_state_changed.wait_for(lambda: run.tasks[0].life_cycle_state != "PENDING", 30)
        return {"run_id": run.run_id}

    @ws.route("GET", r"/api/2\.[12]/jobs/runs/get")
    def runs_get(ws, match, query, body):
        with ws.lock:
            return service.render_run(get_run_or_400(_int_param(query, body, "run_id")))

    @ws.route("GET", r"/api/2\.[12]/jobs/runs/get-output")
    def runs_get_output(ws, match, query, body):
        run_id = _int_param(query, body, "run_id")
        with ws.lock:
            if run_id in service.runs:
                raise FakeApiError(
                    400,
                    "INVALID_PARAMETER_VALUE",
                    "Retrieving the output of runs with multiple tasks is not supported. "
                    "Please retrieve the output of each individual task run instead.",
                )
            if run_id not in service.task_runs:
                raise FakeApiError(400, "INVALID_PARAMETER_VALUE", f"Run {run_id} does not exist.")
            run, task = service.task_runs[run_id]
            return {"metadata": service.render_task(run, task), **task.output}

    @ws.route("POST", r"/api/2\.[12]/jobs/runs/cancel")
    def runs_cancel(ws, match, query, body):
        run_id = _int_param(query, body, "run_id")
        with ws.lock:
            run = service.runs.get(run_id) or (service.task_runs.get(run_id) or (None,))[0]
            if run is None:
                raise FakeApiError(400, "INVALID_PARAMETER_VALUE", f"Run {run_id} does not exist.")
        # Killing the process happens off the request thread, as Databricks cancels asynchronously.
        threading.Thread(target=service._cancel, args=(run,), daemon=True).start()
        return {}

    @ws.route("POST", r"/api/2\.[12]/jobs/create")
    def jobs_create(ws, match, query, body):
        return {"job_id": service.create_job(body)}

    @ws.route("GET", r"/api/2\.[12]/jobs/get")
    def jobs_get(ws, match, query, body):
        job_id = _int_param(query, body, "job_id")
        with ws.lock:
            if job_id not in service.jobs:
                raise FakeApiError(400, "INVALID_PARAMETER_VALUE", f"Job {job_id} does not exist.")
            return service.jobs[job_id]

    @ws.route("POST", r"/api/2\.[12]/jobs/run-now")
    def run_now(ws, match, query, body):
        job_id = _int_param(query, body, "job_id")
        with ws.lock:
            job = service.jobs.get(job_id)
        if job is None:
            raise FakeApiError(400, "INVALID_PARAMETER_VALUE", f"Job {job_id} does not exist.")
        settings = job["settings"]
        overrides = {**(body.get("notebook_params") or {}), **(body.get("job_parameters") or {})}
        task_specs = []
        for spec in settings.get("tasks") or []:
            spec = json.loads(json.dumps(spec))
            if "notebook_task" in spec and overrides:
                spec["notebook_task"]["base_parameters"] = {
                    **(spec["notebook_task"].get("base_parameters") or {}),
                    **overrides,
                }
            validate_task(spec)
            task_specs.append(spec)
        if not task_specs:
            raise FakeApiError(400, "INVALID_PARAMETER_VALUE", f"Job {job_id} has no tasks to run.")
        run = service.start_run(
            job_id=job_id,
            run_name=settings.get("name") or "Untitled",
            run_type="JOB_RUN",
            task_specs=task_specs,
            submit_args={"environments": settings.get("environments")},
        )
        return {"run_id": run.run_id, "number_in_job": run.run_id}


def _install_workspace(ws: FakeDatabricksWorkspace, service: FakeJobsService) -> None:
    objects = service.workspace_objects

    def not_found(path: str) -> FakeApiError:
        return FakeApiError(404, "RESOURCE_DOES_NOT_EXIST", f"Path ({path}) doesn't exist.")

    def normalise(path: str) -> str:
        if not path.startswith("/"):
            raise FakeApiError(400, "INVALID_PARAMETER_VALUE", f"Path ({path}) must be absolute.")
        return "/" + path.strip("/") if path != "/" else "/"

    @ws.route("POST", r"/api/2\.0/workspace/mkdirs")
    def mkdirs(ws, match, query, body):
        path = normalise(_required(query, body, "path"))
        with ws.lock:
            parts = path.strip("/").split("/")
            for i in range(1, len(parts) + 1):
                prefix = "/" + "/".join(parts[:i])
                existing = objects.get(prefix)
                if existing and existing["object_type"] != "DIRECTORY":
                    raise FakeApiError(
                        400,
                        "RESOURCE_ALREADY_EXISTS",
                        f"Cannot create directory {path}: {prefix} is a {existing['object_type']}",
                    )
                if not existing:
                    objects[prefix] = service._object(prefix, "DIRECTORY")
                    service.workspace_file(prefix).mkdir(parents=True, exist_ok=True)
        return {}

    @ws.route("POST", r"/api/2\.0/workspace/import")
    def import_(ws, match, query, body):
        path = normalise(_required(query, body, "path"))
        fmt = body.get("format") or "SOURCE"
        language = body.get("language")
        if fmt not in ("SOURCE", "AUTO"):
            raise FakeApiError(
                400, "INVALID_PARAMETER_VALUE", f"The fake workspace imports SOURCE or AUTO, not {fmt}"
            )
        content = base64.b64decode(body.get("content") or "")
        parent = path.rsplit("/", 1)[0] or "/"
        with ws.lock:
            if objects.get(parent, {}).get("object_type") != "DIRECTORY":
                raise FakeApiError(
                    404, "RESOURCE_DOES_NOT_EXIST", f"The parent folder ({parent}) does not exist."
                )
            if path in objects and not body.get("overwrite"):
                raise FakeApiError(
                    400,
                    "RESOURCE_ALREADY_EXISTS",
                    f"{path} already exists. Please use overwrite or another path.",
                )
            is_notebook = language is not None or content.lstrip().startswith(b"# Databricks notebook source")
            obj = service._object(
                path, "NOTEBOOK" if is_notebook else "FILE", language or ("PYTHON" if is_notebook else None)
            )
            if path in objects:
                obj["created_at"] = objects[path]["created_at"]
            objects[path] = obj
            target = service.workspace_file(path)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
        return {}

    @ws.route("GET", r"/api/2\.0/workspace/get-status")
    def get_status(ws, match, query, body):
        path = normalise(_required(query, body, "path"))
        with ws.lock:
            if path not in objects:
                raise not_found(path)
            return objects[path]

    @ws.route("GET", r"/api/2\.0/workspace/export")
    def export(ws, match, query, body):
        path = normalise(_required(query, body, "path"))
        with ws.lock:
            obj = objects.get(path)
            if obj is None:
                raise not_found(path)
            if obj["object_type"] == "DIRECTORY":
                raise FakeApiError(
                    400, "INVALID_PARAMETER_VALUE", f"Exporting a directory ({path}) needs format DBC."
                )
            content = service.workspace_file(path).read_bytes()
        return {"content": base64.b64encode(content).decode(), "file_type": "py"}

    @ws.route("GET", r"/api/2\.0/workspace/list")
    def list_(ws, match, query, body):
        path = normalise(_required(query, body, "path"))
        with ws.lock:
            if path not in objects:
                raise not_found(path)
            prefix = path.rstrip("/") + "/"
            children = [o for p, o in objects.items() if p.startswith(prefix) and "/" not in p[len(prefix) :]]
        return {"objects": children}

    @ws.route("POST", r"/api/2\.0/workspace/delete")
    def delete(ws, match, query, body):
        path = normalise(_required(query, body, "path"))
        with ws.lock:
            if path not in objects:
                raise not_found(path)
            prefix = path.rstrip("/") + "/"
            children = [p for p in objects if p.startswith(prefix)]
            if children and not body.get("recursive"):
                raise FakeApiError(400, "DIRECTORY_NOT_EMPTY", f"Folder ({path}) is not empty.")
            for p in [path, *children]:
                objects.pop(p, None)
            target = service.workspace_file(path)
            shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
        return {}


def _install_dbfs(ws: FakeDatabricksWorkspace, service: FakeJobsService) -> None:
    handles: dict[int, Path] = {}

    def status(path: str, local: Path) -> dict[str, Any]:
        stat = local.stat()
        return {
            "path": path,
            "is_dir": local.is_dir(),
            "file_size": 0 if local.is_dir() else stat.st_size,
            "modification_time": int(stat.st_mtime * 1000),
        }

    def not_found(path: str) -> FakeApiError:
        return FakeApiError(404, "RESOURCE_DOES_NOT_EXIST", f"No file or directory exists on path {path}.")

    def already_exists(path: str) -> FakeApiError:
        return FakeApiError(400, "RESOURCE_ALREADY_EXISTS", f"A file or directory already exists at the input path {path}.")

    @ws.route("POST", r"/api/2\.0/dbfs/mkdirs")
    def mkdirs(ws, match, query, body):
        path = _required(query, body, "path")
        local = service.dbfs_file(path)
        if local.is_file():
            raise already_exists(path)
        local.mkdir(parents=True, exist_ok=True)
        return {}

    @ws.route("POST", r"/api/2\.0/dbfs/put")
    def put(ws, match, query, body):
        path = _required(query, body, "path")
        local = service.dbfs_file(path)
        if local.exists() and not body.get("overwrite"):
            raise already_exists(path)
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_bytes(base64.b64decode(body.get("contents") or ""))
        return {}

    @ws.route("POST", r"/api/2\.0/dbfs/create")
    def create(ws, match, query, body):
        path = _required(query, body, "path")
        local = service.dbfs_file(path)
        if local.exists() and not body.get("overwrite"):
            raise already_exists(path)
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_bytes(b"")
        with ws.lock:
            handle = service._new_id()
            handles[handle] = local
        return {"handle": handle}

    @ws.route("POST", r"/api/2\.0/dbfs/add-block")
    def add_block(ws, match, query, body):
        handle = _int_param(query, body, "handle")
        if handle not in handles:
            raise FakeApiError(400, "INVALID_PARAMETER_VALUE", f"Invalid handle {handle}.")
        with open(handles[handle], "ab") as f:
            f.write(base64.b64decode(body.get("data") or ""))
        return {}

    @ws.route("POST", r"/api/2\.0/dbfs/close")
    def close(ws, match, query, body):
        handles.pop(_int_param(query, body, "handle"), None)
        return {}

    @ws.route("GET", r"/api/2\.0/dbfs/read")
    def read(ws, match, query, body):
        path = _required(query, body, "path")
        local = service.dbfs_file(path)
        if not local.exists():
            raise not_found(path)
        if local.is_dir():
            raise FakeApiError(400, "INVALID_PARAMETER_VALUE", f"Cannot read a directory: {path}.")
        offset = int(_param(query, body, "offset") or 0)
        length = int(_param(query, body, "length") or 512 * 1024)
        with open(local, "rb") as f:
            f.seek(offset)
            chunk = f.read(length)
        return {"bytes_read": len(chunk), "data": base64.b64encode(chunk).decode()}

    @ws.route("GET", r"/api/2\.0/dbfs/get-status")
    def get_status(ws, match, query, body):
        path = _required(query, body, "path")
        local = service.dbfs_file(path)
        if not local.exists():
            raise not_found(path)
        return status(path, local)

    @ws.route("GET", r"/api/2\.0/dbfs/list")
    def list_(ws, match, query, body):
        path = _required(query, body, "path")
        local = service.dbfs_file(path)
        if not local.exists():
            raise not_found(path)
        if local.is_file():
            return {"files": [status(path, local)]}
        return {
            "files": [status(f"{path.rstrip('/')}/{child.name}", child) for child in sorted(local.iterdir())]
        }

    @ws.route("POST", r"/api/2\.0/dbfs/delete")
    def delete(ws, match, query, body):
        path = _required(query, body, "path")
        local = service.dbfs_file(path)
        if not local.exists():
            return {}  # deleting a missing path succeeds on DBFS
        if local.is_dir():
            if any(local.iterdir()) and not body.get("recursive"):
                raise FakeApiError(400, "IO_ERROR", f"Directory {path} is not empty; use recursive delete.")
            shutil.rmtree(local)
        else:
            local.unlink()
        return {}


def _install_files(ws: FakeDatabricksWorkspace, service: FakeJobsService) -> None:
    def not_found(path: str) -> FakeApiError:
        return FakeApiError(404, "NOT_FOUND", f"The file or directory {path} does not exist.")

    @ws.route("PUT", r"/api/2\.0/fs/files(/Volumes/.+)")
    def upload(ws, match, query, body):
        path = match.group(1)
        local = service.volumes_file(path)
        if local.exists() and (query.get("overwrite") or ["false"])[0] != "true":
            raise FakeApiError(409, "ALREADY_EXISTS", f"The file {path} already exists.")
        local.parent.mkdir(parents=True, exist_ok=True)
        raw = body.get("_raw")
        local.write_bytes(raw if raw is not None else json.dumps(body).encode() if body else b"")
        return 204, {}

    @ws.route("GET", r"/api/2\.0/fs/files(/Volumes/.+)")
    def download(ws, match, query, body):
        local = service.volumes_file(match.group(1))
        if not local.is_file():
            raise not_found(match.group(1))
        return 200, local.read_bytes()

    @ws.route("DELETE", r"/api/2\.0/fs/files(/Volumes/.+)")
    def delete_file(ws, match, query, body):
        local = service.volumes_file(match.group(1))
        if not local.is_file():
            raise not_found(match.group(1))
        local.unlink()
        return 204, {}

    @ws.route("PUT", r"/api/2\.0/fs/directories(/Volumes/.+)")
    def create_directory(ws, match, query, body):
        service.volumes_file(match.group(1)).mkdir(parents=True, exist_ok=True)
        return 204, {}

    @ws.route("GET", r"/api/2\.0/fs/directories(/Volumes/.+)")
    def list_directory(ws, match, query, body):
        path = match.group(1).rstrip("/")
        local = service.volumes_file(path)
        if not local.is_dir():
            raise not_found(path)
        contents = [
            {
                "path": f"{path}/{child.name}",
                "name": child.name,
                "is_directory": child.is_dir(),
                "file_size": 0 if child.is_dir() else child.stat().st_size,
                "last_modified": int(child.stat().st_mtime * 1000),
            }
            for child in sorted(local.iterdir())
        ]
        return {"contents": contents}

    @ws.route("DELETE", r"/api/2\.0/fs/directories(/Volumes/.+)")
    def delete_directory(ws, match, query, body):
        path = match.group(1)
        local = service.volumes_file(path)
        if not local.is_dir():
            raise not_found(path)
        if any(local.iterdir()):
            raise FakeApiError(400, "DIRECTORY_NOT_EMPTY", f"The directory {path} is not empty.")
        local.rmdir()
        return 204, {}
