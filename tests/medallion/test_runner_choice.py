"""Which runner the definitions bind: local by default, Databricks when configured, and a clear error at
load time for a Databricks runner over a local Delta root; the run-now job only with DATABRICKS_JOB_ID."""

from __future__ import annotations

import pytest

from guidewire_pipeline.deployment import build_definitions
from guidewire_pipeline.medallion.defs import MedallionConfigError, build_defs, build_notebook_runner
from guidewire_pipeline.medallion.runners.databricks import DatabricksNotebookRunner
from guidewire_pipeline.medallion.runners.local import LocalNotebookRunner
from guidewire_pipeline.settings import load_settings


@pytest.fixture(autouse=True)
def _clean(monkeypatch):
    for name in ("DATABRICKS_HOST", "DATABRICKS_TOKEN", "DATABRICKS_CLIENT_ID", "DATABRICKS_CLIENT_SECRET",
                 "DATABRICKS_CLUSTER_ID", "DATABRICKS_JOB_ID", "GW_DELTA_ROOT"):
        monkeypatch.delenv(name, raising=False)


def test_local_without_a_workspace():
    assert isinstance(build_notebook_runner(load_settings()), LocalNotebookRunner)


def test_databricks_with_a_token_or_a_service_principal(monkeypatch):
    monkeypatch.setenv("DATABRICKS_HOST", "https://example.cloud.databricks.com")
    monkeypatch.setenv("GW_DELTA_ROOT", "s3://acme-lake/guidewire")
    monkeypatch.setenv("DATABRICKS_TOKEN", "not-a-real-token")
    runner = build_notebook_runner(load_settings())
    assert isinstance(runner, DatabricksNotebookRunner) and runner.existing_cluster_id is None
    monkeypatch.setenv("DATABRICKS_CLUSTER_ID", "0123-456789-abcde")
    assert build_notebook_runner(load_settings()).existing_cluster_id == "0123-456789-abcde"
    assert "not-a-real-token" not in repr(runner)
    monkeypatch.delenv("DATABRICKS_TOKEN")
    monkeypatch.setenv("DATABRICKS_CLIENT_ID", "sp-id")
    monkeypatch.setenv("DATABRICKS_CLIENT_SECRET", "sp-secret-value")
    runner = build_notebook_runner(load_settings())
    # Bound as EnvVars (the UI shows the variable's name, never its value).
    assert runner.token is None and "sp-secret-value" not in repr(runner)
    assert (runner.client_id, runner.client_secret) == ("DATABRICKS_CLIENT_ID", "DATABRICKS_CLIENT_SECRET")


def test_databricks_over_a_local_delta_root_fails_at_load_naming_the_variable(monkeypatch):
    monkeypatch.setenv("DATABRICKS_HOST", "https://example.cloud.databricks.com")
    monkeypatch.setenv("DATABRICKS_TOKEN", "not-a-real-token")
    with pytest.raises(MedallionConfigError, match="GW_DELTA_ROOT is the local path .* Set GW_DELTA_ROOT to the s3://"):
        build_definitions(load_settings())


def test_the_run_now_job_is_in_the_definitions_only_with_a_job_id(monkeypatch):
    names = {job.name for job in build_defs(load_settings()).jobs}
    assert "databricks_job_run_now" not in names
    monkeypatch.setenv("DATABRICKS_JOB_ID", "123")
    names = {job.name for job in build_defs(load_settings()).jobs}
    assert "databricks_job_run_now" in names
