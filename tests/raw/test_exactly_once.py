"""Exactly once: crashes between and inside commits, stale and concurrent writers, and the three
holes raw engine v1 had (same-timestamp fingerprints, a foreign table, RESTORE)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable, write_deltalake

from guidewire_pipeline.cda import delta_writer
from guidewire_pipeline.cda.delta_writer import _commit_group, _DeepWrite, _ShallowWrite, sync_table
from guidewire_pipeline.cda.load_plan import CommitBudget, plan_table
from guidewire_pipeline.cda.manifest import read_manifest
from guidewire_pipeline.cda.raw_table import open_table
from guidewire_pipeline.cda.savepoint import APP_ID, ROWS_APP_ID, read_savepoint
from guidewire_pipeline.cda.storage import Location
from guidewire_pipeline.cda.sync import sync_tables
from tests.raw.helpers import (
    assert_exactly_once,
    change_keys,
    commit_ranges,
    committed_folders,
    committed_rows,
    delta_keys,
)

SYNC_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    import pyarrow as pa
    from guidewire_pipeline.cda import delta_writer
    from guidewire_pipeline.cda.delta_writer import sync_table
    from guidewire_pipeline.cda.load_plan import CommitBudget
    from guidewire_pipeline.cda.manifest import read_manifest
    from guidewire_pipeline.cda.storage import Location
    manifest_uri, table, target = sys.argv[1], sys.argv[2], sys.argv[3]
    kill_after_commits, kill_inside_commit, max_batches = (int(a) for a in sys.argv[4:7])
    committed = 0
    def progress(message):
        global committed
        if " committed " in message:
            committed += 1
            if committed == kill_after_commits:
                os.kill(os.getpid(), signal.SIGKILL)  # die between two commits, like a lost worker
    if kill_inside_commit:
        real_write = delta_writer.write_deltalake
        def dying_write(target, reader, **kwargs):
            if committed + 1 < kill_inside_commit:
                return real_write(target, reader, **kwargs)
            def batches():  # stream some rows into data files, then die before the commit
                for number, batch in enumerate(reader):
                    if number == 2:
                        os.kill(os.getpid(), signal.SIGKILL)
                    yield batch
            return real_write(target, pa.RecordBatchReader.from_batches(reader.schema, batches()), **kwargs)
        delta_writer.write_deltalake = dying_write
    result = sync_table(read_manifest(manifest_uri).entries[table], Location.parse(target), progress=progress,
                        budget=CommitBudget(max_batches=max_batches))
    print(result.status, result.batches_applied, result.commits, result.error)
""")


def run_sync(cda: Path, table: str, target: Path, *, kill_after_commits: int = 0, kill_inside_commit: int = 0,
             max_batches: int = 1000) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", SYNC_SCRIPT, str(cda / "manifest.json"), table, str(target),
         str(kill_after_commits), str(kill_inside_commit), str(max_batches)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def entry_of(cda: Path, table: str):
    return read_manifest(str(cda / "manifest.json")).entries[table]


def test_one_commit_covers_the_pending_batches_with_the_greatest_as_savepoint(sample_cda: Path, tmp_path: Path):
    target = tmp_path / "raw" / "cc_claim"
    result = sync_table(entry_of(sample_cda, "cc_claim"), Location.parse(str(target)))
    folders = sorted({int(f.name) for f in committed_folders(sample_cda, "cc_claim")})
    assert (result.status, result.commits, result.batches_applied) == ("loaded", 1, len(folders))
    assert commit_ranges(str(target)) == [(folders[0], folders[-1], len(folders))]
    [commit] = [h for h in DeltaTable(str(target)).history() if "gw_first_folder" in h]
    assert set(commit["gw_fingerprints"].split(",")) == {f.parent.name for f in committed_folders(sample_cda, "cc_claim")}
    assert int(commit["gw_rows"]) == result.rows_added == len(committed_rows(sample_cda, "cc_claim"))
    assert_exactly_once(sample_cda, "cc_claim", target)


def test_sigkill_between_commits_then_rerun(sample_cda: Path, tmp_path: Path):
    target = tmp_path / "raw" / "cc_claim"
    crashed = run_sync(sample_cda, "cc_claim", target, kill_after_commits=2, max_batches=1)
    crashed.wait(timeout=120)
    assert crashed.returncode == -9, crashed.stderr.read()
    half = DeltaTable(str(target))
    assert half.version() == 1  # two whole commits before the kill
    assert half.transaction_version(APP_ID) == int(committed_folders(sample_cda, "cc_claim")[1].name)

    rerun = run_sync(sample_cda, "cc_claim", target)
    out, err = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, err
    assert out.split()[:3] == ["loaded", "2", "1"]  # only the two missing batches, in one commit
    assert_exactly_once(sample_cda, "cc_claim", target)


def test_sigkill_inside_a_multi_batch_commit_loses_only_that_group(tmp_path: Path):
    from guidewire_pipeline.sample.generator import generate

    cda = tmp_path / "cda"
    generate(str(cda), tables=1, batches=6, rows=400, seed=5, files_per_batch=2)
    table = next(t for t, e in read_manifest(str(cda / "manifest.json")).entries.items() if e.total_processed_records)
    target = tmp_path / "raw" / table
    # Groups of 3 batches; the process dies while streaming the second group into data files.
    crashed = run_sync(cda, table, target, kill_inside_commit=2, max_batches=3)
    crashed.wait(timeout=120)
    assert crashed.returncode == -9, crashed.stderr.read()
    half = DeltaTable(str(target))
    folders = sorted({int(f.name) for f in committed_folders(cda, table)})
    assert half.version() == 0 and half.transaction_version(APP_ID) == folders[2]  # the dead group: no commit

    rerun = run_sync(cda, table, target)
    out, err = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, err
    assert out.split()[:3] == ["loaded", str(len(folders) - 3), "1"]
    assert_exactly_once(cda, table, target)


def test_two_concurrent_runs_of_one_table(sample_cda: Path, tmp_path: Path):
    target = tmp_path / "raw" / "cc_transaction"
    runs = [run_sync(sample_cda, "cc_transaction", target, max_batches=1) for _ in range(2)]
    outputs = [run.communicate(timeout=180) for run in runs]
    assert all(run.returncode == 0 for run in runs), outputs
    applied = [int(out.split()[1]) for out, _ in outputs]
    assert sum(applied) == len(committed_folders(sample_cda, "cc_transaction")), outputs
    assert_exactly_once(sample_cda, "cc_transaction", target)


@pytest.mark.parametrize("clone_mode", ["deep", "shallow"])
def test_a_stale_writer_never_commits_a_group_twice(sample_cda: Path, tmp_path: Path, clone_mode: str):
    entry = entry_of(sample_cda, "cc_contact")
    location = Location.parse(str(tmp_path / "raw" / "cc_contact"))
    groups = plan_table(entry, None).commit_groups(CommitBudget(max_batches=2))
    sync_table(entry, location, clone_mode=clone_mode, budget=CommitBudget(max_batches=2))
    # A writer whose snapshot predates the second group sees it as pending and tries to commit it:
    # delta-rs must refuse (same app id committed meanwhile), and the reload must make it skip.
    stale = open_table(location, without_files=False)
    stale.load_as_version(0)
    savepoint = read_savepoint("cc_contact", location, stale)
    assert savepoint.watermark == groups[0].watermark
    write = (_DeepWrite if clone_mode == "deep" else _ShallowWrite)("cc_contact", location, groups[1])
    table, after, applied = _commit_group("cc_contact", location, stale, savepoint, groups[1], write, clone_mode)
    assert not applied
    assert table.version() == len(groups) - 1
    assert after.watermark == entry.manifest_watermark == table.transaction_version(APP_ID)
    assert change_keys(pa.table(_rows(location, clone_mode))) == change_keys(committed_rows(sample_cda, "cc_contact"))


def _rows(location: Location, clone_mode: str) -> pa.Table:
    from guidewire_pipeline.cda.maintenance import raw_dataset

    return raw_dataset(location).to_table(columns=["id", "gwcbi___seqval_hex"])


@pytest.mark.parametrize("clone_mode", ["deep", "shallow"])
def test_a_writer_that_saw_no_table_never_writes_the_first_group_twice(sample_cda: Path, tmp_path: Path,
                                                                        clone_mode: str):
    entry = entry_of(sample_cda, "pc_policyline")
    location = Location.parse(str(tmp_path / "raw" / "pc_policyline"))
    [group] = plan_table(entry, None).commit_groups(CommitBudget())
    sync_table(entry, location, clone_mode=clone_mode)  # another writer created the table meanwhile
    write = (_DeepWrite if clone_mode == "deep" else _ShallowWrite)("pc_policyline", location, group)
    table, after, applied = _commit_group("pc_policyline", location, None, read_savepoint("x", location, None),
                                          group, write, clone_mode)
    assert not applied
    assert after.watermark == table.transaction_version(APP_ID) == entry.manifest_watermark
    assert DeltaTable(location.path).version() == 0


def test_a_deep_commit_whose_handle_moves_past_it_reads_the_savepoint_from_the_log(
        sample_cda: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The loop carries the savepoint from its own commit only when the handle stands exactly one
    version past where it stood before. Here a real second writer commits the third group right
    after our commit of the second, and our handle is then refreshed past both: carrying the
    second group's timestamp would make us commit the third group twice."""
    entry = entry_of(sample_cda, "cc_contact")
    location = Location.parse(str(tmp_path / "raw" / "cc_contact"))
    first, second, third = plan_table(entry, None).commit_groups(CommitBudget(max_batches=1))[:3]
    table, savepoint, applied = _commit_group("cc_contact", location, None, read_savepoint("cc_contact", location, None),
                                              first, _DeepWrite("cc_contact", location, first), "deep")
    assert applied and savepoint.watermark == first.watermark

    real_write = delta_writer.write_deltalake
    raced: list[bool] = []

    def write_then_race(target: object, data: object, **kwargs: object) -> None:
        real_write(target, data, **kwargs)
        if isinstance(target, DeltaTable) and not raced:
            raced.append(True)
            other = open_table(location, without_files=False)
            assert _commit_group("cc_contact", location, other, read_savepoint("cc_contact", location, other), third,
                                 _DeepWrite("cc_contact", location, third), "deep")[2]
            target.update_incremental()  # our handle now also holds the other writer's commit

    monkeypatch.setattr(delta_writer, "write_deltalake", write_then_race)
    table, savepoint, applied = _commit_group("cc_contact", location, table, savepoint, second,
                                              _DeepWrite("cc_contact", location, second), "deep")
    assert applied and raced
    assert savepoint.watermark == third.watermark == table.transaction_version(APP_ID)
    table, savepoint, applied = _commit_group("cc_contact", location, table, savepoint, third,
                                              _DeepWrite("cc_contact", location, third), "deep")
    assert not applied
    assert DeltaTable(location.path).version() == 2
    assert delta_keys(location.path) == sorted(
        change_keys(pa.concat_tables([_folder_rows(g) for g in (first, second, third)])))


def _folder_rows(group) -> pa.Table:
    return pa.concat_tables([pq.read_table(f.location.path, columns=["id", "gwcbi___seqval_hex"]) for f in group.files])


@pytest.mark.parametrize("clone_mode", ["deep", "shallow"])
def test_folders_of_one_timestamp_in_two_fingerprints_load_completely(sample_cda: Path, tmp_path: Path,
                                                                      clone_mode: str):
    """CDA may write one batch under two schema folders: both are loaded, in one commit."""
    history = json.loads((sample_cda / "manifest.json").read_text())["cc_claim"]["schemaHistory"]
    old, new = sorted(history, key=lambda fp: int(history[fp]))
    switch = history[new]
    # The batch at the schema switch exists under the new schema; CDA also wrote part of it under
    # the old one (other ids, without the new column).
    shutil.copytree(sample_cda / "cc_claim" / new / switch, sample_cda / "cc_claim" / old / switch)
    for f in (sample_cda / "cc_claim" / old / switch).glob("*.parquet"):
        if f.stat().st_size:
            rows = pq.read_table(f)
            rows = rows.set_column(rows.schema.get_field_index("id"), "id", pa.array(
                [i + 1_000_000 for i in rows["id"].to_pylist()], pa.int64())).drop_columns(["severity"])
            pq.write_table(rows, f)
    location = Location.parse(str(tmp_path / "raw" / "cc_claim"))
    result = sync_table(entry_of(sample_cda, "cc_claim"), location, clone_mode=clone_mode)
    assert result.ok, result.error
    assert not result.warnings or all("schema" not in w for w in result.warnings), result.warnings
    expected = committed_rows(sample_cda, "cc_claim")
    assert result.rows_added == len(expected)
    assert change_keys(_rows(location, clone_mode)) == change_keys(expected)
    if clone_mode == "deep":
        assert_exactly_once(sample_cda, "cc_claim", Path(location.path))


@pytest.mark.parametrize("clone_mode", ["deep", "shallow"])
def test_a_foreign_table_at_the_raw_path_is_refused_and_left_untouched(sample_cda: Path, tmp_path: Path,
                                                                       clone_mode: str):
    target = tmp_path / "delta" / "raw" / "cc_claim"
    write_deltalake(str(target), pa.table({"id": pa.array(range(7), pa.int64()), "note": ["foreign"] * 7}))
    [result] = sync_tables([entry_of(sample_cda, "cc_claim")], str(tmp_path / "delta"), clone_mode=clone_mode)
    assert result.status == "failed"
    assert "cc_claim" in result.error and str(target) in result.error and "reset" in result.error
    after = DeltaTable(str(target))
    assert after.version() == 0 and after.to_pyarrow_table().num_rows == 7


@pytest.mark.parametrize("clone_mode", ["deep", "shallow"])
def test_after_a_restore_the_next_sync_reloads_exactly_what_was_restored_away(sample_cda: Path, tmp_path: Path,
                                                                             clone_mode: str):
    root = tmp_path / "delta"
    entry = entry_of(sample_cda, "cc_claim")
    budget = CommitBudget(max_batches=2)
    [first] = sync_tables([entry], str(root), clone_mode=clone_mode, budget=budget)
    assert first.commits == 2
    target = root / "raw" / "cc_claim"
    DeltaTable(str(target)).restore(0)  # undo the second commit; app transactions are not rolled back
    restored = DeltaTable(str(target))
    assert restored.transaction_version(APP_ID) == entry.manifest_watermark
    [again] = sync_tables([entry], str(root), clone_mode=clone_mode, budget=budget)
    assert again.status == "loaded", again.error
    assert again.rewound_from == entry.manifest_watermark
    assert any("RESTORE" in w for w in again.warnings)
    kept = sum(pa.table(restored.get_add_actions(flatten=True))["num_records"].to_pylist())
    assert 0 < kept and again.rows_added == len(committed_rows(sample_cda, "cc_claim")) - kept
    expected = change_keys(committed_rows(sample_cda, "cc_claim"))
    assert change_keys(_rows(Location.parse(str(target)), clone_mode)) == expected
    assert DeltaTable(str(target)).transaction_version(ROWS_APP_ID) == entry.manifest_watermark
    [settled] = sync_tables([entry], str(root), clone_mode=clone_mode, budget=budget)
    assert settled.status == "up_to_date"


def test_small_files_are_compacted_without_changing_data_savepoint_or_change_feed(sample_cda: Path, tmp_path: Path):
    """Once a deep table has enough small files, the sync compacts them: same rows, same savepoint,
    and the change data feed (what bronze reads) still holds each row once, as an insert."""
    entry = entry_of(sample_cda, "cc_claim")
    location = Location.parse(str(tmp_path / "raw" / "cc_claim"))
    folders = committed_folders(sample_cda, "cc_claim")
    result = sync_table(entry, location, compact_min_small_files=len(folders), budget=CommitBudget(max_batches=1))
    assert result.ok and result.compacted_files == len(folders)
    table = DeltaTable(location.path)
    assert len(table.file_uris()) == 1
    assert table.version() == len(folders)  # one commit per folder (budget), then the compaction
    assert table.transaction_version(APP_ID) == result.watermark_after == entry.manifest_watermark
    assert result.total_rows == entry.total_processed_records
    assert_exactly_once(sample_cda, "cc_claim", Path(location.path))
    feed = pa.table(table.load_cdf(starting_version=0).read_all())
    assert set(feed["_change_type"].to_pylist()) == {"insert"}
    assert change_keys(feed) == change_keys(committed_rows(sample_cda, "cc_claim"))
    # The newest commit is the compaction: it vouches for the savepoint, so the next run settles
    # the table from the peek.
    [again] = sync_tables([entry], str(tmp_path))
    assert (again.status, again.watermark_after, again.delta_version) == ("up_to_date", entry.manifest_watermark,
                                                                          table.version())


def test_shallow_tables_are_never_compacted(sample_cda: Path, tmp_path: Path):
    entry = entry_of(sample_cda, "cc_claim")
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
    entry = entry_of(sample_cda, "cc_claim")
    location = Location.parse(str(tmp_path / "raw" / "cc_claim"))
    result = sync_table(entry, location, compact_min_small_files=1)
    assert (result.status, result.compacted_files) == ("loaded", 0)
    assert any("compacting" in w and "disk full" in w for w in result.warnings)
    assert result.total_rows == entry.total_processed_records
    assert_exactly_once(sample_cda, "cc_claim", Path(location.path))


def test_a_file_with_a_huge_row_group_is_read_in_slices_with_the_same_rows(sample_cda: Path, tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch):
    """Above SLICE_ROW_GROUP_BYTES a row group is read page by page instead of whole: same rows,
    same lineage, columns an older file lacks as nulls."""
    monkeypatch.setattr(delta_writer, "SLICE_ROW_GROUP_BYTES", 1)  # every file of the sample is "huge"
    location = Location.parse(str(tmp_path / "raw" / "cc_claim"))
    write = _DeepWrite("cc_claim", location, plan_table(entry_of(sample_cda, "cc_claim"), None)
                       .commit_groups(CommitBudget())[0])
    assert write.sliced
    result = sync_table(entry_of(sample_cda, "cc_claim"), location)
    assert result.ok, result.error
    assert_exactly_once(sample_cda, "cc_claim", Path(location.path))
    claims = DeltaTable(location.path).to_pyarrow_table(columns=["severity", "gw_fingerprint"])
    assert claims["severity"].null_count > 0  # the first schema's rows
