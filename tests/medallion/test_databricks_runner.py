"""DatabricksNotebookRunner and the run-now job, executed through Dagster against the fake workspace.

The real databricks-sdk talks HTTP to tests/fakes; the notebook (tests/fakes/notebooks/pipes_probe.py)
really runs as a subprocess and talks Pipes through the fake's DBFS or volume directory.
"""

import base64
import json
import os
import shutil
import signal
import threading

import dagster as dg
import pytest
from dagster._core.errors import DagsterExecutionInterruptedError
from databricks.sdk.service import workspace

from guidewire_pipeline.medallion.databricks_job import build_databricks_run_now_job
from guidewire_pipeline.medallion.runners.base import NotebookRunner
from guidewire_pipeline.medallion.runners.databricks import DatabricksNotebookRunner
from tests.fakes import databricks_jobs
from tests.fakes.databricks_jobs import NOTEBOOK_HOST

PROBE_DIR = NOTEBOOK_HOST.parent / "notebooks"
TABLES = ["cc_claim", "cc_policy"]
FAST = {"poll_interval_seconds": 0.05, "max_poll_interval_seconds": 0.2, "message_poll_interval_seconds": 0.1}


@pytest.fixture
def ws(databricks_workspace):
    databricks_jobs.install(databricks_workspace)
    return databricks_workspace


def _runner(**overrides) -> DatabricksNotebookRunner:
    settings = {"existing_cluster_id": "fake-cluster", "notebooks_dir": str(PROBE_DIR), **FAST, **overrides}
    return DatabricksNotebookRunner.from_env(**settings)


def _probe_asset(mode: str) -> dg.AssetsDefinition:
    @dg.asset(name="probe")
    def probe(context: dg.AssetExecutionContext, notebook_runner: NotebookRunner) -> dg.MaterializeResult:
        run = notebook_runner.run_notebook(
            context, "pipes_probe.py", {"tables": json.dumps(TABLES), "mode": mode}
        )
        return dg.MaterializeResult(
            metadata={**run.run_metadata, "table_results": dg.MetadataValue.json(run.table_results)}
        )

    return probe


def _materialize(mode: str, runner: DatabricksNotebookRunner) -> dg.ExecuteInProcessResult:
    return dg.materialize([_probe_asset(mode)], resources={"notebook_runner": runner}, raise_on_error=False)


def _step_failure(result: dg.ExecuteInProcessResult) -> dg.DagsterEvent:
    failures = [e for e in result.all_events if e.is_step_failure]
    assert len(failures) == 1, [str(e) for e in result.all_events]
    return failures[0]


NEW_CLUSTER = {"spark_version": "15.4.x-scala2.12", "node_type_id": "m5.large", "num_workers": 1}


@pytest.mark.parametrize(
    "compute",
    [{}, {"existing_cluster_id": None, "new_cluster": NEW_CLUSTER}],
    ids=["existing_cluster", "new_cluster"],
)
def test_success_reports_tables_run_id_and_url(ws, compute):
    result = _materialize("ok", _runner(**compute))

    assert result.success, [str(e.event_specific_data) for e in result.all_events if e.is_failure]
    metadata = result.asset_materializations_for_node("probe")[0].metadata
    assert metadata["table_results"].value == [{"table": t, "status": "ok", "rows": len(t)} for t in TABLES]
    run_id = metadata["databricks_run_id"].value
    assert ws.jobs.runs[run_id].result_state == "SUCCESS"
    assert isinstance(metadata["databricks_run_url"], dg.UrlMetadataValue)
    assert metadata["databricks_run_url"].value == ws.jobs.run_page_url(ws.jobs.runs[run_id].job_id, run_id)
    task_spec = ws.jobs.runs[run_id].tasks[0].spec
    assert task_spec["notebook_task"]["base_parameters"]["tables"] == json.dumps(TABLES)
    if compute:
        assert task_spec["new_cluster"]["spark_version"] == NEW_CLUSTER["spark_version"]
    else:
        assert task_spec["existing_cluster_id"] == "fake-cluster"
    assert {lib["pypi"]["package"].split("==")[0] for lib in task_spec["libraries"]} == {
        "dagster-pipes",
        "deltalake",
    }
    # The token appears nowhere Dagster recorded anything.
    assert not any(ws.token in str(event) for event in result.all_events)


def test_notebook_error_fails_the_step_with_state_message_and_error(ws):
    result = _materialize("raise", _runner())

    assert not result.success
    description = _step_failure(result).step_failure_data.user_failure_data.description
    assert "ValueError: pipes_probe was told to fail (tables: cc_claim, cc_policy)" in description
    assert "Task pipes_probe failed with message: Workload failed, see run output for details" in description
    assert "/run/" in description  # the run page
    # The error came from get-output with the TASK run id, which the fake answered without error.
    (run,) = ws.jobs.runs.values()
    assert ("GET", "/api/2.2/jobs/runs/get-output") in ws.requests and not ws.errors
    assert run.result_state == "FAILED"


@pytest.mark.parametrize("when", ["while_polling", "during_submit"])
def test_terminating_the_step_cancels_the_databricks_run(ws, monkeypatch, when):
    # The killed notebook never sends Pipes' closed message: don't wait the default 10 s for it.
    monkeypatch.setattr("dagster._core.pipes.utils.WAIT_FOR_LOGS_AFTER_EXECUTION_INTERVAL", 0)
    # during_submit: the run exists but the client has no run id yet when the interrupt comes.
    ws.jobs.answer_submit_after_start = when == "during_submit"
    task_holder = {}

    def interrupt_when_running() -> None:
        task_holder["task"] = ws.jobs.wait_for_task_running()
        # What `dagster run terminate` / Ctrl-C does to the run worker: SIGINT, turned into an interrupt.
        os.kill(os.getpid(), signal.SIGINT)

    interrupter = threading.Thread(target=interrupt_when_running, daemon=True)
    interrupter.start()
    with pytest.raises(DagsterExecutionInterruptedError):
        dg.materialize([_probe_asset("block")], resources={"notebook_runner": _runner()})
    interrupter.join(5)

    task = task_holder["task"]
    (run,) = ws.jobs.runs.values()
    assert ("POST", "/api/2.2/jobs/runs/cancel") in ws.writes()
    assert run.done.is_set() and run.result_state == "CANCELED"
    assert task.process.poll() is not None  # the notebook process is gone


def test_unchanged_notebook_is_not_uploaded_again(ws, tmp_path):
    notebooks = tmp_path / "notebooks"
    shutil.copytree(PROBE_DIR, notebooks)
    runner = _runner(notebooks_dir=str(notebooks))

    for _ in range(2):
        assert _materialize("ok", runner).success
    assert ws.writes("/api/2.0/workspace/") == [
        ("POST", "/api/2.0/workspace/mkdirs"),
        ("POST", "/api/2.0/workspace/import"),
    ]
    uploaded = ws.jobs.workspace_file("/Shared/guidewire_pipeline/pipes_probe").read_text()
    assert uploaded.startswith("# Databricks notebook source")

    probe = notebooks / "pipes_probe.py"
    probe.write_text(probe.read_text() + "\n# a change\n")
    assert _materialize("ok", runner).success
    assert ws.writes("/api/2.0/workspace/import") == [("POST", "/api/2.0/workspace/import")] * 2


def test_serverless_uses_a_volume_for_pipes(ws):
    runner = _runner(existing_cluster_id=None, pipes_volume_path="/Volumes/main/default/pipes")
    result = _materialize("ok", runner)

    assert result.success, [str(e.event_specific_data) for e in result.all_events if e.is_failure]
    metadata = result.asset_materializations_for_node("probe")[0].metadata
    assert [r["table"] for r in metadata["table_results"].value] == TABLES
    task_spec = ws.jobs.runs[metadata["databricks_run_id"].value].tasks[0].spec
    assert not ({"existing_cluster_id", "new_cluster", "libraries"} & set(task_spec))
    assert any(path.startswith("/api/2.0/fs/") for _, path in ws.writes())
    assert not any(path.startswith("/api/2.0/dbfs/") for _, path in ws.writes())


def test_serverless_without_a_volume_is_refused_before_anything_runs(ws):
    result = _materialize("ok", _runner(existing_cluster_id=None))

    assert "set pipes_volume_path" in _step_failure(result).step_failure_data.user_failure_data.description
    assert ws.writes() == []


def test_upload_refused_by_the_workspace_is_a_failure_naming_the_folder(ws):
    result = _materialize("ok", _runner(workspace_folder="Shared/relative"))

    description = _step_failure(result).step_failure_data.user_failure_data.description
    assert "Could not upload notebook pipes_probe.py to Shared/relative/pipes_probe" in description
    assert "INVALID_PARAMETER_VALUE" in description
    assert ws.writes("/api/2.2/jobs") == []


RUN_NOW_NOTEBOOK = b"""# Databricks notebook source
if dbutils.widgets.get("fail") == "yes":
    raise RuntimeError("run-now notebook failed on purpose")
"""


def _create_run_now_job(ws, fail: str) -> int:
    client = ws.client()
    client.workspace.mkdirs("/Shared/jobs")
    client.workspace.import_(
        "/Shared/jobs/run_now",
        content=base64.b64encode(RUN_NOW_NOTEBOOK).decode(),
        format=workspace.ImportFormat.SOURCE,
        language=workspace.Language.PYTHON,
        overwrite=True,
    )
    task = {
        "task_key": "main",
        "notebook_task": {"notebook_path": "/Shared/jobs/run_now", "base_parameters": {"fail": fail}},
    }
    return ws.jobs.create_job({"name": f"run-now fail={fail}", "tasks": [task]})


def test_run_now_job_is_none_without_job_id(monkeypatch):
    monkeypatch.delenv("DATABRICKS_JOB_ID", raising=False)
    assert build_databricks_run_now_job() is None


@pytest.mark.parametrize("fail", ["no", "yes"])
def test_run_now_job_triggers_the_existing_job(ws, monkeypatch, fail):
    job_id = _create_run_now_job(ws, fail)
    monkeypatch.setenv("DATABRICKS_JOB_ID", str(job_id))
    job = build_databricks_run_now_job(poll_interval_seconds=0.05)

    result = job.execute_in_process(raise_on_error=False)

    (run,) = ws.jobs.runs.values()
    assert run.job_id == job_id and run.run_type == "JOB_RUN"
    assert ("POST", "/api/2.2/jobs/run-now") in ws.writes()
    if fail == "no":
        assert result.success and run.result_state == "SUCCESS"
    else:
        assert not result.success
        message = _step_failure(result).step_failure_data.error.to_string()
        assert "Task main failed with message: Workload failed" in message
