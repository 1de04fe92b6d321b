"""Every layer is a Unity Catalog table, checked against the fake workspace through the real databricks-sdk:
raw registered by ``guidewire_pipeline.unity_catalog`` (tables endpoint, or a SQL warehouse through the
Statement Execution API), bronze/silver/gold created by the engine's Spark in the Databricks tasks."""

# No "from __future__ import annotations": Dagster reads the context type hints at runtime.

from pathlib import Path

import dagster as dg
import pyarrow as pa
import pytest
from deltalake import DeltaTable

from guidewire_pipeline.lakehouse import Lakehouse
from guidewire_pipeline.medallion.runners.base import NotebookRunner
from guidewire_pipeline.medallion.runners.databricks import DatabricksNotebookRunner
from guidewire_pipeline.raw.partitions import gold_asset_key
from guidewire_pipeline.settings import Settings
from guidewire_pipeline.unity_catalog import UnityCatalogError, arrow_columns, register_tables
from tests.fakes import databricks_jobs, uc_tables
from tests.medallion.raw_tables import INSERT, append_raw_batch
from tests.medallion.steps import run_medallion_layers
from tests.medallion.test_medallion_job import (
    CLAIM,
    EXPOSURE,
    TRANSACTION,
    cdc_table,
    claim,
    exposure,
    transaction,
)

RAW = {
    "cc_claim": (CLAIM, [claim(1, "01", INSERT, "CA", "2024-01-10", "open")]),
    "cc_exposure": (EXPOSURE, [exposure(1, 1)]),
    "cc_transaction": (TRANSACTION, [transaction(1, 1, "payment", "40.00")]),
}


@pytest.fixture
def ws(databricks_workspace):
    databricks_jobs.install(databricks_workspace)
    uc_tables.install(databricks_workspace)
    return databricks_workspace


def _raw(delta_root: Path) -> list[tuple[str, str, list]]:
    tables = []
    for name, (business, rows) in RAW.items():
        append_raw_batch(delta_root, name, cdc_table(business, rows), 1_700_000_001_000)
        arrow = pa.schema(DeltaTable(str(delta_root / "raw" / name)).schema().to_arrow())
        tables.append(("raw", name, arrow_columns(arrow)))
    return tables


@pytest.mark.parametrize("warehouse", [None, "fake-warehouse"], ids=["tables_endpoint", "sql_warehouse"])
def test_raw_tables_are_registered_idempotently(ws, delta_root: Path, warehouse):
    lakehouse = Lakehouse(str(delta_root))
    tables = _raw(delta_root)
    client = ws.client()

    first = register_tables(client, lakehouse, tables, warehouse_id=warehouse)

    assert [(t.full_name, t.action) for t in first] == [(f"main.raw.{n}", "created") for n in RAW]
    claim_table = client.tables.get("main.raw.cc_claim")
    assert claim_table.storage_location == f"{delta_root}/raw/cc_claim"
    assert claim_table.table_type.value == "EXTERNAL" and claim_table.data_source_format.value == "DELTA"
    assert "gw_batch_ts_ms" in [c.name for c in claim_table.columns]
    assert client.schemas.get("main.raw").name == "raw"
    if warehouse:
        assert ("POST", "/api/2.0/sql/statements/") in ws.writes()  # the SDK's path
    else:
        assert ("POST", "/api/2.1/unity-catalog/tables") in ws.writes()
    writes = len(ws.writes())
    assert [t.action for t in register_tables(client, lakehouse, tables, warehouse_id=warehouse)] == ["unchanged"] * 3
    assert len(ws.writes()) == writes  # the second call only reads

    with pytest.raises(UnityCatalogError, match="main.raw.cc_claim is already registered at .*drop that table"):
        register_tables(client, Lakehouse(str(delta_root / "elsewhere")), tables[:1], warehouse_id=warehouse)


def test_a_statement_the_warehouse_refuses_names_the_table(ws, tmp_path):
    with pytest.raises(UnityCatalogError, match="main.raw.t_missing.*DELTA_TABLE_NOT_FOUND|main.raw.t_missing.*No Delta"):
        register_tables(ws.client(), Lakehouse(str(tmp_path)), [("raw", "t_missing", [])], warehouse_id="fake-warehouse")


def test_all_four_layers_are_unity_catalog_tables(ws, delta_root: Path, medallion_settings: Settings):
    register_tables(ws.client(), Lakehouse(str(delta_root)), _raw(delta_root))
    runner = DatabricksNotebookRunner.from_env(existing_cluster_id="fake-cluster", poll_interval_seconds=0.05,
                                               max_poll_interval_seconds=0.2)

    @dg.op
    def medallion(context: dg.OpExecutionContext, notebook_runner: NotebookRunner) -> None:
        run_medallion_layers(context, notebook_runner, medallion_settings, list(RAW), ["claims_by_state_month"])

    @dg.job
    def job() -> None:
        medallion()

    with dg.instance_for_test() as instance:
        assert job.execute_in_process(resources={"notebook_runner": runner}, instance=instance).success
        gold = instance.fetch_materializations(gold_asset_key("claims_by_state_month"), limit=1).records[0]
        assert gold.asset_materialization.metadata["dagster/table_name"].value == "main.gold.claims_by_state_month"
    registry = ws.uc_tables
    for layer in ("raw", "bronze", "silver"):
        for name in RAW:
            assert registry[f"main.{layer}.{name}"]["storage_location"] == f"{delta_root}/{layer}/{name}"
    gold_table = ws.client().tables.get("main.gold.claims_by_state_month")
    assert gold_table.storage_location == f"{delta_root}/gold/claims_by_state_month"
    assert "claim_count" in [c.name for c in gold_table.columns]
