"""OutputWriter and Savepoints: copy a table's pending CDA batches into its raw Delta table.

The rules, each enforced here and nowhere else:
- One Delta commit per CDA timestamp folder, in ascending order. Its commit metadata carries
  ``gw_watermark`` (the folder's timestamp) and ``gw_fingerprint``.
- Exactly once: each commit also records the Delta app transaction ``(APP_ID, timestamp)``, so
  ``DeltaTable.transaction_version(APP_ID)`` is the table's loaded watermark (the savepoint). A batch
  is written against the very snapshot on which its watermark was checked; delta-rs refuses that
  commit if another writer recorded the same app id meanwhile, and the loop then reloads and skips.
  A crash between two commits leaves only uncommitted data files, never a half batch.
- Schema evolution: new columns are merged (earlier rows read back as null); a column whose type
  changes fails the table with ``SchemaTypeChangeError`` before anything of that batch is written.
- Memory is bounded by record batches: files are streamed, never collected into one table.
- Deep tables compact their small files once a sync leaves ``COMPACT_MIN_SMALL_FILES`` of them:
  maintenance that changes no data, records no savepoint and never fails a load.
- ``peek_log`` reads the savepoint from the newest commit without delta-rs, only to skip tables
  that have nothing to load; every write checks the savepoint through delta-rs.

Two clone modes, same rules:
- ``deep`` (default): rows are copied into Delta data files under the table's root.
- ``shallow``: zero copy. Each commit's add actions point at the CDA parquet files in place, by
  absolute URI; sizes come from the listing and row counts and statistics from the parquet footers,
  so a batch costs one footer read per file. The table is marked shallow in its description, and
  ``vacuum_table`` refuses it: a VACUUM that followed those paths could delete Guidewire's files.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import quote

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from deltalake import CommitProperties, DeltaTable, PostCommitHookProperties, Transaction, write_deltalake
from deltalake import Field as DeltaField
from deltalake import Schema as DeltaSchema
from deltalake.exceptions import CommitFailedError, TableNotFoundError
from deltalake.transaction import AddAction, create_table_with_add_actions

from guidewire_pipeline.cda.load_plan import DataFile, LoadPlan, PendingBatch, plan_table
from guidewire_pipeline.cda.manifest import ManifestEntry
from guidewire_pipeline.cda.storage import Location, StorageError

APP_ID = "guidewire-cda"
# File statistics only for the columns raw tables are looked up and ordered by. delta-rs keeps every
# file's statistics in memory and rewrites its table state on each commit, so statistics on all
# columns (32 by default, of Guidewire's 50 to 300) made each commit and each open cost several
# times more on a table with many files (measured in benchmarks/incremental). Readers still skip
# files by these columns; a listed column that a table lacks is ignored.
STATS_COLUMNS = ("id", "publicid", "updatetime", "gwcbi___lsn", "gwcbi___connector_ts_ms", "gwcbi___operation")
# A checkpoint every 10 commits. delta-rs replays every commit file since the last checkpoint each
# time it opens a table (one GET each on S3: measured in benchmarks/incremental), so the interval
# bounds what opening a table of any age costs: at most 9 commit files. A checkpoint costs one state
# read and one PUT, paid once per 10 CDA batches.
TABLE_CONFIGURATION = {
    "delta.checkpointInterval": "10",
    "delta.dataSkippingStatsColumns": ",".join(STATS_COLUMNS),
    "delta.enableChangeDataFeed": "true",
    "delta.appendOnly": "true",
}
# Small-file compaction of deep tables. Each CDA folder adds at least one file, and delta-rs holds
# every file in its table state, so opening a table and each commit cost grow with the file count
# (benchmarks/incremental: 1,000 files made both several times slower). Once a sync leaves this
# many files below SMALL_FILE_BYTES, it compacts them (OPTIMIZE) into files of up to that size;
# larger files are never rewritten. Shallow tables are never compacted: their files are CDA's.
COMPACT_MIN_SMALL_FILES = 100
SMALL_FILE_BYTES = 16 * 2**20
READ_BATCH_ROWS = 64 * 1024
MAX_COMMIT_ATTEMPTS = 5
# Delta has no free-form table property (delta-rs rejects unknown keys), so the description marks a
# shallow table; vacuum_table and the clone-mode check read it from the log's metadata.
SHALLOW_DESCRIPTION = (
    "Guidewire CDA shallow clone: data files are CDA's parquet files in place. "
    "Never VACUUM this table: it could delete Guidewire's source files."
)
FOOTER_READ_THREADS = 16  # footer reads wait on storage, not CPU
FOOTER_GUESS = 64 * 1024  # one ranged read covers the footer of a typical CDA file
STATS_STRING_MAX = 32  # longer strings get no min/max (Delta truncates there too)

CloneMode = Literal["deep", "shallow"]
Progress = Callable[[str], None]


class ShallowTableError(Exception):
    """An operation that is unsafe or inconsistent for a shallow (zero-copy) table."""


class SchemaTypeChangeError(Exception):
    """A column's type differs between the Delta table and a new CDA batch."""

    def __init__(self, table: str, column: str, delta_type: str, new_type: str, batch: str) -> None:
        super().__init__(
            f"Table {table!r}: column {column!r} changed type from {delta_type} (in Delta) to {new_type} "
            f"(in CDA batch {batch}). Nothing of that batch was written. CDA schema changes are expected "
            "to be additive; recreate the raw table (and downstream layers) to accept the new type."
        )
        self.table, self.column = table, column


@dataclass
class TableSyncResult:
    """What syncing one table did. Picklable: it travels back from Ray workers."""

    table: str
    status: Literal["loaded", "up_to_date", "failed"]
    manifest_watermark: int | None
    watermark_before: int | None
    watermark_after: int | None
    batches_applied: int = 0
    rows_added: int = 0
    bytes_read: int = 0
    delta_version: int | None = None
    total_rows: int | None = None
    columns: list[tuple[str, str]] = field(default_factory=list)
    fingerprints: list[str] = field(default_factory=list)  # fingerprints whose schema has been loaded
    duration_s: float = 0.0
    compacted_files: int = 0  # small files merged by this sync's compaction (0: none ran)
    uri: str = ""
    warnings: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def lag_ms(self) -> int | None:
        """Milliseconds the loaded watermark is behind the manifest; None while the table has no data."""
        if self.manifest_watermark is None or self.watermark_after is None:
            return None
        return max(self.manifest_watermark - self.watermark_after, 0)

    @property
    def ok(self) -> bool:
        return self.status != "failed"


@dataclass(frozen=True)
class DeltaTableState:
    """The Delta side of one raw table, read from its log (no data files)."""

    exists: bool
    version: int | None = None
    loaded_watermark: int | None = None
    total_rows: int | None = None
    columns: tuple[tuple[str, str], ...] = ()


def open_table(location: Location, *, without_files: bool = True) -> DeltaTable | None:
    """The Delta table at ``location``, or None when there is none yet."""
    try:
        return DeltaTable(location.delta_uri, storage_options=location.delta_storage_options(),
                          without_files=without_files)
    except TableNotFoundError:
        return None


def loaded_watermark(table: DeltaTable | None) -> int | None:
    """The table's savepoint: the last CDA timestamp committed, from the app transaction."""
    if table is None:
        return None
    return table.transaction_version(APP_ID)


@dataclass(frozen=True)
class LogPeek:
    """What a table's newest commit says: its version, and the savepoint it records (None when it
    records none, e.g. a schema-only commit)."""

    version: int
    loaded_watermark: int | None


_COMMIT_FILE = re.compile(r"^(\d{20})\.json$")


def peek_log(location: Location) -> LogPeek | None:
    """The newest commit of the table at ``location`` and the savepoint it records, read without
    delta-rs: the checkpoint pointer, one listing from the checkpoint on, and the newest commit file
    (three small requests on S3). Opening the table with delta-rs replays every commit since the
    checkpoint several times, and ``transaction_version`` once more.

    Read-only and used only to decide that a table has nothing to load: every commit of a batch
    records the app transaction, and app transaction versions only grow, so the newest commit's
    is the table's savepoint. Writes never trust it; they go through delta-rs and check the
    savepoint on the snapshot they commit against. None when there is no table yet or the log
    cannot be read this way (the caller then opens the table with delta-rs)."""
    log = location.join("_delta_log")
    try:
        checkpoint = int(json.loads(log.join("_last_checkpoint").read_bytes())["version"])
    except (StorageError, ValueError, KeyError, TypeError):
        checkpoint = 0  # no checkpoint yet (or an unreadable pointer): list the whole log
    # From the checkpoint's version on; both backends then list every commit file from it.
    start_after = f"{checkpoint - 1:020d}" if checkpoint > 0 else None
    try:
        versions = [int(m.group(1)) for child in log.list_children(start_after)
                    if not child.is_dir and (m := _COMMIT_FILE.match(child.name))]
    except (StorageError, OSError):
        return None
    if not versions:
        return None
    newest = max(versions)
    try:
        commit = log.join(f"{newest:020d}.json").read_bytes()
    except StorageError:
        return None
    watermark = None
    try:
        for line in commit.splitlines():
            if b'"txn"' not in line:
                continue
            action = json.loads(line).get("txn") or {}
            if action.get("appId") == APP_ID:
                watermark = int(action["version"])
    except (ValueError, TypeError, KeyError, AttributeError):
        return None  # not a commit this peek understands: let delta-rs read the log
    return LogPeek(newest, watermark)


def read_table_state(location: Location) -> DeltaTableState:
    """Version, loaded watermark, row count (from file statistics) and schema of a raw table."""
    table = open_table(location, without_files=False)
    if table is None:
        return DeltaTableState(exists=False)
    return DeltaTableState(
        exists=True,
        version=table.version(),
        loaded_watermark=loaded_watermark(table),
        total_rows=_row_count(table),
        columns=tuple(_columns(_arrow_schema(table))),
    )


def sync_table(
    entry: ManifestEntry,
    location: Location,
    *,
    clone_mode: CloneMode = "deep",
    progress: Progress | None = None,
    plan: LoadPlan | None = None,
    compact_min_small_files: int = COMPACT_MIN_SMALL_FILES,
) -> TableSyncResult:
    """Bring the raw Delta table at ``location`` up to ``entry``'s manifest watermark.

    ``plan`` may carry a listing made moments ago; it is reused only if the table's savepoint is
    still the one it was planned from (each batch is re-checked against the savepoint anyway).
    Never raises for a table-level problem: the result carries ``status="failed"`` and an error that
    names the table, so one bad table never stops the others.
    """
    started = time.monotonic()
    result = TableSyncResult(
        table=entry.table, status="up_to_date", manifest_watermark=entry.manifest_watermark,
        watermark_before=None, watermark_after=None, uri=location.uri,
    )
    try:
        # With its files: the commits below refresh this handle, and the row count at the end reads it.
        table = open_table(location, without_files=False)
        _check_clone_mode(entry.table, location, table, clone_mode)
        result.watermark_before = result.watermark_after = loaded_watermark(table)
        if plan is None or plan.loaded_watermark != result.watermark_before:
            plan = plan_table(entry, result.watermark_before)
        result.warnings.extend(plan.warnings)
        if progress and plan.batches:
            progress(f"{entry.table}: {len(plan.batches)} pending batches, {plan.pending_files} files, "
                     f"{plan.pending_bytes / 1e6:.1f} MB")
        watermark = result.watermark_before
        for number, batch in enumerate(plan.batches, start=1):
            table, watermark, applied, rows = _apply_batch(entry.table, location, table, watermark, batch, clone_mode)
            result.watermark_after = watermark
            if applied:
                result.batches_applied += 1
                result.rows_added += rows
                result.bytes_read += batch.size
                result.status = "loaded"
            if progress:
                verb = "committed" if applied else "already committed by another writer"
                progress(f"{entry.table}: batch {number}/{len(plan.batches)} ({batch.timestamp}) {verb}, "
                         f"{rows} rows")
        if clone_mode == "deep" and result.batches_applied and table is not None:
            table, result.compacted_files = _compact_small_files(
                location, table, compact_min_small_files, progress, entry.table, result.warnings)
        _finish(result, entry, table)
    except Exception as exc:  # one table's failure is reported by name, never raised to the caller
        result.status = "failed"
        result.error = str(exc) if entry.table in str(exc) else f"Table {entry.table!r}: {exc}"
    result.duration_s = time.monotonic() - started
    return result


def _compact_small_files(
    location: Location, table: DeltaTable, min_small_files: int, progress: Progress | None, name: str,
    warnings: list[str],
) -> tuple[DeltaTable, int]:
    """OPTIMIZE a deep table's small files once there are ``min_small_files`` of them; returns the
    table handle and how many files were merged. The commit changes no data (``dataChange: false``:
    readers of the change data feed, like bronze, see nothing) and records no savepoint. It is made
    with no retries: a concurrent writer wins, and a later sync compacts instead. Compaction is
    maintenance: when it fails, the batches already committed stand and the sync still succeeds,
    with a warning."""
    sizes = pa.table(table.get_add_actions(flatten=True))["size_bytes"].to_pylist()
    small = sum(1 for size in sizes if size < SMALL_FILE_BYTES)
    if small < min_small_files:
        return table, 0
    try:
        metrics = table.optimize.compact(
            target_size=SMALL_FILE_BYTES,
            commit_properties=CommitProperties(custom_metadata={"gw_maintenance": "compact", "gw_table": name},
                                               max_commit_retries=0),
            post_commithook_properties=_hooks(table),
        )
    except Exception as exc:  # maintenance must never fail a load that committed
        warnings.append(f"{name}: compacting {small} small files did not happen this time ({exc}); "
                        "a later sync tries again.")
        reopened = open_table(location, without_files=False)
        return (reopened if reopened is not None else table), 0
    if progress:
        progress(f"{name}: compacted {metrics['numFilesRemoved']} small files into {metrics['numFilesAdded']}")
    return table, int(metrics["numFilesRemoved"])


def _finish(result: TableSyncResult, entry: ManifestEntry, table: DeltaTable | None) -> None:
    """Version, row count and schema from the refreshed handle: no second log read."""
    if table is not None:
        result.delta_version = table.version()
        result.total_rows = _row_count(table)
        result.columns = list(_columns(_arrow_schema(table)))
    loaded = result.watermark_after
    result.fingerprints = [
        fp.fingerprint for fp in entry.fingerprints if loaded is not None and fp.starts_at <= loaded
    ]


# Writes one batch against ``table`` (None: create it) with the given commit properties, with no
# commit retries, so only against the snapshot it was given. Returns the rows written and the version
# of the batch's commit, and leaves ``table`` at that version or later.
BatchWrite = Callable[[DeltaTable | None, CommitProperties], tuple[int, int]]


def _apply_batch(
    table_name: str, location: Location, table: DeltaTable | None, watermark: int | None,
    batch: PendingBatch, clone_mode: CloneMode,
) -> tuple[DeltaTable, int | None, bool, int]:
    """Commit one CDA batch exactly once.

    ``watermark`` is the savepoint of ``table``'s snapshot. The loop carries it from commit to commit
    instead of asking delta-rs again (``transaction_version`` replays the log since the checkpoint:
    a GET per commit file on S3). That is sound because every commit here is made with no retries
    against the snapshot that was checked: when the handle then stands exactly one version further,
    that version is this commit and the savepoint is this batch's timestamp. Anything else (a lost
    race, a handle that moved further) reloads the savepoint from the log.

    Returns the table handle, its savepoint, whether this call committed the batch, and its rows."""
    if clone_mode == "shallow":
        write = _shallow_write(table_name, location, batch)
    elif clone_mode == "deep":
        write = _deep_write(table_name, location, batch)
    else:
        raise ValueError(f"clone_mode {clone_mode!r} is not supported: use 'deep' or 'shallow'.")
    metadata = {"gw_watermark": str(batch.timestamp), "gw_fingerprint": batch.fingerprint, "gw_table": table_name}
    if clone_mode == "shallow":
        metadata["gw_clone_mode"] = "shallow"
    for _attempt in range(MAX_COMMIT_ATTEMPTS):
        if table is not None and (watermark or -1) >= batch.timestamp:
            return table, watermark, False, 0  # another writer committed it: exactly once
        properties = CommitProperties(
            custom_metadata=metadata,
            app_transactions=[Transaction(APP_ID, batch.timestamp)],
            max_commit_retries=0,  # a concurrent commit must make us re-check the savepoint, not rebase
        )
        try:
            rows, own_version = write(table, properties)
        except CommitFailedError:
            table = open_table(location, without_files=False)  # lost a race: reload, then the savepoint decides
            watermark = loaded_watermark(table)
            continue
        except Exception as exc:
            if table is None and "already exists" in str(exc).lower():
                table = open_table(location, without_files=False)  # another writer created the table first
                watermark = loaded_watermark(table)
                continue
            raise
        if table is None:
            table = open_table(location, without_files=False)
        if table is None or table.version() != own_version:
            watermark = loaded_watermark(table)  # others committed after us: read the savepoint from the log
        else:
            watermark = batch.timestamp
        return table, watermark, True, rows
    raise RuntimeError(
        f"Table {table_name!r}: batch {batch.timestamp} lost {MAX_COMMIT_ATTEMPTS} commit races in a row; "
        "another writer keeps committing to this table. Run again once it has finished."
    )


def _deep_write(table_name: str, location: Location, batch: PendingBatch) -> BatchWrite:
    """Deep: the batch's rows streamed into new Delta data files by ``write_deltalake``."""
    dataset = _batch_dataset(table_name, batch)

    def write(table: DeltaTable | None, properties: CommitProperties) -> tuple[int, int]:
        if table is not None:
            _check_types(table_name, _arrow_schema(table), dataset.schema, batch)
        # Scanner to Rust writer through the Arrow C stream: no Python per record batch (a Python
        # generator here held the GIL for every batch, and tables loading on driver threads then
        # queued on it). Little read-ahead: memory stays a few record batches per table.
        reader = dataset.scanner(batch_size=READ_BATCH_ROWS, batch_readahead=2, fragment_readahead=1).to_reader()
        write_deltalake(
            table if table is not None else location.delta_uri,
            reader,
            # Creating is exclusive: had another writer created the table since we looked, an
            # append to the URI would land this batch on top of theirs without any savepoint check.
            mode="append" if table is not None else "error",
            schema_mode="merge",
            storage_options=None if table is not None else location.delta_storage_options(),
            configuration=None if table is not None else TABLE_CONFIGURATION,
            commit_properties=properties,
            post_commithook_properties=_hooks(table),
        )
        # write_deltalake moves the handle it was given to the version it committed.
        rows = sum(fragment.metadata.num_rows for fragment in dataset.get_fragments())  # footers, read once
        return rows, table.version() if table is not None else 0

    return write


def _shallow_write(table_name: str, location: Location, batch: PendingBatch) -> BatchWrite:
    """Shallow: one commit of add actions that point at the batch's files in place (stats from the
    footers, read once for all attempts)."""
    footers = _read_footers(table_name, batch)
    batch_schema = _unified_schema(table_name, batch, [schema for schema, _ in footers])
    rows = sum(metadata.num_rows for _, metadata in footers)
    actions = [
        AddAction(_absolute_uri(data_file.location), data_file.size, {}, int(time.time() * 1000), True,
                  _file_stats(batch_schema, schema, metadata))
        for data_file, (schema, metadata) in zip(batch.files, footers, strict=True)
    ]

    def write(table: DeltaTable | None, properties: CommitProperties) -> tuple[int, int]:
        if table is None:
            create_table_with_add_actions(
                location.delta_uri, DeltaSchema.from_arrow(batch_schema), actions, mode="error",
                description=SHALLOW_DESCRIPTION, configuration=TABLE_CONFIGURATION,
                storage_options=location.delta_storage_options(), commit_properties=properties,
                post_commithook_properties=_hooks(None),
            )
            return rows, 0
        delta_schema = _arrow_schema(table)
        _check_types(table_name, delta_schema, batch_schema, batch)
        new_columns = _new_columns(delta_schema, batch_schema)
        if new_columns:
            # An add-actions commit cannot carry a schema change (delta-rs keeps the old metadata),
            # so new columns get their own commit just before. Adding a column is idempotent, and
            # alter moves the handle to its own commit only, so the batch's commit below still
            # fails if anyone else committed since the savepoint was checked.
            table.alter.add_columns(
                [DeltaField.from_arrow(f) for f in new_columns],
                commit_properties=CommitProperties(
                    custom_metadata={"gw_schema_change": batch.fingerprint, "gw_table": table_name},
                    max_commit_retries=0),
            )
            delta_schema = _arrow_schema(table)
        own_version = table.version() + 1
        table.create_write_transaction(actions, mode="append", schema=delta_schema,
                                       commit_properties=properties, post_commithook_properties=_hooks(table))
        table.update_incremental()  # unlike write_deltalake, this commit leaves the handle where it was
        return rows, own_version

    return write


def _read_footers(table_name: str, batch: PendingBatch) -> list[tuple[pa.Schema, pq.FileMetaData]]:
    """Each file's footer: one ranged GET per file on S3 (the listing's size spares the HEAD), on
    threads, since each read waits on storage."""

    def footer(data_file: DataFile) -> tuple[pa.Schema, pq.FileMetaData]:
        try:
            return read_parquet_footer(data_file.location, data_file.size)
        except (OSError, ValueError, pa.ArrowInvalid) as exc:
            raise ValueError(
                f"Table {table_name!r}: cannot read the parquet footer of {data_file.location.uri} ({exc}). "
                f"Check that file in CDA batch {batch.fingerprint}/{batch.timestamp}."
            ) from exc

    if len(batch.files) == 1:
        return [footer(batch.files[0])]
    with ThreadPoolExecutor(max_workers=min(FOOTER_READ_THREADS, len(batch.files))) as pool:
        return list(pool.map(footer, batch.files))




def read_parquet_footer(location: Location, size: int) -> tuple[pa.Schema, pq.FileMetaData]:
    """A parquet file's schema and metadata from its tail: one read of ``FOOTER_GUESS`` bytes, and
    a second only when the footer is larger than that."""
    tail = location.read_tail(size, FOOTER_GUESS)
    if len(tail) < 12 or tail[-4:] != b"PAR1":
        raise ValueError("not a parquet file (no PAR1 footer)")
    footer_length = int.from_bytes(tail[-8:-4], "little")
    if footer_length + 8 > len(tail):
        tail = location.read_tail(size, footer_length + 8)
    # Only the footer is parsed; the data pages before it are never needed.
    parquet = pq.ParquetFile(pa.BufferReader(b"PAR1" + tail[-(footer_length + 8):]))
    return parquet.schema_arrow, parquet.metadata




def _unified_schema(table_name: str, batch: PendingBatch, schemas: list[pa.Schema]) -> pa.Schema:
    try:
        unified = pa.unify_schemas(schemas, promote_options="default")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise ValueError(
            f"Table {table_name!r}: the parquet files of CDA batch {batch.fingerprint}/{batch.timestamp} "
            f"disagree on column types ({exc}). Check that folder's files."
        ) from exc
    return pa.schema([f.with_nullable(True) for f in unified])


def _new_columns(delta_schema: pa.Schema, batch_schema: pa.Schema) -> list[pa.Field]:
    """The batch's columns that the table lacks (matched by name, case-insensitively), nullable."""
    known = {f.name.lower() for f in delta_schema}
    return [f.with_nullable(True) for f in batch_schema if f.name.lower() not in known]


def _absolute_uri(location: Location) -> str:
    """The URI an add action stores for a file in place: ``s3://bucket/key`` or ``file:///path``,
    percent-encoded as the Delta protocol asks."""
    if location.is_s3:
        return f"s3://{location.bucket}/{quote(location.key)}"
    return f"file://{quote(location.path)}"


def _file_stats(batch_schema: pa.Schema, file_schema: pa.Schema, metadata: pq.FileMetaData) -> str:
    """Delta file statistics from a parquet footer: numRecords, and for ``STATS_COLUMNS`` nullCount
    and minValues/maxValues for the types whose footer values are exact bounds (integers, dates,
    short strings, timestamps widened to milliseconds). A column the file lacks (added by a later
    schema) is all null."""
    rows = metadata.num_rows
    null_count: dict[str, int] = {f.name: rows for f in batch_schema
                                  if f.name not in file_schema.names and f.name.lower() in STATS_COLUMNS}
    minimum: dict[str, Any] = {}
    maximum: dict[str, Any] = {}
    for index, arrow_field in enumerate(file_schema):
        if arrow_field.type.num_fields != 0 or arrow_field.name.lower() not in STATS_COLUMNS:
            continue  # nested columns, and columns without statistics (see STATS_COLUMNS)
        nulls, low, high, exact = 0, None, None, True
        for group in range(metadata.num_row_groups):
            column = metadata.row_group(group).column(index)
            stats = column.statistics
            if stats is None or column.path_in_schema != arrow_field.name:
                exact = False
                break
            if stats.has_null_count:
                nulls += stats.null_count
            else:
                exact = False
            if stats.has_min_max:
                low = stats.min if low is None else min(low, stats.min)
                high = stats.max if high is None else max(high, stats.max)
            elif stats.num_values:
                exact = False
        if not exact:
            continue
        null_count[arrow_field.name] = nulls
        bounds = _stat_bounds(arrow_field.type, low, high)
        if bounds is not None:
            minimum[arrow_field.name], maximum[arrow_field.name] = bounds
    return json.dumps({"numRecords": rows, "minValues": minimum, "maxValues": maximum, "nullCount": null_count},
                      separators=(",", ":"))


def _stat_bounds(data_type: pa.DataType, low: Any, high: Any) -> tuple[Any, Any] | None:
    if low is None or high is None:
        return None
    if pa.types.is_integer(data_type) and isinstance(low, int):
        return low, high
    if pa.types.is_date32(data_type) and isinstance(low, dt.date):
        return low.isoformat(), high.isoformat()
    if (pa.types.is_string(data_type) or pa.types.is_large_string(data_type)) and isinstance(low, str):
        if len(low) > STATS_STRING_MAX or len(high) > STATS_STRING_MAX:
            return None
        return low, high
    if pa.types.is_timestamp(data_type) and isinstance(low, dt.datetime):
        # Delta keeps milliseconds: widen outwards so that the bounds still hold.
        suffix = "Z" if data_type.tz else ""
        low_ms = low.replace(microsecond=low.microsecond // 1000 * 1000)
        high_ms = high.replace(microsecond=high.microsecond // 1000 * 1000)
        if high_ms != high:
            high_ms += dt.timedelta(milliseconds=1)
        if data_type.tz:
            low_ms, high_ms = low_ms.astimezone(dt.UTC), high_ms.astimezone(dt.UTC)
        return (low_ms.strftime("%Y-%m-%dT%H:%M:%S.") + f"{low_ms.microsecond // 1000:03d}{suffix}",
                high_ms.strftime("%Y-%m-%dT%H:%M:%S.") + f"{high_ms.microsecond // 1000:03d}{suffix}")
    return None


def is_shallow(table: DeltaTable) -> bool:
    """True when the table was written in shallow mode (its description says so)."""
    return (table.metadata().description or "") == SHALLOW_DESCRIPTION


def _check_clone_mode(table_name: str, location: Location, table: DeltaTable | None, clone_mode: CloneMode) -> None:
    if table is None:
        return
    existing: CloneMode = "shallow" if is_shallow(table) else "deep"
    if existing != clone_mode:
        raise ShallowTableError(
            f"Table {table_name!r} at {location.uri} is a {existing} clone, but this run asks for "
            f"clone_mode {clone_mode!r}. Mixing the two in one table is refused: set clone_mode back to "
            f"{existing!r}, or load into a new GW_DELTA_ROOT."
        )


def vacuum_table(location: Location, *, retention_hours: int | None = None, dry_run: bool = True) -> list[str]:
    """VACUUM a raw table through this tool. Refuses shallow tables with ``ShallowTableError``:
    their data files are Guidewire's CDA files, which a VACUUM must never delete."""
    table = open_table(location, without_files=False)
    if table is None:
        raise ValueError(f"There is no Delta table at {location.uri} to vacuum.")
    if is_shallow(table) or any("://" in path for path in _add_paths(table)):
        raise ShallowTableError(
            f"Refusing to VACUUM {location.uri}: it is a shallow clone whose data files are Guidewire's "
            "CDA parquet files in place, and a VACUUM could delete them. Do not VACUUM it with any tool; "
            "to reclaim space, drop the table and reload it."
        )
    return table.vacuum(retention_hours=retention_hours, dry_run=dry_run)


def _add_paths(table: DeltaTable) -> list[str]:
    return [str(p) for p in pa.table(table.get_add_actions(flatten=True))["path"].to_pylist()]


def _batch_dataset(table_name: str, batch: PendingBatch) -> ds.Dataset:
    """A lazy dataset over the batch's files with one schema that covers them all (nullable)."""
    filesystem = batch.files[0].location.filesystem()
    parquet = ds.ParquetFileFormat(default_fragment_scan_options=ds.ParquetFragmentScanOptions(pre_buffer=True))
    # Sizes from the listing spare a HEAD per file, and each footer is read once and kept for the
    # scan: on S3 a file then costs one footer GET and its data reads, instead of three of each.
    fragments = [parquet.make_fragment(f.location.fs_path, filesystem, file_size=f.size) for f in batch.files]
    for fragment in fragments:
        fragment.ensure_complete_metadata()
    schemas = [fragment.physical_schema for fragment in fragments]
    try:
        unified = pa.unify_schemas(schemas, promote_options="default")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise ValueError(
            f"Table {table_name!r}: the parquet files of CDA batch {batch.fingerprint}/{batch.timestamp} "
            f"disagree on column types ({exc}). Check that folder's files."
        ) from exc
    unified = pa.schema([f.with_nullable(True) for f in unified])
    return ds.FileSystemDataset(fragments, unified, parquet, filesystem)




def _check_types(table_name: str, delta_schema: pa.Schema, batch_schema: pa.Schema, batch: PendingBatch) -> None:
    existing = {f.name.lower(): f for f in delta_schema}
    for new in batch_schema:
        old = existing.get(new.name.lower())
        if old is not None and _type_family(old.type) != _type_family(new.type):
            raise SchemaTypeChangeError(
                table_name, new.name, str(old.type), str(new.type), f"{batch.fingerprint}/{batch.timestamp}"
            )


def _type_family(data_type: pa.DataType) -> str:
    """Types that Delta stores the same way compare equal (string/large_string/string_view, ...)."""
    if pa.types.is_string(data_type) or pa.types.is_large_string(data_type) or pa.types.is_string_view(data_type):
        return "string"
    if pa.types.is_binary(data_type) or pa.types.is_large_binary(data_type) or pa.types.is_binary_view(data_type):
        return "binary"
    if pa.types.is_timestamp(data_type):
        return "timestamp" if data_type.tz else "timestamp_ntz"
    if pa.types.is_list(data_type) or pa.types.is_large_list(data_type) or pa.types.is_list_view(data_type):
        return f"list<{_type_family(data_type.value_type)}>"
    return str(data_type)


def _arrow_schema(table: DeltaTable) -> pa.Schema:
    return pa.schema(table.schema().to_arrow())


def _columns(schema: pa.Schema) -> Iterator[tuple[str, str]]:
    for f in schema:
        yield f.name, str(f.type)


def _row_count(table: DeltaTable) -> int:
    actions = pa.table(table.get_add_actions(flatten=True))
    if "num_records" not in actions.column_names or actions.num_rows == 0:
        return 0
    return int(pc.sum(actions["num_records"]).as_py() or 0)


def _hooks(table: DeltaTable | None) -> PostCommitHookProperties:
    """Checkpoints as configured; expired-log cleanup only on checkpoint commits, since it lists the
    whole ``_delta_log`` (a cost that grows with the table's age) every time it runs."""
    if table is None:
        return PostCommitHookProperties(create_checkpoint=True, cleanup_expired_logs=False)
    interval = int(table.metadata().configuration.get("delta.checkpointInterval") or 100)
    return PostCommitHookProperties(create_checkpoint=True,
                                    cleanup_expired_logs=(table.version() + 1) % interval == 0)


def raw_dataset(location: Location) -> ds.Dataset:
    """A pyarrow dataset over a raw table's current files, deep or shallow, with the table's schema
    (columns a file lacks read as null). ``DeltaTable.to_pyarrow_dataset`` cannot read a shallow
    table: it joins the absolute add-action paths onto the table root."""
    table = open_table(location, without_files=False)
    if table is None:
        raise ValueError(f"There is no Delta table at {location.uri}.")
    schema = _arrow_schema(table)
    paths = [_data_file_location(location, str(path)) for path in _add_paths(table)]
    if not paths:
        return ds.dataset([], schema=schema, format="parquet")
    return ds.dataset([p.fs_path for p in paths], schema=schema, format="parquet", filesystem=paths[0].filesystem())


def _data_file_location(table_location: Location, path: str) -> Location:
    """Where an add action's file is: an absolute URI as written in shallow mode, else relative to the
    table root."""
    from urllib.parse import unquote

    if "://" in path:
        return Location.parse(unquote(path))
    return table_location.join(unquote(path))
