"""The Definitions' shared resources, bound once: where the lakehouse is, and how to reach Databricks.

Every domain takes its locations from ``LakehouseResource`` (raw's I/O manager, the medallion, sharing,
maintenance) and its workspace from ``DatabricksWorkspaceResource`` (the notebook runner, Unity
Catalog, sharing), so changing one in the UI's launchpad or in code changes it for all.

``build_resources(settings)`` binds each setting to its environment variable with ``dg.EnvVar`` when
the environment provides it (the UI then shows the variable's name, never a secret's value), and to the
embedded default otherwise (see settings.py).
"""

from __future__ import annotations

import os
from typing import Any

import dagster as dg
from pydantic import Field

from guidewire_pipeline.databricks_auth import DatabricksAuth
from guidewire_pipeline.lakehouse import DEFAULT_CATALOG, Lakehouse
from guidewire_pipeline.settings import Settings, absolute_if_local


class LakehouseResource(dg.ConfigurableResource):
    """Where every layer's tables live (``<delta_root>/<layer>/<table>``) and the Unity Catalog catalog
    naming them (``<catalog>.<layer>.<table>``)."""

    delta_root: str = Field(description="GW_DELTA_ROOT: a local path, file:// or s3:// URI.")
    catalog: str = Field(default=DEFAULT_CATALOG, description="GW_UC_CATALOG: the catalog of every layer's schema.")

    def layout(self) -> Lakehouse:
        return Lakehouse(absolute_if_local(self.delta_root), self.catalog)


class DatabricksWorkspaceResource(dg.ConfigurableResource):
    """A Databricks workspace and its credentials: a personal access token or an OAuth M2M service
    principal. Unset ``host``: no workspace (everything runs locally)."""

    host: str | None = Field(default=None, description="DATABRICKS_HOST.")
    token: str | None = Field(default=None, description="DATABRICKS_TOKEN (bound as an EnvVar).")
    client_id: str | None = Field(default=None, description="DATABRICKS_CLIENT_ID (bound as an EnvVar).")
    client_secret: str | None = Field(default=None, description="DATABRICKS_CLIENT_SECRET (bound as an EnvVar).")
    warehouse_id: str | None = Field(default=None, description="DATABRICKS_WAREHOUSE_ID: a SQL warehouse for "
                                     "registering raw tables in Unity Catalog (unset: the UC tables endpoint).")

    @property
    def configured(self) -> bool:
        return bool(self.host and (self.token or (self.client_id and self.client_secret)))

    def auth(self) -> DatabricksAuth:
        if not self.host:
            raise ValueError("No Databricks workspace is configured: set DATABRICKS_HOST and its credentials.")
        return DatabricksAuth(host=self.host, token=self.token or None, client_id=self.client_id or None,
                              client_secret=self.client_secret or None)

    def workspace_client(self) -> Any:
        return self.auth().workspace_client()


def from_env(variable: str, default: Any = None) -> Any:
    """``dg.EnvVar(variable)`` when the environment sets it, else ``default``."""
    return dg.EnvVar(variable) if os.environ.get(variable) else default


def bind_lakehouse(settings: Settings) -> LakehouseResource:
    return LakehouseResource(delta_root=from_env("GW_DELTA_ROOT", settings.delta_root),
                             catalog=from_env("GW_UC_CATALOG", settings.uc_catalog))


def bind_databricks_workspace() -> DatabricksWorkspaceResource:
    return DatabricksWorkspaceResource(**{
        field: value for field, value in (
            ("host", from_env("DATABRICKS_HOST")), ("token", from_env("DATABRICKS_TOKEN")),
            ("client_id", from_env("DATABRICKS_CLIENT_ID")), ("client_secret", from_env("DATABRICKS_CLIENT_SECRET")),
            ("warehouse_id", from_env("DATABRICKS_WAREHOUSE_ID"))) if value is not None
    })
