"""Fixtures for the sharing tests: a fake workspace with the Unity Catalog sharing endpoints."""

from __future__ import annotations

from pathlib import Path

import pytest

from guidewire_pipeline.sharing.backends import UnityCatalogBackend
from guidewire_pipeline.sharing.reconciler import ActivationLinkStore
from guidewire_pipeline.sharing.sharepack import DEFAULT_SHAREPACK, SharePack, load_sharepack
from tests.fakes import unity_catalog
from tests.fakes.databricks_workspace import FakeDatabricksWorkspace


@pytest.fixture
def uc_workspace(databricks_workspace: FakeDatabricksWorkspace) -> FakeDatabricksWorkspace:
    """The fake workspace (tests/conftest_databricks.py) with shares, recipients and permissions."""
    unity_catalog.install(databricks_workspace)
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
