"""Dagster definitions of the sharing domain, merged by guidewire_pipeline/definitions.py.

- asset ``delta_shares``, downstream of every gold mart, and its check ``sharepack_plan``;
- resource ``delta_sharing`` (bound in deployment.py on the Definitions' one lakehouse): Unity Catalog when a workspace is
  configured (``DATABRICKS_HOST`` with a token or a service principal, bound through ``EnvVar``), else
  the local Delta Sharing server's state (``GW_SHARING_STATE_URL``); credentials of new token
  recipients go to ``GW_ACTIVATION_LINK_DIR`` (default ``~/.guidewire_pipeline/activation-links``);
- ``delta_sharing_plan_job`` (dry run, writes nothing), ``delta_sharing_job`` (applies) and
  ``delta_sharing_schedule`` (applies on ``GW_SHARING_CRON``, default daily 06:00; off until turned on).

Nothing here reads the share pack: it is read when a sharing step runs, so a broken pack never stops
the Definitions from loading, nor any raw, bronze or silver run.
"""

from __future__ import annotations

import os

import dagster as dg

from guidewire_pipeline.medallion.marts import load_marts
from guidewire_pipeline.raw.partitions import gold_asset_key
from guidewire_pipeline.resources import LakehouseResource
from guidewire_pipeline.settings import Settings
from guidewire_pipeline.sharing.assets import (
    DEFAULT_ACTIVATION_LINK_DIR,
    DEFAULT_SHARING_ENDPOINT,
    DEFAULT_TOKEN_LIFETIME_DAYS,
    DELTA_SHARES_KEY,
    DeltaSharingResource,
    build_delta_shares_asset,
    build_sharepack_plan_check,
)
from guidewire_pipeline.sharing.server.state import STATE_URL_ENV

DEFAULT_SHARING_CRON = "0 6 * * *"


def build_sharing_resource(settings: Settings, lakehouse: LakehouseResource) -> DeltaSharingResource:
    """The ``delta_sharing`` resource on the Definitions' one lakehouse, secrets as ``EnvVar``."""
    common: dict = {
        "activation_link_dir": os.environ.get("GW_ACTIVATION_LINK_DIR") or DEFAULT_ACTIVATION_LINK_DIR,
        "lakehouse": lakehouse,
        "sharepack": settings.sharepack,
        "endpoint": os.environ.get("GW_SHARING_ENDPOINT") or DEFAULT_SHARING_ENDPOINT,
        "token_lifetime_days": int(os.environ.get("GW_SHARING_TOKEN_DAYS") or DEFAULT_TOKEN_LIFETIME_DAYS),
    }
    if os.environ.get(STATE_URL_ENV):
        common["state_url"] = dg.EnvVar(STATE_URL_ENV)  # a Postgres URL may carry a password
    if settings.databricks_configured:
        secrets = {
            field: dg.EnvVar(variable)
            for field, variable in (("token", "DATABRICKS_TOKEN"), ("client_id", "DATABRICKS_CLIENT_ID"),
                                    ("client_secret", "DATABRICKS_CLIENT_SECRET"))
            if os.environ.get(variable)
        }
        return DeltaSharingResource(host=dg.EnvVar("DATABRICKS_HOST"), **secrets, **common)
    return DeltaSharingResource(**common)


def build_defs(settings: Settings) -> dg.Definitions:
    asset = build_delta_shares_asset([gold_asset_key(m) for m in load_marts()])
    check = build_sharepack_plan_check()
    plan_job = dg.define_asset_job(
        "delta_sharing_plan_job",
        selection=dg.AssetSelection.assets(DELTA_SHARES_KEY),
        config={"ops": {"delta_shares": {"config": {"dry_run": True}}}},
        description="Dry run: read the live state and show the sharing plan in the asset's metadata; writes nothing.",
    )
    apply_job = dg.define_asset_job(
        "delta_sharing_job",
        selection=dg.AssetSelection.assets(DELTA_SHARES_KEY),
        description="Apply the share pack: create, update (and with prune: delete) shares, recipients and "
        "grants. Run config `ops.delta_shares.config.rotate: [recipient]` renews token credentials.",
    )
    schedule = dg.ScheduleDefinition(
        name="delta_sharing_schedule",
        job=apply_job,
        cron_schedule=os.environ.get("GW_SHARING_CRON") or DEFAULT_SHARING_CRON,
        default_status=dg.DefaultScheduleStatus.STOPPED,
        description="Applies the share pack on its own schedule, apart from the data refresh. Off by "
        "default: turn it on in the UI (Automation) or run delta_sharing_job on demand.",
    )
    return dg.Definitions(
        assets=[asset],
        asset_checks=[check],
        jobs=[plan_job, apply_job],
        schedules=[schedule],
    )
