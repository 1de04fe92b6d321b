"""Fixtures of the medallion tests: a Delta root in tmp, settings pointing at it, a Dagster instance,
and a local Spark session (Sail) for the tests that drive the engine directly."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from guidewire_pipeline.medallion.runners.base import NOTEBOOKS_DIR
from guidewire_pipeline.settings import Settings


@pytest.fixture
def delta_root(tmp_path: Path) -> Path:
    root = tmp_path / "delta"
    root.mkdir()
    return root


@pytest.fixture
def medallion_settings(delta_root: Path) -> Settings:
    return Settings(
        manifest_uri=str(delta_root.parent / "cda" / "manifest.json"),
        delta_root=str(delta_root),
        sharepack=None,
        ray_address=None,
        databricks_host=None,
    )


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as test_instance:
        yield test_instance


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    """One Sail server and Spark Connect session per test module, stopped after it."""
    sys.path.insert(0, str(NOTEBOOKS_DIR))
    import gw_medallion_engine as engine

    server, session = engine.start_local_spark("main")
    yield session
    session.stop()
    server.stop()
