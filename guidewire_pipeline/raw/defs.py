"""Dagster definitions of the raw layer, merged by guidewire_pipeline/definitions.py."""

from __future__ import annotations

import dagster as dg

from guidewire_pipeline.raw.assets import RAW_IO_MANAGER_KEY, cda_raw, raw_checks
from guidewire_pipeline.raw.io_manager import RayDeltaIOManager
from guidewire_pipeline.raw.jobs import cda_raw_job, cda_sync_job
from guidewire_pipeline.raw.resources import CdaSource
from guidewire_pipeline.settings import Settings


def build_resources(settings: Settings) -> dict[str, dg.ConfigurableResource]:
    return {
        "cda_source": CdaSource(manifest_uri=settings.manifest_uri),
        RAW_IO_MANAGER_KEY: RayDeltaIOManager(delta_root=settings.delta_root, ray_address=settings.ray_address),
    }


def build_defs(settings: Settings) -> dg.Definitions:
    return dg.Definitions(
        assets=[cda_raw],
        asset_checks=raw_checks,
        jobs=[cda_raw_job, cda_sync_job],
        resources=build_resources(settings),
    )
