"""Independent readers for raw-layer tests: plain pyarrow over the CDA tree, no project code."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
from deltalake import DeltaTable


def manifest(root: Path) -> dict:
    return json.loads((root / "manifest.json").read_text())


def committed_folders(root: Path, table: str) -> list[Path]:
    watermark = int(manifest(root)[table]["lastSuccessfulWriteTimestamp"])
    folders = [ts for fp in (root / table).iterdir() for ts in fp.iterdir()
               if len(ts.name) == 13 and ts.name.isdigit() and int(ts.name) <= watermark]
    return sorted(folders, key=lambda p: int(p.name))


def committed_rows(root: Path, table: str) -> pa.Table:
    files = [str(f) for folder in committed_folders(root, table) for f in sorted(folder.glob("*.parquet"))
             if f.stat().st_size]
    return ds.dataset(files, format="parquet").to_table()


def change_keys(table: pa.Table) -> list[tuple[int, str]]:
    return sorted(zip(table["id"].to_pylist(), table["gwcbi___seqval_hex"].to_pylist(), strict=True))


def delta_keys(uri: str, storage_options: dict | None = None) -> list[tuple[int, str]]:
    return change_keys(DeltaTable(uri, storage_options=storage_options).to_pyarrow_table(
        columns=["id", "gwcbi___seqval_hex"]))


def committed_lineage(root: Path, table: str) -> list[tuple[int, str, int, str]]:
    """(id, seqval, folder timestamp, fingerprint) of every committed row, read from the CDA tree."""
    rows = []
    for folder in committed_folders(root, table):
        for f in sorted(folder.glob("*.parquet")):
            if f.stat().st_size:
                part = ds.dataset(str(f), format="parquet").to_table(columns=["id", "gwcbi___seqval_hex"])
                rows += [(i, s, int(folder.name), folder.parent.name)
                         for i, s in zip(part["id"].to_pylist(), part["gwcbi___seqval_hex"].to_pylist(), strict=True)]
    return sorted(rows)


def delta_lineage(table: pa.Table) -> list[tuple[int, str, int, str]]:
    return sorted(zip(table["id"].to_pylist(), table["gwcbi___seqval_hex"].to_pylist(),
                      table["gw_batch_ts_ms"].to_pylist(), table["gw_fingerprint"].to_pylist(), strict=True))


def commit_ranges(uri: str) -> list[tuple[int, int, int]]:
    """(first folder, last folder, folders) of every commit of CDA batches, in version order."""
    history = sorted(DeltaTable(uri).history(), key=lambda h: h["version"])
    return [(int(h["gw_first_folder"]), int(h["gw_watermark"]), int(h["gw_folders"]))
            for h in history if "gw_first_folder" in h]


def assert_exactly_once(root: Path, table: str, target: Path) -> None:
    """Every committed CDA row once, in the folder it came from; the savepoint at the last folder;
    the commits cover the folders in order, each folder in exactly one commit."""
    from guidewire_pipeline.cda.savepoint import APP_ID

    delta = DeltaTable(str(target))
    folders = sorted({int(f.name) for f in committed_folders(root, table)})
    assert delta_lineage(delta.to_pyarrow_table(columns=["id", "gwcbi___seqval_hex", "gw_batch_ts_ms",
                                                         "gw_fingerprint"])) == committed_lineage(root, table)
    assert delta.transaction_version(APP_ID) == folders[-1]
    covered = []
    for first, last, count in commit_ranges(str(target)):
        inside = [f for f in folders if first <= f <= last]
        assert len(inside) == count and inside[0] == first and inside[-1] == last
        covered += inside
    assert covered == folders  # ascending, no folder twice, none left out
