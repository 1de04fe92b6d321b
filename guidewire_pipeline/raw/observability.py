"""What the UI shows for a raw table: materialization metadata and the three asset checks.

Shared by every entry point (the asset's I/O manager, ``cda_sync_job``, the check definitions), so a
table's history looks the same whichever way it was loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import dagster as dg

from guidewire_pipeline.cda.delta_writer import TableSyncResult
from guidewire_pipeline.cda.load_plan import plan_table
from guidewire_pipeline.cda.manifest import ManifestEntry
from guidewire_pipeline.cda.raw_table import DeltaTableState, read_table_state
from guidewire_pipeline.cda.sync import raw_table_location

CHECK_CAUGHT_UP = "caught_up"
CHECK_RECORD_COUNT = "record_count"
CHECK_SCHEMA = "schema_fingerprints"


def sync_metadata(result: TableSyncResult) -> dict[str, Any]:
    """Per-table materialization metadata."""
    metadata: dict[str, Any] = {
        "status": result.status,
        "rows_added": dg.MetadataValue.int(result.rows_added),
        "batches_applied": dg.MetadataValue.int(result.batches_applied),
        "commits": dg.MetadataValue.int(result.commits),
        "bytes_read": dg.MetadataValue.int(result.bytes_read),
        "watermark_before": _int_or_none(result.watermark_before),
        "watermark_after": _int_or_none(result.watermark_after),
        "manifest_watermark": _int_or_none(result.manifest_watermark),
        "lag_ms": _int_or_none(result.lag_ms),
        "delta_version": _int_or_none(result.delta_version),
        "duration_s": dg.MetadataValue.float(round(result.duration_s, 3)),
        "dagster/uri": dg.MetadataValue.path(result.uri),
    }
    if result.total_rows is not None:
        metadata["dagster/row_count"] = dg.MetadataValue.int(result.total_rows)
    if result.columns:
        metadata["dagster/column_schema"] = dg.TableSchema(
            columns=[dg.TableColumn(name=name, type=type_) for name, type_ in result.columns]
        )
    if result.fingerprints:
        metadata["fingerprints_loaded"] = dg.MetadataValue.int(len(result.fingerprints))
    if result.compacted_files:
        metadata["compacted_small_files"] = dg.MetadataValue.int(result.compacted_files)
    if result.rewound_from is not None:
        metadata["savepoint_rewound_from"] = dg.MetadataValue.int(result.rewound_from)
    if result.ray_memory_bytes:
        metadata["ray_task_memory_mb"] = dg.MetadataValue.int(result.ray_memory_bytes // 2**20)
    if result.warnings:
        metadata["warnings"] = dg.MetadataValue.md("\n".join(f"- {w}" for w in result.warnings))
    return metadata


def _int_or_none(value: int | None) -> dg.MetadataValue:
    return dg.MetadataValue.int(value) if value is not None else dg.MetadataValue.null()


@dataclass(frozen=True)
class CheckOutcome:
    name: str
    passed: bool
    description: str
    metadata: dict[str, Any]


def evaluate_checks(entry: ManifestEntry, delta_root: str, state: DeltaTableState | None = None,
                    pending_batches: int | None = None) -> list[CheckOutcome]:
    """The three checks of one raw table against its manifest entry. WARN severity: they inform.

    ``state`` and ``pending_batches`` may come from a sync that just ran (see ``checks_after_sync``);
    otherwise the table's log is read and its pending folders listed."""
    location = raw_table_location(delta_root, entry.table)
    state = state or read_table_state(location)
    if pending_batches is None:
        pending_batches = len(plan_table(entry, state.loaded_watermark).batches)
    caught = pending_batches == 0
    lag = None if state.loaded_watermark is None else max(entry.manifest_watermark - state.loaded_watermark, 0)
    caught_up = CheckOutcome(
        CHECK_CAUGHT_UP, caught,
        "No committed CDA folder is waiting." if caught
        else f"{pending_batches} committed CDA batches are not loaded yet.",
        {"loaded_watermark": _int_or_none(state.loaded_watermark),
         "manifest_watermark": dg.MetadataValue.int(entry.manifest_watermark),
         "pending_batches": dg.MetadataValue.int(pending_batches),
         "lag_ms": _int_or_none(lag)},
    )
    delta_rows = state.total_rows or 0
    records = CheckOutcome(
        CHECK_RECORD_COUNT, delta_rows == entry.total_processed_records,
        f"Delta has {delta_rows} rows; the manifest's totalProcessedRecordsCount is {entry.total_processed_records}.",
        {"delta_rows": dg.MetadataValue.int(delta_rows),
         "manifest_records": dg.MetadataValue.int(entry.total_processed_records)},
    )
    loaded = state.loaded_watermark
    seen = [fp.fingerprint for fp in entry.fingerprints if loaded is not None and fp.starts_at <= loaded]
    waiting = [fp.fingerprint for fp in entry.fingerprints if loaded is None or fp.starts_at > loaded]
    schema = CheckOutcome(
        CHECK_SCHEMA, not waiting or not state.exists,
        f"{len(seen)} schema(s) loaded; " + (f"schema change pending: {', '.join(waiting)}." if waiting else
                                              "no schema change pending."),
        {"fingerprints_in_manifest": dg.MetadataValue.int(len(entry.fingerprints)),
         "fingerprints_loaded": dg.MetadataValue.int(len(seen)),
         "schema_changes_seen": dg.MetadataValue.int(max(len(seen) - 1, 0)),
         "delta_columns": dg.MetadataValue.int(len(state.columns))},
    )
    return [caught_up, records, schema]


def checks_after_sync(entry: ManifestEntry, delta_root: str, result: TableSyncResult) -> list[CheckOutcome]:
    """The checks of a table that ``result`` just loaded, from the sync's own figures: no second log
    read and no listing. A successful sync loaded every pending folder of the manifest it planned from."""
    state = DeltaTableState(exists=True, version=result.delta_version, loaded_watermark=result.watermark_after,
                            total_rows=result.total_rows, columns=tuple(result.columns))
    return evaluate_checks(entry, delta_root, state, pending_batches=0)
