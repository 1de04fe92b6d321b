"""The one ``Definitions`` of this code location. Nothing else imports it.

Each domain builds its own part (assets, jobs, sensors, checks) in ``<domain>/defs.py``;
``deployment.py`` merges them and binds every resource once, from the settings in the environment.
"""

from __future__ import annotations

from guidewire_pipeline.deployment import build_definitions
from guidewire_pipeline.settings import load_settings

defs = build_definitions(load_settings())
