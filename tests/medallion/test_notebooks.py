"""The notebooks are Databricks source files that stand alone: format, one identical Pipes shim,
and imports limited to what a cluster has (stdlib, pyarrow, deltalake, dagster_pipes)."""

from __future__ import annotations

import ast
import re
import sys

import pytest

from guidewire_pipeline.medallion.marts import MartDefinitionError, load_mart, load_marts
from guidewire_pipeline.medallion.runners.base import NOTEBOOKS_DIR

NOTEBOOKS = ["01_bronze.py", "02_silver.py", "03_gold.py"]
ALLOWED_IMPORTS = {"pyarrow", "deltalake", "dagster_pipes"}


def shim(source: str) -> str:
    start = source.index("# MAGIC ## Parameters and reporting (Pipes shim)")
    end = source.index("    return options\n", start)
    return source[start:end]


@pytest.mark.parametrize("notebook", NOTEBOOKS)
def test_databricks_source_format_and_imports(notebook: str):
    source = (NOTEBOOKS_DIR / notebook).read_text(encoding="utf-8")
    assert source.splitlines()[0] == "# Databricks notebook source"
    assert source.count("\n# COMMAND ----------\n") >= 3
    assert re.search(r"^# MAGIC %md$", source, re.MULTILINE)
    top_level = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            top_level |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            top_level.add((node.module or "").split(".")[0])
    foreign = {m for m in top_level if m not in sys.stdlib_module_names and m not in ALLOWED_IMPORTS}
    assert not foreign, (
        f"{notebook} imports {foreign}: a cluster only has the stdlib, pyarrow, deltalake and dagster_pipes"
    )


def test_every_notebook_carries_the_same_shim():
    shims = {shim((NOTEBOOKS_DIR / n).read_text(encoding="utf-8")) for n in NOTEBOOKS}
    assert len(shims) == 1, "the Pipes shim cells differ between notebooks: edit them together"


def test_marts_declare_their_inputs(tmp_path):
    marts = load_marts()
    assert marts["claims_by_state_month"].inputs == ("cc_claim", "cc_exposure", "cc_transaction")
    assert marts["policies_in_force_by_month"].inputs == ("pc_policyperiod",)
    (tmp_path / "no_inputs.sql").write_text("SELECT 1")
    with pytest.raises(MartDefinitionError, match="no_inputs.sql.*inputs"):
        load_mart(tmp_path / "no_inputs.sql")


def test_a_notebook_runs_by_hand_with_name_value_arguments(delta_root):
    """Without Dagster or Databricks: parameters as arguments, one JSON line per table on stdout."""
    import json
    import subprocess

    import pyarrow as pa

    from tests.medallion.raw_tables import INSERT, append_raw_batch, change_rows

    rows = change_rows([{"id": 1, "seq": "01", "op": INSERT, "name": "a"}], [pa.field("name", pa.string())])
    append_raw_batch(delta_root, "t_hand", rows, 1_700_000_000_000)
    notebook = str(NOTEBOOKS_DIR / "01_bronze.py")
    done = subprocess.run(
        [sys.executable, notebook, 'tables=["t_hand", "t_absent"]', f"delta_root={delta_root}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    results = {r["table"]: r for r in map(json.loads, done.stdout.strip().splitlines())}
    assert (results["t_hand"]["status"], results["t_hand"]["rows_out"]) == ("ok", 1)
    assert results["t_absent"]["status"] == "skipped"

    missing = subprocess.run([sys.executable, notebook], capture_output=True, text=True, timeout=120)
    assert missing.returncode != 0 and "['tables', 'delta_root'] are missing" in missing.stderr
