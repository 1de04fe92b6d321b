"""Deliberate operations on one table: ``reset`` (delete its tables so that the next sync reloads them
from CDA) and ``adopt`` (take over a raw table another tool wrote). No Dagster here; the CLI and any
job call these functions.

- ``reset TABLE [--layers raw,bronze,silver]``: deletes ``<GW_DELTA_ROOT>/<layer>/<TABLE>`` for each
  layer. Any subset is safe: each layer's savepoint is derived from what it holds, so a reloaded raw
  table is not re-appended to bronze, and a rebuilt bronze re-merges into silver idempotently. A
  shallow raw table's data files are CDA's and are never touched: only its Delta log is deleted.
  ``--dry-run`` says what it would delete and deletes nothing; without ``--yes`` it asks first.
- ``adopt TABLE --watermark TS``: records the savepoint ``TS`` on a raw table that has rows but no
  savepoint (``savepoint.ForeignTableError``), after checking that its row count equals the rows of
  CDA's folders up to ``TS``. Use it when the table holds exactly CDA's rows and CDA no longer has
  them all to reload; otherwise ``reset`` is the sound choice.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake

from guidewire_pipeline.cda.delta_writer import TABLE_CONFIGURATION
from guidewire_pipeline.cda.load_plan import count_rows, plan_table
from guidewire_pipeline.cda.manifest import ManifestEntry, ManifestError, read_manifest
from guidewire_pipeline.cda.raw_table import arrow_schema, open_table, row_count
from guidewire_pipeline.cda.savepoint import APP_ID, ROWS_APP_ID
from guidewire_pipeline.cda.storage import Location
from guidewire_pipeline.lakehouse import BRONZE, RAW, SILVER, Lakehouse
from guidewire_pipeline.settings import Settings

RESET_LAYERS = (RAW, BRONZE, SILVER)


@dataclass(frozen=True)
class ResetItem:
    """One table folder a reset deletes."""

    layer: str
    location: Location
    files: int
    bytes: int

    def describe(self) -> str:
        return f"{self.layer:<7} {self.location.uri}  ({self.files} files, {self.bytes / 1e6:.1f} MB)"


def plan_reset(lakehouse: Lakehouse, table: str, layers: tuple[str, ...] = RESET_LAYERS) -> list[ResetItem]:
    """The table folders a reset of ``table`` in ``layers`` deletes (only those that exist)."""
    unknown = [layer for layer in layers if layer not in RESET_LAYERS]
    if unknown:
        raise ValueError(f"Unknown layers {unknown}: choose from {', '.join(RESET_LAYERS)}.")
    items = []
    for layer in layers:
        location = lakehouse.location(layer, table)
        files, size = location.tree_size()
        if files:
            items.append(ResetItem(layer, location, files, size))
    return items


def apply_reset(items: list[ResetItem]) -> None:
    """Delete the folders, downstream layers first, so that no layer is ever left ahead of its source."""
    for item in sorted(items, key=lambda i: RESET_LAYERS.index(i.layer), reverse=True):
        item.location.delete_tree()


@dataclass(frozen=True)
class Adoption:
    table: str
    watermark: int
    rows: int
    version: int


def adopt_raw_table(entry: ManifestEntry, location: Location, watermark: int) -> Adoption:
    """Record the savepoint ``watermark`` on the foreign raw table at ``location``. Raises ValueError,
    naming the table and what differs, when there is no such table, it already has a savepoint, or
    its rows do not match CDA's folders up to ``watermark``."""
    table = open_table(location, without_files=False)
    if table is None:
        raise ValueError(f"Table {entry.table!r}: there is no Delta table at {location.uri} to adopt.")
    if table.transaction_version(APP_ID) is not None:
        raise ValueError(f"Table {entry.table!r} at {location.uri} already has a savepoint "
                         f"({table.transaction_version(APP_ID)}): there is nothing to adopt.")
    if watermark > entry.manifest_watermark:
        raise ValueError(f"Table {entry.table!r}: --watermark {watermark} is past the manifest's watermark "
                         f"{entry.manifest_watermark}; CDA folders above it may still be written.")
    plan = plan_table(entry, None)
    expected = count_rows([b for b in plan.batches if b.timestamp <= watermark])
    rows = row_count(table) or table.to_pyarrow_dataset().count_rows()
    if rows != expected:
        raise ValueError(
            f"Table {entry.table!r}: the table at {location.uri} has {rows} rows, but CDA's folders up to "
            f"{watermark} hold {expected}. It is not CDA's rows up to that batch: reset it instead "
            f"(`guidewire-pipeline reset {entry.table} --layers raw`)."
        )
    table.alter.set_table_properties(dict(TABLE_CONFIGURATION), raise_if_not_exists=False)
    # An empty append carries the savepoint. ROWS_APP_ID stays 0: the adopted rows have no batch column,
    # so only rows this pipeline commits from now on are checked against it.
    write_deltalake(table, arrow_schema(table).empty_table(), mode="append", commit_properties=CommitProperties(
        custom_metadata={"gw_table": entry.table, "gw_adopted": str(watermark)},
        app_transactions=[Transaction(APP_ID, watermark), Transaction(ROWS_APP_ID, 0)], max_commit_retries=0))
    return Adoption(entry.table, watermark, rows, DeltaTable(location.delta_uri,
                                                             storage_options=location.delta_storage_options()).version())


def register(subparsers: argparse._SubParsersAction, settings: Settings) -> None:
    reset = subparsers.add_parser(
        "reset", help="delete a table's raw/bronze/silver tables so that the next sync reloads them from CDA")
    reset.add_argument("table")
    reset.add_argument("--layers", default=",".join(RESET_LAYERS),
                       help=f"comma-separated, from {','.join(RESET_LAYERS)} (default: all three)")
    reset.add_argument("--dry-run", action="store_true", help="say what would be deleted; delete nothing")
    reset.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    reset.add_argument("--delta-root", default=settings.delta_root, help="Delta root (default: GW_DELTA_ROOT)")
    reset.set_defaults(handler=run_reset)

    adopt = subparsers.add_parser("adopt", help="record a savepoint on a raw table another tool wrote, after "
                                  "checking it holds CDA's rows up to that batch")
    adopt.add_argument("table")
    adopt.add_argument("--watermark", type=int, required=True, help="the last CDA batch (epoch ms) it holds")
    adopt.add_argument("--manifest", default=settings.manifest_uri, help="manifest URI (default: GW_MANIFEST_URI)")
    adopt.add_argument("--delta-root", default=settings.delta_root, help="Delta root (default: GW_DELTA_ROOT)")
    adopt.set_defaults(handler=run_adopt)


def run_reset(args: argparse.Namespace) -> int:
    lakehouse = Lakehouse(args.delta_root)
    try:
        items = plan_reset(lakehouse, args.table, tuple(p.strip() for p in args.layers.split(",") if p.strip()))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not items:
        print(f"Nothing to reset: {args.table} has no {args.layers} table under {args.delta_root}.")
        return 0
    verb = "Would delete" if args.dry_run else "Deleting"
    print(f"{verb} {len(items)} table(s) of {args.table}:")
    for item in items:
        print(f"  {item.describe()}")
    if args.dry_run:
        print("Dry run: nothing was deleted.")
        return 0
    if not args.yes:
        answer = input(f"Type the table name ({args.table}) to confirm: ").strip()
        if answer != args.table:
            print("Not confirmed: nothing was deleted.")
            return 1
    apply_reset(items)
    print(f"Reset {args.table}. The next sync reloads it: guidewire-pipeline sync {args.table}")
    return 0


def run_adopt(args: argparse.Namespace) -> int:
    try:
        manifest = read_manifest(args.manifest)
    except ManifestError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    entry = manifest.entries.get(args.table)
    if entry is None:
        print(f"error: table {args.table!r} has no valid entry in {manifest.uri}.", file=sys.stderr)
        return 2
    try:
        adoption = adopt_raw_table(entry, Lakehouse(args.delta_root).location(RAW, args.table), args.watermark)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"Adopted {adoption.table}: {adoption.rows} rows, savepoint {adoption.watermark} "
          f"(Delta version {adoption.version}). The next sync loads the batches after it.")
    return 0
