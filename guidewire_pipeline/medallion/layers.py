"""The medallion engine: run a layer's notebook ONCE for a list of tables and record each table's result.

Every entry point calls these functions: the bronze, silver and gold assets, and any op (e.g. the lead's
``guidewire_e2e_job``). One notebook run handles the whole list; each table's Pipes message becomes the
metadata of that table's partition (bronze/silver) or of that mart (gold):

- In the asset that owns the key, the metadata goes through ``context.add_asset_metadata(..., partition_key=t)``
  (per-partition metadata; ``Output``/``add_output_metadata`` would copy it onto every partition).
- Anywhere else (an op), each result is logged as an ``AssetMaterialization`` of that table's partition.

Tables that failed are never recorded as materialized. After the others are recorded, ``dagster.Failure``
is raised naming the failed tables and why. "skipped" (e.g. no raw table yet) is not a failure: it is recorded
with its reason so the UI shows why the partition holds nothing.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from guidewire_pipeline.medallion.marts import Mart, load_marts
from guidewire_pipeline.medallion.runners.base import NotebookRun, NotebookRunner
from guidewire_pipeline.raw.partitions import BRONZE_ASSET_KEY, SILVER_ASSET_KEY, gold_asset_key
from guidewire_pipeline.settings import Settings

BRONZE_NOTEBOOK = "01_bronze.py"
SILVER_NOTEBOOK = "02_silver.py"
GOLD_NOTEBOOK = "03_gold.py"

AnyContext = dg.OpExecutionContext | dg.AssetExecutionContext


@dataclass(frozen=True)
class TableResult:
    """One table's (or mart's) outcome in one layer: status is "ok", "skipped" or "failed"."""

    table: str
    status: str
    reason: str | None
    metadata: dict[str, Any]


@dataclass
class LayerReport:
    """What one notebook run did, table by table."""

    layer: str
    results: list[TableResult] = field(default_factory=list)
    run_metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def failed(self) -> list[str]:
        return [r.table for r in self.results if r.status == "failed"]

    @property
    def succeeded(self) -> list[str]:
        """Tables that are "ok" or "skipped": the layer above may run for them."""
        return [r.table for r in self.results if r.status != "failed"]

    def failure_text(self) -> str:
        return "; ".join(f"{r.table}: {r.reason}" for r in self.results if r.status == "failed")


def run_bronze(
    context: AnyContext,
    runner: NotebookRunner,
    settings: Settings,
    tables: Sequence[str],
    *,
    raise_on_failure: bool = True,
) -> LayerReport:
    """Run 01_bronze.py once for ``tables``; record each as a ``cda_bronze`` partition.

    Raises ``Failure`` naming the failed tables after recording the others, unless
    ``raise_on_failure`` is False (then the report carries them; for ops that go on, not for the
    asset itself, whose step would then also mark the failed partitions materialized)."""
    report = _run_tables(context, runner, settings, "bronze", BRONZE_NOTEBOOK, tables)
    _record(context, report, lambda table: (BRONZE_ASSET_KEY, table), raise_on_failure)
    return report


def run_silver(
    context: AnyContext,
    runner: NotebookRunner,
    settings: Settings,
    tables: Sequence[str],
    *,
    raise_on_failure: bool = True,
) -> LayerReport:
    """Run 02_silver.py once for ``tables``; record each as a ``cda_silver`` partition.

    Raises ``Failure`` naming the failed tables after recording the others, unless
    ``raise_on_failure`` is False (then the report carries them; for ops, as with ``run_bronze``)."""
    report = _run_tables(context, runner, settings, "silver", SILVER_NOTEBOOK, tables)
    _record(context, report, lambda table: (SILVER_ASSET_KEY, table), raise_on_failure)
    return report


def run_bronze_unraised(
    context: AnyContext, runner: NotebookRunner, settings: Settings, tables: Sequence[str]
) -> LayerReport:
    """``run_bronze(..., raise_on_failure=False)``: failures stay in the report (for ops that go on)."""
    return run_bronze(context, runner, settings, tables, raise_on_failure=False)


def run_silver_unraised(
    context: AnyContext, runner: NotebookRunner, settings: Settings, tables: Sequence[str]
) -> LayerReport:
    """``run_silver(..., raise_on_failure=False)``: failures stay in the report (for ops that go on)."""
    return run_silver(context, runner, settings, tables, raise_on_failure=False)


def run_bronze_silver(
    context: AnyContext, runner: NotebookRunner, settings: Settings, tables: Sequence[str]
) -> tuple[LayerReport, LayerReport]:
    """For an op: bronze for ``tables``, then silver for those whose bronze did not fail (two notebook
    runs in all). Every result is recorded as an ``AssetMaterialization`` of its partition; then
    ``Failure`` names the tables that failed in either layer, if any."""
    bronze = run_bronze(context, runner, settings, tables, raise_on_failure=False)
    silver = run_silver(context, runner, settings, bronze.succeeded, raise_on_failure=False)
    _raise_if_failed([bronze, silver])
    return bronze, silver


def run_gold(
    context: AnyContext, runner: NotebookRunner, settings: Settings, marts: Sequence[str] | None = None
) -> LayerReport:
    """Run 03_gold.py once for ``marts`` (default: every SQL file); record each as its ``gold/<mart>`` asset.

    A mart with a missing silver input is "skipped" with the reason. Raises ``Failure`` naming the failed
    marts after recording the others; an unknown mart name raises ``Failure`` before anything runs."""
    available = load_marts()
    names = list(available) if marts is None else list(marts)
    unknown = [m for m in names if m not in available]
    if unknown:
        raise dg.Failure(
            f"Unknown gold marts {unknown}: add guidewire_pipeline/medallion/gold/<mart>.sql or pick from {sorted(available)}."
        )
    selected: dict[str, Mart] = {m: available[m] for m in names}
    parameters = {
        "delta_root": settings.delta_root,
        "marts": json.dumps({m.name: {"sql": m.sql, "inputs": list(m.inputs)} for m in selected.values()}),
    }
    report = _collect(context, runner, "gold", GOLD_NOTEBOOK, parameters, names)
    _record(context, report, lambda mart: (gold_asset_key(mart), None))
    return report


# -- internals ----------------------------------------------------------------------------------------


def _run_tables(
    context: AnyContext,
    runner: NotebookRunner,
    settings: Settings,
    layer: str,
    notebook: str,
    tables: Sequence[str],
) -> LayerReport:
    parameters = {"delta_root": settings.delta_root, "tables": json.dumps(list(tables))}
    return _collect(context, runner, layer, notebook, parameters, list(tables))


def _collect(
    context: AnyContext,
    runner: NotebookRunner,
    layer: str,
    notebook: str,
    parameters: dict[str, str],
    names: list[str],
) -> LayerReport:
    """Run the notebook once (not at all for an empty list) and pair its messages with ``names``."""
    report = LayerReport(layer=layer)
    if not names:
        context.log.info(f"{layer}: no tables to run.")
        return report
    context.log.info(f"{layer}: running {notebook} for {len(names)} tables with {type(runner).__name__}.")
    run: NotebookRun = runner.run_notebook(context, notebook, parameters)
    report.run_metadata = dict(run.run_metadata)
    by_table = {str(m.get("table")): m for m in run.table_results}
    strays = sorted(set(by_table) - set(names))
    if strays:
        context.log.warning(f"{notebook} reported tables nobody asked for, ignored: {strays}")
    for name in names:
        message = by_table.get(name)
        if message is None:
            message = {
                "status": "failed",
                "reason": f"{notebook} reported nothing for {name}; see the notebook's log in this run",
            }
        report.results.append(
            TableResult(
                table=name,
                status=str(message.get("status", "failed")),
                reason=message.get("reason"),
                metadata=_metadata(message, report.run_metadata),
            )
        )
    return report


def _metadata(message: dict[str, Any], run_metadata: dict[str, Any]) -> dict[str, Any]:
    """The run's metadata (runner, notebook, Databricks run id/URL) plus the table's Pipes message, as
    Dagster metadata: figures as numbers, lists of text as lines, no None values."""
    metadata: dict[str, Any] = {}
    for key, value in {**run_metadata, **message}.items():
        if value is None or key == "table":
            continue
        if isinstance(value, bool | int | float | str | dg.MetadataValue):
            metadata[key] = value
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            metadata[key] = "\n".join(value) if value else "none"
        else:
            metadata[key] = dg.MetadataValue.json(value)
    return metadata


def _owns(context: AnyContext, asset_key: dg.AssetKey) -> bool:
    """True when ``context`` is the asset step that materializes ``asset_key``."""
    if not isinstance(context, dg.AssetExecutionContext):
        return False
    return asset_key in context.selected_asset_keys


def _record(
    context: AnyContext,
    report: LayerReport,
    key_of: Callable[[str], tuple[dg.AssetKey, str | None]],
    raise_on_failure: bool = True,
) -> None:
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
            context.log_event(
                dg.AssetMaterialization(asset_key=asset_key, partition=partition, metadata=result.metadata)
            )
    if raise_on_failure:
        _raise_if_failed([report])


def _raise_if_failed(reports: list[LayerReport]) -> None:
    failed = [(r.layer, t) for r in reports for t in r.failed]
    if failed:
        raise dg.Failure(
            description=(
                f"{len(failed)} table(s) failed: "
                + " | ".join(f"{r.layer}: {r.failure_text()}" for r in reports if r.failed)
                + ". The other tables were recorded; fix these and re-run their partitions."
            ),
            metadata={"failed_tables": ", ".join(f"{layer}/{table}" for layer, table in failed)},
        )
