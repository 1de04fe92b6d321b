"""``guidewire-pipeline vacuum``: compaction and VACUUM of every layer; raw keeps what bronze has not
read yet, shallow raw tables are never vacuumed."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from guidewire_pipeline.cda.load_plan import CommitBudget
from guidewire_pipeline.cda.manifest import read_manifest
from guidewire_pipeline.cda.sync import sync_tables
from guidewire_pipeline.cli import main
from guidewire_pipeline.lakehouse import Lakehouse
from guidewire_pipeline.maintenance import hours_bronze_needs, maintain
from tests.raw.helpers import change_keys, committed_rows


def raw_with_tombstones(sample_cda: Path, root: Path) -> Path:
    """cc_claim loaded one batch per commit, then compacted: its small files are tombstoned."""
    from guidewire_pipeline.cda import delta_writer

    entry = read_manifest(str(sample_cda / "manifest.json")).entries["cc_claim"]
    location = Lakehouse(str(root)).location("raw", "cc_claim")
    result = delta_writer.sync_table(entry, location, budget=CommitBudget(max_batches=1), compact_min_small_files=2)
    assert result.ok and result.compacted_files > 1
    return Path(location.path)


def files_on_disk(table: Path) -> set[str]:
    return {p.name for p in table.glob("*.parquet")}


def bronze_holding(root: Path, up_to_ms: int) -> None:
    """A bronze table whose newest CDA batch is ``up_to_ms`` (its savepoint)."""
    stamp = datetime.fromtimestamp(up_to_ms / 1000, tz=UTC)
    write_deltalake(str(root / "bronze" / "cc_claim"),
                    pa.table({"id": [1], "gw_batch_ts": pa.array([stamp], pa.timestamp("us", tz="UTC"))}))


def test_raw_vacuum_keeps_what_bronze_has_not_read_then_frees_it(sample_cda: Path, tmp_path: Path):
    root = tmp_path / "delta"
    table = raw_with_tombstones(sample_cda, root)
    before = files_on_disk(table)
    live = {Path(u).name for u in DeltaTable(str(table)).file_uris()}
    assert before - live  # compacted-away files, still on disk
    lakehouse = Lakehouse(str(root))
    # No bronze yet: everything raw ever held is still to be read; a zero retention deletes nothing.
    assert hours_bronze_needs(lakehouse, "cc_claim", DeltaTable(str(table))) > 0
    [result] = maintain(lakehouse, ["raw"], retention_hours=0)
    assert result.vacuumed_files == 0 and files_on_disk(table) == before and "bronze has not read" in result.note
    # Bronze consumed every batch: the tombstoned files go, the live ones stay, the rows are whole.
    bronze_holding(root, read_manifest(str(sample_cda / "manifest.json")).entries["cc_claim"].manifest_watermark)
    [result] = maintain(lakehouse, ["raw"], retention_hours=0)
    assert result.vacuumed_files == len(before - live) and files_on_disk(table) == live
    rows = DeltaTable(str(table)).to_pyarrow_table(columns=["id", "gwcbi___seqval_hex"])
    assert change_keys(rows) == change_keys(committed_rows(sample_cda, "cc_claim"))


def test_shallow_raw_tables_are_never_vacuumed(sample_cda: Path, tmp_path: Path):
    root = tmp_path / "delta"
    entry = read_manifest(str(sample_cda / "manifest.json")).entries["cc_claim"]
    assert sync_tables([entry], str(root), clone_mode="shallow")[0].ok
    cda_files = sorted(p for p in (sample_cda / "cc_claim").rglob("*") if p.is_file())
    [result] = maintain(Lakehouse(str(root)), ["raw"], retention_hours=0)
    assert result.vacuumed_files == 0 and "never vacuumed" in result.note
    assert sorted(p for p in (sample_cda / "cc_claim").rglob("*") if p.is_file()) == cda_files


def test_the_command_compacts_the_other_layers_and_its_dry_run_changes_nothing(tmp_path: Path,
                                                                              capsys: pytest.CaptureFixture[str]):
    root = tmp_path / "delta"
    gold = root / "gold" / "mart"
    for i in range(4):  # four commits, four small files
        write_deltalake(str(gold), pa.table({"n": [i]}), mode="append")
    assert main(["vacuum", "--layers", "gold", "--dry-run", "--delta-root", str(root)]) == 0
    assert len(DeltaTable(str(gold)).file_uris()) == 4 and "would remove" in capsys.readouterr().out
    assert main(["vacuum", "--layers", "gold", "--retention-hours", "0", "--delta-root", str(root)]) == 0
    out = capsys.readouterr().out
    assert "gold/mart: 4 small files compacted" in out and "1 tables maintained" in out
    assert len(DeltaTable(str(gold)).file_uris()) == 1 and len(list(gold.glob("*.parquet"))) == 1
    assert sorted(DeltaTable(str(gold)).to_pyarrow_table()["n"].to_pylist()) == [0, 1, 2, 3]
    assert main(["vacuum", "--layers", "platinum", "--delta-root", str(root)]) == 2
