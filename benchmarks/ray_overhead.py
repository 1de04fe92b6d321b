"""4. Ray: 200 small tables on a local Ray with 1 worker and with 2, against the engine's default
(threads in the driver); the fixed cost of a run that has nothing to do; starting a local Ray against
connecting to a running one. Every run is a fresh process, as a scheduled run is.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from typing import Any

from benchmarks.common import PYTHON, REPO_ROOT, engine_run, log, print_table, save_results, temp_dir

HOLD_CLUSTER = """
import json, sys, time, ray
ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
print(json.dumps({"address": ray.get_runtime_context().gcs_address}), flush=True)
sys.stdin.read()  # hold the cluster until the benchmark closes stdin
ray.shutdown()
"""


def run(quick: bool = False) -> dict[str, Any]:
    from guidewire_pipeline.sample.generator import generate

    tables = 50 if quick else 200
    rows: list[dict[str, Any]] = []
    with temp_dir("ray") as tmp:
        generate(str(tmp / "cda"), tables=tables, batches=1, rows=20, seed=4, files_per_batch=1)
        manifest = str(tmp / "cda" / "manifest.json")

        def record(name: str, result: dict[str, Any]) -> None:
            rows.append({"run": name, "run_s": result["run_s"], "ray_start_s": result["ray_start_s"],
                         "work_s": result["run_s"] - result["ray_start_s"], "process_s": result["wall_s"],
                         "tables_loaded": result["statuses"].get("loaded", 0)})

        for workers in (1, 2):
            record(f"{tables} small tables, local Ray, {workers} worker(s)",
                   engine_run(manifest, str(tmp / f"delta-ray{workers}"), "deep", num_cpus=workers, driver_max_bytes=0))
        record(f"{tables} small tables, engine default (driver threads)",
               engine_run(manifest, str(tmp / "delta-driver"), "deep", num_cpus=2))
        record(f"no-op rerun ({tables} tables caught up)", engine_run(manifest, str(tmp / "delta-driver"), "deep"))

        log("starting a Ray cluster to connect to")
        # Ray 2.60 enables token auth on the clusters it starts; a plain local test cluster opts out, for
        # the holder and the runs that connect alike (a real cluster hands its token to clients instead).
        os.environ["RAY_AUTH_MODE"] = "disabled"
        started = time.perf_counter()
        holder = subprocess.Popen([PYTHON, "-c", HOLD_CLUSTER], cwd=REPO_ROOT, stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            address = json.loads(holder.stdout.readline())["address"]
            cluster_start_s = time.perf_counter() - started
            record(f"{tables} small tables, connect to running Ray (2 CPUs)",
                   engine_run(manifest, str(tmp / "delta-connect"), "deep", driver_max_bytes=0, ray_address=address))
            record(f"{tables} small tables, connect again (warm workers)",
                   engine_run(manifest, str(tmp / "delta-connect2"), "deep", driver_max_bytes=0, ray_address=address))
        finally:
            holder.stdin.close()
            holder.wait(timeout=60)
            os.environ.pop("RAY_AUTH_MODE", None)
    print_table(f"Ray overhead, {tables} small tables (1 batch, 20 rows each), {os.cpu_count()} cores", rows,
                ["run", "run_s", "ray_start_s", "work_s", "process_s", "tables_loaded"])
    print(f"  starting a local Ray cluster (the holder process): {cluster_start_s:.1f} s")
    payload = {"tables": tables, "figures": rows, "cluster_start_s": cluster_start_s}
    save_results("ray_overhead", payload)
    return payload


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    run(quick=parser.parse_args().quick)
