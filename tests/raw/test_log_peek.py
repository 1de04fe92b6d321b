"""``peek_log`` reads a raw table's savepoint from its newest commit without delta-rs. It is only
used to skip tables with nothing to load, so it must agree with delta-rs whenever it answers."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import DeltaTable
from deltalake import Field as DeltaField

from guidewire_pipeline.cda.delta_writer import _commit_group, _DeepWrite, _ShallowWrite
from guidewire_pipeline.cda.load_plan import CommitBudget, plan_table
from guidewire_pipeline.cda.manifest import ManifestEntry, read_manifest
from guidewire_pipeline.cda.raw_table import open_table
from guidewire_pipeline.cda.savepoint import APP_ID, peek_log, read_savepoint
from guidewire_pipeline.cda.storage import Location
from guidewire_pipeline.cda.sync import raw_table_location, sync_tables
from guidewire_pipeline.sample.generator import generate


@pytest.fixture
def long_cda(tmp_path: Path) -> Path:
    """One table with 13 committed folders: its raw table crosses a checkpoint (interval 10)."""
    root = tmp_path / "cda"
    generate(str(root), tables=1, batches=13, rows=20, seed=4)
    return root


def _the_table(cda: Path) -> ManifestEntry:
    return next(e for e in read_manifest(str(cda / "manifest.json")).entries.values() if e.total_processed_records)


def commit_one(name, location, table, savepoint, group, clone_mode):
    write = (_DeepWrite if clone_mode == "deep" else _ShallowWrite)(name, location, group)
    return _commit_group(name, location, table, savepoint, group, write, clone_mode)


def _loaded(cda: Path, tmp_path: Path) -> Location:
    """The raw table of ``cda``'s one table, fully loaded; returns its location."""
    root = str(tmp_path / "lake")
    entry = _the_table(cda)
    assert sync_tables([entry], root)[0].ok
    return raw_table_location(root, entry.table)


@pytest.mark.parametrize("storage", ["local", "s3"])
@pytest.mark.parametrize("clone_mode", ["deep", "shallow"])
def test_peek_agrees_with_delta_rs_through_a_tables_life(long_cda: Path, tmp_path: Path, storage: str,
                                                        clone_mode: str, request: pytest.FixtureRequest):
    root = f"s3://{request.getfixturevalue('s3_bucket')}/lake" if storage == "s3" else str(tmp_path / "lake")
    entry = _the_table(long_cda)
    location = raw_table_location(root, entry.table)
    assert peek_log(location) is None  # no table yet

    table, savepoint = None, read_savepoint(entry.table, location, None)
    groups = plan_table(entry, None).commit_groups(CommitBudget(max_batches=1))
    assert len(groups) > 10
    for group in groups:
        table, savepoint, applied = commit_one(entry.table, location, table, savepoint, group, clone_mode)
        assert applied
        fresh = open_table(location)
        peek = peek_log(location)
        assert peek is not None
        assert (peek.version, peek.loaded_watermark) == (fresh.version(), fresh.transaction_version(APP_ID))
        assert peek.loaded_watermark == savepoint.watermark == group.watermark

    # A commit that records no savepoint (here a schema change made by hand): the peek says so, and
    # the engine falls back to delta-rs for that table instead of guessing.
    fresh = open_table(location)
    fresh.alter.add_columns([DeltaField.from_arrow(pa.field("added_by_hand", pa.int64()))])
    peek = peek_log(location)
    assert peek is not None and (peek.version, peek.loaded_watermark) == (fresh.version(), None)
    [result] = sync_tables([entry], root, clone_mode=clone_mode)
    assert (result.status, result.watermark_after, result.delta_version) == (
        "up_to_date", entry.manifest_watermark, fresh.version())


def test_a_table_behind_its_manifest_is_planned_from_the_peeked_savepoint(long_cda: Path, tmp_path: Path):
    """The peek tells the savepoint of a table that is behind; the load still checks it with delta-rs
    and commits only what is pending."""
    root = str(tmp_path / "lake")
    entry = _the_table(long_cda)
    location = raw_table_location(root, entry.table)
    groups = plan_table(entry, None).commit_groups(CommitBudget(max_batches=1))
    table, savepoint = None, read_savepoint(entry.table, location, None)
    for group in groups[:5]:
        table, savepoint, _ = commit_one(entry.table, location, table, savepoint, group, "deep")
    [result] = sync_tables([entry], root)
    assert (result.status, result.batches_applied) == ("loaded", len(groups) - 5)
    assert result.watermark_before == groups[4].watermark
    assert DeltaTable(location.path).transaction_version(APP_ID) == result.watermark_after == entry.manifest_watermark


def test_an_unreadable_checkpoint_pointer_still_finds_the_newest_commit(long_cda: Path, tmp_path: Path):
    location = _loaded(long_cda, tmp_path)
    expected = peek_log(location)
    Path(location.join("_delta_log", "_last_checkpoint").path).write_text("{not json")
    assert peek_log(location) == expected


def test_a_newest_commit_the_peek_cannot_parse_leaves_the_decision_to_delta_rs(long_cda: Path, tmp_path: Path):
    location = _loaded(long_cda, tmp_path)
    newest = peek_log(location)
    commit = Path(location.join("_delta_log", f"{newest.version:020d}.json").path)
    commit.write_bytes(commit.read_bytes().replace(b'{"txn":', b'{"txn":[', 1))
    assert peek_log(location) is None
