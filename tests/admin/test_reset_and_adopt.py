"""``guidewire-pipeline reset`` and ``adopt``: what a user runs when a raw table must be reloaded or
was written by another tool."""

from __future__ import annotations

from pathlib import Path

import pyarrow.dataset as ds
import pytest
from deltalake import DeltaTable, write_deltalake

from guidewire_pipeline.cda.load_plan import plan_table
from guidewire_pipeline.cda.manifest import read_manifest
from guidewire_pipeline.cda.savepoint import APP_ID
from guidewire_pipeline.cda.sync import sync_tables
from guidewire_pipeline.cli import main
from tests.raw.helpers import assert_exactly_once, committed_rows


def test_reset_dry_run_deletes_nothing_then_reset_and_sync_restore_the_exact_rows(
        sample_cda: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    root = tmp_path / "delta"
    entry = read_manifest(str(sample_cda / "manifest.json")).entries["cc_claim"]
    assert sync_tables([entry], str(root))[0].ok
    before = sorted(p for p in (root / "raw" / "cc_claim").rglob("*") if p.is_file())

    assert main(["reset", "cc_claim", "--layers", "raw", "--dry-run", "--delta-root", str(root)]) == 0
    out = capsys.readouterr().out
    assert "Would delete 1 table(s)" in out and str(root / "raw" / "cc_claim") in out and "nothing was deleted" in out
    assert sorted(p for p in (root / "raw" / "cc_claim").rglob("*") if p.is_file()) == before

    assert main(["reset", "cc_claim", "--layers", "raw", "--yes", "--delta-root", str(root)]) == 0
    assert not (root / "raw" / "cc_claim").exists()
    [again] = sync_tables([entry], str(root))
    assert again.status == "loaded" and again.watermark_before is None
    assert_exactly_once(sample_cda, "cc_claim", root / "raw" / "cc_claim")


def test_reset_asks_first_and_refuses_unknown_layers(sample_cda: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    root = tmp_path / "delta"
    entry = read_manifest(str(sample_cda / "manifest.json")).entries["cc_claim"]
    assert sync_tables([entry], str(root))[0].ok
    monkeypatch.setattr("builtins.input", lambda prompt: "cc_contact")  # the wrong name
    assert main(["reset", "cc_claim", "--delta-root", str(root)]) == 1
    assert "nothing was deleted" in capsys.readouterr().out and (root / "raw" / "cc_claim").exists()
    assert main(["reset", "cc_claim", "--layers", "raw,platinum", "--delta-root", str(root)]) == 2
    assert "platinum" in capsys.readouterr().err


def test_a_shallow_reset_never_touches_the_cda_files(sample_cda: Path, tmp_path: Path):
    root = tmp_path / "delta"
    entry = read_manifest(str(sample_cda / "manifest.json")).entries["cc_claim"]
    assert sync_tables([entry], str(root), clone_mode="shallow")[0].ok
    cda_files = sorted(p for p in (sample_cda / "cc_claim").rglob("*") if p.is_file())
    assert main(["reset", "cc_claim", "--yes", "--delta-root", str(root)]) == 0
    assert not (root / "raw" / "cc_claim").exists()
    assert sorted(p for p in (sample_cda / "cc_claim").rglob("*") if p.is_file()) == cda_files


def _foreign_copy(sample_cda: Path, target: Path, watermark: int) -> int:
    """What another tool might have written: CDA's rows up to ``watermark``, no savepoint, no lineage."""
    entry = read_manifest(str(sample_cda / "manifest.json")).entries["cc_claim"]
    files = [f.location.path for b in plan_table(entry, None).batches if b.timestamp <= watermark for f in b.files]
    rows = ds.dataset(files, format="parquet").to_table()
    write_deltalake(str(target), rows)
    return rows.num_rows


def test_adopt_checks_the_rows_records_the_savepoint_and_the_next_sync_loads_the_rest(
        sample_cda: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    root = tmp_path / "delta"
    manifest_uri = str(sample_cda / "manifest.json")
    entry = read_manifest(manifest_uri).entries["cc_claim"]
    first_two = [b.timestamp for b in plan_table(entry, None).batches][:2]
    target = root / "raw" / "cc_claim"
    _foreign_copy(sample_cda, target, first_two[-1])
    [refused] = sync_tables([entry], str(root))
    assert refused.status == "failed" and "adopt cc_claim" in refused.error

    # A wrong watermark: the rows do not match, nothing is recorded.
    assert main(["adopt", "cc_claim", "--watermark", str(first_two[0]), "--manifest", manifest_uri,
                 "--delta-root", str(root)]) == 1
    assert "reset it instead" in capsys.readouterr().err
    assert DeltaTable(str(target)).transaction_version(APP_ID) is None

    assert main(["adopt", "cc_claim", "--watermark", str(first_two[-1]), "--manifest", manifest_uri,
                 "--delta-root", str(root)]) == 0
    assert "Adopted cc_claim" in capsys.readouterr().out
    [loaded] = sync_tables([entry], str(root))
    assert loaded.status == "loaded", loaded.error
    assert loaded.watermark_before == first_two[-1] and loaded.watermark_after == entry.manifest_watermark
    table = DeltaTable(str(target)).to_pyarrow_table(columns=["id", "gwcbi___seqval_hex"])
    expected = committed_rows(sample_cda, "cc_claim").select(["id", "gwcbi___seqval_hex"])
    assert sorted(table.to_pylist(), key=str) == sorted(expected.to_pylist(), key=str)
    [settled] = sync_tables([entry], str(root))
    assert settled.status == "up_to_date"


def test_adopt_refuses_a_table_that_already_has_a_savepoint(sample_cda: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]):
    root = tmp_path / "delta"
    manifest_uri = str(sample_cda / "manifest.json")
    assert sync_tables([read_manifest(manifest_uri).entries["cc_claim"]], str(root))[0].ok
    assert main(["adopt", "cc_claim", "--watermark", "1700000000000", "--manifest", manifest_uri,
                 "--delta-root", str(root)]) == 1
    assert "already has a savepoint" in capsys.readouterr().err
