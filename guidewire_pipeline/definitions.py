"""The one ``Definitions`` of this code location. Nothing else imports it.

Each domain builds its own part (assets, resources, jobs, sensors, checks) in ``<domain>/defs.py``;
this module only merges them, with the settings read from the environment.
"""

from __future__ import annotations

import dagster as dg

from guidewire_pipeline.medallion.defs import build_defs as build_medallion_defs
from guidewire_pipeline.pipeline import build_defs as build_pipeline_defs
from guidewire_pipeline.raw.defs import build_defs as build_raw_defs
from guidewire_pipeline.settings import load_settings
from guidewire_pipeline.sharing.defs import build_defs as build_sharing_defs

_settings = load_settings()

defs = dg.Definitions.merge(
    build_raw_defs(_settings),
    build_medallion_defs(_settings),
    build_sharing_defs(_settings),
    build_pipeline_defs(_settings),
)
