"""Helpers shared by the Dagster-level tests: settings for a test's own folders, and the deployment's
resources for them (the same binding the Definitions use)."""

from __future__ import annotations

from typing import Any

from guidewire_pipeline.deployment import build_resources
from guidewire_pipeline.raw.assets import RAW_IO_MANAGER_KEY
from guidewire_pipeline.raw.io_manager import RayDeltaIOManager
from guidewire_pipeline.settings import Settings


def settings_for(manifest_uri: str, delta_root: str, **fields: Any) -> Settings:
    return Settings(manifest_uri=manifest_uri, delta_root=delta_root, sharepack=None, ray_address=None,
                    databricks_host=None, **fields)


def resources_for(settings: Settings, **raw_io_manager: Any) -> dict[str, Any]:
    """The deployment's resources for ``settings``; ``raw_io_manager`` fields override the I/O manager's
    (e.g. ``driver_max_bytes=0`` to load on Ray)."""
    resources = build_resources(settings)
    if raw_io_manager:
        current: RayDeltaIOManager = resources[RAW_IO_MANAGER_KEY]  # type: ignore[assignment]
        resources[RAW_IO_MANAGER_KEY] = RayDeltaIOManager(lakehouse=resources["lakehouse"],
                                                          workspace=current.workspace, **raw_io_manager)
    return resources
