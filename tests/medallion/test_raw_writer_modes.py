"""Bronze and silver over raw tables written by the real raw writer (``sync_tables``) from the sample
CDA tree, in both clone modes: deep (copied files, read through the change data feed) and shallow
(add actions pointing at the CDA files in place, read file by file). Silver must equal the reference."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pyarrow as pa
import pytest
from deltalake import DeltaTable, QueryBuilder

from guidewire_pipeline.cda.manifest import read_manifest
from guidewire_pipeline.cda.sync import sync_tables
from guidewire_pipeline.raw.partitions import GUIDEWIRE_TABLES
from guidewire_pipeline.settings import Settings
from tests.medallion.raw_tables import reference_current_state
from tests.medallion.steps import materialize_bronze_silver

TABLES = ["cc_claim", "pc_policyperiod"]  # both gain a column half-way (a second fingerprint)


@pytest.mark.parametrize("clone_mode", ["deep", "shallow"])
def test_silver_from_the_raw_writer(
    clone_mode: str,
    sample_cda: Path,
    delta_root: Path,
    medallion_settings: Settings,
    instance: dg.DagsterInstance,
):
    manifest = read_manifest(str(sample_cda / "manifest.json"))
    sync_tables([manifest.entries[t] for t in TABLES], str(delta_root), clone_mode=clone_mode)
    instance.add_dynamic_partitions(GUIDEWIRE_TABLES, TABLES)
    result = materialize_bronze_silver(medallion_settings, instance, tags={
        "dagster/asset_partition_range_start": TABLES[0], "dagster/asset_partition_range_end": TABLES[-1]})
    assert result.success
    for table in TABLES:
        raw = DeltaTable(str(delta_root / "raw" / table))
        # QueryBuilder reads both modes (row order only breaks sequence ties, which the sample has none of).
        raw_rows = pa.table(
            QueryBuilder().register("raw", raw).execute("select * from raw").read_all()
        ).to_pylist()
        value_columns = [
            c for c in pa.schema(raw.schema().to_arrow()).names if not c.startswith(("gwcbi___", "gw_")) and c != "id"
        ]
        silver = [r for r in DeltaTable(str(delta_root / "silver" / table)).to_pyarrow_table().to_pylist()
                  if not r["gw_deleted"]]
        assert {r["id"]: {c: r[c] for c in value_columns} for r in silver} == reference_current_state(
            raw_rows, value_columns
        )
        bronze = DeltaTable(str(delta_root / "bronze" / table))
        # Bronze lineage: each row names its own CDA folder (the raw row's gw_batch_ts_ms).
        raw_lineage = sorted((r["id"], r["gwcbi___seqval_hex"], r["gw_batch_ts_ms"]) for r in raw_rows)
        bronze_lineage = sorted((r["id"], r["gwcbi___seqval_hex"], int(r["gw_batch_ts"].timestamp() * 1000))
                                for r in bronze.to_pyarrow_table().to_pylist())
        assert bronze_lineage == raw_lineage
        assert set(
            pa.table(bronze.to_pyarrow_table(columns=["gw_fingerprint"]))["gw_fingerprint"].to_pylist()
        ) == {fp.fingerprint for fp in manifest.entries[table].fingerprints}
