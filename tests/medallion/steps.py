"""Driving the medallion step from a test's own op or asset run, with a test's ``Settings``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import dagster as dg

from guidewire_pipeline.automation import raise_for_failures
from guidewire_pipeline.medallion.layers import (
    MedallionOutcome,
    describe_failures,
    failure_metadata,
    run_medallion_step,
)
from guidewire_pipeline.medallion.marts import load_marts
from guidewire_pipeline.medallion.runners.base import NotebookRunner
from guidewire_pipeline.medallion.runners.local import LocalNotebookRunner
from guidewire_pipeline.raw.partitions import BRONZE_ASSET_KEY, SILVER_ASSET_KEY
from guidewire_pipeline.resources import LakehouseResource
from guidewire_pipeline.settings import Settings

BRONZE_AND_SILVER = [BRONZE_ASSET_KEY, SILVER_ASSET_KEY]


def run_medallion_layers(context: Any, runner: NotebookRunner, settings: Settings, tables: Sequence[str],
                         marts: Sequence[str] | None = None) -> MedallionOutcome:
    """Every layer for ``tables`` and ``marts`` (None: every mart) in one runner call, recorded; then
    ``dagster.Failure`` naming what failed, as the medallion op does."""
    available = load_marts()
    chosen = list(available.values()) if marts is None else [available[m] for m in marts]
    outcome = run_medallion_step(context, runner, settings.lakehouse, tables, chosen)
    raise_for_failures(describe_failures(outcome), outcome.failures, len(tables) + len(chosen),
                       failure_metadata(outcome))
    return outcome


def medallion_resources(settings: Settings, runner: NotebookRunner | None = None) -> dict[str, Any]:
    """What the medallion asset and ops need: a runner (local by default) and the lakehouse."""
    return {"notebook_runner": runner or LocalNotebookRunner(),
            "lakehouse": LakehouseResource(delta_root=settings.delta_root, catalog=settings.uc_catalog)}


def materialize_bronze_silver(settings: Settings, instance: dg.DagsterInstance, **kwargs: Any) -> Any:
    """The medallion asset for bronze and silver (no gold) of the run's partitions."""
    from guidewire_pipeline.medallion.defs import build_medallion_asset

    return dg.materialize([build_medallion_asset()], instance=instance, selection=BRONZE_AND_SILVER,
                          resources=medallion_resources(settings, kwargs.pop("runner", None)), **kwargs)
