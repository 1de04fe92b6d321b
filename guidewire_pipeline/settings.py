"""Project settings, read from the environment.

Every setting has an embedded default so that a fresh checkout runs on this one machine:
local folders for the CDA source and the Delta target, local Ray, notebooks as local processes.
Remote parts switch on through standard environment variables (see README, "Configuration").
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from guidewire_pipeline.databricks_auth import auth_from_env
from guidewire_pipeline.lakehouse import DEFAULT_CATALOG, Lakehouse

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
    uc_catalog: str = DEFAULT_CATALOG

    @property
    def databricks_configured(self) -> bool:
        """True when DATABRICKS_HOST has credentials: a token or a service principal (databricks_auth.py)."""
        return bool(self.databricks_host) and auth_from_env() is not None

    @property
    def lakehouse(self) -> Lakehouse:
        """Where each layer's tables live and what Unity Catalog calls them."""
        return Lakehouse(self.delta_root, self.uc_catalog)


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
        uc_catalog=os.environ.get("GW_UC_CATALOG") or DEFAULT_CATALOG,
    )
