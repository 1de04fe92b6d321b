"""Dagster definitions of the medallion domain, merged by guidewire_pipeline/definitions.py.

- ``cda_bronze`` and ``cda_silver``: partitioned like ``cda_raw`` (one key per CDA table, identity mapping);
  a run over many partitions runs each notebook once for all of them (``BackfillPolicy.single_run``).
- ``gold/<mart>``: one unpartitioned asset per SQL file in ``gold/``, depending on the silver partitions
  it reads (ops may run every mart in one notebook run with ``run_gold``).
- ``notebook_runner``: ``LocalNotebookRunner`` unless Databricks is configured.
- ``medallion_job``: bronze -> silver -> gold for the selected partitions.
- ``databricks_job_run_now``: the bundle's job (``databricks.yml``), when ``DATABRICKS_JOB_ID`` is set.
"""

# No "from __future__ import annotations": Dagster inspects the context type hints at runtime.

import os
from collections.abc import Callable, Sequence
from typing import Any

import dagster as dg

from guidewire_pipeline.medallion.databricks_job import build_databricks_run_now_job
from guidewire_pipeline.medallion.layers import run_bronze, run_gold, run_silver
from guidewire_pipeline.medallion.marts import Mart, load_marts
from guidewire_pipeline.medallion.runners.base import NotebookRunner
from guidewire_pipeline.medallion.runners.databricks import DatabricksNotebookRunner
from guidewire_pipeline.medallion.runners.local import LocalNotebookRunner
from guidewire_pipeline.raw.partitions import (
    BRONZE_ASSET_KEY,
    RAW_ASSET_KEY,
    SILVER_ASSET_KEY,
    gold_asset_key,
    guidewire_tables,
)
from guidewire_pipeline.settings import Settings

MEDALLION_GROUP = "medallion"


class MedallionConfigError(ValueError):
    """The medallion's settings contradict each other; the message names the variable to set."""


def build_notebook_runner(settings: Settings) -> NotebookRunner:
    """The Databricks runner when a workspace is configured (``DATABRICKS_HOST`` with a token or a service
    principal, see ``databricks_auth.py``); else the local one.

    On Databricks: ``DATABRICKS_CLUSTER_ID`` (the SDK's own variable) runs every task on that cluster;
    without it the tasks are serverless. Raises ``MedallionConfigError`` (at Definitions load) when the
    Delta root is a local path: a cluster cannot see it, and the run would be green with nothing written."""
    if not settings.databricks_configured:
        return LocalNotebookRunner()
    if settings.lakehouse.is_local:
        raise MedallionConfigError(
            f"DATABRICKS_HOST is set, so the medallion runs on Databricks, but GW_DELTA_ROOT is the local path "
            f"{settings.delta_root!r}, which no cluster can read. Set GW_DELTA_ROOT to the s3:// root of the "
            "lakehouse (covered by a Unity Catalog external location), or unset DATABRICKS_HOST to run locally."
        )
    overrides = {"existing_cluster_id": os.environ.get("DATABRICKS_CLUSTER_ID") or None}
    # Host and credentials come from the environment as EnvVars: never shown in the UI.
    return DatabricksNotebookRunner.from_env(**{k: v for k, v in overrides.items() if v})


def build_medallion_assets(settings: Settings) -> list[dg.AssetsDefinition]:
    bronze = _layer_asset(
        settings, BRONZE_ASSET_KEY, RAW_ASSET_KEY, run_bronze,
        "Raw CDA change rows, typed, with a sortable sequence key and lineage (notebook 01_bronze.py).",
    )
    silver = _layer_asset(
        settings, SILVER_ASSET_KEY, BRONZE_ASSET_KEY, run_silver,
        "Current state of every Guidewire record, merged from bronze changes (notebook 02_silver.py).",
    )
    return [bronze, silver, *(build_gold_asset(settings, mart) for mart in load_marts().values())]


def _layer_asset(
    settings: Settings, key: dg.AssetKey, upstream: dg.AssetKey,
    run_layer: Callable[[dg.AssetExecutionContext, NotebookRunner, Settings, Sequence[str]], Any],
    description: str,
) -> dg.AssetsDefinition:
    """A per-table layer asset (bronze or silver): one notebook run for the run's partitions."""

    @dg.asset(
        key=key,
        partitions_def=guidewire_tables,
        deps=[dg.AssetDep(upstream, partition_mapping=dg.IdentityPartitionMapping())],
        backfill_policy=dg.BackfillPolicy.single_run(),
        group_name=MEDALLION_GROUP,
        kinds={"deltalake", "python"},
        description=description,
    )
    def layer(context: dg.AssetExecutionContext, notebook_runner: NotebookRunner) -> dg.MaterializeResult:
        run_layer(context, notebook_runner, settings, context.partition_keys)
        # Per-table metadata is already on each partition (add_asset_metadata); nothing to add here.
        return dg.MaterializeResult()

    return layer


def build_gold_asset(settings: Settings, mart: Mart) -> dg.AssetsDefinition:
    """One asset per mart file, so each mart depends on exactly the silver partitions it reads.
    (A multi-asset would force one partition mapping onto every mart.)"""

    @dg.asset(
        key=gold_asset_key(mart.name),
        deps=[
            dg.AssetDep(
                SILVER_ASSET_KEY, partition_mapping=dg.SpecificPartitionsPartitionMapping(list(mart.inputs))
            )
        ],
        group_name=MEDALLION_GROUP,
        kinds={"deltalake", "sql"},
        description=f"{mart.description} (gold/{mart.path.name}, inputs: {', '.join(mart.inputs)}; notebook 03_gold.py)",
    )
    def gold_mart(context: dg.AssetExecutionContext, notebook_runner: NotebookRunner) -> dg.MaterializeResult:
        run_gold(context, notebook_runner, settings, [mart.name])
        # Per-table metadata is already on each partition (add_asset_metadata); nothing to add here.
        return dg.MaterializeResult()

    return gold_mart


def build_defs(settings: Settings) -> dg.Definitions:
    assets = build_medallion_assets(settings)
    medallion_job = dg.define_asset_job(
        "medallion_job",
        selection=dg.AssetSelection.groups(MEDALLION_GROUP),
        description="bronze -> silver -> gold for the selected guidewire_tables partitions.",
    )
    run_now = build_databricks_run_now_job()
    return dg.Definitions(
        assets=assets,
        jobs=[medallion_job, *([run_now] if run_now is not None else [])],
        resources={"notebook_runner": build_notebook_runner(settings)},
    )
