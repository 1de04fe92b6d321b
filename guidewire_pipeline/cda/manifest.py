"""ManifestReader: parse CDA's ``manifest.json`` into typed, validated entries.

The manifest is one JSON object keyed by table name (see shared/docs/cda-format.md). A bad entry is
that table's problem: it is collected as a ``ManifestProblem`` (table, field, what is wrong), the
table is not loaded, and the other tables carry on. Only a file that is not JSON at all, not a JSON
object, or an empty object fails the whole read, with one ``ManifestError`` naming the URI.

What makes an entry bad, beyond a missing or mistyped field:
- its table name appears twice with different entries (which one CDA meant cannot be known;
  identical repeats are only a warning);
- a watermark or schema start that is negative, or later than now plus ``FUTURE_TOLERANCE_MS``
  (a day, for clock skew between CDA's writers and this machine): loading up to such a watermark
  would read folders CDA is still writing and move the savepoint past them for good.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from guidewire_pipeline.cda.storage import Location, StorageError

_TABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_FINGERPRINT = re.compile(r"^[A-Za-z0-9_-]+$")
FUTURE_TOLERANCE_MS = 24 * 3600 * 1000


class ManifestError(Exception):
    """The manifest as a whole cannot be used (missing, not JSON, not an object)."""


@dataclass(frozen=True)
class ManifestProblem:
    """One problem with one table's manifest entry."""

    table: str
    field: str
    message: str

    def __str__(self) -> str:
        return f"table {self.table!r}, field {self.field!r}: {self.message}"


@dataclass(frozen=True)
class Fingerprint:
    """One schema of a table and the interval it covers: ``[starts_at, ends_at)``, open when None."""

    fingerprint: str
    starts_at: int
    ends_at: int | None

    def drained_by(self, loaded_watermark: int | None) -> bool:
        """True when every folder of this schema is at or below the loaded watermark."""
        return loaded_watermark is not None and self.ends_at is not None and self.ends_at <= loaded_watermark


@dataclass(frozen=True)
class ManifestEntry:
    """One table of the manifest, validated."""

    table: str
    manifest_watermark: int  # lastSuccessfulWriteTimestamp: folders <= it are complete
    total_processed_records: int
    data_files_path: str  # normalized, no trailing slash
    fingerprints: tuple[Fingerprint, ...]  # ordered by start time

    @property
    def location(self) -> Location:
        return Location.parse(self.data_files_path)


@dataclass
class Manifest:
    """A parsed manifest: the valid entries by table and the problems of the invalid ones."""

    uri: str
    entries: dict[str, ManifestEntry]
    problems: list[ManifestProblem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # oddities that do not stop a table

    def problems_for(self, table: str) -> list[ManifestProblem]:
        return [p for p in self.problems if p.table == table]

    @property
    def tables(self) -> list[str]:
        """Every table named in the manifest, valid or not, sorted."""
        return sorted(set(self.entries) | {p.table for p in self.problems})

    def select(self, include: Iterable[str] | None = None, exclude: Iterable[str] | None = None,
               include_broken: bool = False) -> list[str]:
        """Table names after an include list (None = all) and an exclude list, sorted: the valid ones,
        and with ``include_broken`` those with a bad entry too."""
        include_set = set(include) if include else None
        exclude_set = set(exclude or ())
        names = self.tables if include_broken else self.entries
        return sorted(t for t in names if (include_set is None or t in include_set) and t not in exclude_set)


def read_manifest(uri: str) -> Manifest:
    """Read and parse the manifest at ``uri`` (local path, ``file://`` or ``s3://``)."""
    location = Location.parse(uri)
    try:
        payload = location.read_bytes()
    except StorageError as exc:
        raise ManifestError(f"Cannot read the CDA manifest: {exc} Check GW_MANIFEST_URI.") from exc
    return parse_manifest(payload, location)


def parse_manifest(payload: bytes | str, location: Location, now_ms: int | None = None) -> Manifest:
    """Parse manifest bytes. Relative local ``dataFilesPath`` values resolve against the manifest's
    folder. ``now_ms`` (default: the clock) bounds plausible watermarks."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    repeats: list[list[tuple[str, Any]]] = []

    def keep_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        repeats.append(pairs)
        return dict(pairs)

    try:
        document = json.loads(payload, object_pairs_hook=keep_pairs)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ManifestError(
            f"The CDA manifest {location.uri} is not valid JSON ({exc}). "
            "It must be the manifest.json that CDA writes at its output root."
        ) from exc
    if not isinstance(document, dict):
        raise ManifestError(
            f"The CDA manifest {location.uri} must be a JSON object keyed by table name, "
            f"not a {type(document).__name__}."
        )
    if not document:
        raise ManifestError(
            f"The CDA manifest {location.uri} lists no tables ({{}}). Check GW_MANIFEST_URI: it must be the "
            "manifest.json of a CDA output that has run at least once."
        )
    manifest_folder = location.uri.rsplit("/", 1)[0]
    manifest = Manifest(uri=location.uri, entries={})
    duplicated = _duplicates(repeats[-1], manifest)  # the outermost object is parsed last
    for table, raw in document.items():
        if str(table) in duplicated:
            continue
        entry, entry_problems = _parse_entry(str(table), raw, manifest_folder, now_ms)
        manifest.problems.extend(entry_problems)
        if entry is not None:
            manifest.entries[entry.table] = entry
    return manifest


def _duplicates(pairs: list[tuple[str, Any]], manifest: Manifest) -> set[str]:
    """Tables whose key appears more than once with different entries (a problem each); identical
    repeats are a warning only."""
    counts = Counter(key for key, _ in pairs)
    conflicting = set()
    for table, count in counts.items():
        if count < 2:
            continue
        versions = {json.dumps(value, sort_keys=True) for key, value in pairs if key == table}
        if len(versions) > 1:
            conflicting.add(table)
            manifest.problems.append(ManifestProblem(
                table, "<name>", f"appears {count} times in the manifest with different entries, so which one "
                "is current cannot be known; the table is not loaded until CDA writes one entry"))
        else:
            manifest.warnings.append(f"table {table!r} appears {count} times in the manifest (identical entries)")
    return conflicting


def _parse_entry(table: str, raw: Any, manifest_folder: str,
                 now_ms: int) -> tuple[ManifestEntry | None, list[ManifestProblem]]:
    problems: list[ManifestProblem] = []

    def problem(field_name: str, message: str) -> None:
        problems.append(ManifestProblem(table, field_name, message))

    if not _TABLE_NAME.match(table):
        problem("<name>", "is not a valid table name (letters, digits and underscores only)")
        return None, problems
    if not isinstance(raw, dict):
        problem("<entry>", f"must be an object, got {type(raw).__name__}")
        return None, problems

    watermark = _epoch_millis(raw.get("lastSuccessfulWriteTimestamp"))
    if watermark is None:
        problem(
            "lastSuccessfulWriteTimestamp",
            f"must be epoch milliseconds (a string or number of digits), got {raw.get('lastSuccessfulWriteTimestamp')!r}",
        )
    elif (implausible := _implausible(watermark, now_ms)) is not None:
        problem("lastSuccessfulWriteTimestamp", implausible)
        watermark = None

    records = raw.get("totalProcessedRecordsCount", 0)
    if isinstance(records, str) and records.strip().isdigit():
        records = int(records)
    if not isinstance(records, int) or isinstance(records, bool) or records < 0:
        problem("totalProcessedRecordsCount", f"must be a non-negative number, got {records!r}")
        records = 0

    path = raw.get("dataFilesPath")
    data_files_path: str | None = None
    if not isinstance(path, str) or not path.strip():
        problem("dataFilesPath", f"must be the URI of the table's folder, got {path!r}")
    else:
        data_files_path = _normalize_path(path.strip(), manifest_folder)

    history = raw.get("schemaHistory")
    fingerprints: list[Fingerprint] = []
    if not isinstance(history, dict) or not history:
        problem("schemaHistory", "must be a non-empty object mapping fingerprint to its start time")
    else:
        starts: list[tuple[int, str]] = []
        for fingerprint, started in history.items():
            start = _epoch_millis(started)
            if start is not None and (implausible := _implausible(start, now_ms)) is not None:
                problem(f"schemaHistory.{fingerprint}", implausible)
                continue
            if not _FINGERPRINT.match(str(fingerprint)) or start is None:
                problem(
                    f"schemaHistory.{fingerprint}",
                    f"needs a folder-safe fingerprint and an epoch-millis start time, got {started!r}",
                )
                continue
            starts.append((start, str(fingerprint)))
        starts.sort()
        for i, (start, fingerprint) in enumerate(starts):
            ends = starts[i + 1][0] if i + 1 < len(starts) else None
            fingerprints.append(Fingerprint(fingerprint, start, ends))

    if problems or watermark is None or data_files_path is None:
        return None, problems
    return (
        ManifestEntry(
            table=table,
            manifest_watermark=watermark,
            total_processed_records=int(records),
            data_files_path=data_files_path,
            fingerprints=tuple(fingerprints),
        ),
        problems,
    )


def _epoch_millis(value: Any) -> int | None:
    """An integer or a string of digits, possibly negative (``_implausible`` says why that is wrong)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
        return int(value.strip())
    return None


def _implausible(millis: int, now_ms: int) -> str | None:
    """Why an epoch-millis time cannot be a CDA time, or None when it can."""
    if millis < 0:
        return f"is negative ({millis}); CDA writes epoch milliseconds"
    if millis > now_ms + FUTURE_TOLERANCE_MS:
        when = _utc(millis)
        return (f"is {millis} ({when}), later than now plus a day: CDA cannot have finished writing it. Loading "
                "up to it could read folders still being written; fix the manifest or this machine's clock")
    return None


def _utc(millis: int) -> str:
    import datetime as dt

    try:
        return dt.datetime.fromtimestamp(millis / 1000, tz=dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    except (OverflowError, OSError, ValueError):
        return f"year {1970 + millis // (365.2425 * 86_400_000):.0f}"


def _normalize_path(path: str, manifest_folder: str) -> str:
    """Strip the trailing slash; resolve a relative path against the manifest's folder."""
    path = path.rstrip("/")
    if "://" in path or path.startswith("/"):
        return Location.parse(path).uri
    return Location.parse(manifest_folder).join(path).uri
