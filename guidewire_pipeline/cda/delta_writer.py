"""OutputWriter: copy a table's pending CDA batches into its raw Delta table, exactly once.

The rules, each enforced here and nowhere else:
- Commits sized by the work: the pending batches are cut into groups of consecutive batches
  (``LoadPlan.commit_groups``, up to a ``CommitBudget``), one Delta commit each. Every folder of a
  timestamp, in every fingerprint, is in the same commit.
- Exactly once: each commit records the app transactions ``(APP_ID, greatest batch timestamp)`` and
  ``(ROWS_APP_ID, greatest timestamp with rows)`` (see ``savepoint.py``). A group is written against the
  very snapshot on which the savepoint was checked, with no commit retries; delta-rs refuses the
  commit if anyone committed meanwhile, and the loop then reloads and re-checks. A crash loses at
  most the group being written: its data files are never referenced by a commit.
- Lineage: every row carries ``gw_batch_ts_ms`` and ``gw_fingerprint``, the CDA folder it came from.
- Schema evolution: new columns are merged (earlier rows read back as null); a column whose type
  changes fails the table with ``SchemaTypeChangeError`` before anything of the group is written.
- Memory is bounded by record batches: files are streamed, never collected into one table.

Two clone modes, same rules:
- ``deep`` (default): rows are copied into Delta data files under the table's root.
- ``shallow``: zero copy. The commit's add actions point at the CDA parquet files in place
  (``shallow_actions.py``); the lineage columns are the files' partition values.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal, Protocol

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake
from deltalake import Field as DeltaField
from deltalake import Schema as DeltaSchema
from deltalake.exceptions import CommitFailedError, DeltaError
from deltalake.transaction import create_table_with_add_actions

from guidewire_pipeline.cda.load_plan import CommitBudget, CommitGroup, DataFile, LoadPlan, plan_table
from guidewire_pipeline.cda.maintenance import COMPACT_MIN_SMALL_FILES, compact_small_files
from guidewire_pipeline.cda.manifest import ManifestEntry
from guidewire_pipeline.cda.raw_table import (
    SHALLOW_DESCRIPTION,
    Progress,
    ShallowTableError,
    arrow_schema,
    columns,
    commit_hooks,
    is_shallow,
    open_table,
    row_count,
)
from guidewire_pipeline.cda.savepoint import (
    APP_ID,
    BATCH_TS_COLUMN,
    FINGERPRINT_COLUMN,
    LINEAGE_FIELDS,
    META_FINGERPRINTS,
    META_FIRST,
    META_FOLDERS,
    META_ROWS_WATERMARK,
    META_WATERMARK,
    ROWS_APP_ID,
    Savepoint,
    read_savepoint,
)
from guidewire_pipeline.cda.shallow_actions import PARTITION_COLUMNS, add_actions, read_footers
from guidewire_pipeline.cda.storage import Location

# File statistics only for the columns raw tables are looked up, ordered and filtered by. delta-rs
# keeps every file's statistics in memory and rewrites its table state on each commit, so statistics
# on all columns (32 by default, of Guidewire's 50 to 300) made commits and opens several times
# slower on tables with many files. A listed column that a table lacks is ignored.
STATS_COLUMNS = ("id", "publicid", "updatetime", "gwcbi___lsn", "gwcbi___connector_ts_ms", "gwcbi___operation",
                 BATCH_TS_COLUMN)
# A checkpoint every 10 commits bounds what opening a table of any age replays: at most 9 commit files.
TABLE_CONFIGURATION = {
    "delta.checkpointInterval": "10",
    "delta.dataSkippingStatsColumns": ",".join(STATS_COLUMNS),
    "delta.enableChangeDataFeed": "true",
    "delta.appendOnly": "true",
}
READ_BATCH_ROWS = 64 * 1024
MAX_COMMIT_ATTEMPTS = 5
# Every CDA file carries the record key and the change columns silver orders and merges by; a file
# without them would reach raw with rows nobody downstream can place.
REQUIRED_COLUMNS = ("id", "gwcbi___seqval_hex", "gwcbi___operation")
SLICE_ROW_GROUP_BYTES = 64 * 2**20  # a row group larger than this (uncompressed) is read in slices
SLICE_BUFFER_BYTES = 4 * 2**20

CloneMode = Literal["deep", "shallow"]


class MissingChangeColumnsError(ValueError):
    """A CDA parquet file without the record key or the change columns."""

    def __init__(self, table: str, data_file: DataFile, missing: list[str]) -> None:
        super().__init__(
            f"Table {table!r}: CDA file {data_file.location.uri} (folder {data_file.fingerprint}/{data_file.timestamp}) "
            f"has no column(s) {', '.join(missing)}; every CDA file carries id and the gwcbi___ change columns. "
            "Nothing of that commit was written. Check that the file is CDA output, or remove it from the folder."
        )


def check_required_columns(table: str, files: tuple[DataFile, ...], schemas: list[pa.Schema]) -> None:
    """Fail the table, naming the first file without ``REQUIRED_COLUMNS``, before anything is written."""
    for data_file, schema in zip(files, schemas, strict=True):
        names = {name.lower() for name in schema.names}
        missing = [c for c in REQUIRED_COLUMNS if c not in names]
        if missing:
            raise MissingChangeColumnsError(table, data_file, missing)


class SchemaTypeChangeError(Exception):
    """A column's type differs between the Delta table and new CDA files."""

    def __init__(self, table: str, column: str, delta_type: str, new_type: str, where: str) -> None:
        super().__init__(
            f"Table {table!r}: column {column!r} changed type from {delta_type} (in Delta) to {new_type} "
            f"(in CDA {where}). Nothing of that commit was written. CDA schema changes are expected to be "
            "additive; reset the table (`guidewire-pipeline reset <table>`) to reload it with the new type."
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
    batches_applied: int = 0  # CDA batches (timestamps) committed by this sync
    commits: int = 0
    rows_added: int = 0
    bytes_read: int = 0
    delta_version: int | None = None
    total_rows: int | None = None
    columns: list[tuple[str, str]] = field(default_factory=list)
    fingerprints: list[str] = field(default_factory=list)  # fingerprints whose schema has been loaded
    duration_s: float = 0.0
    compacted_files: int = 0  # small files merged by this sync's compaction (0: none ran)
    rewound_from: int | None = None  # the recorded savepoint, when the live rows were behind it
    ray_memory_bytes: int | None = None  # memory the Ray task declared (None: loaded in the driver)
    table_name: str | None = None  # <catalog>.raw.<table> once registered in Unity Catalog
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


def sync_table(
    entry: ManifestEntry,
    location: Location,
    *,
    clone_mode: CloneMode = "deep",
    budget: CommitBudget | None = None,
    progress: Progress | None = None,
    plan: LoadPlan | None = None,
    compact_min_small_files: int = COMPACT_MIN_SMALL_FILES,
) -> TableSyncResult:
    """Bring the raw Delta table at ``location`` up to ``entry``'s manifest watermark.

    ``plan`` may carry a listing made moments ago; it is reused only if it was planned from the
    savepoint found now (each group is re-checked against the savepoint anyway). Never raises for a
    table-level problem: the result carries ``status="failed"`` and an error that names the table,
    so one bad table never stops the others.
    """
    started = time.monotonic()
    budget = budget or CommitBudget()
    result = TableSyncResult(
        table=entry.table, status="up_to_date", manifest_watermark=entry.manifest_watermark,
        watermark_before=None, watermark_after=None, uri=location.uri,
    )
    try:
        # With its files: the savepoint is checked against them, and the row count at the end reads them.
        table = open_table(location, without_files=False)
        _check_clone_mode(entry.table, location, table, clone_mode)
        savepoint = read_savepoint(entry.table, location, table)
        if savepoint.rewound:
            result.rewound_from = savepoint.recorded
            result.warnings.append(savepoint.notice or "")
            if progress:
                progress(savepoint.notice or "")
        result.watermark_before = result.watermark_after = savepoint.watermark
        if plan is None or plan.loaded_watermark != savepoint.watermark:
            plan = plan_table(entry, savepoint.watermark)
        result.warnings.extend(plan.warnings)
        groups = plan.commit_groups(budget, clone_mode)
        tracker = _ProgressTracker(entry.table, plan, len(groups), progress)
        for number, group in enumerate(groups, start=1):
            write = (_ShallowWrite if clone_mode == "shallow" else _DeepWrite)(entry.table, location, group)
            table, savepoint, applied = _commit_group(entry.table, location, table, savepoint, group, write,
                                                      clone_mode)
            result.watermark_after = savepoint.watermark
            if applied:
                result.commits += 1
                result.batches_applied += len(group.batches)
                result.rows_added += write.rows
                result.bytes_read += group.size
                result.status = "loaded"
            tracker.group_done(number, group, write.rows if applied else None)
        if clone_mode == "deep" and result.commits and table is not None:
            table, result.compacted_files = compact_small_files(
                entry.table, location, table, savepoint, compact_min_small_files, result.warnings, progress)
        _finish(result, entry, table)
    except Exception as exc:  # one table's failure is reported by name, never raised to the caller
        result.status = "failed"
        result.error = str(exc) if entry.table in str(exc) else f"Table {entry.table!r}: {exc}"
    result.duration_s = time.monotonic() - started
    return result


class _ProgressTracker:
    """Per-commit progress lines: batches and bytes done and pending, rows, rate."""

    def __init__(self, table: str, plan: LoadPlan, groups: int, progress: Progress | None) -> None:
        self.table, self.groups, self.progress = table, groups, progress
        self.total_batches, self.total_bytes = len(plan.batches), plan.pending_bytes
        self.done_batches = self.done_bytes = self.rows = 0
        self.started = time.monotonic()
        if progress and plan.batches and groups > 1:  # a one-commit table says it all in its commit line
            progress(f"{table}: {self.total_batches} pending CDA batches, {plan.pending_files} files, "
                     f"{_mb(self.total_bytes)}, in {groups} commit(s)")

    def group_done(self, number: int, group: CommitGroup, rows: int | None) -> None:
        self.done_batches += len(group.batches)
        self.done_bytes += group.size
        self.rows += rows or 0
        if not self.progress:
            return
        elapsed = max(time.monotonic() - self.started, 1e-6)
        verb = f"committed {rows:,} rows" if rows is not None else "already committed by another writer"
        self.progress(
            f"{self.table}: commit {number}/{self.groups} ({group.describe()}) {verb}; "
            f"{self.done_batches}/{self.total_batches} batches, {_mb(self.done_bytes)} of {_mb(self.total_bytes)}, "
            f"{self.rows:,} rows, {self.done_bytes / 1e6 / elapsed:.1f} MB/s"
        )


def _mb(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


def _finish(result: TableSyncResult, entry: ManifestEntry, table: DeltaTable | None) -> None:
    """Version, row count and schema from the handle the commits refreshed: no second log read."""
    if table is not None:
        result.delta_version = table.version()
        result.total_rows = row_count(table)
        result.columns = list(columns(arrow_schema(table)))
    loaded = result.watermark_after
    result.fingerprints = [
        fp.fingerprint for fp in entry.fingerprints if loaded is not None and fp.starts_at <= loaded
    ]


class _GroupWrite(Protocol):
    """One group's write, prepared once for every commit attempt.

    ``prepare(table)`` checks types and makes any schema commit that must come first, and returns the
    handle; ``commit(table, properties)`` makes the group's one commit (``table`` None: creates the
    table, exclusively). ``rows`` and ``rows_watermark`` (greatest batch with rows) come from footers."""

    rows: int
    rows_watermark: int | None

    def prepare(self, table: DeltaTable) -> DeltaTable: ...

    def commit(self, table: DeltaTable | None, properties: CommitProperties) -> None: ...


def _commit_group(
    table_name: str, location: Location, table: DeltaTable | None, savepoint: Savepoint, group: CommitGroup,
    write: _GroupWrite, clone_mode: CloneMode,
) -> tuple[DeltaTable, Savepoint, bool]:
    """Commit one group exactly once. Returns the handle, the savepoint after it, and whether this
    call committed the group (False: another writer had).

    ``savepoint`` is that of ``table``'s snapshot. The loop carries it from commit to commit instead
    of asking delta-rs again (``transaction_version`` replays the log since the checkpoint): every
    commit is made with no retries against the checked snapshot, so when the handle then stands
    exactly one version past where it stood before the commit, that version is this group's commit.
    Anything else (a lost race, a handle that moved further) reads the savepoint from the log."""
    metadata = {
        "gw_table": table_name, META_WATERMARK: str(group.watermark), META_FIRST: str(group.first_timestamp),
        META_FOLDERS: str(len(group.batches)), META_FINGERPRINTS: ",".join(group.fingerprints),
        "gw_rows": str(write.rows),
    }
    if clone_mode == "shallow":
        metadata["gw_clone_mode"] = "shallow"
    for _attempt in range(MAX_COMMIT_ATTEMPTS):
        if savepoint.watermark is not None and savepoint.watermark >= group.watermark:
            return table, savepoint, False  # another writer committed it: exactly once
        rows_watermark = max(savepoint.rows_watermark, write.rows_watermark or 0)
        properties = CommitProperties(
            custom_metadata={**metadata, META_ROWS_WATERMARK: str(rows_watermark)},
            app_transactions=[Transaction(APP_ID, group.watermark), Transaction(ROWS_APP_ID, rows_watermark)],
            max_commit_retries=0,  # a concurrent commit must make us re-check the savepoint, not rebase
        )
        try:
            if table is not None:
                table = write.prepare(table)
            before = table.version() if table is not None else -1
            write.commit(table, properties)
        except CommitFailedError:
            table = open_table(location, without_files=False)  # lost a race: reload, then the savepoint decides
            savepoint = read_savepoint(table_name, location, table)
            continue
        except DeltaError:
            if table is None and (created := open_table(location, without_files=False)) is not None:
                table = created  # another writer created the table first: its savepoint decides
                savepoint = read_savepoint(table_name, location, table)
                continue
            raise
        if table is None:
            table = open_table(location, without_files=False)
        if table is not None and table.version() == before + 1:
            savepoint = Savepoint(group.watermark, rows_watermark, table.version())
        else:
            savepoint = read_savepoint(table_name, location, table)  # others committed after us
        assert table is not None
        return table, savepoint, True
    raise RuntimeError(
        f"Table {table_name!r}: {group.describe()} lost {MAX_COMMIT_ATTEMPTS} commit races in a row; "
        "another writer keeps committing to this table. Run again once it has finished."
    )


class _DeepWrite:
    """Deep: the group's rows streamed into new Delta data files by ``write_deltalake``, each row with
    its CDA folder as the lineage columns (pyarrow fills them from the fragments' partition
    expressions)."""

    def __init__(self, table_name: str, location: Location, group: CommitGroup) -> None:
        self.table_name, self.location, self.group = table_name, location, group
        self.dataset = _group_dataset(table_name, group)
        rows_by_batch: dict[int, int] = {}
        for data_file, fragment in zip(group.files, self.dataset.get_fragments(), strict=True):
            rows_by_batch[data_file.timestamp] = rows_by_batch.get(data_file.timestamp, 0) + fragment.metadata.num_rows
        self.rows = sum(rows_by_batch.values())
        self.rows_watermark = max((ts for ts, rows in rows_by_batch.items() if rows), default=None)
        self.sliced = any(
            fragment.metadata.row_group(i).total_byte_size > SLICE_ROW_GROUP_BYTES
            for fragment in self.dataset.get_fragments() for i in range(fragment.metadata.num_row_groups)
        )

    def prepare(self, table: DeltaTable) -> DeltaTable:
        _check_types(self.table_name, arrow_schema(table), self.dataset.schema, self.group)
        return table

    def commit(self, table: DeltaTable | None, properties: CommitProperties) -> None:
        write_deltalake(
            table if table is not None else self.location.delta_uri,
            self.record_batches(),
            # Creating is exclusive: had another writer created the table since we looked, an
            # append to the URI would land this group on top of theirs without any savepoint check.
            mode="append" if table is not None else "error",
            schema_mode="merge",
            storage_options=None if table is not None else self.location.delta_storage_options(),
            configuration=None if table is not None else TABLE_CONFIGURATION,
            commit_properties=properties,
            post_commithook_properties=commit_hooks(table),
        )


    def record_batches(self) -> pa.RecordBatchReader:
        """The group's rows in record batches of at most ``READ_BATCH_ROWS``, memory bounded by rows.

        pyarrow's dataset scanner decodes a whole row group before slicing it, so one file with a
        huge row group held it all in memory (reading a 3-million-row group: 465 MB against 133 MB
        in slices; the whole load 603 MB against 450 MB, see benchmarks/memory). Files with a row group over ``SLICE_ROW_GROUP_BYTES`` are read
        page by page instead; the rest go through the scanner to the Rust writer by the Arrow C
        stream, with no Python per record batch."""
        if not self.sliced:
            return self.dataset.scanner(batch_size=READ_BATCH_ROWS, batch_readahead=2, fragment_readahead=1).to_reader()
        return pa.RecordBatchReader.from_batches(self.dataset.schema, self._sliced_batches())

    def _sliced_batches(self) -> Iterator[pa.RecordBatch]:
        schema = self.dataset.schema
        filesystem = self.group.files[0].location.filesystem()
        for data_file in self.group.files:
            with filesystem.open_input_file(data_file.location.fs_path) as handle:
                parquet = pq.ParquetFile(handle, buffer_size=SLICE_BUFFER_BYTES, pre_buffer=False)
                for batch in parquet.iter_batches(batch_size=READ_BATCH_ROWS, use_threads=False):
                    yield _conform(batch, schema, data_file)


def _conform(batch: pa.RecordBatch, schema: pa.Schema, data_file: DataFile) -> pa.RecordBatch:
    """``batch`` in ``schema``: columns it lacks as nulls, types widened, lineage from its folder."""
    lineage = {BATCH_TS_COLUMN: pa.scalar(data_file.timestamp, pa.int64()),
               FINGERPRINT_COLUMN: pa.scalar(data_file.fingerprint, pa.string())}
    names = {name.lower(): i for i, name in enumerate(batch.schema.names)}
    columns = []
    for f in schema:
        if f.name in lineage:
            columns.append(pa.repeat(lineage[f.name], batch.num_rows))
        elif f.name.lower() in names:
            columns.append(batch.column(names[f.name.lower()]).cast(f.type))
        else:
            columns.append(pa.nulls(batch.num_rows, f.type))
    return pa.RecordBatch.from_arrays(columns, schema=schema)


class _ShallowWrite:
    """Shallow: one commit of add actions pointing at the group's files in place (footers read once
    for every attempt). New columns get an ADD COLUMN commit first, since an add-actions commit
    cannot carry a schema change in delta-rs."""

    def __init__(self, table_name: str, location: Location, group: CommitGroup) -> None:
        self.table_name, self.location, self.group = table_name, location, group
        footers = read_footers(table_name, group.files)
        check_required_columns(table_name, group.files, [schema for schema, _ in footers])
        self.schema = pa.schema([*_unified_schema(table_name, group, [s for s, _ in footers]), *LINEAGE_FIELDS])
        self.actions = add_actions(group, footers, self.schema, STATS_COLUMNS)
        rows_by_batch: dict[int, int] = {}
        for data_file, (_, metadata) in zip(group.files, footers, strict=True):
            rows_by_batch[data_file.timestamp] = rows_by_batch.get(data_file.timestamp, 0) + metadata.num_rows
        self.rows = sum(rows_by_batch.values())
        self.rows_watermark = max((ts for ts, rows in rows_by_batch.items() if rows), default=None)

    def prepare(self, table: DeltaTable) -> DeltaTable:
        delta_schema = arrow_schema(table)
        _check_types(self.table_name, delta_schema, self.schema, self.group)
        new_columns = _new_columns(delta_schema, self.schema)
        if new_columns:
            # Adding a column is idempotent, and alter moves the handle to its own commit only, so
            # the group's commit still fails if anyone else committed since the savepoint was checked.
            table.alter.add_columns(
                [DeltaField.from_arrow(f) for f in new_columns],
                commit_properties=CommitProperties(
                    custom_metadata={"gw_schema_change": ",".join(self.group.fingerprints), "gw_table": self.table_name},
                    max_commit_retries=0),
            )
        return table

    def commit(self, table: DeltaTable | None, properties: CommitProperties) -> None:
        if table is None:
            create_table_with_add_actions(
                self.location.delta_uri, DeltaSchema.from_arrow(self.schema), self.actions, mode="error",
                partition_by=PARTITION_COLUMNS, description=SHALLOW_DESCRIPTION, configuration=TABLE_CONFIGURATION,
                storage_options=self.location.delta_storage_options(), commit_properties=properties,
                post_commithook_properties=commit_hooks(None),
            )
            return
        table.create_write_transaction(self.actions, mode="append", schema=DeltaSchema.from_arrow(arrow_schema(table)),
                                       partition_by=PARTITION_COLUMNS, commit_properties=properties,
                                       post_commithook_properties=commit_hooks(table))
        table.update_incremental()  # unlike write_deltalake, this commit leaves the handle where it was


def _group_dataset(table_name: str, group: CommitGroup) -> ds.Dataset:
    """A lazy dataset over the group's files with one schema that covers them all (nullable), plus
    the lineage columns, which each fragment's partition expression fills."""
    filesystem = group.files[0].location.filesystem()
    parquet = ds.ParquetFileFormat(default_fragment_scan_options=ds.ParquetFragmentScanOptions(pre_buffer=True))
    # Sizes from the listing spare a HEAD per file, and each footer is read once and kept for the
    # scan: on S3 a file then costs one footer GET and its data reads, instead of three of each.
    fragments = [
        parquet.make_fragment(f.location.fs_path, filesystem, file_size=f.size,
                              partition_expression=_lineage(f))
        for f in group.files
    ]
    for fragment in fragments:
        fragment.ensure_complete_metadata()
    check_required_columns(table_name, group.files, [fragment.physical_schema for fragment in fragments])
    schema = _unified_schema(table_name, group, [fragment.physical_schema for fragment in fragments])
    return ds.FileSystemDataset(fragments, pa.schema([*schema, *LINEAGE_FIELDS]), parquet, filesystem)


def _lineage(data_file: DataFile) -> ds.Expression:
    return ((ds.field(BATCH_TS_COLUMN) == pa.scalar(data_file.timestamp, pa.int64()))
            & (ds.field(FINGERPRINT_COLUMN) == pa.scalar(data_file.fingerprint)))


def _unified_schema(table_name: str, group: CommitGroup, schemas: list[pa.Schema]) -> pa.Schema:
    """One nullable schema for every file of the group; files that disagree on a type fail the table
    before anything is written, naming the folders."""
    try:
        unified = pa.unify_schemas(schemas, promote_options="default")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        folders = ", ".join(f for batch in group.batches for f in batch.folders)
        raise ValueError(
            f"Table {table_name!r}: the parquet files of CDA folders {folders} disagree on column types "
            f"({exc}). Nothing of them was written; check those folders' files."
        ) from exc
    lineage = {f.name for f in LINEAGE_FIELDS}
    return pa.schema([f.with_nullable(True) for f in unified if f.name not in lineage])


def _new_columns(delta_schema: pa.Schema, batch_schema: pa.Schema) -> list[pa.Field]:
    """The batch's columns that the table lacks (matched by name, case-insensitively), nullable."""
    known = {f.name.lower() for f in delta_schema}
    return [f.with_nullable(True) for f in batch_schema if f.name.lower() not in known]


def _check_types(table_name: str, delta_schema: pa.Schema, batch_schema: pa.Schema, group: CommitGroup) -> None:
    existing = {f.name.lower(): f for f in delta_schema}
    for new in batch_schema:
        old = existing.get(new.name.lower())
        if old is not None and _type_family(old.type) != _type_family(new.type):
            raise SchemaTypeChangeError(table_name, new.name, str(old.type), str(new.type),
                                        f"{group.describe()}, fingerprints {', '.join(group.fingerprints)}")


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


def _check_clone_mode(table_name: str, location: Location, table: DeltaTable | None, clone_mode: CloneMode) -> None:
    if clone_mode not in ("deep", "shallow"):
        raise ValueError(f"clone_mode {clone_mode!r} is not supported: use 'deep' or 'shallow'.")
    if table is None:
        return
    existing: CloneMode = "shallow" if is_shallow(table) else "deep"
    if existing != clone_mode:
        raise ShallowTableError(
            f"Table {table_name!r} at {location.uri} is a {existing} clone, but this run asks for "
            f"clone_mode {clone_mode!r}. Mixing the two in one table is refused: set clone_mode back to "
            f"{existing!r}, or load into a new GW_DELTA_ROOT."
        )
