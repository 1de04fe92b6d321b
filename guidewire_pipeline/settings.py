"""Project settings, read from the environment.

Every setting has an embedded default so that a fresh checkout runs on this one machine:
local folders for the CDA source and the Delta target, local Ray, notebooks as local processes.
Remote parts switch on through standard environment variables (see README, "Configuration").
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_DATA_DIR = Path("data")


def _absolute_if_local(uri: str) -> str:
    """Local paths are made absolute so that every process (code server, run worker, Ray) agrees."""
    if "://" in uri:
        return uri
    return str(Path(uri).expanduser().resolve())


@dataclass(frozen=True)
class Settings:
    manifest_uri: str
    delta_root: str
    sharepack: str | None
    ray_address: str | None
    databricks_host: str | None

    @property
    def databricks_configured(self) -> bool:
        return bool(self.databricks_host and os.environ.get("DATABRICKS_TOKEN"))

    def layer_uri(self, layer: str, name: str) -> str:
        """`<GW_DELTA_ROOT>/<layer>/<name>`, e.g. ``layer_uri("raw", "cc_claim")``."""
        return f"{self.delta_root.rstrip('/')}/{layer}/{name}"


def load_settings() -> Settings:
    """Read the settings from the environment (nothing is cached: tests change the environment)."""
    return Settings(
        manifest_uri=_absolute_if_local(
            os.environ.get("GW_MANIFEST_URI") or str(DEFAULT_DATA_DIR / "cda" / "manifest.json")
        ),
        delta_root=_absolute_if_local(os.environ.get("GW_DELTA_ROOT") or str(DEFAULT_DATA_DIR / "delta")),
        sharepack=os.environ.get("GW_SHAREPACK") or None,
        ray_address=os.environ.get("RAY_ADDRESS") or None,
        databricks_host=os.environ.get("DATABRICKS_HOST") or None,
    )
