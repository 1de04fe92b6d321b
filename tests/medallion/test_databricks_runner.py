"""DatabricksNotebookRunner against the fake workspace: the real databricks-sdk over HTTP, the real
notebooks and engine executed by the fake's tasks on the local Spark engine (Sail).

One ``run_medallion`` call is one multi-task run (bronze -> silver -> gold, ``depends_on``); results come
back per table from each task's ``dbutils.notebook.exit`` value (``get-output`` on the TASK run id)."""

import os
import signal
import threading
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.errors import DagsterExecutionInterruptedError
from deltalake import DeltaTable

from guidewire_pipeline.medallion.runners.base import NotebookRunner
from guidewire_pipeline.medallion.runners.databricks import DatabricksNotebookRunner, deployment_folder
from guidewire_pipeline.raw.partitions import BRONZE_ASSET_KEY, SILVER_ASSET_KEY
from guidewire_pipeline.settings import Settings
from tests.fakes import databricks_jobs
from tests.medallion.raw_tables import append_raw_batch, change_rows, reference_current_state
from tests.medallion.steps import run_medallion_layers
from tests.medallion.test_silver_correctness import BUSINESS, CASES, VALUE_COLUMNS, silver_state

FAST = {"poll_interval_seconds": 0.05, "max_poll_interval_seconds": 0.2}
NEW_CLUSTER = {"spark_version": "15.4.x-scala2.12", "node_type_id": "m5.large", "num_workers": 1}


@pytest.fixture
def ws(databricks_workspace):
    databricks_jobs.install(databricks_workspace)
    return databricks_workspace


def _runner(**overrides) -> DatabricksNotebookRunner:
    return DatabricksNotebookRunner.from_env(**{"existing_cluster_id": "fake-cluster", **FAST, **overrides})


def _medallion_job(settings: Settings, tables: list[str], marts=None) -> dg.JobDefinition:
    @dg.op
    def medallion(context: dg.OpExecutionContext, notebook_runner: NotebookRunner) -> None:
        run_medallion_layers(context, notebook_runner, settings, tables, marts)

    @dg.job(name="medallion_op_job")
    def job() -> None:
        medallion()

    return job


def _run(settings, tables, runner, instance, marts=()) -> dg.ExecuteInProcessResult:
    job = _medallion_job(settings, tables, marts)
    return job.execute_in_process(resources={"notebook_runner": runner}, instance=instance, raise_on_error=False)


def _latest(instance: dg.DagsterInstance, key: dg.AssetKey) -> dict[str, dict]:
    latest: dict[str, dict] = {}
    for record in instance.fetch_materializations(key, limit=1000).records:
        event = record.asset_materialization
        if event is not None and event.partition not in latest:
            latest[event.partition] = {k: v.value for k, v in event.metadata.items()}
    return latest


def test_silver_matches_reference_through_one_multi_task_run_per_tick(
    ws, delta_root: Path, medallion_settings: Settings, instance: dg.DagsterInstance
):
    tables = ["t_out_of_order", "t_replay", "t_hex_widths", "t_random"]
    delivered: dict[str, list] = {t: [] for t in tables}
    watermark = 1_700_000_000_000
    runner = _runner()
    for tick in range(3):
        for table in tables:
            if CASES[table][tick]:
                watermark += 1000
                rows = change_rows(CASES[table][tick], BUSINESS)
                append_raw_batch(delta_root, table, rows, watermark)
                delivered[table].extend(rows.to_pylist())
        result = _run(medallion_settings, tables, runner, instance)
        assert result.success, [str(e.event_specific_data) for e in result.all_events if e.is_failure]
        for table in tables:
            assert silver_state(delta_root, table) == reference_current_state(delivered[table], VALUE_COLUMNS), (
                table, tick)

    assert len(ws.jobs.runs) == 3  # one Databricks run per call, whatever the table count
    run = list(ws.jobs.runs.values())[-1]
    assert [(t.task_key, t.spec.get("depends_on")) for t in run.tasks] == [
        ("bronze", None), ("silver", [{"task_key": "bronze"}]), ("gold", [{"task_key": "silver"}])]
    assert [t.result_state for t in run.tasks] == ["SUCCESS"] * 3
    silver = _latest(instance, SILVER_ASSET_KEY)["t_random"]
    assert silver["runner"] == "databricks" and silver["dagster/table_name"] == "main.silver.t_random"
    assert silver["silver_task_run_url"].startswith(ws.host) and "/run/" in silver["silver_task_run_url"]
    # Notebooks and engine were uploaded once, to a folder named after their content.
    folder = deployment_folder("/Shared/guidewire_pipeline")
    assert run.tasks[0].spec["notebook_task"]["notebook_path"] == f"{folder}/notebooks/01_bronze"
    assert ws.writes("/api/2.0/workspace/import").count(("POST", "/api/2.0/workspace/import")) == 7
    # No AWS key or token is passed to the job, and none is recorded anywhere.
    assert "AWS_" not in str(run.tasks[0].spec)
    events = [str(e) for e in instance.all_logs(result.run_id)]
    assert not any(ws.token in e for e in events)


def test_a_failing_middle_task_shows_its_error_skips_gold_and_fails_the_step_naming_it(
    ws, delta_root: Path, medallion_settings: Settings, instance: dg.DagsterInstance
):
    """The silver task dies right after its first data commit (a killed driver). Silver's error is
    shown, gold never runs, Dagster fails the step naming task silver; the re-run loses and duplicates
    nothing (bronze and silver savepoints are their data)."""
    batches = CASES["t_random"]
    delivered = []
    for index, batch in enumerate(batches):
        rows = change_rows(batch, BUSINESS)
        append_raw_batch(delta_root, "t_random", rows, 1_700_000_000_000 + index * 1000)
        delivered.extend(rows.to_pylist())
    crashing = _runner(existing_cluster_id=None, chunk_rows=150,
                       new_cluster={**NEW_CLUSTER, "spark_env_vars": {"GW_MEDALLION_FAULT_AFTER_COMMITS": "silver:1"}})

    result = _run(medallion_settings, ["t_random"], crashing, instance, marts=None)

    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure).step_failure_data.user_failure_data
    assert "Task silver of the medallion run failed" in failure.description
    assert "Notebook process exited with code 137" in failure.description
    assert failure.metadata["failed_task"].value == "silver"
    (run,) = ws.jobs.runs.values()
    assert [(t.task_key, t.result_state) for t in run.tasks] == [
        ("bronze", "SUCCESS"), ("silver", "FAILED"), ("gold", "UPSTREAM_FAILED")]
    assert run.tasks[2].process is None  # gold never started
    assert _latest(instance, BRONZE_ASSET_KEY)["t_random"]["status"] == "changed"  # bronze still recorded
    assert not (delta_root / "gold").exists()

    assert _run(medallion_settings, ["t_random"], _runner(chunk_rows=150), instance).success
    assert silver_state(delta_root, "t_random") == reference_current_state(delivered, VALUE_COLUMNS)
    bronze = DeltaTable(str(delta_root / "bronze" / "t_random")).to_pyarrow_table()
    assert bronze.num_rows == len(delivered)  # every raw row exactly once


def test_a_new_deployment_goes_to_a_new_folder(ws, tmp_path, monkeypatch):
    client = ws.client()
    runner = _runner()
    first, uploaded = runner.upload(client)
    assert uploaded and runner.upload(client) == (first, False)
    engine = tmp_path / "notebooks"
    import shutil

    from guidewire_pipeline.medallion.runners import base

    shutil.copytree(base.NOTEBOOKS_DIR, engine)
    (engine / base.ENGINE_FILE).write_text((engine / base.ENGINE_FILE).read_text() + "\n# another version\n")
    monkeypatch.setattr("guidewire_pipeline.medallion.runners.databricks.NOTEBOOKS_DIR", engine)
    second, uploaded = runner.upload(client)
    assert uploaded and second != first
    assert "# another version" not in ws.jobs.workspace_file(f"{first}/notebooks/gw_medallion_engine.py").read_text()
    assert "# another version" in ws.jobs.workspace_file(f"{second}/notebooks/gw_medallion_engine.py").read_text()


def test_upload_refused_is_a_failure_naming_the_folder(ws, medallion_settings, instance):
    result = _run(medallion_settings, ["t"], _runner(workspace_folder="Shared/relative"), instance)
    description = next(e for e in result.all_events if e.is_step_failure).step_failure_data.user_failure_data.description
    assert "Could not upload the medallion notebooks to Shared/relative" in description
    assert ws.writes("/api/2.2/jobs") == []


def test_terminating_the_step_cancels_the_databricks_run(ws, medallion_settings, delta_root, instance):
    append_raw_batch(delta_root, "t_one", change_rows(CASES["t_delete"][0], BUSINESS), 1_700_000_000_000)
    task_holder = {}

    def interrupt_when_running() -> None:
        task_holder["task"] = ws.jobs.wait_for_task_running()
        os.kill(os.getpid(), signal.SIGINT)  # what `dagster run terminate` does to the run worker

    interrupter = threading.Thread(target=interrupt_when_running, daemon=True)
    interrupter.start()
    with pytest.raises(DagsterExecutionInterruptedError):
        _medallion_job(medallion_settings, ["t_one"]).execute_in_process(
            resources={"notebook_runner": _runner()}, instance=instance)
    interrupter.join(5)
    (run,) = ws.jobs.runs.values()
    assert ("POST", "/api/2.2/jobs/runs/cancel") in ws.writes()
    assert run.done.is_set() and run.result_state == "CANCELED"
    assert task_holder["task"].process.poll() is not None
