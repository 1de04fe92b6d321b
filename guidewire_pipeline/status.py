"""Per-table status: the manifest side (watermark, records, fingerprints, pending batches) and the
Delta side (loaded watermark, lag, version, health). The terminal twin of the Dagster UI's view;
no Dagster imports, so the CLI starts fast."""

from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

from guidewire_pipeline.cda.load_plan import count_rows, plan_table
from guidewire_pipeline.cda.manifest import Manifest, ManifestError, read_manifest
from guidewire_pipeline.cda.raw_table import read_table_state
from guidewire_pipeline.cda.storage import Location, StorageError, check_writable
from guidewire_pipeline.display import duration
from guidewire_pipeline.settings import Settings


@dataclass
class TableStatus:
    table: str
    manifest_watermark: int | None
    manifest_records: int | None
    fingerprints: int | None
    pending_batches: int = 0
    pending_files: int = 0
    pending_rows: int = 0
    loaded_watermark: int | None = None
    lag_ms: int | None = None
    delta_version: int | None = None
    delta_rows: int | None = None
    health: str = "ok"  # ok | behind | not_loaded | no_data | error
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def table_status(manifest: Manifest, table: str, delta_root: str, count_pending_rows: bool = True) -> TableStatus:
    """The status of one table. Problems become ``errors``; this never raises for one table."""
    entry = manifest.entries.get(table)
    if entry is None:
        return TableStatus(table, None, None, None, health="error",
                           errors=[str(p) for p in manifest.problems_for(table)])
    status = TableStatus(table, entry.manifest_watermark, entry.total_processed_records, len(entry.fingerprints))
    try:
        state = read_table_state(Location.parse(delta_root).join("raw", table))
        status.loaded_watermark = state.loaded_watermark
        status.delta_version = state.version
        status.delta_rows = state.total_rows
        plan = plan_table(entry, state.loaded_watermark)
        status.warnings = plan.warnings
        status.pending_batches = len(plan.batches)
        status.pending_files = plan.pending_files
        if count_pending_rows:
            status.pending_rows = count_rows(plan.batches)
        if state.loaded_watermark is not None:
            status.lag_ms = max(entry.manifest_watermark - state.loaded_watermark, 0)
        if plan.batches:
            status.health = "behind" if state.exists else "not_loaded"
        elif not state.exists:
            status.health = "no_data"
    except Exception as exc:  # report, keep going with the other tables
        status.health = "error"
        status.errors.append(f"{table}: {exc}")
    return status


def all_statuses(manifest: Manifest, delta_root: str, count_pending_rows: bool = True) -> list[TableStatus]:
    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(lambda t: table_status(manifest, t, delta_root, count_pending_rows), manifest.tables))


def format_watermark(watermark: int | None) -> str:
    if watermark is None:
        return "-"
    return datetime.fromtimestamp(watermark / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


def format_table(statuses: list[TableStatus]) -> str:
    headers = ["table", "manifest watermark (UTC)", "records", "fps", "pending", "pending rows",
               "loaded watermark (UTC)", "lag", "version", "delta rows", "health"]
    rows = [
        [s.table, format_watermark(s.manifest_watermark), _n(s.manifest_records), _n(s.fingerprints),
         f"{s.pending_batches} ({s.pending_files} files)", _n(s.pending_rows), format_watermark(s.loaded_watermark),
         _lag(s.lag_ms), _n(s.delta_version), _n(s.delta_rows), s.health]
        for s in statuses
    ]
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows, strict=False)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) for r in [headers, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    for s in statuses:
        lines.extend(f"  ! {e}" for e in s.errors)
        lines.extend(f"  ~ {w}" for w in s.warnings)
    total_pending = sum(s.pending_batches for s in statuses)
    total_rows = sum(s.delta_rows or 0 for s in statuses)
    lines.append(f"{len(statuses)} tables, {total_rows} rows in raw Delta, {total_pending} batches pending, "
                 f"{sum(1 for s in statuses if s.health == 'error')} with errors")
    return "\n".join(lines)


def _n(value: int | None) -> str:
    return "-" if value is None else str(value)


def _lag(lag_ms: int | None) -> str:
    return duration(lag_ms)


def register(subparsers: argparse._SubParsersAction, settings: Settings) -> None:
    """``guidewire-pipeline status``: per-table watermarks, pending batches, lag and health."""
    status = subparsers.add_parser("status", help="per-table watermarks, pending batches, lag and health")
    status.add_argument("--manifest", default=settings.manifest_uri, help="manifest URI (default: GW_MANIFEST_URI)")
    status.add_argument("--delta-root", default=settings.delta_root, help="Delta root (default: GW_DELTA_ROOT)")
    status.add_argument("--json", action="store_true", help="one JSON object per table, as a list")
    status.add_argument("--no-rows", action="store_true", help="skip counting pending rows (no footer reads)")
    status.set_defaults(handler=run_status)


def run_status(args: argparse.Namespace) -> int:
    try:
        manifest = read_manifest(args.manifest)
    except ManifestError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    statuses = all_statuses(manifest, args.delta_root, count_pending_rows=not args.no_rows)
    if args.json:
        print(json.dumps([s.to_json() for s in statuses], indent=2))
    else:
        print(format_table(statuses))
    try:  # the first thing a sync does; a root nothing can be written to fails every table
        check_writable(Location.parse(args.delta_root).join("raw"), "GW_DELTA_ROOT")
    except StorageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 1 if any(s.health == "error" for s in statuses) else 0
