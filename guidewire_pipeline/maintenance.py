"""Keeping the lakehouse small and fast: compaction (OPTIMIZE) and VACUUM of every layer, and the
``guidewire-pipeline vacuum`` command. No Dagster here; ``maintenance_defs.py`` schedules it.

- Bronze, silver and gold: their small files are compacted (``DeltaTable.optimize.compact``), then the
  files no version within ``retention_hours`` needs are vacuumed.
- Raw: deep tables compact themselves during each sync (``cda/maintenance.py``); here they are vacuumed,
  keeping what the slowest reader still has to read: every file removed after the raw commit that
  holds the first CDA batch bronze has not consumed yet is kept, whatever ``retention_hours`` says.
- Shallow raw tables are never vacuumed: their data files are Guidewire's CDA files.

These run where this process can reach ``GW_DELTA_ROOT`` (locally, or S3 with ``AWS_*`` credentials).
On Databricks with storage governed by Unity Catalog, use Databricks' predictive optimization or a
scheduled ``OPTIMIZE``/``VACUUM`` there instead.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable

from guidewire_pipeline.cda.maintenance import vacuum_table
from guidewire_pipeline.cda.raw_table import ShallowTableError, is_shallow, open_table
from guidewire_pipeline.cda.savepoint import META_WATERMARK
from guidewire_pipeline.cda.storage import Location
from guidewire_pipeline.lakehouse import BRONZE, GOLD, RAW, SILVER, Lakehouse
from guidewire_pipeline.settings import Settings

DEFAULT_RETENTION_HOURS = 168  # Delta's own default: a week of time travel and of safety for slow readers
MAINTAINED_LAYERS = (RAW, BRONZE, SILVER, GOLD)
BRONZE_BATCH_COLUMN = "gw_batch_ts"  # bronze's savepoint column: each row's CDA folder as a timestamp


@dataclass
class MaintenanceResult:
    layer: str
    table: str
    compacted_files: int = 0
    vacuumed_files: int = 0
    retention_hours: int = DEFAULT_RETENTION_HOURS
    note: str = ""
    error: str | None = field(default=None)

    def describe(self) -> str:
        if self.error:
            return f"{self.layer}/{self.table}: FAILED: {self.error}"
        return (f"{self.layer}/{self.table}: {self.compacted_files} small files compacted, {self.vacuumed_files} "
                f"files vacuumed (retention {self.retention_hours} h){'; ' + self.note if self.note else ''}")


def maintain(lakehouse: Lakehouse, layers: Sequence[str], tables: Sequence[str] | None = None,
             retention_hours: int = DEFAULT_RETENTION_HOURS, dry_run: bool = False,
             progress: Callable[[str], None] | None = None) -> list[MaintenanceResult]:
    """Compact and vacuum every table of ``layers`` (``tables``: only those names). A table's failure is
    its own result; the others go on."""
    results = []
    for layer in layers:
        folder = Location.parse(lakehouse.delta_root).join(layer)
        names = sorted(c.name for c in folder.list_children() if c.is_dir and not c.name.startswith(("_", ".")))
        for name in names if tables is None else [t for t in tables if t in names]:
            started = time.monotonic()
            try:
                result = (vacuum_raw(lakehouse, name, retention_hours, dry_run) if layer == RAW
                          else compact_and_vacuum(lakehouse, layer, name, retention_hours, dry_run))
            except Exception as exc:  # one table's problem is reported by name, never raised
                result = MaintenanceResult(layer, name, error=f"{type(exc).__name__}: {exc}")
            results.append(result)
            if progress:
                progress(f"{result.describe()} ({time.monotonic() - started:.1f}s)")
    return results


def compact_and_vacuum(lakehouse: Lakehouse, layer: str, name: str, retention_hours: int,
                       dry_run: bool) -> MaintenanceResult:
    location = lakehouse.location(layer, name)
    table = DeltaTable(location.delta_uri, storage_options=location.delta_storage_options())
    result = MaintenanceResult(layer, name, retention_hours=retention_hours)
    if not dry_run:
        metrics = table.optimize.compact()
        result.compacted_files = int(metrics.get("numFilesRemoved", 0))
    result.vacuumed_files = len(table.vacuum(retention_hours=retention_hours, dry_run=dry_run,
                                             enforce_retention_duration=False))
    return result


def vacuum_raw(lakehouse: Lakehouse, name: str, retention_hours: int, dry_run: bool) -> MaintenanceResult:
    """VACUUM one raw table, keeping every file bronze may still read (see the module docstring)."""
    location = lakehouse.location(RAW, name)
    table = open_table(location, without_files=False)
    if table is None:
        return MaintenanceResult(RAW, name, note="no table")
    if is_shallow(table):
        return MaintenanceResult(RAW, name, note="shallow clone: never vacuumed (its files are CDA's)")
    needed = hours_bronze_needs(lakehouse, name, table)
    retention = max(retention_hours, needed)
    try:
        removed = vacuum_table(location, retention_hours=retention, dry_run=dry_run, enforce_retention_duration=False)
    except ShallowTableError as exc:
        return MaintenanceResult(RAW, name, note=str(exc))
    note = f"kept {needed} h for what bronze has not read yet" if needed > retention_hours else ""
    return MaintenanceResult(RAW, name, vacuumed_files=len(removed), retention_hours=retention, note=note)


def hours_bronze_needs(lakehouse: Lakehouse, name: str, raw: DeltaTable) -> int:
    """Hours back to the raw commit that holds the first CDA batch bronze has not consumed (0 when
    bronze has consumed everything). No bronze table yet: the raw table's whole history."""
    consumed = bronze_savepoint(lakehouse, name)
    commits = [h for h in raw.history() if META_WATERMARK in h]
    pending = [h for h in commits if consumed is None or int(h[META_WATERMARK]) > consumed]
    if not pending:
        return 0
    oldest = min(int(h["timestamp"]) for h in pending)
    return math.ceil((time.time() * 1000 - oldest) / 3_600_000) + 1


def bronze_savepoint(lakehouse: Lakehouse, name: str) -> int | None:
    """The greatest CDA batch (epoch ms) bronze holds, from its file statistics (None: no bronze)."""
    location = lakehouse.location(BRONZE, name)
    table = open_table(location, without_files=False)
    if table is None:
        return None
    actions = pa.table(table.get_add_actions(flatten=True))
    column = f"max.{BRONZE_BATCH_COLUMN}"
    if column not in actions.column_names or actions.num_rows == 0:
        return None
    latest = pc.max(actions[column]).as_py()
    return None if latest is None else int(latest.timestamp() * 1000)


def register(subparsers: argparse._SubParsersAction, settings: Settings) -> None:
    vacuum = subparsers.add_parser("vacuum", help="compact and vacuum the lakehouse's tables (raw keeps what "
                                   "bronze has not read; shallow raw tables are never vacuumed)")
    vacuum.add_argument("tables", nargs="*", help="only these tables (default: all)")
    vacuum.add_argument("--layers", default=",".join(MAINTAINED_LAYERS), help="comma-separated (default: all)")
    vacuum.add_argument("--retention-hours", type=int, default=DEFAULT_RETENTION_HOURS,
                        help=f"keep files any version of the last N hours needs (default {DEFAULT_RETENTION_HOURS})")
    vacuum.add_argument("--dry-run", action="store_true", help="say what would be removed; change nothing")
    vacuum.add_argument("--delta-root", default=settings.delta_root, help="Delta root (default: GW_DELTA_ROOT)")
    vacuum.set_defaults(handler=run_vacuum, catalog=settings.uc_catalog)


def run_vacuum(args: argparse.Namespace) -> int:
    layers = [layer.strip() for layer in args.layers.split(",") if layer.strip()]
    unknown = [layer for layer in layers if layer not in MAINTAINED_LAYERS]
    if unknown:
        print(f"error: unknown layers {unknown}: choose from {', '.join(MAINTAINED_LAYERS)}", file=sys.stderr)
        return 2
    results = maintain(Lakehouse(args.delta_root, args.catalog), layers, args.tables or None, args.retention_hours,
                       args.dry_run, progress=print)
    failed = [r for r in results if r.error]
    verb = "would remove" if args.dry_run else "removed"
    print(f"{len(results)} tables maintained, {sum(r.vacuumed_files for r in results)} files {verb}, "
          f"{len(failed)} failed" + (f": {', '.join(f'{r.layer}/{r.table}' for r in failed)}" if failed else ""))
    return 1 if failed else 0
