"""1. Deep clone against the floor, on local disk.

Data: 50 tables x 20 batches x 2 files (about 1 GB of parquet; ``--quick``: about 100 MB).
Timed: the engine of cda_sync_job (``sync_tables``, deep), in a fresh process as a run would be,
from the manifest read to the last commit; Ray's start-up is shown apart.
Floor: the same committed parquet files read with pyarrow and written once as parquet, tables on as
many threads as the machine has cores, no Delta, no Dagster. Goals (issue 10): engine <= 1.2x the
floor; the whole process (`dagster job execute ... cda_sync_job`) <= 1.4x.
Also: the commit budget swept from one batch per commit (engine v1's rule) to the default, on driver
threads so that Ray's start-up does not blur it (the figures behind CommitBudget's defaults), and
a shallow run on the same data.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pyarrow.dataset as ds
import pyarrow.parquet as pq

from benchmarks.common import (
    PYTHON,
    REPO_ROOT,
    TreeRssSampler,
    dir_bytes,
    engine_run,
    log,
    print_table,
    save_results,
    temp_dir,
)


def floor_copy(manifest_path: Path, out: Path, *, per_folder: bool = False, delta: bool = False) -> dict[str, Any]:
    """Read every committed parquet file with pyarrow and write each table once as parquet, no Delta
    at all. ``per_folder``: one output file per CDA folder instead, as one Delta commit per folder
    implies, to show what that rule itself costs. ``delta``: each table's rows streamed into one
    ``write_deltalake`` call instead (delta-rs' own parquet writer and one commit: what any Delta
    writer on delta-rs pays, with none of the engine's work)."""
    from deltalake import write_deltalake

    from guidewire_pipeline.cda.load_plan import plan_table
    from guidewire_pipeline.cda.manifest import read_manifest

    started = time.perf_counter()
    manifest = read_manifest(str(manifest_path))

    def copy(table: str) -> int:
        batches = plan_table(manifest.entries[table], None).batches
        groups = ({f"{table}-{b.timestamp}": b.files for b in batches} if per_folder
                  else {table: [f for b in batches for f in b.files]})
        rows = 0
        for name, files in groups.items():
            if not files:
                continue
            dataset = ds.dataset([f.location.fs_path for f in files], format="parquet")
            if delta:
                write_deltalake(str(out / name), dataset.scanner(batch_size=64 * 1024).to_reader())
                rows += sum(fragment.count_rows() for fragment in dataset.get_fragments())
                continue
            with pq.ParquetWriter(str(out / f"{name}.parquet"), dataset.schema) as writer:
                for record_batch in dataset.to_batches(batch_size=64 * 1024):
                    writer.write_batch(record_batch)
                    rows += record_batch.num_rows
        return rows

    out.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(os.cpu_count() or 2) as pool:
        rows = sum(pool.map(copy, sorted(manifest.entries)))
    return {"s": time.perf_counter() - started, "rows": rows}


def _engine_row(name: str, result: dict[str, Any], floor_s: float) -> dict[str, Any]:
    row = {"run": name, "s": result["run_s"], "x_floor": result["run_s"] / floor_s, "commits": result.get("commits"),
           "ray_start_s": result["ray_start_s"], "rows": result["rows_added"], "process_s": result["wall_s"],
           "peak_rss_mb": round(result["peak_rss_mb"])}
    if result["ray_start_s"]:
        row["x_floor_without_ray_start"] = (result["run_s"] - result["ray_start_s"]) / floor_s
    return row


BUDGETS_MB = (1, 4, 16, 512)  # besides the default and one batch per commit (engine v1)


def cli_run(manifest: Path, delta_root: Path) -> dict[str, Any]:
    """The whole process a CI job runs: ``dagster job execute ... cda_sync_job`` on a fresh machine
    (no DAGSTER_HOME: a temporary instance), wall time from the shell's point of view."""
    dagster = str(Path(PYTHON).parent / "dagster")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GW_", "DAGSTER_", "RAY_"))}
    env.update(GW_MANIFEST_URI=str(manifest), GW_DELTA_ROOT=str(delta_root))
    started = time.perf_counter()
    completed = subprocess.run([dagster, "job", "execute", "-m", "guidewire_pipeline.definitions", "-j", "cda_sync_job"],
                               cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=3600)
    if completed.returncode:
        raise RuntimeError(f"cda_sync_job failed:\n{completed.stdout[-2000:]}{completed.stderr[-2000:]}")
    return {"s": time.perf_counter() - started}


def run(quick: bool = False) -> dict[str, Any]:
    from guidewire_pipeline.cda.load_plan import CommitBudget
    from guidewire_pipeline.sample.generator import generate

    tables, batches = 50, 20
    rows = 1_200 if quick else 12_000
    with temp_dir("deep") as tmp:
        log(f"generating {tables} tables x {batches} batches x {rows} rows")
        started = time.perf_counter()
        generate(str(tmp / "cda"), tables=tables, batches=batches, rows=rows, seed=9, files_per_batch=2)
        log(f"generated {dir_bytes(tmp / 'cda') / 1e9:.2f} GB in {time.perf_counter() - started:.0f} s")
        manifest = tmp / "cda" / "manifest.json"
        # The floor twice, the fastest kept (the first also warms the page cache for everything after).
        floors = [floor_copy(manifest, tmp / f"floor-{k}") for k in range(2)]
        floor = min(floors, key=lambda f: f["s"])
        log("floor " + ", ".join(f"{f['s']:.1f}" for f in floors) + " s")
        per_folder = floor_copy(manifest, tmp / "floor-per-folder", per_folder=True)
        log(f"floor, one file per folder {per_folder['s']:.1f} s")
        delta_floor = floor_copy(manifest, tmp / "floor-delta", delta=True)
        log(f"delta-rs floor {delta_floor['s']:.1f} s")
        cpus = os.cpu_count()
        runs: list[tuple[str, dict[str, Any]]] = []

        def engine(label: str, target: str, **kwargs: Any) -> None:
            box: dict[str, TreeRssSampler] = {}

            def sample(pid: int) -> None:
                box["sampler"] = TreeRssSampler(pid).__enter__()

            result = engine_run(str(manifest), str(tmp / target), kwargs.pop("mode", "deep"), num_cpus=cpus,
                                pid_callback=sample, **kwargs)
            box["sampler"].__exit__(None, None, None)
            result["peak_rss_mb"] = box["sampler"].peak / 2**20  # the process and its Ray workers
            log(f"{label}: {result['run_s']:.1f} s, {result.get('commits')} commits, "
                f"peak {result['peak_rss_mb']:.0f} MB")
            runs.append((label, result))

        engine("deep clone (engine default)", "d-default")
        engine("deep clone (engine default), again", "d-default-2")
        engine("deep clone (local Ray, 2 workers)", "d-ray", driver_max_bytes=0)
        engine("deep clone (driver threads, no Ray)", "d-threads", driver_max_bytes=2**50)
        engine("budget: 1 batch per commit (engine v1), driver threads", "d-b1", driver_max_bytes=2**50,
               commit_max_batches=1)
        for mb in BUDGETS_MB:
            engine(f"budget: {mb} MiB per commit, driver threads", f"d-{mb}", driver_max_bytes=2**50,
                   commit_max_bytes=mb * 2**20)
        engine(f"budget: {CommitBudget.max_bytes // 2**20} MiB per commit (default), driver threads", "d-default-b",
               driver_max_bytes=2**50)
        engine("shallow clone (engine, driver)", "s", mode="shallow")
        whole = cli_run(manifest, tmp / "d-cli")
        log(f"dagster job execute cda_sync_job: {whole['s']:.1f} s")
        gb = dir_bytes(tmp / "cda") / 1e9
        figures = [
            {"run": "floor: pyarrow read + write parquet", "s": floor["s"], "x_floor": 1.0, "rows": floor["rows"]},
            {"run": "floor, one output file per CDA folder", "s": per_folder["s"],
             "x_floor": per_folder["s"] / floor["s"], "rows": per_folder["rows"]},
            {"run": "delta-rs floor: one write_deltalake per table, nothing else", "s": delta_floor["s"],
             "x_floor": delta_floor["s"] / floor["s"], "rows": delta_floor["rows"]},
            *(_engine_row(label, result, floor["s"]) for label, result in runs),
            {"run": "whole process: dagster job execute ... cda_sync_job (fresh, no DAGSTER_HOME)", "s": whole["s"],
             "x_floor": whole["s"] / floor["s"]},
        ]
        print_table(f"Deep clone vs floor, local disk: {tables} tables x {batches} batches, {gb:.2f} GB parquet",
                    figures, ["run", "s", "x_floor", "commits", "ray_start_s", "x_floor_without_ray_start",
                              "process_s", "peak_rss_mb", "rows"])
        payload = {"tables": tables, "batches": batches, "rows_per_batch": rows, "parquet_gb": gb, "figures": figures}
        save_results("deep_clone", payload)
        return payload


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    run(quick=parser.parse_args().quick)
