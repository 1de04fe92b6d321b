"""The medallion step: one ``NotebookRunner.run_medallion`` call for a set of tables and marts, every
result recorded on its partition, the same way from the ``medallion`` asset and from the ops.

Recording (``recording.py``): a table or mart whose data changed gets a materialization; one with
nothing new, or skipped for a reason (no raw table yet, an input missing), gets an observation with
the reason, never a materialization; a failed one gets nothing and fails the step at the end, after
the others are recorded. Every materialization carries ``dagster/row_count``, ``dagster/uri``,
``dagster/column_schema`` and ``dagster/table_name`` when the engine knows them; a gold mart's also
carries its column lineage, parsed from its SQL.

``medallion_backlog`` says which tables and marts are behind their inputs, from the event log alone
(no storage reads): the automation sensor and the CI job run exactly those.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from guidewire_pipeline.lakehouse import Lakehouse
from guidewire_pipeline.medallion import checks
from guidewire_pipeline.medallion.marts import Mart, load_marts
from guidewire_pipeline.medallion.runners.base import (
    LAYER_ORDER,
    LayerName,
    LayerResult,
    MedallionRequest,
    NotebookRunner,
)
from guidewire_pipeline.raw.partitions import (
    BRONZE_ASSET_KEY,
    RAW_ASSET_KEY,
    SILVER_ASSET_KEY,
    gold_asset_key,
)
from guidewire_pipeline.recording import PartitionRecord, record

AnyContext = dg.OpExecutionContext | dg.AssetExecutionContext


@dataclass
class MedallionOutcome:
    """What one medallion step did: failures by ``layer/name``, and what changed per layer."""

    failures: dict[str, str] = field(default_factory=dict)
    changed: dict[str, list[str]] = field(default_factory=dict)
    run_metadata: dict[str, Any] = field(default_factory=dict)


def asset_key_of(layer: str, name: str) -> tuple[dg.AssetKey, str | None]:
    if layer == "bronze":
        return BRONZE_ASSET_KEY, name
    if layer == "silver":
        return SILVER_ASSET_KEY, name
    return gold_asset_key(name), None


def run_medallion_step(
    context: AnyContext, runner: NotebookRunner, lakehouse: Lakehouse, tables: Sequence[str],
    marts: Sequence[Mart], layers: Sequence[LayerName] = LAYER_ORDER,
) -> MedallionOutcome:
    """Run ``layers`` once for ``tables`` and ``marts``; record every result; return the outcome
    (the caller fails the step for the failures, after everything is recorded)."""
    layers = tuple(layer for layer in LAYER_ORDER if layer in layers)
    request = MedallionRequest(lakehouse=lakehouse, tables=tuple(tables) if set(layers) - {"gold"} else (),
                               marts=tuple(marts) if "gold" in layers else (), layers=layers)
    outcome = MedallionOutcome()
    if not request.tables and not request.marts:
        context.log.info("medallion: nothing to run (no table behind its input, no mart to refresh).")
        return outcome
    context.log.info(f"medallion: {'/'.join(layers)} for {len(request.tables)} tables and {len(request.marts)} "
                     f"marts with {type(runner).__name__}.")
    run = runner.run_medallion(context, request)
    outcome.run_metadata = dict(run.run_metadata)
    columns = {r.name: [str(c[0]) for c in r.metadata.get("columns") or []] for r in run.for_layer("silver")}
    records = []
    for result in run.results:
        if result.status == "failed":
            outcome.failures[f"{result.layer}/{result.name}"] = result.reason or "failed"
            context.log.error(f"{result.layer} {result.name} failed: {result.reason}")
            continue
        if result.status == "skipped":
            context.log.warning(f"{result.layer} {result.name} skipped: {result.reason}")
        asset_key, partition = asset_key_of(result.layer, result.name)
        metadata = _metadata(result, run.run_metadata)
        if result.layer == "gold" and result.status == "changed":
            mart = next(m for m in request.marts if m.name == result.name)
            lineage = checks.column_lineage(mart, {t: columns.get(t, []) for t in mart.inputs})
            if lineage is not None:
                metadata["dagster/column_lineage"] = lineage
        kind = "changed" if result.status == "changed" else "unchanged"
        if kind == "changed":
            outcome.changed.setdefault(result.layer, []).append(result.name)
        records.append(PartitionRecord(asset_key, partition, kind, metadata, checks.evaluate(result.layer, result.metadata)))
    record(context, records)
    return outcome


def failure_metadata(outcome: MedallionOutcome) -> dict[str, Any]:
    task = outcome.run_metadata.get("failed_task")
    return {"failed_task": str(task)} if task else {}


def describe_failures(outcome: MedallionOutcome) -> str:
    """Where the medallion failed: the task (when a whole task failed, with its run page)."""
    task = outcome.run_metadata.get("failed_task")
    if not task:
        return "the medallion"
    error = str(outcome.run_metadata.get("failed_task_error") or "").strip()
    where = outcome.run_metadata.get(f"{task}_task_run_url") or outcome.run_metadata.get("databricks_run_url")
    page = f" Run page: {where}." if where and str(where) not in error else ""
    return f"the medallion (Task {task} of the medallion run failed: {error}.{page})"


def marts_reading(tables: Sequence[str]) -> list[Mart]:
    """The gold marts that read any of ``tables``."""
    wanted = set(tables)
    return [m for m in load_marts().values() if wanted & set(m.inputs)]


def medallion_backlog(instance: dg.DagsterInstance, tables: Sequence[str] | None = None) -> tuple[list[str], list[Mart]]:
    """The tables whose bronze or silver is behind its input, and the marts behind a silver input,
    from the latest event of each partition (a materialization, or the observation a layer records
    when it found nothing new). ``tables`` limits the answer to those."""
    raw = _latest(instance, RAW_ASSET_KEY, materializations_only=True)
    bronze = _latest(instance, BRONZE_ASSET_KEY)
    bronze_changed = _latest(instance, BRONZE_ASSET_KEY, materializations_only=True)
    silver = _latest(instance, SILVER_ASSET_KEY)
    silver_changed = _latest(instance, SILVER_ASSET_KEY, materializations_only=True)
    behind = sorted(
        t for t in raw if (tables is None or t in tables)
        and (raw[t] > bronze.get(t, -1) or bronze_changed.get(t, -1) > silver.get(t, -1))
    )
    marts = []
    for mart in load_marts().values():
        gold = _latest_unpartitioned(instance, gold_asset_key(mart.name))
        if any(silver_changed.get(t, -1) > gold for t in mart.inputs) or set(behind) & set(mart.inputs):
            marts.append(mart)
    return behind, marts


def _latest(instance: dg.DagsterInstance, asset_key: dg.AssetKey, materializations_only: bool = False) -> dict[str, int]:
    """Partition -> storage id of its latest materialization (and, unless ``materializations_only``,
    observation): the order events happened in."""
    latest = dict(instance.get_latest_storage_id_by_partition(asset_key, dg.DagsterEventType.ASSET_MATERIALIZATION))
    if not materializations_only:
        observed = instance.get_latest_storage_id_by_partition(asset_key, dg.DagsterEventType.ASSET_OBSERVATION)
        for partition, storage_id in observed.items():
            latest[partition] = max(latest.get(partition, -1), storage_id)
    return latest


def _latest_unpartitioned(instance: dg.DagsterInstance, asset_key: dg.AssetKey) -> int:
    ids = [
        records[0].storage_id
        for fetch in (instance.fetch_materializations, instance.fetch_observations)
        if (records := fetch(dg.AssetRecordsFilter(asset_key=asset_key), limit=1).records)
    ]
    return max(ids, default=-1)


def _metadata(result: LayerResult, run_metadata: dict[str, Any]) -> dict[str, Any]:
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
            metadata["dagster/uri"] = dg.MetadataValue.path(str(value))
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
