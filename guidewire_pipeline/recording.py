"""How every layer records what it did on a table's partition, the same way from an asset step and
from an op: a materialization when data changed, an observation (with the reason) when it did not,
and each check's evaluation tied to that partition's latest materialization.

Tying a check evaluation to the materialization it checked (``target_materialization_data``) is what
makes the UI count it for that partition: an evaluation without it looks out of date the moment the
partition is materialized, so the checks' Partitions tab showed every table as "Missing".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import dagster as dg
from dagster._core.definitions.asset_checks.asset_check_evaluation import (
    AssetCheckEvaluationTargetMaterializationData,
)

AnyContext = dg.OpExecutionContext | dg.AssetExecutionContext | dg.AssetCheckExecutionContext


@dataclass(frozen=True)
class CheckRecord:
    name: str
    passed: bool
    description: str
    metadata: dict[str, Any] = field(default_factory=dict)
    severity: dg.AssetCheckSeverity = dg.AssetCheckSeverity.WARN


@dataclass(frozen=True)
class PartitionRecord:
    """One partition's outcome in one layer: ``changed`` data (a materialization) or ``unchanged``
    (an observation: nothing new, or skipped with its reason)."""

    asset_key: dg.AssetKey
    partition: str | None
    kind: Literal["changed", "unchanged"]
    metadata: dict[str, Any]
    checks: Sequence[CheckRecord] = ()


def record(context: AnyContext, records: Sequence[PartitionRecord]) -> None:
    """Log every record's event, then its checks' evaluations, each pointing at the partition's latest
    materialization (one event-log query per asset, whatever the number of partitions)."""
    for item in records:
        if item.kind == "changed":
            context.log_event(dg.AssetMaterialization(asset_key=item.asset_key, partition=item.partition,
                                                      metadata=item.metadata))
        else:
            context.log_event(dg.AssetObservation(asset_key=item.asset_key, partition=item.partition,
                                                  metadata=item.metadata))
    record_checks(context, [(r.asset_key, r.partition, r.checks) for r in records if r.checks])


def record_checks(context: AnyContext,
                  checks: Sequence[tuple[dg.AssetKey, str | None, Sequence[CheckRecord]]]) -> None:
    """Log check evaluations, each pointing at its partition's latest materialization."""
    if not checks:
        return
    wanted: dict[dg.AssetKey, set[str | None]] = {}
    for asset_key, partition, _ in checks:
        wanted.setdefault(asset_key, set()).add(partition)
    targets = latest_materializations(context.instance, wanted)
    # A check step's context logs through the op context it wraps.
    log_event = context.op_execution_context.log_event if isinstance(context, dg.AssetCheckExecutionContext) \
        else context.log_event
    for asset_key, partition, evaluations in checks:
        target = targets.get(asset_key, {}).get(partition)
        for check in evaluations:
            log_event(dg.AssetCheckEvaluation(
                asset_key=asset_key, check_name=check.name, passed=check.passed, severity=check.severity,
                description=check.description, metadata=check.metadata, partition=partition,
                target_materialization_data=target))


def latest_materializations(
    instance: dg.DagsterInstance, wanted: dict[dg.AssetKey, set[str | None]]
) -> dict[dg.AssetKey, dict[str | None, AssetCheckEvaluationTargetMaterializationData]]:
    """For the wanted partitions of each asset (None: unpartitioned), a pointer to the latest
    materialization: two event-log queries per asset."""
    found: dict[dg.AssetKey, dict[str | None, AssetCheckEvaluationTargetMaterializationData]] = {}
    for asset_key, partitions in wanted.items():
        named = {p for p in partitions if p is not None}
        if named:
            by_partition = instance.get_latest_storage_id_by_partition(
                asset_key, dg.DagsterEventType.ASSET_MATERIALIZATION, partitions=named)
            records = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=asset_key, storage_ids=list(by_partition.values())),
                limit=max(len(by_partition), 1)).records if by_partition else []
        else:
            records = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=asset_key), limit=1).records
        found[asset_key] = {
            r.partition_key: AssetCheckEvaluationTargetMaterializationData(
                storage_id=r.storage_id, run_id=r.run_id, timestamp=r.timestamp)
            for r in records
        }
    return found
