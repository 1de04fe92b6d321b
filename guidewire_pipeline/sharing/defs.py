"""Dagster definitions of the sharing domain, merged by guidewire_pipeline/definitions.py.

- asset ``delta_shares``, downstream of the gold marts its share pack shares;
- resource ``delta_sharing``: Unity Catalog when DATABRICKS_HOST and DATABRICKS_TOKEN are set (bound
  through ``EnvVar``), else the local dry run against an empty live state; activation links of new
  token recipients go to ``GW_ACTIVATION_LINK_DIR`` (default ``~/.guidewire_pipeline/activation-links``);
- ``delta_sharing_plan_job`` (dry run, writes nothing) and ``delta_sharing_job`` (applies).
"""

from __future__ import annotations

import logging
import os

import dagster as dg

from guidewire_pipeline.medallion.marts import load_marts
from guidewire_pipeline.raw.partitions import gold_asset_key
from guidewire_pipeline.settings import Settings
from guidewire_pipeline.sharing.assets import (
    DEFAULT_ACTIVATION_LINK_DIR,
    DELTA_SHARES_KEY,
    DeltaSharingResource,
    build_delta_shares_asset,
    sharepack_path,
)
from guidewire_pipeline.sharing.sharepack import SharePackInvalid, load_sharepack

log = logging.getLogger(__name__)


def shared_gold_marts(settings: Settings) -> list[str]:
    """The gold marts the pack shares: data objects ``catalog.schema.<mart>`` matched by table name to
    ``medallion/gold/<mart>.sql``. While that folder has no mart yet, every table the pack names.

    An invalid pack yields no dependency here (the definitions still load); the asset then fails with
    the pack's problems when it runs.
    """
    try:
        pack = load_sharepack(sharepack_path(settings)).pack
    except SharePackInvalid as exc:
        log.warning("delta_shares has no gold dependencies: %s", exc)
        return []
    tables = sorted({obj.table_name for share in pack.share for obj in share.data_objects})
    marts = set(load_marts())
    return [t for t in tables if t in marts] if marts else tables


def build_defs(settings: Settings) -> dg.Definitions:
    link_dir = os.environ.get("GW_ACTIVATION_LINK_DIR") or DEFAULT_ACTIVATION_LINK_DIR
    resource = (
        DeltaSharingResource(
            host=dg.EnvVar("DATABRICKS_HOST"),
            token=dg.EnvVar("DATABRICKS_TOKEN"),
            activation_link_dir=link_dir,
        )
        if settings.databricks_configured
        else DeltaSharingResource(activation_link_dir=link_dir)
    )
    asset = build_delta_shares_asset(settings, [gold_asset_key(m) for m in shared_gold_marts(settings)])
    plan_job = dg.define_asset_job(
        "delta_sharing_plan_job",
        selection=dg.AssetSelection.assets(DELTA_SHARES_KEY),
        config={"ops": {"delta_shares": {"config": {"dry_run": True}}}},
        description="Dry run: read the workspace and show the sharing plan in the asset's metadata; writes nothing.",
    )
    apply_job = dg.define_asset_job(
        "delta_sharing_job",
        selection=dg.AssetSelection.assets(DELTA_SHARES_KEY),
        config={"ops": {"delta_shares": {"config": {"dry_run": False}}}},
        description="Apply the share pack: create, update (and with prune: delete) shares, recipients and grants.",
    )
    return dg.Definitions(assets=[asset], jobs=[plan_job, apply_job], resources={"delta_sharing": resource})
