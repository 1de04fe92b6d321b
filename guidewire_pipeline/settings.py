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


def absolute_if_local(uri: str) -> str:
    """Local paths are made absolute so that every process (code server, run worker, Ray) agrees."""
    if "://" in uri:
        return uri
    return str(Path(uri).expanduser().resolve())


@dataclass(frozen=True)
class Settings:
    manifest_uri: str  # GW_MANIFEST_URI
    delta_root: str  # GW_DELTA_ROOT
    sharepack: str | None  # GW_SHAREPACK
    ray_address: str | None  # RAY_ADDRESS
    databricks_host: str | None  # DATABRICKS_HOST
    uc_catalog: str = DEFAULT_CATALOG  # GW_UC_CATALOG
    include_tables: tuple[str, ...] = ()  # GW_INCLUDE_TABLES: only these (comma-separated; empty: all)
    exclude_tables: tuple[str, ...] = ()  # GW_EXCLUDE_TABLES: never these
    largest_tables_first: int = 0  # GW_LARGEST_TABLES_FIRST: the sensor runs the N largest first
    tables_per_run: int = 100  # GW_TABLES_PER_RUN: at most this many tables in one sensor-launched run
    max_lag_minutes: int = 60  # GW_MAX_LAG_MINUTES: raw's freshness policy and lag check
    automation: bool = True  # GW_AUTOMATION=off: the sensors start stopped (nothing runs by itself)

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
        manifest_uri=absolute_if_local(
            os.environ.get("GW_MANIFEST_URI") or str(DEFAULT_DATA_DIR / "cda" / "manifest.json")
        ),
        delta_root=absolute_if_local(os.environ.get("GW_DELTA_ROOT") or str(DEFAULT_DATA_DIR / "delta")),
        sharepack=os.environ.get("GW_SHAREPACK") or None,
        ray_address=os.environ.get("RAY_ADDRESS") or None,
        databricks_host=os.environ.get("DATABRICKS_HOST") or None,
        uc_catalog=os.environ.get("GW_UC_CATALOG") or DEFAULT_CATALOG,
        include_tables=_names("GW_INCLUDE_TABLES"),
        exclude_tables=_names("GW_EXCLUDE_TABLES"),
        largest_tables_first=_count("GW_LARGEST_TABLES_FIRST", 0),
        tables_per_run=max(_count("GW_TABLES_PER_RUN", 100), 1),
        max_lag_minutes=max(_count("GW_MAX_LAG_MINUTES", 60), 1),
        automation=(os.environ.get("GW_AUTOMATION") or "on").strip().lower() not in ("off", "0", "false", "no"),
    )


def _names(variable: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in (os.environ.get(variable) or "").split(",") if name.strip())


def _count(variable: str, default: int) -> int:
    value = (os.environ.get(variable) or "").strip()
    if not value:
        return default
    if not value.isdigit():
        raise ValueError(f"{variable} must be a whole number, got {value!r}.")
    return int(value)
