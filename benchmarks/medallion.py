"""Medallion on the local engine (Sail + delta-rs): silver against history, first-load memory, a no-op step.

Workload: the assumption every figure rests on. Guidewire ids grow monotonically (a new record takes
the next id), and changes concern young records: of the new change rows, 30% insert new ids and the
rest update (65%) or delete (5%) a record whose age (newest id minus its id) is drawn from an
exponential distribution of mean ``MEAN_AGE`` records, whatever the history's size. "Uniform" is the
worst case for pruning, reported as measured: the same number of changes, with every update and
delete of a record drawn uniformly over all ids. Rows carry ``PAYLOAD`` random letters, so that the
parquet does not compress to nothing (about 100 bytes a row).

1. Silver on one table: the same 10,000 new change rows (one CDA folder) after a history of H and
   10*H change rows, loaded by the engine. Floor: a silver that processes every new change row once
   (the increment from bronze, the latest change per id, appended to a scratch Delta table; no merge).
   Peak RSS of the process tree, the files the merge rewrote and the silver files it kept sorted.
2. Bronze and silver first load of one raw table of ``GB`` GB of parquet (``GW_BENCH_MEDALLION_GB``,
   a comma-separated list: default 0.5,1,2; quick 0.2), both layers in ONE process as the local runner
   runs them: peak RSS of the process tree, and of each layer.
3. The medallion step of a no-op run (nothing new anywhere), through ``LocalNotebookRunner``, with the
   local process's own start and per-layer seconds.

Each measured run is a subprocess of its own (one Sail start), sampled with ``TreeRssSampler``; the
engine scripts set the engine's allocator variables first, as ``local_host`` does.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
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
MEAN_AGE = 5_000  # records: how far back from the newest id an update or delete reaches, on average
INSERT_SHARE, DELETE_SHARE = 0.30, 0.05
PAYLOAD = 120  # random letters per row


class Changes:
    """A table's change stream: sequences ascend, new ids ascend from 0 (``next_id`` is the next one)."""

    def __init__(self, seed: int = 1) -> None:
        self.rng = np.random.default_rng(seed)
        self.next_id = 0
        self.next_seq = 1

    def folder(self, count: int, folder_ms: int, uniform: bool = False) -> pa.Table:
        rng = self.rng
        seq = np.arange(self.next_seq, self.next_seq + count, dtype=np.int64)
        self.next_seq += count
        kind = rng.random(count)
        insert = kind < INSERT_SHARE
        # The newest id when each change happens (inserts and updates interleave in sequence order).
        newest = self.next_id + np.cumsum(insert) - 1
        self.next_id += int(insert.sum())
        ids = newest.copy()
        older = ~insert
        if uniform:
            ids[older] = (rng.random(int(older.sum())) * np.maximum(newest[older] + 1, 1)).astype(np.int64)
        else:
            age = rng.exponential(MEAN_AGE, int(older.sum())).astype(np.int64)
            ids[older] = np.maximum(newest[older] - age, 0)
        ops = np.where(insert, 0, np.where(kind > 1 - DELETE_SHARE, 1, 4)).astype(np.int32)
        letters = rng.integers(97, 123, count * PAYLOAD, dtype=np.uint8).tobytes()
        payload = pa.array(np.frombuffer(letters, dtype=f"S{PAYLOAD}")).cast(pa.string())
        stamp = np.full(count, folder_ms, dtype=np.int64)
        return pa.table({
            "id": pa.array(ids),
            "name": pa.array(np.char.add("n", (seq % 1000).astype(str))),
            "amount": pa.array((seq % 100_000).astype(np.float64) / 100),
            "payload": payload,
            "gwcbi___seqval_hex": pa.array(np.char.mod("%x", seq)),
            "gwcbi___operation": pa.array(ops),
            "gwcbi___connector_ts_ms": pa.array(stamp),
            "gwcbi___payload_ts_ms": pa.array(stamp),
            "gwcbi___lsn": pa.array(seq),
            "gw_batch_ts_ms": pa.array(stamp),
            "gw_fingerprint": pa.array(["100"] * count),
        })


def _append_raw(root: Path, table: pa.Table, folder_ms: int) -> None:
    write_deltalake(str(root / "raw" / "t"), table, mode="append",
                    configuration={"delta.appendOnly": "true"},
                    commit_properties=CommitProperties(custom_metadata={"gw_watermark": str(folder_ms)}))


ENGINE_SCRIPT = r"""
import json, os, sys, threading, time
sys.path.insert(0, {notebooks!r})
import gw_medallion_engine as engine
for name, value in engine.LOCAL_ALLOCATOR_ENV.items():  # before pyarrow loads, as local_host does
    os.environ.setdefault(name, value)
import psutil
process, current, peaks = psutil.Process(), ["start"], {{}}
def sample():
    while True:
        peaks[current[0]] = max(peaks.get(current[0], 0), process.memory_info().rss)
        time.sleep(0.05)
threading.Thread(target=sample, daemon=True).start()
server, spark = engine.start_local_spark("main")
eng = engine.Engine.for_session(spark, "main", {root!r})
eng.register_local_tables(["t"])
figures = {{}}
for layer in {layers!r}:
    current[0] = layer
    started = time.perf_counter()
    if layer == "floor":
        # Every new change row once: the increment, the latest change per id, appended (no merge).
        from pyspark.sql import Window, functions as F
        rows = spark.table("main.bronze.t").where(F.col("gw_batch_ts") > F.timestamp_millis(F.lit({after})))
        w = Window.partitionBy("id").orderBy(F.col("gw_seq_key").desc())
        rows.withColumn("r", F.row_number().over(w)).where("r = 1").drop("r").write.format("delta").mode("append").save({root!r} + "/floor")
        result = {{"status": "changed", "metadata": {{}}}}
    else:
        [result] = getattr(eng, layer)(["t"])
    figures[layer] = {{"seconds": time.perf_counter() - started, "status": result["status"],
                      **{{k: v for k, v in result["metadata"].items() if isinstance(v, (int, float))}}}}
current[0] = "end"
time.sleep(0.1)
figures["peak_rss_mb"] = {{k: round(v / 2**20) for k, v in peaks.items()}}
print("FIGURES " + json.dumps(figures), flush=True)
spark.stop(); server.stop()
"""


def _engine(root: Path, layers: list[str], after: int = 0) -> dict[str, Any]:
    code = ENGINE_SCRIPT.format(notebooks=str(NOTEBOOKS), root=str(root), layers=layers, after=after)
    started = time.perf_counter()
    process = subprocess.Popen([PYTHON, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                               cwd=str(REPO_ROOT))
    with TreeRssSampler(process.pid) as sampler:
        out, _ = process.communicate(timeout=7200)
    if process.returncode != 0:
        raise RuntimeError(f"engine run {layers} exited {process.returncode}")
    figures = json.loads(next(line for line in out.splitlines() if line.startswith("FIGURES "))[8:])
    return {"figures": figures, "process_seconds": time.perf_counter() - started,
            "peak_rss_mb": round(sampler.peak / 2**20)}


def _silver_files(root: Path) -> int:
    from deltalake import DeltaTable

    return len(DeltaTable(str(root / "silver" / "t")).file_uris())


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def silver_history(quick: bool, repeats: int = 5) -> list[dict[str, Any]]:
    """Each figure is the median of ``repeats`` silver runs, each on the same silver restored from a copy;
    the four cases (1x/10x, recent/uniform) are measured in turn, so that load drifts hit them alike."""
    history, new, folders = (200_000, 10_000, 10) if quick else (1_000_000, 10_000, 10)
    new_ms = BASE_MS + 10_000_000
    cases: list[dict[str, Any]] = []
    with temp_dir("medallion-history") as scratch:
        for factor in (1, 10):
            base = scratch / f"x{factor}-recent"
            base.mkdir()
            changes = Changes(seed=factor)
            for f in range(folders):  # history: folders of equal size, loaded by the engine
                _append_raw(base, changes.folder(history * factor // folders, BASE_MS + f * 1000), BASE_MS + f * 1000)
            _engine(base, ["bronze", "silver"])
            shutil.copytree(base, scratch / f"x{factor}-uniform")
            for shape in ("recent", "uniform"):
                root = scratch / f"x{factor}-{shape}"
                stream = Changes(seed=99)
                stream.next_id, stream.next_seq = changes.next_id, changes.next_seq + 10**9
                _append_raw(root, stream.folder(new, new_ms, uniform=shape == "uniform"), new_ms)
                _engine(root, ["bronze"])
                shutil.copytree(root / "silver", root / "silver-before")
                cases.append({"root": root, "shape": shape, "history": history * factor, "records": changes.next_id,
                              "files": _silver_files(root), "runs": [], "floors": []})
        for attempt in range(repeats):
            for case in cases:
                root = case["root"]
                if attempt:
                    shutil.rmtree(root / "silver")
                    shutil.copytree(root / "silver-before", root / "silver")
                case["runs"].append(_engine(root, ["silver"]))
                case["floors"].append(_engine(root, ["floor"], after=BASE_MS + (folders - 1) * 1000))
    rows = []
    for case in cases:
        seconds = [r["figures"]["silver"]["seconds"] for r in case["runs"]]
        silver = case["runs"][-1]["figures"]["silver"]
        rows.append({
            "history rows": case["history"], "records": case["records"], "new changes": f"{new:,} {case['shape']}",
            "silver s": round(_median(seconds), 2), "silver s range": f"{min(seconds):.2f}-{max(seconds):.2f}",
            "floor s": round(_median([f["figures"]["floor"]["seconds"] for f in case["floors"]]), 2),
            "silver peak RSS MB": max(r["peak_rss_mb"] for r in case["runs"]),
            "floor peak RSS MB": max(f["peak_rss_mb"] for f in case["floors"]),
            "silver files": case["files"], "files rewritten": silver.get("files_rewritten"),
            "files re-sorted": silver.get("files_reclustered"),
        })
    for shape in ("recent", "uniform"):
        one, ten = (r for r in rows if r["new changes"].endswith(shape))
        ten["10x / 1x time"] = round(ten["silver s"] / one["silver s"], 2)
        ten["10x / 1x RSS"] = round(ten["silver peak RSS MB"] / one["silver peak RSS MB"], 2)
    return rows


def first_load(gb: float) -> dict[str, Any]:
    with temp_dir("medallion-first-load") as root:
        per_folder, folder = 250_000, 0
        changes = Changes(seed=7)
        while dir_bytes(root / "raw" / "t") < gb * 1e9:
            _append_raw(root, changes.folder(per_folder, BASE_MS + folder * 1000), BASE_MS + folder * 1000)
            folder += 1
        written = dir_bytes(root / "raw" / "t")
        log(f"raw: {written / 1e9:.2f} GB of parquet, {folder} folders of {per_folder:,} rows")
        run = _engine(root, ["bronze", "silver"])
        bronze, silver, peaks = run["figures"]["bronze"], run["figures"]["silver"], run["figures"]["peak_rss_mb"]
        return {"raw GB": round(written / 1e9, 2), "raw rows": folder * per_folder,
                "bytes/row": round(written / (folder * per_folder)), "chunk rows": silver.get("chunk_rows"),
                "chunks": silver.get("chunks"), "bronze s": round(bronze["seconds"]), "silver s": round(silver["seconds"]),
                "bronze peak RSS MB": peaks.get("bronze"), "silver peak RSS MB": peaks.get("silver"),
                "process peak RSS MB": run["peak_rss_mb"]}


NOOP_SCRIPT = r"""
import json, sys, tempfile, time
sys.path.insert(0, "REPO_ROOT_PATH")
import dagster as dg
from guidewire_pipeline.lakehouse import Lakehouse
from guidewire_pipeline.medallion.marts import load_marts
from guidewire_pipeline.medallion.runners.base import MedallionRequest
from guidewire_pipeline.medallion.runners.local import LocalNotebookRunner
from tests.medallion.raw_tables import append_raw_batch
from tests.medallion.test_medallion_job import CLAIM, EXPOSURE, TRANSACTION, POLICY, cdc_table, claim, exposure, transaction, policy
root = tempfile.mkdtemp()
tables = ["cc_claim", "cc_exposure", "cc_transaction", "pc_policyperiod"]
rows = {"cc_claim": cdc_table(CLAIM, [claim(1, "01", 0, "CA", "2024-01-10", "open")]),
        "cc_exposure": cdc_table(EXPOSURE, [exposure(1, 1)]),
        "cc_transaction": cdc_table(TRANSACTION, [transaction(1, 1, "payment", "40.00")]),
        "pc_policyperiod": cdc_table(POLICY, [policy(1, "PersonalAuto", "2024-01-15", "2024-04-15", "in_force", "100.00")])}
for t in tables:
    append_raw_batch(root, t, rows[t], 1700000000000)
request = MedallionRequest(Lakehouse(root, "main"), tuple(tables), tuple(load_marts().values()))
times = []
@dg.op
def step(context):
    started = time.perf_counter()
    run = LocalNotebookRunner().run_medallion(context, request)
    assert all(r.status != "failed" for r in run.results), [r for r in run.results if r.status == "failed"]
    times.append({"step": time.perf_counter() - started, "process": run.run_metadata.get("seconds"),
                  "statuses": sorted({r.status for r in run.results})})
@dg.job
def job():
    step()
for _ in range(4):
    job.execute_in_process()
print("FIGURES " + json.dumps(times))
"""

def noop_step() -> dict[str, Any]:
    code = NOOP_SCRIPT.replace("REPO_ROOT_PATH", str(REPO_ROOT))
    done = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, cwd=str(REPO_ROOT), timeout=900)
    lines = [line for line in done.stdout.splitlines() if line.startswith("FIGURES ")]
    if not lines:
        raise RuntimeError(f"no-op run failed: {done.stderr[-3000:]}")
    times = json.loads(lines[0][8:])
    noop = sorted(times[1:], key=lambda t: t["step"])
    return {"first run s (loads)": round(times[0]["step"], 2), "no-op step s (min)": round(noop[0]["step"], 2),
            "no-op step s (median)": round(noop[len(noop) // 2]["step"], 2),
            "local process s (median)": round(noop[len(noop) // 2]["process"] or 0, 2),
            "interpreter + imports + Sail start s": round(min(_start_seconds() for _ in range(3)), 2),
            "no-op statuses": ",".join(times[-1]["statuses"])}


def _start_seconds() -> float:
    """Interpreter, engine import and Sail start, to the first query: the fixed part of a local process."""
    code = (f"import sys; sys.path.insert(0, {str(NOTEBOOKS)!r}); import gw_medallion_engine as engine; "
            "server, spark = engine.start_local_spark('main'); spark.sql('SELECT 1').collect()")
    started = time.perf_counter()
    subprocess.run([PYTHON, "-c", code], capture_output=True, check=True, cwd=str(REPO_ROOT), timeout=300)
    return time.perf_counter() - started


def run(quick: bool = False) -> dict[str, Any]:
    sizes = os.environ.get("GW_BENCH_MEDALLION_GB") or ("0.2" if quick else "0.5,1,2")
    results: dict[str, Any] = {"uptime_before": os.getloadavg()}
    results["noop"] = noop_step()
    print_table("Medallion step of a no-op run (bronze+silver+gold, 4 tables, 2 marts, one process)", [results["noop"]])
    results["silver_history"] = silver_history(quick)
    print_table("Silver on one table: the same new changes after 1x and 10x history", results["silver_history"])
    results["first_load"] = [first_load(float(gb)) for gb in sizes.split(",")]
    print_table("First load of one raw table (bronze then silver in one process)", results["first_load"])
    results["uptime_after"] = os.getloadavg()
    save_results("medallion", results)
    return results


if __name__ == "__main__":
    run(quick="--quick" in sys.argv)
