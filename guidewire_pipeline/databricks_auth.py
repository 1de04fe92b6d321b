"""How this project authenticates to a Databricks workspace: one place for the runner, Unity Catalog
and sharing alike (no Dagster here).

The SDK's standard variables decide: ``DATABRICKS_HOST`` with either ``DATABRICKS_TOKEN`` (a personal
access token) or ``DATABRICKS_CLIENT_ID`` and ``DATABRICKS_CLIENT_SECRET`` (an OAuth machine-to-machine
service principal, what production uses). The auth type is pinned explicitly, so that a stray
``~/.databrickscfg`` profile or another variable never makes the SDK pick something else.
Secrets are handed to the client only; nothing here logs or returns them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

AuthType = Literal["pat", "oauth-m2m"]


class DatabricksAuthError(ValueError):
    """The workspace is half configured: the message names the variables to set."""


@dataclass(frozen=True)
class DatabricksAuth:
    """A workspace host and the credentials for it. ``repr`` never shows a secret."""

    host: str
    token: str | None = None
    client_id: str | None = None
    client_secret: str | None = None

    @property
    def auth_type(self) -> AuthType:
        if self.token:
            return "pat"
        if self.client_id and self.client_secret:
            return "oauth-m2m"
        raise DatabricksAuthError(
            f"DATABRICKS_HOST is set ({self.host}) but no credentials are: set DATABRICKS_TOKEN, or "
            "DATABRICKS_CLIENT_ID and DATABRICKS_CLIENT_SECRET for a service principal."
        )

    def workspace_client(self) -> Any:
        """A ``databricks.sdk.WorkspaceClient`` with exactly these credentials."""
        from databricks.sdk import WorkspaceClient

        if self.auth_type == "pat":
            return WorkspaceClient(host=self.host, token=self.token, auth_type="pat")
        return WorkspaceClient(host=self.host, client_id=self.client_id, client_secret=self.client_secret,
                               auth_type="oauth-m2m")

    def __repr__(self) -> str:
        return f"DatabricksAuth(host={self.host!r}, auth_type={self.auth_type!r})"


def auth_from_env(env: Mapping[str, str] | None = None) -> DatabricksAuth | None:
    """The workspace credentials in the environment; None when ``DATABRICKS_HOST`` is unset.
    Raises ``DatabricksAuthError`` when the host is set without usable credentials."""
    env = os.environ if env is None else env
    host = env.get("DATABRICKS_HOST") or None
    if not host:
        return None
    auth = DatabricksAuth(host=host, token=env.get("DATABRICKS_TOKEN") or None,
                          client_id=env.get("DATABRICKS_CLIENT_ID") or None,
                          client_secret=env.get("DATABRICKS_CLIENT_SECRET") or None)
    auth.auth_type  # noqa: B018 - validates now, with a message naming the variables
    return auth
