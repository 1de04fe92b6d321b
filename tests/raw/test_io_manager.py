"""The Ray Delta I/O manager's Dagster contract: per-partition metadata in multi-partition runs,
and lazy handles for downstream assets."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest
from deltalake import DeltaTable

from guidewire_pipeline.raw.assets import build_raw_asset
from guidewire_pipeline.raw.partitions import GUIDEWIRE_TABLES, RAW_ASSET_KEY, guidewire_tables
from tests.helpers import resources_for as deployment_resources
from tests.helpers import settings_for
from tests.raw.helpers import committed_rows

pytestmark = pytest.mark.usefixtures("ray_local")


cda_raw = build_raw_asset(60)


def resources_for(sample_cda: Path, tmp_path: Path) -> dict:
    return deployment_resources(settings_for(str(sample_cda / "manifest.json"), str(tmp_path / "d")))


def test_each_partition_of_a_range_run_gets_its_own_figures(sample_cda: Path, tmp_path: Path):
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(GUIDEWIRE_TABLES, ["cc_claim", "pc_policyline"])
        result = dg.materialize([cda_raw], instance=instance, resources=resources_for(sample_cda, tmp_path), tags={
            "dagster/asset_partition_range_start": "cc_claim", "dagster/asset_partition_range_end": "pc_policyline"})
        assert result.success
        by_partition = {e.partition: e.materialization.metadata for e in result.get_asset_materialization_events()}
        assert set(by_partition) == {"cc_claim", "pc_policyline"}
        for table, metadata in by_partition.items():
            assert metadata["rows_added"].value == committed_rows(sample_cda, table).num_rows
            assert metadata["dagster/uri"].value.endswith(f"/raw/{table}")
        claim_columns = {c.name for c in by_partition["cc_claim"]["dagster/column_schema"].schema.columns}
        line_columns = {c.name for c in by_partition["pc_policyline"]["dagster/column_schema"].schema.columns}
        assert "claimnumber" in claim_columns and "claimnumber" not in line_columns


@pytest.mark.parametrize("read_as", ["delta", "ray"])
def test_downstream_assets_get_a_lazy_handle(sample_cda: Path, tmp_path: Path, read_as: str):
    @dg.asset(partitions_def=guidewire_tables,
              ins={"raw": dg.AssetIn(key=RAW_ASSET_KEY, metadata={"read_as": read_as})})
    def row_count(raw) -> dg.MaterializeResult:
        rows = len(raw.to_pyarrow_table()) if isinstance(raw, DeltaTable) else raw.count()
        return dg.MaterializeResult(metadata={"rows": rows, "handle": type(raw).__name__})

    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(GUIDEWIRE_TABLES, ["cc_exposure"])
        result = dg.materialize([cda_raw, row_count], instance=instance, partition_key="cc_exposure",
                                resources=resources_for(sample_cda, tmp_path))
        assert result.success
        metadata = result.asset_materializations_for_node("row_count")[0].metadata
        assert metadata["rows"].value == committed_rows(sample_cda, "cc_exposure").num_rows
        assert metadata["handle"].value == ("DeltaTable" if read_as == "delta" else "Dataset")
