"""Which notebook runner the definitions bind: local by default, Databricks when configured."""

from __future__ import annotations

from guidewire_pipeline.medallion.defs import build_notebook_runner
from guidewire_pipeline.medallion.runners.databricks import DatabricksNotebookRunner
from guidewire_pipeline.medallion.runners.local import LocalNotebookRunner
from guidewire_pipeline.settings import load_settings


def test_local_without_a_workspace(monkeypatch):
    monkeypatch.delenv("DATABRICKS_HOST", raising=False)
    assert isinstance(build_notebook_runner(load_settings()), LocalNotebookRunner)


def test_databricks_when_host_and_token_are_set(monkeypatch):
    monkeypatch.setenv("DATABRICKS_HOST", "https://example.cloud.databricks.com")
    monkeypatch.setenv("DATABRICKS_TOKEN", "not-a-real-token")
    monkeypatch.setenv("GW_PIPES_VOLUME", "/Volumes/main/default/pipes")
    monkeypatch.delenv("DATABRICKS_CLUSTER_ID", raising=False)
    runner = build_notebook_runner(load_settings())
    assert isinstance(runner, DatabricksNotebookRunner)
    assert runner.pipes_volume_path == "/Volumes/main/default/pipes" and runner.existing_cluster_id is None
    monkeypatch.setenv("DATABRICKS_CLUSTER_ID", "0123-456789-abcde")
    assert build_notebook_runner(load_settings()).existing_cluster_id == "0123-456789-abcde"
    assert "not-a-real-token" not in repr(runner)
