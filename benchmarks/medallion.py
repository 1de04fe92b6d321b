"""Medallion on the local engine (Sail): silver cost against history, first-load memory, a no-op step.

1. Silver on one table: the same new changes (one CDA folder) after a history of H and 10*H change rows.
   Floor: a silver that processes every new change row once (read the increment from bronze, latest
   change per id, append the winners to a scratch Delta table; no merge). Peak RSS of the process.
2. Bronze and silver first load of one raw table of ``--gb`` GB of parquet: peak RSS of the process tree.
3. The medallion step of a no-op run (nothing new anywhere), through ``LocalNotebookRunner``.

Each measured run is a subprocess of its own (one Sail start), sampled with ``TreeRssSampler``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
from deltalake import CommitProperties, write_deltalake

from benchmarks.common import (
    PYTHON,
    REPO_ROOT,
    TreeRssSampler,
    dir_bytes,
    log,
    print_table,
    save_results,
    temp_dir,
)

NOTEBOOKS = REPO_ROOT / "guidewire_pipeline" / "medallion" / "notebooks"
BASE_MS = 1_700_000_000_000


def _changes(first_seq: int, count: int, ids: int, folder_ms: int, width: int = 8) -> pa.Table:
    """``count`` change rows over ``ids`` ids: sequences ascending from ``first_seq``, updates mostly."""
    import numpy as np

    seq = np.arange(first_seq, first_seq + count, dtype=np.int64)
    id_ = (seq * 2654435761) % ids
    ops = np.where(seq % 17 == 0, 1, np.where(seq % 5 == 0, 0, 4)).astype(np.int32)
    columns = {
        "id": pa.array(id_),
        "name": pa.array([f"n{int(s) % 1000}" for s in seq]),
        "amount": pa.array((seq % 100_000).astype(np.float64) / 100),
        "payload": pa.array(["x" * width] * count),
        "gwcbi___seqval_hex": pa.array([format(int(s), "x") for s in seq]),
        "gwcbi___operation": pa.array(ops),
        "gwcbi___connector_ts_ms": pa.array(np.full(count, folder_ms, dtype=np.int64)),
        "gwcbi___payload_ts_ms": pa.array(np.full(count, folder_ms, dtype=np.int64)),
        "gwcbi___lsn": pa.array(seq),
        "gw_batch_ts_ms": pa.array(np.full(count, folder_ms, dtype=np.int64)),
        "gw_fingerprint": pa.array(["100"] * count),
    }
    return pa.table(columns)


def _append_raw(root: Path, table: pa.Table, folder_ms: int) -> None:
    write_deltalake(str(root / "raw" / "t"), table, mode="append",
                    configuration={"delta.appendOnly": "true"},
                    commit_properties=CommitProperties(custom_metadata={"gw_watermark": str(folder_ms)}))


ENGINE_SCRIPT = r"""
import json, sys, time
sys.path.insert(0, {notebooks!r})
import gw_medallion_engine as engine
from pyspark.sql import Window, functions as F
server, spark = engine.start_local_spark("main")
eng = engine.Engine.for_session(spark, "main", {root!r}, chunk_rows={chunk_rows})
eng.register_local_tables(["t"])
figures = {{}}
for layer in {layers!r}:
    started = time.perf_counter()
    if layer == "floor":
        # Every new change row once: the increment, the latest change per id, appended (no merge).
        after = {after}
        rows = spark.table("main.bronze.t").where(F.col("gw_batch_ts") > F.timestamp_millis(F.lit(after)))
        w = Window.partitionBy("id").orderBy(F.col("gw_seq_key").desc())
        rows.withColumn("r", F.row_number().over(w)).where("r = 1").drop("r").write.format("delta").mode("append").save({root!r} + "/floor")
        result = {{"status": "changed"}}
    else:
        [result] = getattr(eng, layer)(["t"])
    figures[layer] = {{"seconds": time.perf_counter() - started, "status": result["status"],
                      "rows_in": result.get("metadata", {{}}).get("rows_in")}}
print("FIGURES " + json.dumps(figures), flush=True)
spark.stop(); server.stop()
"""


def _engine(root: Path, layers: list[str], chunk_rows: int = 5_000_000, after: int = 0) -> dict[str, Any]:
    code = ENGINE_SCRIPT.format(notebooks=str(NOTEBOOKS), root=str(root), chunk_rows=chunk_rows, layers=layers,
                                after=after)
    started = time.perf_counter()
    process = subprocess.Popen([PYTHON, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                               cwd=str(REPO_ROOT))
    with TreeRssSampler(process.pid) as sampler:
        out, _ = process.communicate(timeout=3600)
    if process.returncode != 0:
        raise RuntimeError(f"engine run {layers} exited {process.returncode}")
    figures = json.loads(next(line for line in out.splitlines() if line.startswith("FIGURES "))[8:])
    return {"figures": figures, "process_seconds": time.perf_counter() - started,
            "peak_rss_mb": round(sampler.peak / 2**20)}


def silver_history(quick: bool) -> list[dict[str, Any]]:
    history, new = (100_000, 10_000) if quick else (300_000, 30_000)
    rows = []
    for factor in (1, 10):
        with temp_dir("medallion-history") as root:
            total = history * factor
            folders = 10
            for f in range(folders):  # history: folders of equal size, ids grow with history
                _append_raw(root, _changes(1 + f * total // folders, total // folders, total // 4, BASE_MS + f), BASE_MS + f)
            _engine(root, ["bronze", "silver"])
            new_ms = BASE_MS + 1000
            _append_raw(root, _changes(10 * total, new, total // 4, new_ms), new_ms)
            _engine(root, ["bronze"])
            measured = _engine(root, ["silver"])
            floor = _engine(root, ["floor"], after=BASE_MS + folders - 1)
            rows.append({"history rows": total, "new rows": new,
                         "silver s": round(measured["figures"]["silver"]["seconds"], 2),
                         "floor s": round(floor["figures"]["floor"]["seconds"], 2),
                         "silver peak RSS MB": measured["peak_rss_mb"], "floor peak RSS MB": floor["peak_rss_mb"]})
    rows[1]["10x history / 1x time"] = round(rows[1]["silver s"] / rows[0]["silver s"], 2)
    return rows


def first_load(gb: float) -> dict[str, Any]:
    with temp_dir("medallion-first-load") as root:
        per_folder = 1_000_000
        folder, written = 0, 0
        while True:
            _append_raw(root, _changes(1 + folder * per_folder, per_folder, 50_000_000, BASE_MS + folder, width=120),
                        BASE_MS + folder)
            folder += 1
            written = dir_bytes(root / "raw" / "t")
            if written >= gb * 1e9:
                break
        log(f"raw: {written / 1e9:.2f} GB of parquet, {folder} folders of {per_folder} rows")
        bronze = _engine(root, ["bronze"], chunk_rows=2_000_000)
        silver = _engine(root, ["silver"], chunk_rows=2_000_000)
        return {"raw GB": round(written / 1e9, 2), "raw rows": folder * per_folder,
                "bronze s": round(bronze["figures"]["bronze"]["seconds"]), "bronze peak RSS MB": bronze["peak_rss_mb"],
                "silver s": round(silver["figures"]["silver"]["seconds"]), "silver peak RSS MB": silver["peak_rss_mb"]}


def noop_step() -> dict[str, Any]:
    code = r"""
import sys, time, json
sys.path.insert(0, "REPO_ROOT_PATH")
import dagster as dg, pyarrow as pa
from tests.medallion.steps import run_medallion_layers
from guidewire_pipeline.medallion.runners.local import LocalNotebookRunner
from guidewire_pipeline.settings import Settings
from tests.medallion.raw_tables import append_raw_batch
from tests.medallion.test_medallion_job import CLAIM, EXPOSURE, TRANSACTION, POLICY, cdc_table, claim, exposure, transaction, policy
import tempfile
root = tempfile.mkdtemp()
tables = ["cc_claim", "cc_exposure", "cc_transaction", "pc_policyperiod"]
rows = {"cc_claim": cdc_table(CLAIM, [claim(1, "01", 0, "CA", "2024-01-10", "open")]),
        "cc_exposure": cdc_table(EXPOSURE, [exposure(1, 1)]),
        "cc_transaction": cdc_table(TRANSACTION, [transaction(1, 1, "payment", "40.00")]),
        "pc_policyperiod": cdc_table(POLICY, [policy(1, "PersonalAuto", "2024-01-15", "2024-04-15", "in_force", "100.00")])}
for t in tables:
    append_raw_batch(root, t, rows[t], 1700000000000)
settings = Settings(manifest_uri="x", delta_root=root, sharepack=None, ray_address=None, databricks_host=None)
times = []
@dg.op
def step(context):
    started = time.perf_counter()
    run_medallion_layers(context, LocalNotebookRunner(), settings, tables, None)
    times.append(time.perf_counter() - started)
@dg.job
def job():
    step()
for _ in range(3):
    job.execute_in_process()
print("FIGURES " + json.dumps(times))
""".replace("REPO_ROOT_PATH", str(REPO_ROOT))
    done = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, cwd=str(REPO_ROOT), timeout=600)
    lines = [line for line in done.stdout.splitlines() if line.startswith("FIGURES ")]
    if not lines:
        raise RuntimeError(f"no-op run failed: {done.stderr[-3000:]}")
    times = json.loads(lines[0][8:])
    return {"first run s (loads)": round(times[0], 2), "no-op run s": round(min(times[1:]), 2)}


def run(quick: bool = False) -> dict[str, Any]:
    gb = float(os.environ.get("GW_BENCH_MEDALLION_GB") or (0.2 if quick else 2.0))
    results: dict[str, Any] = {}
    results["noop"] = noop_step()
    print_table("Medallion step of a no-op run (bronze+silver+gold, 4 tables, 2 marts, one process)", [results["noop"]])
    results["silver_history"] = silver_history(quick)
    print_table("Silver on one table: same new changes, 1x and 10x history", results["silver_history"])
    results["first_load"] = first_load(gb)
    print_table(f"First load of a {gb} GB raw table (bronze then silver, chunks of 2M rows)", [results["first_load"]])
    save_results("medallion", results)
    return results


if __name__ == "__main__":
    run(quick="--quick" in sys.argv)
