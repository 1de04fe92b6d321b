"""Dagster definitions of the raw layer, merged by guidewire_pipeline/definitions.py."""

from __future__ import annotations

import dagster as dg

from guidewire_pipeline.raw.assets import build_raw_asset, raw_checks
from guidewire_pipeline.raw.jobs import cda_raw_job, cda_sync_job
from guidewire_pipeline.raw.sensors import build_cda_manifest_sensor
from guidewire_pipeline.settings import Settings


def build_defs(settings: Settings) -> dg.Definitions:
    return dg.Definitions(
        assets=[build_raw_asset(settings.max_lag_minutes)],
        asset_checks=[raw_checks],
        jobs=[cda_raw_job, cda_sync_job],
        sensors=[build_cda_manifest_sensor(cda_sync_job, settings.automation)],
    )
