"""The sync engine's promises to whoever runs it: per-commit progress lines from driver threads and
from Ray workers alike, and Ray tasks that declare memory from their pending bytes."""

from __future__ import annotations

import re
from pathlib import Path

from guidewire_pipeline.cda.load_plan import CommitBudget, plan_table
from guidewire_pipeline.cda.manifest import read_manifest
from guidewire_pipeline.cda.sync import (
    TASK_MEMORY_MAX,
    TASK_MEMORY_MIN,
    RaySettings,
    sync_tables,
    task_memory_bytes,
)

PROGRESS = re.compile(r"^(\w+): commit (\d+)/(\d+) \(.*\) committed [\d,]+ rows; (\d+)/(\d+) batches, "
                      r"[\d.]+ MB of [\d.]+ MB, [\d,]+ rows, [\d.]+ MB/s$")


def _commit_lines(lines: list[str]) -> dict[str, list[tuple[int, int]]]:
    by_table: dict[str, list[tuple[int, int]]] = {}
    for line in lines:
        if match := PROGRESS.match(line):
            by_table.setdefault(match.group(1), []).append((int(match.group(2)), int(match.group(3))))
    return by_table


def test_progress_of_every_commit_reaches_the_caller_from_driver_threads(sample_cda: Path, tmp_path: Path):
    manifest = read_manifest(str(sample_cda / "manifest.json"))
    lines: list[str] = []
    results = sync_tables(manifest.entries.values(), str(tmp_path), budget=CommitBudget(max_batches=2),
                          progress=lines.append)
    assert all(r.ok for r in results) and all(r.ray_memory_bytes is None for r in results)
    commits = _commit_lines(lines)
    loaded = {r.table: r.commits for r in results if r.status == "loaded"}
    assert loaded and {t: len(c) for t, c in commits.items()} == loaded
    assert all(c == [(n, len(c)) for n in range(1, len(c) + 1)] for c in commits.values())


def test_progress_and_declared_memory_from_ray_workers(sample_cda: Path, tmp_path: Path, ray_local: None):
    manifest = read_manifest(str(sample_cda / "manifest.json"))
    lines: list[str] = []
    entries = [manifest.entries["cc_claim"], manifest.entries["cc_contact"]]
    results = sync_tables(entries, str(tmp_path), ray=RaySettings(driver_max_bytes=0),
                          budget=CommitBudget(max_batches=1), progress=lines.append)
    assert all(r.ok for r in results), [r.error for r in results]
    assert any("starting a local Ray" in line or "on Ray" in line for line in lines)
    commits = _commit_lines(lines)
    assert {t: len(c) for t, c in commits.items()} == {r.table: r.commits for r in results}
    for result, entry in zip(results, entries, strict=True):
        assert result.ray_memory_bytes == task_memory_bytes(plan_table(entry, None))


def test_declared_memory_grows_with_pending_bytes_within_its_bounds(sample_cda: Path):
    plan = plan_table(read_manifest(str(sample_cda / "manifest.json")).entries["cc_claim"], None)
    assert TASK_MEMORY_MIN < task_memory_bytes(plan) < TASK_MEMORY_MAX
    bigger = type(plan)(plan.table, None, plan.manifest_watermark, plan.batches * 100_000)
    assert task_memory_bytes(bigger) == TASK_MEMORY_MAX
    assert task_memory_bytes(type(plan)(plan.table, None, plan.manifest_watermark, [])) == TASK_MEMORY_MIN
