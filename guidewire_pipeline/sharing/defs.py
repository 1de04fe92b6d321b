"""Dagster definitions of the sharing domain, merged by guidewire_pipeline/definitions.py."""

from __future__ import annotations

import dagster as dg

from guidewire_pipeline.settings import Settings


def build_defs(settings: Settings) -> dg.Definitions:
    return dg.Definitions()
