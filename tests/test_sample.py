"""The generator's output is a CDA tree that an independent reader (plain pyarrow + json) accepts."""

from __future__ import annotations

import json

import pyarrow.dataset as ds
import pyarrow.parquet as pq

from guidewire_pipeline.sample.generator import EMPTY_TABLE, advance, generate

CDC = {"gwcbi___seqval_hex", "gwcbi___operation", "gwcbi___connector_ts_ms", "gwcbi___payload_ts_ms",
       "gwcbi___lsn", "gwcbi___seqval", "gwcbi___tx_id"}


def folders(root, table):
    """(fingerprint, ts) of every timestamp folder, read with the standard library only."""
    return sorted((fp.name, int(ts.name)) for fp in (root / table).iterdir() for ts in fp.iterdir())


def test_generated_tree_invariants(tmp_path):
    root = tmp_path / "cda"
    generate(str(root), tables=6, batches=4, rows=50, seed=3)
    manifest = json.loads((root / "manifest.json").read_text())
    assert (root / "manifest.json").read_text().count("\n") > len(manifest)  # pretty-printed
    assert EMPTY_TABLE in manifest and not (root / EMPTY_TABLE).exists()
    for table, entry in manifest.items():
        if table == EMPTY_TABLE:
            continue
        watermark = int(entry["lastSuccessfulWriteTimestamp"])
        seen = folders(root, table)
        assert any(ts > watermark for _, ts in seen), f"{table} has no in-flight folder"
        committed = [(fp, ts) for fp, ts in seen if ts <= watermark]
        files = [f for fp, ts in committed for f in (root / table / fp / str(ts)).glob("*.parquet") if f.stat().st_size]
        data = ds.dataset(files, format="parquet").to_table()
        assert data.num_rows == entry["totalProcessedRecordsCount"]
        assert CDC <= set(data.column_names) and "id" in data.column_names
        assert set(data["gwcbi___operation"].to_pylist()) <= {0, 1, 2, 4}
        assert {1, 4} <= set(data["gwcbi___operation"].to_pylist())  # deletes and updates of earlier ids
        assert all(int(h, 16) >= 0 for h in data["gwcbi___seqval_hex"].to_pylist())
        assert len({len(h) for h in data["gwcbi___seqval_hex"].to_pylist()}) > 1  # hex lengths differ
        for fp, ts in committed:
            assert (root / table / fp / str(ts) / ".cda" / "batch-metrics.json").exists()
    assert len(manifest["cc_claim"]["schemaHistory"]) == 2
    empty = [f for f in (root / "cc_claim").rglob("*.parquet") if f.stat().st_size == 0]
    assert len(empty) == 1
    new_schema = sorted((root / "cc_claim").glob("*/*/*.parquet"))[-1]
    assert "severity" in pq.read_schema(new_schema).names


def test_foreign_keys_join(tmp_path):
    root = tmp_path / "cda"
    generate(str(root), tables=6, batches=3, rows=40, seed=5)
    read = lambda t: ds.dataset(sorted(str(p) for p in (root / t).rglob("*.parquet") if p.stat().st_size),  # noqa: E731
                                format="parquet").to_table()
    claim_ids = set(read("cc_claim")["id"].to_pylist())
    assert set(read("cc_exposure")["claimid"].to_pylist()) <= claim_ids
    assert set(read("cc_claim")["policyid"].to_pylist()) <= set(read("pc_policyperiod")["id"].to_pylist())


def test_deterministic_and_advance_moves_watermarks(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    generate(str(a), tables=2, batches=2, rows=20, seed=9)
    generate(str(b), tables=2, batches=2, rows=20, seed=9)
    first = sorted(p.name for p in a.rglob("*.parquet"))
    assert first == sorted(p.name for p in b.rglob("*.parquet"))
    assert pq.read_table(next(a.rglob("part-00000*.parquet"))).equals(
        pq.read_table(b / next(a.rglob("part-00000*.parquet")).relative_to(a)))
    before = json.loads((a / "manifest.json").read_text())
    after = advance(str(a), batches=2)
    for table in ("pc_policyperiod", "pc_policyline"):
        assert int(after[table]["lastSuccessfulWriteTimestamp"]) > int(before[table]["lastSuccessfulWriteTimestamp"])
        assert after[table]["totalProcessedRecordsCount"] == before[table]["totalProcessedRecordsCount"] + 3 * 20
        watermark = int(after[table]["lastSuccessfulWriteTimestamp"])
        assert any(ts > watermark for _, ts in folders(a, table))  # a new in-flight folder


def test_generate_to_s3(s3_bucket):
    from guidewire_pipeline.cda.manifest import read_manifest

    generate(f"s3://{s3_bucket}/cda", tables=2, batches=2, rows=10, seed=1)
    manifest = read_manifest(f"s3://{s3_bucket}/cda/manifest.json")
    assert manifest.entries["pc_policyperiod"].data_files_path == f"s3://{s3_bucket}/cda/pc_policyperiod"
