"""Shallow (zero-copy) clone mode: same watermark and exactly-once rules as deep, files in place,
the readers that work, and VACUUM refused."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import DeltaTable, QueryBuilder

from guidewire_pipeline.cda.delta_writer import _commit_group, _ShallowWrite, sync_table
from guidewire_pipeline.cda.load_plan import CommitBudget, plan_table
from guidewire_pipeline.cda.maintenance import raw_dataset, vacuum_table
from guidewire_pipeline.cda.manifest import read_manifest
from guidewire_pipeline.cda.raw_table import ShallowTableError, open_table
from guidewire_pipeline.cda.savepoint import APP_ID, read_savepoint
from guidewire_pipeline.cda.storage import Location
from guidewire_pipeline.cda.sync import sync_tables
from guidewire_pipeline.raw.io_manager import RayDeltaIOManager
from guidewire_pipeline.resources import LakehouseResource
from guidewire_pipeline.sample.generator import advance
from tests.raw.helpers import (
    change_keys,
    commit_ranges,
    committed_folders,
    committed_lineage,
    committed_rows,
    delta_lineage,
)


def query_keys(table: DeltaTable) -> list[tuple[int, str]]:
    result = QueryBuilder().register("t", table).execute("select id, gwcbi___seqval_hex from t").read_all()
    return change_keys(pa.table(result))


def test_shallow_table_points_at_cda_files_and_holds_every_committed_row_once(sample_cda: Path, tmp_path: Path):
    manifest = read_manifest(str(sample_cda / "manifest.json"))
    results = sync_tables(manifest.entries.values(), str(tmp_path / "delta"), clone_mode="shallow")
    assert all(r.ok for r in results), [r.error for r in results]
    for table in ("cc_claim", "cc_contact"):
        target = tmp_path / "delta" / "raw" / table
        delta = DeltaTable(str(target))
        folders = committed_folders(sample_cda, table)
        # Rows: exactly the committed folders, never the in-flight one, nothing twice.
        assert query_keys(delta) == change_keys(committed_rows(sample_cda, table))
        assert delta.transaction_version(APP_ID) == int(folders[-1].name)
        assert commit_ranges(str(target)) == [(int(folders[0].name), int(folders[-1].name), len(folders))]
        # Each row's CDA folder, from the add actions' partition values.
        lineage = QueryBuilder().register("t", delta).execute(
            "select id, gwcbi___seqval_hex, gw_batch_ts_ms, gw_fingerprint from t").read_all()
        assert delta_lineage(pa.table(lineage)) == committed_lineage(sample_cda, table)
        assert delta.metadata().partition_columns == ["gw_batch_ts_ms", "gw_fingerprint"]
        # Zero copy: every add action is an absolute URI into the CDA tree, no parquet under the table.
        paths = pa.table(delta.get_add_actions(flatten=True))["path"].to_pylist()
        assert paths and all(p.startswith(f"file://{sample_cda}/{table}/") for p in paths)
        assert not list(target.glob("*.parquet"))
        # Row counts from footers: the stats add up to the rows.
        assert sum(pa.table(delta.get_add_actions(flatten=True))["num_records"].to_pylist()) == len(
            committed_rows(sample_cda, table))
    claim = next(r for r in results if r.table == "cc_claim")
    assert claim.total_rows == len(committed_rows(sample_cda, "cc_claim"))
    assert ("severity", "string") in claim.columns  # the second fingerprint's column, merged


def test_rerun_is_a_no_op_and_advance_loads_only_new_folders(sample_cda: Path, tmp_path: Path):
    root = str(tmp_path / "delta")
    manifest = read_manifest(str(sample_cda / "manifest.json"))
    sync_tables([manifest.entries["cc_claim"]], root, clone_mode="shallow")
    again = sync_tables([manifest.entries["cc_claim"]], root, clone_mode="shallow")
    assert [r.status for r in again] == ["up_to_date"]

    advance(str(sample_cda), batches=2, rows=30)
    manifest = read_manifest(str(sample_cda / "manifest.json"))
    [result] = sync_tables([manifest.entries["cc_claim"]], root, clone_mode="shallow")
    assert (result.status, result.batches_applied, result.commits) == ("loaded", 3, 1)  # old in-flight + 2 new
    delta = DeltaTable(f"{root}/raw/cc_claim")
    assert query_keys(delta) == change_keys(committed_rows(sample_cda, "cc_claim"))
    assert delta.transaction_version(APP_ID) == result.watermark_after


def test_a_commit_that_lands_right_after_ours_is_in_the_carried_savepoint(sample_cda: Path, tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch):
    """The loop carries the savepoint from its own commits. Here a real second writer commits the
    third batch between our commit of the second and our handle's refresh: the savepoint must come
    from the log then, or the third batch would be committed twice."""
    entry = read_manifest(str(sample_cda / "manifest.json")).entries["cc_contact"]
    location = Location.parse(str(tmp_path / "raw" / "cc_contact"))
    first, second, third = plan_table(entry, None).commit_groups(CommitBudget(max_batches=1))[:3]

    def commit(table, savepoint, group):
        return _commit_group("cc_contact", location, table, savepoint, group,
                             _ShallowWrite("cc_contact", location, group), "shallow")

    table, savepoint, applied = commit(None, read_savepoint("cc_contact", location, None), first)
    assert applied and savepoint.watermark == first.watermark

    real_commit = DeltaTable.create_write_transaction
    raced: list[bool] = []

    def commit_then_race(self: DeltaTable, *args: object, **kwargs: object) -> None:
        real_commit(self, *args, **kwargs)
        if not raced:
            raced.append(True)
            other = open_table(location, without_files=False)
            assert commit(other, read_savepoint("cc_contact", location, other), third)[2]

    monkeypatch.setattr(DeltaTable, "create_write_transaction", commit_then_race)
    table, savepoint, applied = commit(table, savepoint, second)
    assert applied and raced
    assert savepoint.watermark == third.watermark == table.transaction_version(APP_ID)
    table, savepoint, applied = commit(table, savepoint, third)
    assert not applied
    assert DeltaTable(location.path).version() == 2


def test_modes_do_not_mix_in_one_table(sample_cda: Path, tmp_path: Path):
    entry = read_manifest(str(sample_cda / "manifest.json")).entries["cc_exposure"]
    location = Location.parse(str(tmp_path / "raw" / "cc_exposure"))
    assert sync_table(entry, location, clone_mode="deep").ok
    refused = sync_table(entry, location, clone_mode="shallow")
    assert refused.status == "failed" and "cc_exposure" in refused.error and "deep clone" in refused.error


def test_vacuum_is_refused_on_shallow_tables_and_allowed_on_deep_ones(sample_cda: Path, tmp_path: Path):
    manifest = read_manifest(str(sample_cda / "manifest.json"))
    shallow = RayDeltaIOManager(lakehouse=LakehouseResource(delta_root=str(tmp_path / "shallow")), clone_mode="shallow")
    deep = RayDeltaIOManager(lakehouse=LakehouseResource(delta_root=str(tmp_path / "deep")))
    shallow.sync([manifest.entries["cc_claim"]])
    deep.sync([manifest.entries["cc_claim"]])
    before = sorted(p for p in (sample_cda / "cc_claim").rglob("*") if p.is_file())
    with pytest.raises(ShallowTableError, match="Refusing to VACUUM"):
        shallow.vacuum("cc_claim", retention_hours=0, dry_run=False)
    with pytest.raises(ShallowTableError):
        vacuum_table(Location.parse(str(tmp_path / "shallow" / "raw" / "cc_claim")))
    assert sorted(p for p in (sample_cda / "cc_claim").rglob("*") if p.is_file()) == before
    assert deep.vacuum("cc_claim") == []  # nothing to remove, and no refusal


def test_readers_of_a_shallow_table(sample_cda: Path, tmp_path: Path):
    """What the README's readers table says: QueryBuilder and raw_dataset (pyarrow, and polars on
    top of it) read a shallow table, lineage columns included; DeltaTable.to_pyarrow_dataset, and so
    Ray's read_delta and polars' scan_delta, do not (they join the absolute paths onto the table
    root), nor does load_cdf."""
    manifest = read_manifest(str(sample_cda / "manifest.json"))
    sync_tables([manifest.entries["cc_claim"]], str(tmp_path / "delta"), clone_mode="shallow")
    location = Location.parse(str(tmp_path / "delta" / "raw" / "cc_claim"))
    expected = change_keys(committed_rows(sample_cda, "cc_claim"))

    assert query_keys(DeltaTable(location.path)) == expected
    dataset = raw_dataset(location)
    assert change_keys(dataset.to_table(columns=["id", "gwcbi___seqval_hex"])) == expected
    assert delta_lineage(dataset.to_table()) == committed_lineage(sample_cda, "cc_claim")
    assert dataset.to_table(columns=["severity"])["severity"].null_count > 0  # first schema's rows
    with pytest.raises(FileNotFoundError):
        DeltaTable(location.path).to_pyarrow_dataset().to_table()
    with pytest.raises(Exception, match="Failed to fetch metadata"):  # noqa: B017 - no change feed reader
        DeltaTable(location.path).load_cdf(starting_version=0).read_all()
    polars = pytest.importorskip("polars")
    assert polars.scan_pyarrow_dataset(dataset).select(polars.len()).collect().item() == len(expected)
    with pytest.raises(Exception):  # noqa: B017 - polars raises its own FileNotFoundError flavour
        polars.scan_delta(location.path).select(polars.len()).collect()


def test_shallow_on_s3_points_at_s3_uris(sample_cda: Path, tmp_path: Path, s3_bucket: str):
    from guidewire_pipeline.sample.generator import generate

    cda = f"s3://{s3_bucket}/cda"
    generate(cda, tables=1, batches=3, rows=20, seed=3)
    manifest = read_manifest(f"{cda}/manifest.json")
    entry = next(e for e in manifest.entries.values() if e.manifest_watermark and e.fingerprints)
    location = Location.parse(f"s3://{s3_bucket}/delta/raw/{entry.table}")
    result = sync_table(entry, location, clone_mode="shallow")
    assert result.ok and result.batches_applied == 3, result.error
    table = open_table(location, without_files=False)
    paths = pa.table(table.get_add_actions(flatten=True))["path"].to_pylist()
    assert all(p.startswith(f"s3://{s3_bucket}/cda/{entry.table}/") for p in paths)
    assert raw_dataset(location).count_rows() == result.rows_added == 60
    assert table.transaction_version(APP_ID) == result.watermark_after
    with pytest.raises(ShallowTableError):
        vacuum_table(location)


def test_checkpoints_cover_every_commit(tmp_path: Path):
    """Shallow appends commit through delta-rs' add-action transactions; the checkpoint that
    follows every 10 commits must carry their add actions and the app transaction."""
    from guidewire_pipeline.sample.generator import generate

    cda = tmp_path / "cda"
    generate(str(cda), tables=6, batches=12, rows=10, seed=2, files_per_batch=1)
    entry = read_manifest(str(cda / "manifest.json")).entries["cc_contact"]
    location = Location.parse(str(tmp_path / "raw" / "cc_contact"))
    result = sync_table(entry, location, clone_mode="shallow", budget=CommitBudget(max_batches=1))
    assert result.ok and result.batches_applied == 12, result.error
    log = Path(location.path) / "_delta_log"
    assert (log / "00000000000000000009.checkpoint.parquet").exists()
    # A reader that starts from the checkpoint sees every batch once.
    fresh = DeltaTable(location.path)
    assert fresh.transaction_version(APP_ID) == int(committed_folders(cda, "cc_contact")[-1].name)
    assert query_keys(fresh) == change_keys(committed_rows(cda, "cc_contact"))
    assert [h["operation"] for h in fresh.history()].count("WRITE") == 11  # + CREATE TABLE


def test_both_modes_keep_statistics_for_the_lookup_columns_only_and_agree(sample_cda: Path, tmp_path: Path):
    """Statistics on a few lookup columns (STATS_COLUMNS) keep delta-rs's per-commit cost down; the
    shallow mode computes them from the footers, and they must match what delta-rs writes for deep.
    (The batch column has statistics in deep tables; in shallow ones it is a partition value.)"""
    entry = read_manifest(str(sample_cda / "manifest.json")).entries["cc_claim"]
    bounds = {}
    for mode in ("deep", "shallow"):
        location = Location.parse(str(tmp_path / mode / "cc_claim"))
        assert sync_table(entry, location, clone_mode=mode).ok
        actions = pa.table(DeltaTable(location.path).get_add_actions(flatten=True))
        with_stats = {name.split(".", 1)[1] for name in actions.column_names if name.startswith(("min.", "max."))}
        with_stats.discard("gw_batch_ts_ms") if mode == "deep" else None
        assert with_stats == {"id", "publicid", "gwcbi___lsn", "gwcbi___connector_ts_ms", "gwcbi___operation"}
        bounds[mode] = {column: (min(actions[f"min.{column}"].to_pylist()), max(actions[f"max.{column}"].to_pylist()))
                        for column in sorted(with_stats)}
        assert sum(actions["num_records"].to_pylist()) == entry.total_processed_records
    assert bounds["deep"] == bounds["shallow"]
