"""What the sharing server reads from a Delta table (no Dagster, no HTTP here): a snapshot's protocol,
metadata and data files with their statistics, and the data-change files of a range of versions.

Snapshots come from ``deltalake`` (checkpoints, log replay, time travel by version or timestamp).
Change feeds read the commit files of each version in the range (``_delta_log/<version>.json``),
because a sharing server hands out *files*, not rows: a commit with ``cdc`` actions contributes its
change files, any other commit its added and removed files (inserts and deletes).

``TableReadError`` says what is wrong in words a recipient can act on (never a server path).
"""

from __future__ import annotations

import datetime as dt
import decimal
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import pyarrow as pa
from deltalake import DeltaTable
from deltalake.exceptions import TableNotFoundError

from guidewire_pipeline.cda.storage import Location


class TableReadError(Exception):
    """The request cannot be served from this table; ``status`` 400 (bad parameter) or 404 (no data)."""

    def __init__(self, status: int, error_code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.message = message


@dataclass(frozen=True)
class DataFile:
    """One data file: where it is (absolute URI), a stable id, and what the protocol says about it."""

    uri: str
    id: str
    size: int
    partition_values: dict[str, str | None]
    stats: str | None = None
    modification_time: int | None = None
    kind: str = "add"  # add, remove or cdf (a change data file)
    version: int | None = None
    timestamp: int | None = None

    @property
    def num_records(self) -> int | None:
        return json.loads(self.stats).get("numRecords") if self.stats else None


@dataclass
class TableSnapshot:
    version: int
    timestamp: int
    protocol: dict[str, Any]
    metadata: dict[str, Any]
    files: list[DataFile] = field(default_factory=list)

    @property
    def partition_columns(self) -> list[str]:
        return list(self.metadata.get("partitionColumns") or [])

    @property
    def cdf_enabled(self) -> bool:
        return (self.metadata.get("configuration") or {}).get("delta.enableChangeDataFeed") == "true"

    @property
    def needs_delta_format(self) -> bool:
        """Reader features the parquet response format cannot express (deletion vectors, column mapping...)."""
        return int(self.protocol.get("minReaderVersion", 1)) > 1


def parse_timestamp(value: str, field_name: str) -> int:
    """Milliseconds since the epoch of an ISO 8601 UTC timestamp (``2022-01-01T00:00:00Z``)."""
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise TableReadError(400, "INVALID_PARAMETER_VALUE",
                             f"{field_name} {value!r} is not a timestamp: write ISO 8601 in UTC, e.g. "
                             "2022-01-01T00:00:00Z") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return int(parsed.timestamp() * 1000)


class SharedTable:
    """A Delta table at ``location`` as the server reads it. ``name`` is how recipients know it."""

    def __init__(self, location: Location, name: str) -> None:
        self.location = location
        self.name = name

    def _open(self, version: int | None = None) -> DeltaTable:
        try:
            table = DeltaTable(self.location.delta_uri, storage_options=self.location.delta_storage_options())
        except TableNotFoundError:
            raise TableReadError(404, "RESOURCE_DOES_NOT_EXIST",
                                 f"table {self.name} is shared but has no data yet: ask the provider to "
                                 "build it") from None
        if version is not None and version != table.version():
            if version > table.version():
                raise TableReadError(400, "INVALID_PARAMETER_VALUE",
                                     f"version {version} of {self.name} does not exist: its latest version is "
                                     f"{table.version()}")
            try:
                table.load_as_version(version)
            except Exception:  # the log no longer reaches back that far
                raise TableReadError(400, "INVALID_PARAMETER_VALUE",
                                     f"version {version} of {self.name} is no longer available (log retention): "
                                     "query a later version") from None
        return table

    def latest_version(self) -> int:
        return self._open().version()

    def commit_timestamps(self) -> dict[int, int]:
        """Version → commit timestamp (ms) for the versions the log still has."""
        return {int(h["version"]): int(h["timestamp"]) for h in self._open().history() if "version" in h}

    def version_at_or_after(self, timestamp_ms: int, field_name: str) -> int:
        """The earliest version committed at or after ``timestamp_ms``."""
        times = self.commit_timestamps()
        later = [v for v, t in times.items() if t >= timestamp_ms]
        if not later:
            latest = max(times)
            raise TableReadError(400, "INVALID_PARAMETER_VALUE",
                                 f"{field_name} is after the latest version of {self.name} ({latest}, committed "
                                 f"{_iso(times[latest])}): use an earlier timestamp")
        return min(later)

    def version_at_or_before(self, timestamp_ms: int, field_name: str) -> int:
        """The latest version committed at or before ``timestamp_ms`` (what a time travel reads)."""
        times = self.commit_timestamps()
        earlier = [v for v, t in times.items() if t <= timestamp_ms]
        if not earlier:
            first = min(times)
            raise TableReadError(400, "INVALID_PARAMETER_VALUE",
                                 f"{field_name} is before the first version of {self.name} ({first}, committed "
                                 f"{_iso(times[first])}): use a later timestamp")
        return max(earlier)

    def snapshot(self, version: int | None = None, with_files: bool = True) -> TableSnapshot:
        table = self._open(version)
        snapshot = TableSnapshot(
            version=table.version(),
            timestamp=self.commit_timestamps().get(table.version(), 0) if version is not None else 0,
            protocol=_protocol(table),
            metadata=_metadata(table),
        )
        if with_files:
            snapshot.files = self._files(table, snapshot.partition_columns)
        return snapshot

    def _files(self, table: DeltaTable, partition_columns: list[str]) -> list[DataFile]:
        actions = pa.table(table.get_add_actions(flatten=False)).to_pylist()
        files = []
        for action in actions:
            partition = action.get("partition") or {}
            files.append(DataFile(
                uri=self._absolute(action["path"], encoded=False),
                id=_file_id(action["path"]),
                size=int(action["size_bytes"]),
                partition_values={c: _partition_string(partition.get(c)) for c in partition_columns},
                stats=_stats_json(action),
                modification_time=action.get("modification_time"),
            ))
        return files

    def changes(self, start: int, end: int, *, with_cdc: bool) -> list[DataFile]:
        """The data-change files of versions ``start``..``end`` (inclusive), from the commit files.

        ``with_cdc``: a commit that wrote change data files contributes those (``cdf``) instead of its
        added and removed files, as a change data feed reads it; otherwise ``add``/``remove`` with
        ``dataChange``. Raises ``TableReadError`` when a commit is no longer in the log."""
        files = []
        root = self.location.join("_delta_log")
        for version in range(start, end + 1):
            try:
                lines = root.join(f"{version:020d}.json").read_bytes().decode().splitlines()
            except Exception:
                raise TableReadError(400, "INVALID_PARAMETER_VALUE",
                                     f"version {version} of {self.name} is no longer in the Delta log (log "
                                     "retention): start from a later version") from None
            actions = [json.loads(line) for line in lines if line.strip()]
            timestamp = next((a["commitInfo"].get("timestamp") for a in actions if "commitInfo" in a), None)
            cdc = [a["cdc"] for a in actions if "cdc" in a]
            if with_cdc and cdc:
                chosen = [("cdf", c) for c in cdc]
            else:
                chosen = [(kind, a[kind]) for a in actions for kind in ("add", "remove")
                          if kind in a and a[kind].get("dataChange", True)]
            for kind, action in chosen:
                files.append(DataFile(
                    uri=self._absolute(action["path"], encoded=True),
                    id=_file_id(unquote(action["path"])),
                    size=int(action.get("size") or 0),
                    partition_values=dict(action.get("partitionValues") or {}),
                    stats=action.get("stats") if kind == "add" else None,
                    kind=kind,
                    version=version,
                    timestamp=int(timestamp or action.get("modificationTime") or action.get("deletionTimestamp") or 0),
                ))
        return files

    def _absolute(self, path: str, *, encoded: bool) -> str:
        """A file's absolute URI: Delta paths are relative to the table root (percent-encoded in the
        log), or absolute URIs for files outside it (the raw layer's shallow tables)."""
        plain = unquote(path) if encoded else path
        if "://" in plain:
            return plain
        return self.location.join(*plain.split("/")).uri


def _protocol(table: DeltaTable) -> dict[str, Any]:
    protocol = table.protocol()
    result: dict[str, Any] = {"minReaderVersion": protocol.min_reader_version,
                              "minWriterVersion": protocol.min_writer_version}
    if protocol.reader_features:
        result["readerFeatures"] = list(protocol.reader_features)
    if protocol.writer_features:
        result["writerFeatures"] = list(protocol.writer_features)
    return result


def _metadata(table: DeltaTable) -> dict[str, Any]:
    meta = table.metadata()
    return {
        "id": meta.id,
        "name": meta.name,
        "description": meta.description,
        "format": {"provider": "parquet", "options": {}},
        "schemaString": table.schema().to_json(),
        "partitionColumns": list(meta.partition_columns),
        "configuration": dict(meta.configuration),
        "createdTime": meta.created_time,
    }


def _file_id(relative_path: str) -> str:
    """Stable across requests (the protocol's promise) and not a server path."""
    return hashlib.sha256(relative_path.encode()).hexdigest()[:32]


def _partition_string(value: Any) -> str | None:
    """Partition values as the protocol serializes them (dates ``2021-04-28``, timestamps ``... HH:MM:SS``)."""
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _stat_value(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _stat_value(v) for k, v in value.items() if v is not None}
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z") \
            if value.tzinfo else value.isoformat(timespec="milliseconds")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, bytes):
        return None
    return value


def _stats_json(action: dict[str, Any]) -> str | None:
    """Per-file statistics in the protocol's JSON (numRecords, minValues, maxValues, nullCount)."""
    if action.get("num_records") is None:
        return None
    stats: dict[str, Any] = {"numRecords": int(action["num_records"])}
    for key, name in (("min", "minValues"), ("max", "maxValues"), ("null_count", "nullCount")):
        values = _stat_value(action.get(key) or {})
        if values:
            stats[name] = values
    return json.dumps(stats, separators=(",", ":"))


def _iso(timestamp_ms: int) -> str:
    return dt.datetime.fromtimestamp(timestamp_ms / 1000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
