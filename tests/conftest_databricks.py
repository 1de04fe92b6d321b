"""Pytest fixture for the fake Databricks workspace; register with
``pytest_plugins = ["tests.conftest_databricks"]`` in tests/conftest.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fakes.databricks_workspace import FakeDatabricksWorkspace

# Anything here would make the SDK pick another auth method or a profile from ~/.databrickscfg.
_CLEARED_ENV = (
    "DATABRICKS_CLIENT_ID",
    "DATABRICKS_CLIENT_SECRET",
    "DATABRICKS_CONFIG_PROFILE",
    "DATABRICKS_ACCOUNT_ID",
    "DATABRICKS_USERNAME",
    "DATABRICKS_PASSWORD",
    "DATABRICKS_AUTH_TYPE",
    "DATABRICKS_JOB_ID",
)


@pytest.fixture
def databricks_workspace(tmp_path, monkeypatch) -> Iterator[FakeDatabricksWorkspace]:
    """A started fake workspace (core only: install plug-ins with ``module.install(ws)``).

    It clears the SDK's other auth variables and points DATABRICKS_HOST / DATABRICKS_TOKEN at the
    fake, so code that reads them (``dg.EnvVar``, ``WorkspaceClient()``) talks to it. Stopped after the test.
    """
    for name in _CLEARED_ENV:
        monkeypatch.delenv(name, raising=False)
    with FakeDatabricksWorkspace(tmp_path / "databricks_workspace") as ws:
        monkeypatch.setenv("DATABRICKS_HOST", ws.host)
        monkeypatch.setenv("DATABRICKS_TOKEN", ws.token)
        yield ws
