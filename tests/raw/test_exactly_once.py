"""Exactly once under a crash between commits, a stale writer, and two concurrent runs."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import DeltaTable

from guidewire_pipeline.cda.delta_writer import APP_ID, _apply_batch, open_table, sync_table
from guidewire_pipeline.cda.load_plan import plan_table
from guidewire_pipeline.cda.manifest import read_manifest
from guidewire_pipeline.cda.storage import Location
from guidewire_pipeline.cda.sync import sync_tables
from tests.raw.helpers import change_keys, committed_folders, committed_rows, delta_keys

SYNC_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    from guidewire_pipeline.cda.delta_writer import sync_table
    from guidewire_pipeline.cda.manifest import read_manifest
    from guidewire_pipeline.cda.storage import Location
    manifest_uri, table, target, kill_after = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    committed = 0
    def progress(message):
        global committed
        if " committed" in message:
            committed += 1
            if committed == kill_after:
                os.kill(os.getpid(), signal.SIGKILL)  # die between two commits, like a lost worker
    result = sync_table(read_manifest(manifest_uri).entries[table], Location.parse(target), progress=progress)
    print(result.status, result.batches_applied, result.error)
""")


def run_sync(sample_cda: Path, table: str, target: Path, kill_after: int = 0) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", SYNC_SCRIPT, str(sample_cda / "manifest.json"), table, str(target), str(kill_after)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def assert_exactly_once(sample_cda: Path, table: str, target: Path) -> None:
    delta = DeltaTable(str(target))
    folders = committed_folders(sample_cda, table)
    assert delta_keys(str(target)) == change_keys(committed_rows(sample_cda, table))  # no duplicates, no gaps
    assert delta.transaction_version(APP_ID) == int(folders[-1].name)
    watermarks = [int(h["gw_watermark"]) for h in sorted(delta.history(), key=lambda h: h["version"])
                  if h.get("gw_maintenance") != "compact"]
    assert watermarks == [int(f.name) for f in folders]  # one commit per folder, ascending


def test_sigkill_between_commits_then_rerun(sample_cda: Path, tmp_path: Path):
    target = tmp_path / "raw" / "cc_claim"
    crashed = run_sync(sample_cda, "cc_claim", target, kill_after=2)
    crashed.wait(timeout=120)
    assert crashed.returncode == -9, crashed.stderr.read()
    half = DeltaTable(str(target))
    assert half.version() == 1  # two whole batches committed before the kill
    assert half.transaction_version(APP_ID) == int(committed_folders(sample_cda, "cc_claim")[1].name)

    rerun = run_sync(sample_cda, "cc_claim", target)
    out, err = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, err
    assert out.split()[:2] == ["loaded", "2"]  # only the two missing batches
    assert_exactly_once(sample_cda, "cc_claim", target)


def test_two_concurrent_runs_of_one_table(sample_cda: Path, tmp_path: Path):
    target = tmp_path / "raw" / "cc_transaction"
    runs = [run_sync(sample_cda, "cc_transaction", target) for _ in range(2)]
    outputs = [run.communicate(timeout=180) for run in runs]
    assert all(run.returncode == 0 for run in runs), outputs
    applied = [int(out.split()[1]) for out, _ in outputs]
    assert sum(applied) == len(committed_folders(sample_cda, "cc_transaction")), outputs
    assert_exactly_once(sample_cda, "cc_transaction", target)


def test_a_stale_writer_never_commits_a_batch_twice(sample_cda: Path, tmp_path: Path):
    entry = read_manifest(str(sample_cda / "manifest.json")).entries["cc_contact"]
    location = Location.parse(str(tmp_path / "raw" / "cc_contact"))
    second_batch = plan_table(entry, None).batches[1]
    sync_table(entry, location, plan=None)  # loads everything
    # A writer whose snapshot predates the second batch sees it as pending and tries to commit it:
    # delta-rs must refuse (same app id committed meanwhile), and the reload must make it skip.
    stale = open_table(location)
    stale.load_as_version(0)
    stale_watermark = stale.transaction_version(APP_ID)
    assert stale_watermark < second_batch.timestamp
    table, watermark, applied, rows = _apply_batch("cc_contact", location, stale, stale_watermark, second_batch,
                                                   "deep")
    assert (applied, rows) == (False, 0)
    assert table.version() == len(committed_folders(sample_cda, "cc_contact")) - 1
    assert watermark == entry.manifest_watermark == table.transaction_version(APP_ID)
    assert_exactly_once(sample_cda, "cc_contact", Path(location.path))


@pytest.mark.parametrize("clone_mode", ["deep", "shallow"])
def test_a_writer_that_saw_no_table_never_writes_the_first_batch_twice(sample_cda: Path, tmp_path: Path,
                                                                         clone_mode: str):
    entry = read_manifest(str(sample_cda / "manifest.json")).entries["pc_policyline"]
    location = Location.parse(str(tmp_path / "raw" / "pc_policyline"))
    first_batch = plan_table(entry, None).batches[0]
    sync_table(entry, location, clone_mode=clone_mode)  # another writer created the table meanwhile
    table, watermark, applied, rows = _apply_batch("pc_policyline", location, None, None, first_batch, clone_mode)
    assert (applied, rows) == (False, 0)
    assert watermark == table.transaction_version(APP_ID)
    assert DeltaTable(location.path).version() == len(committed_folders(sample_cda, "pc_policyline")) - 1
    if clone_mode == "deep":
        assert_exactly_once(sample_cda, "pc_policyline", Path(location.path))


def test_small_files_are_compacted_without_changing_data_savepoint_or_change_feed(sample_cda: Path, tmp_path: Path):
    """Once a deep table has enough small files, the sync compacts them: same rows, same savepoint,
    and the change data feed (what bronze reads) still holds each row once, as an insert."""
    entry = read_manifest(str(sample_cda / "manifest.json")).entries["cc_claim"]
    location = Location.parse(str(tmp_path / "raw" / "cc_claim"))
    folders = committed_folders(sample_cda, "cc_claim")
    result = sync_table(entry, location, compact_min_small_files=len(folders))
    assert result.ok and result.compacted_files == len(folders)
    table = DeltaTable(location.path)
    assert len(table.file_uris()) == 1
    assert table.version() == len(folders)  # one commit per folder, then the compaction
    assert table.transaction_version(APP_ID) == result.watermark_after == entry.manifest_watermark
    assert result.total_rows == entry.total_processed_records
    assert_exactly_once(sample_cda, "cc_claim", Path(location.path))
    feed = pa.table(table.load_cdf(starting_version=0).read_all())
    assert set(feed["_change_type"].to_pylist()) == {"insert"}
    assert change_keys(feed) == change_keys(committed_rows(sample_cda, "cc_claim"))
    # The newest commit now records no savepoint: the next run still knows the table is caught up.
    [again] = sync_tables([entry], str(tmp_path))
    assert (again.status, again.watermark_after, again.delta_version) == ("up_to_date", entry.manifest_watermark,
                                                                          table.version())


def test_shallow_tables_are_never_compacted(sample_cda: Path, tmp_path: Path):
    entry = read_manifest(str(sample_cda / "manifest.json")).entries["cc_claim"]
    location = Location.parse(str(tmp_path / "raw" / "cc_claim"))
    result = sync_table(entry, location, clone_mode="shallow", compact_min_small_files=1)
    assert result.ok and result.compacted_files == 0
    history = DeltaTable(location.path).history()
    assert not [h for h in history if h.get("gw_maintenance") or h.get("operation") == "OPTIMIZE"]


def test_a_failing_compaction_leaves_the_load_successful(sample_cda: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch):
    from deltalake.table import TableOptimizer

    def broken_compact(self: TableOptimizer, *args: object, **kwargs: object) -> dict:
        raise OSError("disk full while writing the compacted file")

    monkeypatch.setattr(TableOptimizer, "compact", broken_compact)
    entry = read_manifest(str(sample_cda / "manifest.json")).entries["cc_claim"]
    location = Location.parse(str(tmp_path / "raw" / "cc_claim"))
    result = sync_table(entry, location, compact_min_small_files=1)
    assert (result.status, result.compacted_files) == ("loaded", 0)
    assert any("compacting" in w and "disk full" in w for w in result.warnings)
    assert result.total_rows == entry.total_processed_records
    assert_exactly_once(sample_cda, "cc_claim", Path(location.path))
