"""Savepoints: what a raw table has loaded, read from its Delta log and checked against its data.

A raw table records two Delta app transactions in every commit of CDA batches:
- ``(APP_ID, t)``: the savepoint, the greatest CDA batch timestamp committed. Loading resumes after it.
- ``(ROWS_APP_ID, t)``: the greatest batch timestamp whose rows are in the table (0: none yet).
Every row also carries its batch timestamp in ``gw_batch_ts_ms`` (deep: a column with file statistics;
shallow: a partition value), so the live files say which batches the table really holds.

``read_savepoint`` decides the loaded watermark from a delta-rs handle:
- no ``APP_ID`` transaction but a table: not written by this pipeline, refused (``ForeignTableError``);
  a table loaded before lineage columns existed is refused too (``LegacyTableError``);
- live rows that stop short of ``ROWS_APP_ID``: files were removed after the commit that counted them.
  Delta's RESTORE does that and does not roll app transactions back (delta-io/delta#1813). The
  savepoint then rewinds to the newest batch the live rows hold, so the next load re-commits exactly
  what is missing, and says so in its ``notice``.

``peek_log`` reads the savepoint from the newest commit alone (three small reads on S3), only to
decide that a table has nothing to load. It vouches only for a newest commit this writer made; any
other newest commit (a RESTORE, a change made by hand) sends the caller to ``read_savepoint``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable

from guidewire_pipeline.cda.storage import Location, StorageError

APP_ID = "guidewire-cda"
ROWS_APP_ID = "guidewire-cda-rows"
BATCH_TS_COLUMN = "gw_batch_ts_ms"  # the CDA batch (timestamp folder) each raw row came from
FINGERPRINT_COLUMN = "gw_fingerprint"  # the CDA schema folder each raw row came from
LINEAGE_FIELDS = (pa.field(BATCH_TS_COLUMN, pa.int64()), pa.field(FINGERPRINT_COLUMN, pa.string()))
# Commit metadata keys: which CDA folders a Delta version holds.
META_WATERMARK, META_ROWS_WATERMARK = "gw_watermark", "gw_rows_watermark"
META_FIRST, META_FOLDERS, META_FINGERPRINTS = "gw_first_folder", "gw_folders", "gw_fingerprints"
META_MAINTENANCE = "gw_maintenance"


class ForeignTableError(Exception):
    """A Delta table at a raw path that this pipeline did not write: nothing is written to it."""

    def __init__(self, table: str, uri: str, files: int) -> None:
        super().__init__(
            f"Table {table!r}: the Delta table at {uri} has {files} data file(s) but no {APP_ID!r} savepoint, "
            "so it was not written by this pipeline (another tool, or a rewrite by Spark). Nothing was written "
            f"to it. To load CDA into it from scratch, run `guidewire-pipeline reset {table} --layers raw`; if it "
            f"holds exactly CDA's rows up to a batch, run `guidewire-pipeline adopt {table} --watermark <ts>`."
        )


class LegacyTableError(Exception):
    """A raw table written before rows carried their CDA batch (engine v1)."""

    def __init__(self, table: str, uri: str) -> None:
        super().__init__(
            f"Table {table!r}: the raw table at {uri} was loaded by raw engine v1, whose rows do not carry "
            f"{BATCH_TS_COLUMN!r}, so its savepoint cannot be checked against its data. Reload it once with "
            f"`guidewire-pipeline reset {table} --layers raw,bronze,silver` and a sync."
        )


@dataclass(frozen=True)
class Savepoint:
    """What a raw table has loaded. ``watermark`` is where loading resumes (None: nothing loaded)."""

    watermark: int | None
    rows_watermark: int
    version: int | None = None
    recorded: int | None = None  # the APP_ID transaction as written, when it differs from ``watermark``
    notice: str | None = None  # why the savepoint was rewound

    @property
    def rewound(self) -> bool:
        return self.recorded is not None


def read_savepoint(table_name: str, location: Location, table: DeltaTable | None) -> Savepoint:
    """The loaded watermark of ``table`` (a handle loaded with its files), checked against its live
    rows. Raises ``ForeignTableError`` / ``LegacyTableError`` (see module docstring)."""
    if table is None:
        return Savepoint(None, 0)
    recorded = table.transaction_version(APP_ID)
    actions = pa.table(table.get_add_actions(flatten=True))
    if recorded is None:
        raise ForeignTableError(table_name, location.uri, actions.num_rows)
    rows_watermark = table.transaction_version(ROWS_APP_ID)
    if rows_watermark is None:
        raise LegacyTableError(table_name, location.uri)
    live = live_batch_watermark(actions)
    version = table.version()
    if rows_watermark > 0 and (live is None or live < rows_watermark):
        notice = (
            f"{table_name}: the savepoint says batches up to {recorded} are loaded, but the table's live rows "
            f"stop at {live or 'none'}: a commit removed data files after they were counted (a RESTORE?). "
            f"Reloading every batch after {live or 'the start'}."
        )
        return Savepoint(live, live or 0, version, recorded=recorded, notice=notice)
    if live is not None and live > rows_watermark:
        raise ValueError(
            f"Table {table_name!r}: the raw table at {location.uri} holds rows of CDA batch {live}, later than "
            f"anything this pipeline committed ({rows_watermark}): another writer appended to it. Reset it with "
            f"`guidewire-pipeline reset {table_name} --layers raw` and sync again."
        )
    return Savepoint(recorded, rows_watermark, version)


def live_batch_watermark(actions: pa.Table) -> int | None:
    """The greatest ``gw_batch_ts_ms`` among live files with rows, from their statistics (deep) or
    partition values (shallow). None when no file holds a row."""
    for column in (f"max.{BATCH_TS_COLUMN}", f"partition.{BATCH_TS_COLUMN}"):
        if column in actions.column_names:
            values = actions[column]
            if "num_records" in actions.column_names:
                values = pc.filter(values, pc.greater(pc.fill_null(actions["num_records"], 1), 0))
            maximum = pc.max(values).as_py()
            return int(maximum) if maximum is not None else None
    return None


@dataclass(frozen=True)
class LogPeek:
    """What a table's newest commit says: its version and the savepoint it vouches for (None: it
    vouches for nothing, e.g. a commit this writer did not make)."""

    version: int
    loaded_watermark: int | None


_COMMIT_FILE = re.compile(r"^(\d{20})\.json$")


def peek_log(location: Location) -> LogPeek | None:
    """The newest commit of the table at ``location`` and the savepoint it records, read without
    delta-rs: the checkpoint pointer, one listing from the checkpoint on, and the newest commit file.
    Opening the table with delta-rs replays every commit since the checkpoint several times.

    Read-only and used only to decide that a table has nothing to load. A commit of CDA batches by
    this writer records the savepoint as an app transaction; its compaction commit records it in its
    metadata (delta-rs' OPTIMIZE takes no app transactions) and is made right after a checked
    commit, with no retries. Any other newest commit vouches for nothing. None when there is no
    table yet or the log cannot be read this way (the caller then opens the table with delta-rs)."""
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
            if b'"txn"' not in line and b'"commitInfo"' not in line:
                continue  # add actions (thousands in a big commit) need no parsing
            action = json.loads(line)
            if "txn" in action and action["txn"].get("appId") == APP_ID:
                watermark = int(action["txn"]["version"])
            elif "commitInfo" in action and action["commitInfo"].get(META_MAINTENANCE):
                watermark = int(action["commitInfo"][META_WATERMARK])
    except (ValueError, TypeError, KeyError, AttributeError):
        return None  # not a commit this peek understands: let delta-rs read the log
    return LogPeek(newest, watermark)
