"""The real bronze and silver notebooks as Databricks job runs on the fake workspace: parameters
from widgets, Pipes over the fake DBFS, per-table messages landing on each partition."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pyarrow as pa
import pytest
from deltalake import DeltaTable

from guidewire_pipeline.medallion.defs import build_medallion_assets
from guidewire_pipeline.raw.partitions import GUIDEWIRE_TABLES, SILVER_ASSET_KEY
from guidewire_pipeline.settings import Settings
from tests.fakes import databricks_jobs
from tests.medallion.raw_tables import DELETE, INSERT, UPDATE, append_raw_batch, change_rows

FAST = {"poll_interval_seconds": 0.05, "max_poll_interval_seconds": 0.2, "message_poll_interval_seconds": 0.1}


@pytest.fixture
def ws(databricks_workspace):
    databricks_jobs.install(databricks_workspace)
    return databricks_workspace


def test_bronze_and_silver_notebooks_run_as_databricks_jobs(
    ws, delta_root: Path, medallion_settings: Settings
):
    from guidewire_pipeline.medallion.runners.databricks import DatabricksNotebookRunner

    business = [pa.field("name", pa.string())]
    append_raw_batch(
        delta_root,
        "t_one",
        change_rows(
            [
                {"id": 1, "seq": "ff", "op": INSERT, "name": "a"},
                {"id": 1, "seq": "100", "op": UPDATE, "name": "b"},
                {"id": 2, "seq": "02", "op": INSERT, "name": "c"},
                {"id": 2, "seq": "03", "op": DELETE},
            ],
            business,
        ),
        1_700_000_000_000,
    )
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(GUIDEWIRE_TABLES, ["t_one", "t_two"])
        result = dg.materialize(
            build_medallion_assets(medallion_settings)[:2],
            instance=instance,
            resources={
                "notebook_runner": DatabricksNotebookRunner.from_env(
                    existing_cluster_id="fake-cluster", **FAST
                )
            },
            tags={
                "dagster/asset_partition_range_start": "t_one",
                "dagster/asset_partition_range_end": "t_two",
            },
        )
        assert result.success
        silver = {
            r.asset_materialization.partition: r.asset_materialization.metadata
            for r in instance.fetch_materializations(SILVER_ASSET_KEY, limit=10).records
        }
    assert silver["t_one"]["silver_rows"].value == 1
    assert silver["t_two"]["status"].value == "skipped"
    assert "databricks_run_id" in silver["t_one"]
    rows = DeltaTable(str(delta_root / "silver" / "t_one")).to_pyarrow_table().to_pylist()
    assert [(r["id"], r["name"]) for r in rows] == [(1, "b")]
    assert len(ws.jobs.runs) == 2  # one Databricks run per layer, not per table
