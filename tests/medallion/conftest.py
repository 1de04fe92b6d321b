"""Fixtures of the medallion tests: a Delta root in tmp, settings pointing at it, a Dagster instance."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

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
