"""TableReader's first half: decide which CDA batches of a table are pending, and how they are cut
into commits. This is where the watermark rule lives.

The watermark rule: a table's safe range is ``(loaded watermark, manifest watermark]``. Folders at or
below ``lastSuccessfulWriteTimestamp`` are complete (inclusive); folders above it may be mid-write and
are never returned. Every listing starts after the loaded watermark's folder (``StartAfter`` on S3) and
stops at the manifest watermark, so planning costs what is new, not the table's history.

A CDA batch is a timestamp: the folders of that timestamp in every fingerprint belong to it, and are
loaded together (``PendingBatch``). ``commit_groups`` cuts the pending batches into runs of
consecutive batches, each one Delta commit, up to a ``CommitBudget``.

The drained-fingerprint rule: a fingerprint's interval runs from its ``schemaHistory`` start to the
next fingerprint's start, and CDA writes no folder into an old fingerprint once the next one has
started. So a fingerprint whose interval ended at or before the loaded watermark is "drained": nothing
of it is pending. It is still listed from the loaded watermark on (one request, normally empty),
because a folder that breaks the rule would otherwise be skipped in silence: such a folder, and any
folder of a fingerprint later than the next fingerprint's start, is loaded and reported in the
plan's warnings with its path. (A folder AT the next start is legal: one batch under two schemas.)
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import pyarrow.parquet as pq

from guidewire_pipeline.cda.manifest import ManifestEntry
from guidewire_pipeline.cda.storage import Location

_BATCH_FOLDER = re.compile(r"^\d{13}$")


class CdaSourceError(Exception):
    """What CDA's manifest says and what its folders hold disagree, so loading this table would be a
    guess. The message names the table, the path or field, and what to check."""


@dataclass(frozen=True)
class DataFile:
    """One parquet file of a CDA batch, with the schema folder it sits in."""

    location: Location
    size: int
    fingerprint: str
    timestamp: int


@dataclass(frozen=True)
class PendingBatch:
    """One CDA batch: every file of one timestamp, across fingerprints."""

    timestamp: int
    files: tuple[DataFile, ...]

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def fingerprints(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(f.fingerprint for f in self.files))

    @property
    def folders(self) -> list[str]:
        """``<fingerprint>/<timestamp>`` of each folder of this batch."""
        return [f"{fp}/{self.timestamp}" for fp in self.fingerprints]


@dataclass(frozen=True)
class CommitBudget:
    """How much one Delta commit may cover. A batch is never split: one larger than the budget is a
    commit of its own. Deep copies are sized by parquet bytes, shallow ones by files (their commit
    carries one add action per file), both capped in batches.

    The defaults come from benchmark 1's sweep (``benchmarks/deep_clone.py``): from 16 MiB per commit
    on, the time no longer drops, while the writer's memory grows with the group (delta-rs holds each
    output file in memory until it is written). 64 MiB keeps a load's peak near what one folder
    costs, and commits a 2 GB first load in about 32 commits."""

    max_bytes: int = 64 * 2**20
    max_files: int = 1_000
    max_batches: int = 1_000

    def __post_init__(self) -> None:
        if min(self.max_bytes, self.max_files, self.max_batches) < 1:
            raise ValueError(f"Every commit budget must be at least 1: {self}.")


@dataclass(frozen=True)
class CommitGroup:
    """Consecutive pending batches of one table, written in one Delta commit. Its app-transaction
    version is the greatest batch timestamp it holds."""

    batches: tuple[PendingBatch, ...]

    @property
    def first_timestamp(self) -> int:
        return self.batches[0].timestamp

    @property
    def watermark(self) -> int:
        return self.batches[-1].timestamp

    @property
    def files(self) -> tuple[DataFile, ...]:
        return tuple(f for b in self.batches for f in b.files)

    @property
    def size(self) -> int:
        return sum(b.size for b in self.batches)

    @property
    def fingerprints(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(fp for b in self.batches for fp in b.fingerprints))

    def describe(self) -> str:
        first, last = self.first_timestamp, self.watermark
        return f"batch {first}" if first == last else f"batches {first}..{last} ({len(self.batches)})"


@dataclass
class LoadPlan:
    """The pending batches of one table, ascending by timestamp, and what planning saw."""

    table: str
    loaded_watermark: int | None
    manifest_watermark: int
    batches: list[PendingBatch]
    warnings: list[str] = field(default_factory=list)
    listed: list[str] = field(default_factory=list)  # every folder listed, in order (one request each on S3)

    @property
    def target_watermark(self) -> int | None:
        """The watermark the table reaches once every pending batch is loaded."""
        return self.batches[-1].timestamp if self.batches else self.loaded_watermark

    @property
    def pending_files(self) -> int:
        return sum(len(b.files) for b in self.batches)

    @property
    def pending_bytes(self) -> int:
        return sum(b.size for b in self.batches)

    @property
    def is_empty(self) -> bool:
        return not self.batches

    def commit_groups(self, budget: CommitBudget, clone_mode: str = "deep") -> list[CommitGroup]:
        """The batches cut into commits: consecutive batches while they fit ``budget`` (bytes for
        deep, files for shallow, and the batch cap for both)."""
        groups: list[CommitGroup] = []
        current: list[PendingBatch] = []
        used = 0
        for batch in self.batches:
            cost = len(batch.files) if clone_mode == "shallow" else batch.size
            limit = budget.max_files if clone_mode == "shallow" else budget.max_bytes
            if current and (used + cost > limit or len(current) >= budget.max_batches):
                groups.append(CommitGroup(tuple(current)))
                current, used = [], 0
            current.append(batch)
            used += cost
        if current:
            groups.append(CommitGroup(tuple(current)))
        return groups


def plan_table(entry: ManifestEntry, loaded_watermark: int | None) -> LoadPlan:
    """Return the batches of ``entry`` in ``(loaded_watermark, entry.manifest_watermark]``.

    - A table whose folder does not exist yet has nothing pending (not an error).
    - Non-parquet files and deeper folders (``.cda/``, ``cda/``) are ignored; zero-byte parquet files
      are skipped with a warning; folders whose name is not 13-digit epoch millis are skipped with a
      warning.
    - A fingerprint folder on storage that ``schemaHistory`` does not name is still read (with a
      warning), since skipping it would silently lose rows.
    - Folders that break the drained-fingerprint rule (module docstring) are loaded, with a warning.
    - A manifest watermark that moved back behind the loaded one, and a missing folder for a table the
      manifest counts records of, raise ``CdaSourceError``: the table fails, by name.
    - A manifest watermark ahead of the loaded one with no folder found in between is a warning.
    """
    plan = LoadPlan(entry.table, loaded_watermark, entry.manifest_watermark, [])
    if loaded_watermark is not None and loaded_watermark > entry.manifest_watermark:
        raise CdaSourceError(
            f"Table {entry.table!r}: the manifest's lastSuccessfulWriteTimestamp {entry.manifest_watermark} is "
            f"behind the batch already loaded ({loaded_watermark}): CDA's output moved backwards (reset or "
            f"restored?). Nothing was loaded. If CDA rebuilt the table, reload it: `guidewire-pipeline reset "
            f"{entry.table}`; otherwise fix the manifest."
        )
    if loaded_watermark is not None and loaded_watermark >= entry.manifest_watermark:
        return plan  # caught up: nothing to list at all

    table_location = entry.location
    plan.listed.append(table_location.uri)
    on_storage = {c.name for c in table_location.list_children() if c.is_dir}
    if not on_storage:
        if entry.total_processed_records and loaded_watermark is None:
            raise CdaSourceError(
                f"Table {entry.table!r}: dataFilesPath {table_location.uri} has no CDA folders, but the manifest "
                f"counts {entry.total_processed_records} records up to {entry.manifest_watermark}. Check the "
                "manifest's dataFilesPath and that this machine may list that location."
            )
        return plan

    # fingerprint -> where its interval ends (None: open, the newest schema).
    ends_at: dict[str, int | None] = {fp.fingerprint: fp.ends_at for fp in entry.fingerprints if fp.fingerprint in on_storage}
    for name in sorted(on_storage - {fp.fingerprint for fp in entry.fingerprints}):
        if name.startswith((".", "_")) or name == "cda":
            continue  # CDA's side folders, not schemas
        plan.warnings.append(
            f"{entry.table}: folder {name!r} is not in the manifest's schemaHistory; reading it anyway."
        )
        ends_at[name] = None

    start_after = f"{loaded_watermark:013d}" if loaded_watermark is not None else "0" * 13
    stop_after = f"{entry.manifest_watermark:013d}"
    files_by_timestamp: dict[int, list[DataFile]] = {}
    for fingerprint, ends in ends_at.items():
        fingerprint_location = table_location.join(fingerprint)
        plan.listed.append(fingerprint_location.uri)
        for folder, file_name, size in fingerprint_location.walk_batches(start_after, stop_after):
            if not _BATCH_FOLDER.match(folder):
                plan.warnings.append(
                    f"{entry.table}: skipped folder {fingerprint}/{folder}: not a 13-digit CDA timestamp."
                )
                continue
            timestamp = int(folder)
            if not (loaded_watermark or -1) < timestamp <= entry.manifest_watermark:
                continue  # defensive: the listing already bounds the range
            if not file_name.endswith(".parquet"):
                continue
            if size == 0:
                plan.warnings.append(f"{entry.table}: skipped empty file {fingerprint}/{folder}/{file_name}.")
                continue
            if ends is not None and timestamp > ends:
                plan.warnings.append(
                    f"{entry.table}: folder {fingerprint}/{folder} is later than the next schema's start "
                    f"({ends}), which CDA's schemaHistory says cannot happen; loading it anyway. Check the "
                    f"manifest's schemaHistory for {entry.table}."
                )
            files_by_timestamp.setdefault(timestamp, []).append(
                DataFile(fingerprint_location.join(folder, file_name), size, fingerprint, timestamp)
            )
    for timestamp, files in sorted(files_by_timestamp.items()):
        files.sort(key=lambda f: (f.fingerprint, f.location.path))
        plan.batches.append(PendingBatch(timestamp, tuple(files)))
    if not plan.batches and entry.total_processed_records:
        plan.warnings.append(
            f"{entry.table}: the manifest's watermark {entry.manifest_watermark} is after the loaded batch "
            f"({loaded_watermark or 'none'}), but no CDA folder was found in between under {table_location.uri}: "
            "CDA may still be copying them, or dataFilesPath points at the wrong place."
        )
    _dedupe_warnings(plan)
    return plan


def count_rows(batches: list[PendingBatch]) -> int:
    """Rows in the batches, from the parquet footers only (no data pages are read)."""
    total = 0
    for batch in batches:
        for data_file in batch.files:
            filesystem = data_file.location.filesystem()
            with filesystem.open_input_file(data_file.location.fs_path) as handle:
                total += pq.ParquetFile(handle).metadata.num_rows
    return total


def _dedupe_warnings(plan: LoadPlan) -> None:
    plan.warnings = list(dict.fromkeys(plan.warnings))
