"""TableReader's first half: decide which CDA batches of a table are pending. This is where the
watermark rule lives.

A table's safe range is ``(loaded watermark, manifest watermark]``: folders at or below
``lastSuccessfulWriteTimestamp`` are complete (inclusive), folders above it may be mid-write and are
never returned. Fingerprints whose schema interval ended at or before the loaded watermark are not
listed at all, and inside a live fingerprint the listing starts after the loaded watermark's folder,
so the cost of planning follows the new folders, not the table's history.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import pyarrow.parquet as pq

from guidewire_pipeline.cda.manifest import ManifestEntry
from guidewire_pipeline.cda.storage import Location

_BATCH_FOLDER = re.compile(r"^\d{13}$")


@dataclass(frozen=True)
class DataFile:
    """One parquet file of a batch."""

    location: Location
    size: int


@dataclass(frozen=True)
class PendingBatch:
    """One CDA timestamp folder to load: one Delta commit."""

    fingerprint: str
    timestamp: int
    files: tuple[DataFile, ...]

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)


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


def plan_table(entry: ManifestEntry, loaded_watermark: int | None) -> LoadPlan:
    """Return the batches of ``entry`` in ``(loaded_watermark, entry.manifest_watermark]``.

    - A table whose folder does not exist yet has nothing pending (not an error).
    - Non-parquet files and deeper folders (``.cda/``, ``cda/``) are ignored; zero-byte parquet files
      are skipped with a warning; folders whose name is not 13-digit epoch millis are skipped with a
      warning.
    - A fingerprint folder on storage that ``schemaHistory`` does not name is still read (with a
      warning), since skipping it would silently lose rows.
    """
    plan = LoadPlan(entry.table, loaded_watermark, entry.manifest_watermark, [])
    if loaded_watermark is not None and loaded_watermark >= entry.manifest_watermark:
        return plan  # caught up: nothing to list at all

    table_location = entry.location
    plan.listed.append(table_location.uri)
    on_storage = {c.name for c in table_location.list_children() if c.is_dir}
    if not on_storage:
        return plan

    known = {fp.fingerprint: fp for fp in entry.fingerprints}
    live: list[str] = []
    for fingerprint in entry.fingerprints:
        if fingerprint.fingerprint in on_storage and not fingerprint.drained_by(loaded_watermark):
            live.append(fingerprint.fingerprint)
    for name in sorted(on_storage - set(known)):
        if name.startswith((".", "_")) or name == "cda":
            continue  # CDA's side folders, not schemas
        plan.warnings.append(
            f"{entry.table}: folder {name!r} is not in the manifest's schemaHistory; reading it anyway."
        )
        live.append(name)

    start_after = f"{loaded_watermark:013d}" if loaded_watermark is not None else "0" * 13
    stop_after = f"{entry.manifest_watermark:013d}"
    batches: dict[tuple[int, str], list[DataFile]] = {}
    for fingerprint in live:
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
            batches.setdefault((timestamp, fingerprint), []).append(
                DataFile(fingerprint_location.join(folder, file_name), size)
            )
    for (timestamp, fingerprint), files in sorted(batches.items()):
        files.sort(key=lambda f: f.location.path)
        plan.batches.append(PendingBatch(fingerprint, timestamp, tuple(files)))
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
