"""Fixtures for the sharing tests: a fake workspace with the Unity Catalog sharing endpoints."""

from __future__ import annotations

from pathlib import Path

import pytest

from guidewire_pipeline.medallion.marts import load_marts
from guidewire_pipeline.sharing.backends import UnityCatalogBackend
from guidewire_pipeline.sharing.reconciler import ActivationLinkStore
from guidewire_pipeline.sharing.sharepack import DEFAULT_SHAREPACK, SharePack, load_sharepack
from tests.fakes import unity_catalog
from tests.fakes.databricks_workspace import FakeDatabricksWorkspace


@pytest.fixture(autouse=True)
def sharing_state_url(tmp_path: Path, monkeypatch) -> str:
    """Every test gets its own sharing server state: nothing is written to ~/.guidewire_pipeline."""
    url = f"sqlite:///{tmp_path / 'sharing-state.db'}"
    monkeypatch.setenv("GW_SHARING_STATE_URL", url)
    return url


@pytest.fixture
def uc_workspace(databricks_workspace: FakeDatabricksWorkspace) -> FakeDatabricksWorkspace:
    """The fake workspace (tests/conftest_databricks.py) with shares, recipients and permissions, and
    the gold marts registered in Unity Catalog (as the pipeline's gold step does on Databricks)."""
    unity_catalog.install(databricks_workspace)
    for mart in load_marts():
        unity_catalog.register_table(databricks_workspace, f"main.gold.{mart}")
    return databricks_workspace


@pytest.fixture
def backend(uc_workspace: FakeDatabricksWorkspace) -> UnityCatalogBackend:
    return UnityCatalogBackend(uc_workspace.client(retry_timeout_seconds=10))


@pytest.fixture
def links(tmp_path: Path) -> ActivationLinkStore:
    return ActivationLinkStore(tmp_path / "activation-links")


@pytest.fixture
def sample_pack() -> SharePack:
    return load_sharepack(DEFAULT_SHAREPACK).pack
