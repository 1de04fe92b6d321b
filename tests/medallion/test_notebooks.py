"""The notebooks are thin Databricks source files over ONE engine module; the engine's naming is the
lakehouse's, and its helpers behave as documented."""

from __future__ import annotations

import ast
import re
import sys

import pytest

from guidewire_pipeline.lakehouse import Lakehouse
from guidewire_pipeline.medallion.marts import MartDefinitionError, load_mart, load_marts
from guidewire_pipeline.medallion.notebooks import gw_medallion_engine as engine
from guidewire_pipeline.medallion.runners.base import ENGINE_FILE, NOTEBOOKS, NOTEBOOKS_DIR


@pytest.mark.parametrize("notebook", list(NOTEBOOKS.values()))
def test_notebooks_are_databricks_source_that_only_call_the_engine(notebook: str):
    source = (NOTEBOOKS_DIR / notebook).read_text(encoding="utf-8")
    assert source.splitlines()[0] == "# Databricks notebook source"
    assert re.search(r"^# MAGIC %md$", source, re.MULTILINE)
    code = [line for line in source.splitlines() if line.strip() and not line.startswith("#")]
    layer = next(name for name, file in NOTEBOOKS.items() if file == notebook)
    assert code == ["import gw_medallion_engine as engine",
                    f'dbutils.notebook.exit(engine.run_notebook(spark, dbutils, "{layer}"))']


def test_the_engine_imports_only_stdlib_and_pyspark_at_module_level():
    tree = ast.parse((NOTEBOOKS_DIR / ENGINE_FILE).read_text(encoding="utf-8"))
    top_level = set()
    for node in tree.body:  # module level only: the Sail adapters import deltalake when they run
        if isinstance(node, ast.Import):
            top_level |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            top_level.add((node.module or "").split(".")[0])
    assert {m for m in top_level if m not in sys.stdlib_module_names} == {"pyspark"}


@pytest.mark.parametrize("root", ["/tmp/x/delta", "/tmp/x/delta/", "file:///tmp/x", "s3://bucket/prefix", "s3://b"])
def test_engine_names_tables_like_the_lakehouse(root: str):
    lakehouse = Lakehouse(root, "cat")
    for layer in ("raw", "bronze", "silver", "gold"):
        ref = engine.table_ref("cat", root, layer, "cc_claim")
        assert (ref.full_name, ref.location) == (lakehouse.table_name(layer, "cc_claim"), lakehouse.uri(layer, "cc_claim"))
    with pytest.raises(ValueError, match="not a valid table"):
        engine.table_ref("cat", root, "raw", "cc-claim")


def test_chunks_are_whole_folders_of_about_chunk_rows():
    pending = [(10, 4), (20, 4), (30, 9), (40, 1), (50, 1)]
    assert engine.plan_chunks(pending, 8) == [(9, 20, 8), (20, 30, 9), (30, 50, 2)]
    assert engine.plan_chunks([], 8) == []
    assert engine.plan_chunks(pending, 10**9) == [(9, 50, 19)]


def test_marts_declare_their_inputs(tmp_path):
    marts = load_marts()
    assert marts["claims_by_state_month"].inputs == ("cc_claim", "cc_exposure", "cc_transaction")
    assert marts["policies_in_force_by_month"].inputs == ("pc_policyperiod",)
    for mart in marts.values():  # the engine reads the same inputs from the same line
        assert engine.mart_inputs(mart.sql) == mart.inputs
    (tmp_path / "no_inputs.sql").write_text("SELECT 1")
    with pytest.raises(MartDefinitionError, match="no_inputs.sql.*inputs"):
        load_mart(tmp_path / "no_inputs.sql")
