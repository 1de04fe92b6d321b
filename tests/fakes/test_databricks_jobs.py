"""The fake Jobs / Workspace / DBFS / Files endpoints, driven through the real databricks-sdk."""

from __future__ import annotations

import base64
import io

import pytest
from databricks.sdk.errors import BadRequest, NotFound
from databricks.sdk.service import jobs, workspace

from tests.fakes import databricks_jobs

ECHO_NOTEBOOK = b"""# Databricks notebook source
# MAGIC %md a markdown cell is a comment

# COMMAND ----------

import os
name = dbutils.widgets.get("name")
if name == "boom":
    raise RuntimeError(f"cannot greet {name}")
if name == "block":
    import time
    while True:
        time.sleep(0.1)
dbutils.notebook.exit(f"hello {name} mount={os.environ['GW_DBFS_MOUNT'] != ''} token={'DATABRICKS_TOKEN' in os.environ}")
"""


@pytest.fixture
def ws(databricks_workspace):
    databricks_jobs.install(databricks_workspace)
    return databricks_workspace


@pytest.fixture
def client(ws):
    client = ws.client()
    client.workspace.mkdirs("/Shared/t")
    client.workspace.import_(
        "/Shared/t/echo",
        content=base64.b64encode(ECHO_NOTEBOOK).decode(),
        format=workspace.ImportFormat.SOURCE,
        language=workspace.Language.PYTHON,
    )
    return client


def _submit(client, name: str) -> int:
    task = jobs.SubmitTask(
        task_key="echo",
        existing_cluster_id="fake-cluster",
        notebook_task=jobs.NotebookTask(notebook_path="/Shared/t/echo", base_parameters={"name": name}),
    )
    return client.jobs.submit(run_name="echo", tasks=[task]).bind()["run_id"]


def test_successful_run_life_cycle_and_output(ws, client):
    run_id = _submit(client, "world")
    fake_run = ws.jobs.wait(run_id)
    run = client.jobs.get_run(run_id)
    assert fake_run.history == ["PENDING", "RUNNING", "TERMINATING", "TERMINATED"]
    assert run.state.life_cycle_state == jobs.RunLifeCycleState.TERMINATED
    assert run.state.result_state == jobs.RunResultState.SUCCESS
    assert run.run_page_url.startswith(ws.host) and str(run_id) in run.run_page_url
    output = client.jobs.get_run_output(run.tasks[0].run_id)
    # The notebook sees the DBFS mount but not the orchestrator's credentials.
    assert output.notebook_output.result == "hello world mount=True token=False"


def test_get_output_of_parent_run_is_rejected_like_databricks(ws, client):
    run_id = _submit(client, "world")
    ws.jobs.wait(run_id)
    with pytest.raises(BadRequest, match="multiple tasks") as e:
        client.jobs.get_run_output(run_id)
    assert e.value.error_code == "INVALID_PARAMETER_VALUE"


def test_failing_notebook_reports_error_and_trace(ws, client):
    run_id = _submit(client, "boom")
    ws.jobs.wait(run_id)
    run = client.jobs.get_run(run_id)
    assert run.state.result_state == jobs.RunResultState.FAILED
    assert "Task echo failed" in run.state.state_message
    output = client.jobs.get_run_output(run.tasks[0].run_id)
    assert output.error == "RuntimeError: cannot greet boom"
    assert "Traceback" in output.error_trace and "/Shared/t/echo" in output.error_trace


def test_cancel_kills_the_notebook_process(ws, client):
    run_id = _submit(client, "block")
    task = ws.jobs.wait_for_task_running()
    client.jobs.cancel_run(run_id)
    ws.jobs.wait(run_id)
    assert task.process.poll() is not None
    run = client.jobs.get_run(run_id)
    assert run.state.result_state == jobs.RunResultState.CANCELED
    assert ("POST", "/api/2.2/jobs/runs/cancel") in ws.writes()


def test_missing_notebook_is_internal_error(ws, client):
    task = jobs.SubmitTask(task_key="t", notebook_task=jobs.NotebookTask(notebook_path="/Shared/t/nope"))
    run_id = client.jobs.submit(tasks=[task]).bind()["run_id"]
    ws.jobs.wait(run_id)
    state = client.jobs.get_run(run_id).state
    assert state.life_cycle_state == jobs.RunLifeCycleState.INTERNAL_ERROR
    assert "/Shared/t/nope" in state.state_message


def test_run_now_of_existing_job_uses_its_settings_and_overrides(ws, client):
    job_id = ws.jobs.create_job(
        {
            "name": "echo job",
            "tasks": [
                {
                    "task_key": "echo",
                    "notebook_task": {"notebook_path": "/Shared/t/echo", "base_parameters": {"name": "job"}},
                }
            ],
        }
    )
    assert client.jobs.get(job_id).settings.name == "echo job"
    run_id = client.jobs.run_now(job_id, notebook_params={"name": "override"}).bind()["run_id"]
    ws.jobs.wait(run_id)
    run = client.jobs.get_run(run_id)
    assert run.job_id == job_id and run.state.result_state == jobs.RunResultState.SUCCESS
    assert client.jobs.get_run_output(run.tasks[0].run_id).notebook_output.result.startswith("hello override")
    with pytest.raises(BadRequest, match="does not exist"):
        client.jobs.run_now(job_id + 999)


def test_workspace_get_status_and_import_rules(ws, client):
    with pytest.raises(NotFound) as e:
        client.workspace.get_status("/Shared/t/missing")
    assert e.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    assert client.workspace.get_status("/Shared/t/echo").object_type == workspace.ObjectType.NOTEBOOK
    with pytest.raises(NotFound, match="parent folder"):
        client.workspace.import_(
            "/Nope/x", content="", format=workspace.ImportFormat.SOURCE, language=workspace.Language.PYTHON
        )
    exported = client.workspace.export("/Shared/t/echo", format=workspace.ExportFormat.SOURCE)
    assert base64.b64decode(exported.content) == ECHO_NOTEBOOK


def test_dbfs_round_trip(ws, client):
    dbfs = client.dbfs
    dbfs.mkdirs("/tmp/x")
    dbfs.put("/tmp/x/a.json", contents=base64.b64encode(b'{"a": 1}').decode(), overwrite=True)
    assert (ws.root / "dbfs" / "tmp" / "x" / "a.json").read_bytes() == b'{"a": 1}'
    assert base64.b64decode(dbfs.read("/tmp/x/a.json").data) == b'{"a": 1}'
    assert dbfs.get_status("/tmp/x").is_dir
    with pytest.raises(NotFound):
        dbfs.read("/tmp/x/missing.json")
    dbfs.delete("/tmp/x", recursive=True)
    with pytest.raises(NotFound):
        dbfs.get_status("/tmp/x")


def test_volumes_round_trip(ws, client):
    files = client.files
    files.create_directory("/Volumes/main/default/pipes/tmp/d")
    files.upload("/Volumes/main/default/pipes/tmp/d/1.json", io.BytesIO(b"chunk"), overwrite=True)
    assert [e.name for e in files.list_directory_contents("/Volumes/main/default/pipes/tmp/d")] == ["1.json"]
    assert files.download("/Volumes/main/default/pipes/tmp/d/1.json").contents.read() == b"chunk"
    with pytest.raises(NotFound):
        files.download("/Volumes/main/default/pipes/tmp/d/2.json")
    files.delete("/Volumes/main/default/pipes/tmp/d/1.json")
    files.delete_directory("/Volumes/main/default/pipes/tmp/d")
