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
    folders = [ts for fp in (root / table).iterdir() for ts in fp.iterdir() if int(ts.name) <= watermark]
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
