"""Dagster recording of medallion runs: call ``NotebookRunner.run_medallion`` once, record each result.

Every entry point calls these functions: the bronze, silver and gold assets, and the ops of
``guidewire_e2e_job``. One call is one local process or one multi-task Databricks run; each table's
``LayerResult`` becomes the metadata of that table's partition (bronze/silver) or of that mart (gold):

- In the asset that owns the key, through ``context.add_asset_metadata(..., partition_key=t)``;
- anywhere else (an op), as an ``AssetMaterialization`` of that table's partition.

Failed tables are never recorded as materialized; after the others are recorded, ``dagster.Failure``
names the failed tables (and the failed task, when a whole task failed). "skipped" and "unchanged"
are not failures: they are recorded with their reason.
(Issue 11 rewrites this file; the logic lives in the engine and the runners.)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from guidewire_pipeline.medallion.marts import Mart, load_marts
from guidewire_pipeline.medallion.runners.base import (
    LayerName,
    MedallionRequest,
    MedallionRun,
    NotebookRunner,
)
from guidewire_pipeline.raw.partitions import BRONZE_ASSET_KEY, SILVER_ASSET_KEY, gold_asset_key
from guidewire_pipeline.settings import Settings

AnyContext = dg.OpExecutionContext | dg.AssetExecutionContext


@dataclass(frozen=True)
class TableResult:
    """One table's (or mart's) outcome in one layer: changed, unchanged, skipped or failed."""

    table: str
    status: str
    reason: str | None
    metadata: dict[str, Any]


@dataclass
class LayerReport:
    layer: str
    results: list[TableResult] = field(default_factory=list)
    run_metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def failed(self) -> list[str]:
        return [r.table for r in self.results if r.status == "failed"]

    @property
    def succeeded(self) -> list[str]:
        """Tables that did not fail: the layer above may run for them."""
        return [r.table for r in self.results if r.status != "failed"]

    def failure_text(self) -> str:
        return "; ".join(f"{r.table}: {r.reason}" for r in self.results if r.status == "failed")


def run_medallion_layers(
    context: AnyContext,
    runner: NotebookRunner,
    settings: Settings,
    tables: Sequence[str],
    marts: Sequence[str] | None = (),
    layers: Sequence[LayerName] = ("bronze", "silver", "gold"),
    *,
    raise_on_failure: bool = True,
) -> dict[str, LayerReport]:
    """One ``run_medallion`` call for ``layers``; every result recorded; then ``Failure`` naming the failed
    tables and task unless ``raise_on_failure`` is False. ``marts=None``: every SQL file.
    An unknown mart name raises ``Failure`` before anything runs."""
    selected = _marts(marts) if "gold" in layers else ()
    request = MedallionRequest(lakehouse=settings.lakehouse, tables=tuple(tables), marts=selected,
                               layers=tuple(layers))
    reports = {layer: LayerReport(layer) for layer in layers}
    if not request.tables and not request.marts:
        context.log.info("medallion: no tables and no marts to run.")
        return reports
    context.log.info(f"medallion: {'/'.join(layers)} for {len(tables)} tables and {len(selected)} marts "
                     f"with {type(runner).__name__}.")
    run: MedallionRun = runner.run_medallion(context, request)
    for result in run.results:
        reports[result.layer].run_metadata = run.run_metadata
        reports[result.layer].results.append(
            TableResult(result.name, result.status, result.reason, _metadata(result, run.run_metadata)))
    for layer, report in reports.items():
        _record(context, report, _key_of(layer), raise_on_failure=False)
    if raise_on_failure:
        _raise_if_failed(list(reports.values()), run.run_metadata)
    return reports


def run_bronze(context: AnyContext, runner: NotebookRunner, settings: Settings, tables: Sequence[str],
               *, raise_on_failure: bool = True) -> LayerReport:
    return run_medallion_layers(context, runner, settings, tables, (), ("bronze",),
                                raise_on_failure=raise_on_failure)["bronze"]


def run_silver(context: AnyContext, runner: NotebookRunner, settings: Settings, tables: Sequence[str],
               *, raise_on_failure: bool = True) -> LayerReport:
    return run_medallion_layers(context, runner, settings, tables, (), ("silver",),
                                raise_on_failure=raise_on_failure)["silver"]


def run_bronze_silver(
    context: AnyContext, runner: NotebookRunner, settings: Settings, tables: Sequence[str],
    *, raise_on_failure: bool = True,
) -> tuple[LayerReport, LayerReport]:
    """Bronze then silver in one run (silver only for tables bronze did not fail); every result
    recorded; then ``Failure`` naming the failed tables unless ``raise_on_failure`` is False."""
    reports = run_medallion_layers(context, runner, settings, tables, (), ("bronze", "silver"),
                                   raise_on_failure=raise_on_failure)
    return reports["bronze"], reports["silver"]


def run_gold(context: AnyContext, runner: NotebookRunner, settings: Settings,
             marts: Sequence[str] | None = None) -> LayerReport:
    """The gold marts ``marts`` (default: every SQL file) in one run; each recorded on ``gold/<mart>``."""
    return run_medallion_layers(context, runner, settings, (), marts, ("gold",))["gold"]


# -- internals ----------------------------------------------------------------------------------------


def _marts(names: Sequence[str] | None) -> tuple[Mart, ...]:
    available = load_marts()
    names = list(available) if names is None else list(names)
    unknown = [m for m in names if m not in available]
    if unknown:
        raise dg.Failure(
            f"Unknown gold marts {unknown}: add guidewire_pipeline/medallion/gold/<mart>.sql or pick from {sorted(available)}."
        )
    return tuple(available[m] for m in names)


def _key_of(layer: str) -> Callable[[str], tuple[dg.AssetKey, str | None]]:
    if layer == "bronze":
        return lambda table: (BRONZE_ASSET_KEY, table)
    if layer == "silver":
        return lambda table: (SILVER_ASSET_KEY, table)
    return lambda mart: (gold_asset_key(mart), None)


def _metadata(result: Any, run_metadata: dict[str, Any]) -> dict[str, Any]:
    """Run metadata plus the result's, as Dagster metadata: the standard ``dagster/*`` keys where they
    exist (table name, URI, row count, column schema), figures as numbers, lists as lines, no None."""
    values = {**run_metadata, **result.metadata, "status": result.status, "reason": result.reason}
    metadata: dict[str, Any] = {}
    for key, value in values.items():
        if value is None:
            continue
        if key == "table_name":
            metadata["dagster/table_name"] = str(value)
        elif key == "uri":
            metadata["dagster/uri"] = str(value)
        elif key == "row_count":
            metadata["dagster/row_count"] = int(value)
        elif key == "columns":
            metadata["dagster/column_schema"] = dg.TableSchema(
                columns=[dg.TableColumn(name=str(n), type=str(t)) for n, t in value])
        elif key.endswith("_url") and isinstance(value, str):
            metadata[key] = dg.MetadataValue.url(value)
        elif isinstance(value, bool | int | float | str | dg.MetadataValue):
            metadata[key] = value
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            metadata[key] = "\n".join(value) if value else "none"
        else:
            metadata[key] = dg.MetadataValue.json(value)
    return metadata


def _owns(context: AnyContext, asset_key: dg.AssetKey) -> bool:
    return isinstance(context, dg.AssetExecutionContext) and asset_key in context.selected_asset_keys


def _record(context: AnyContext, report: LayerReport,
            key_of: Callable[[str], tuple[dg.AssetKey, str | None]], raise_on_failure: bool = True) -> None:
    """Record every non-failed result on its asset (partition); then raise for the failed ones."""
    any_failed = bool(report.failed)
    for result in report.results:
        if result.status == "failed":
            context.log.error(f"{report.layer} {result.table} failed: {result.reason}")
            continue
        asset_key, partition = key_of(result.table)
        if _owns(context, asset_key) and not any_failed:
            context.add_asset_metadata(result.metadata, asset_key=asset_key, partition_key=partition)
        else:
            # An op, or an asset step that will fail: log the successes now so they stay recorded.
            context.log_event(dg.AssetMaterialization(asset_key=asset_key, partition=partition,
                                                      metadata=result.metadata))
    if raise_on_failure:
        _raise_if_failed([report], report.run_metadata)


def _raise_if_failed(reports: list[LayerReport], run_metadata: dict[str, Any]) -> None:
    failed = [(r.layer, t) for r in reports for t in r.failed]
    if not failed:
        return
    task = run_metadata.get("failed_task")
    head = (f"Task {task} of the medallion run failed: {run_metadata.get('failed_task_error')}. " if task else "")
    where = run_metadata.get(f"{task}_task_run_url") or run_metadata.get("databricks_run_url")
    raise dg.Failure(
        description=(
            head + f"{len(failed)} table(s) failed: "
            + " | ".join(f"{r.layer}: {r.failure_text()}" for r in reports if r.failed)
            + (f". Run page: {where}" if where else "")
            + ". The other tables were recorded; fix these and re-run their partitions."
        ),
        metadata={"failed_tables": ", ".join(f"{layer}/{table}" for layer, table in failed),
                  **({"failed_task": str(task)} if task else {})},
    )
