"""What the UI shows for a raw table: its materialization metadata and its checks.

Shared by every entry point (the asset's I/O manager, ``cda_sync_job``, the check definitions), so a
table's history looks the same whichever way it was loaded. Times are shown readable with the epoch
milliseconds beside them; sizes in MB.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import dagster as dg

from guidewire_pipeline import display
from guidewire_pipeline.cda.delta_writer import TableSyncResult
from guidewire_pipeline.cda.load_plan import plan_table
from guidewire_pipeline.cda.manifest import ManifestEntry
from guidewire_pipeline.cda.raw_table import DeltaTableState, read_table_state
from guidewire_pipeline.cda.sync import raw_table_location

CHECK_CAUGHT_UP = "caught_up"
CHECK_RECORD_COUNT = "record_count"
CHECK_SCHEMA = "schema_fingerprints"
CHECK_LAG = "lag_within_limit"
CHECK_NAMES = (CHECK_CAUGHT_UP, CHECK_RECORD_COUNT, CHECK_SCHEMA, CHECK_LAG)
DEFAULT_MAX_LAG_MINUTES = 60  # GW_MAX_LAG_MINUTES: CDA writes every few minutes, the sensor ticks every minute


def sync_metadata(result: TableSyncResult) -> dict[str, Any]:
    """Per-table materialization metadata."""
    metadata: dict[str, Any] = {
        "status": result.status,
        "rows_added": dg.MetadataValue.int(result.rows_added),
        "batches_applied": dg.MetadataValue.int(result.batches_applied),
        "commits": dg.MetadataValue.int(result.commits),
        "read": display.size(result.bytes_read),
        "bytes_read": dg.MetadataValue.int(result.bytes_read),
        "watermark_before": display.watermark(result.watermark_before),
        "watermark_after": display.watermark(result.watermark_after),
        "manifest_watermark": display.watermark(result.manifest_watermark),
        "watermark_after_ms": _int_or_none(result.watermark_after),
        "lag": display.duration(result.lag_ms),
        "lag_ms": _int_or_none(result.lag_ms),
        "delta_version": _int_or_none(result.delta_version),
        "duration_s": dg.MetadataValue.float(round(result.duration_s, 3)),
        "dagster/uri": dg.MetadataValue.path(result.uri),
    }
    if result.table_name:
        metadata["dagster/table_name"] = result.table_name
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
        metadata["savepoint_rewound_from"] = display.watermark(result.rewound_from)
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


def evaluate_checks(entry: ManifestEntry, state: DeltaTableState, pending_batches: int,
                    max_lag_minutes: int = DEFAULT_MAX_LAG_MINUTES) -> list[CheckOutcome]:
    """The four checks of one raw table against its manifest entry, from one state and one count of
    pending batches. WARN severity: they inform, they block nothing."""
    caught = pending_batches == 0
    lag = None if state.loaded_watermark is None else max(entry.manifest_watermark - state.loaded_watermark, 0)
    caught_up = CheckOutcome(
        CHECK_CAUGHT_UP, caught,
        "No committed CDA folder is waiting." if caught
        else f"{pending_batches} committed CDA batches are not loaded yet.",
        {"loaded_watermark": display.watermark(state.loaded_watermark),
         "manifest_watermark": display.watermark(entry.manifest_watermark),
         "pending_batches": dg.MetadataValue.int(pending_batches)},
    )
    delta_rows = state.total_rows or 0
    records = CheckOutcome(
        CHECK_RECORD_COUNT, delta_rows == entry.total_processed_records,
        f"Delta has {delta_rows:,} rows; the manifest's totalProcessedRecordsCount is {entry.total_processed_records:,}.",
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
    limit_ms = max_lag_minutes * 60_000
    lag_ok = caught or (lag is not None and lag <= limit_ms)
    lagging = CheckOutcome(
        CHECK_LAG, lag_ok,
        f"Raw is {display.duration(lag)} behind the manifest (limit {max_lag_minutes} min, GW_MAX_LAG_MINUTES)."
        if lag is not None else "Nothing is loaded yet.",
        {"lag": display.duration(lag), "lag_ms": _int_or_none(lag),
         "limit_minutes": dg.MetadataValue.int(max_lag_minutes)},
    )
    return [caught_up, records, schema, lagging]


def checks_after_sync(entry: ManifestEntry, result: TableSyncResult,
                      max_lag_minutes: int = DEFAULT_MAX_LAG_MINUTES) -> list[CheckOutcome]:
    """The checks of a table that ``result`` just loaded, from the sync's own figures: no second log
    read and no listing. A successful sync loaded every pending folder of the manifest it planned from."""
    state = DeltaTableState(exists=True, version=result.delta_version, loaded_watermark=result.watermark_after,
                            total_rows=result.total_rows, columns=tuple(result.columns))
    return evaluate_checks(entry, state, 0, max_lag_minutes)


def checks_from_storage(entry: ManifestEntry, delta_root: str,
                        max_lag_minutes: int = DEFAULT_MAX_LAG_MINUTES) -> list[CheckOutcome]:
    """The checks of a table read from storage: one read of its log, and a listing only when behind."""
    state = read_table_state(raw_table_location(delta_root, entry.table), entry.table)
    return evaluate_checks(entry, state, len(plan_table(entry, state.loaded_watermark).batches), max_lag_minutes)
