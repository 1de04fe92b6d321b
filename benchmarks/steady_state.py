"""7. Steady state at scale: a 2,500-table manifest (``--quick``: 500), all loaded, of which 300 (``--quick``:
60) then advance by one small batch. Timed: from the sensor tick until all of them are caught up,
through the real sensor logic (``evaluate_manifest`` on a local DAGSTER_HOME) and real runs
(``dagster job execute ... cda_sync_job`` with each run request's config and tags, at most 2 at a
time as dagster.yaml's tag limit allows). Reported: runs launched, Ray start-ups (counted from the
runs' logs), wall time. Goals for raw: <= 120 s on this 2-core machine, <= ceil(300 / N) runs.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from benchmarks.common import PYTHON, REPO_ROOT, log, print_table, save_results, temp_dir

RUN_CONCURRENCY = 2  # dagster.yaml: tag_concurrency_limits guidewire/job=cda_sync limit 2


def _advance_some(root: str, tables: list[str]) -> None:
    """CDA commits one new folder for ``tables`` only (the generator's ``advance`` moves them all)."""
    from guidewire_pipeline.cda.storage import Location
    from guidewire_pipeline.sample import generator

    location = Location.parse(root)
    state = generator._load_state(location)
    subset = generator.SampleState(seed=state.seed, rows=state.rows, files_per_batch=state.files_per_batch,
                                   tables={t: state.tables[t] for t in tables})
    generator._write_batches(location, subset, new_batches=0, progress=None)  # in-flight -> committed
    generator._write_manifest(location, state)  # the TableState objects are shared: state moved too


def _launch(request: Any, env: dict[str, str], tmp: Path, number: int) -> dict[str, Any]:
    config = tmp / f"run-{number}.json"
    config.write_text(json.dumps(request.run_config))
    started = time.perf_counter()
    completed = subprocess.run(
        [str(Path(PYTHON).parent / "dagster"), "job", "execute", "-m", "guidewire_pipeline.definitions",
         "-j", request.job_name, "-c", str(config), "--tags", json.dumps(dict(request.tags))],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=1800)
    output = completed.stdout + completed.stderr
    return {"s": time.perf_counter() - started, "exit": completed.returncode,
            "ray_starts": output.count("starting a local Ray"),  # the engine's own log line
            "tables": len(request.run_config["ops"]["sync_raw_tables"]["config"]["tables"]),
            "tail": output[-1500:] if completed.returncode else ""}


def _scenario(label: str, tables_per_run: int, chosen: list[str], cda: Path, env: dict[str, str],
              tmp: Path, cursor: str) -> tuple[dict[str, Any], str]:
    import dagster as dg

    from guidewire_pipeline.cda.manifest import read_manifest
    from guidewire_pipeline.cda.raw_table import read_table_state
    from guidewire_pipeline.cda.sync import raw_table_location
    from guidewire_pipeline.raw.resources import CdaSource
    from guidewire_pipeline.raw.sensors import evaluate_manifest

    _advance_some(str(cda), chosen)
    source = CdaSource(manifest_uri=str(cda / "manifest.json"), tables_per_run=tables_per_run)
    started = time.perf_counter()
    os.environ["DAGSTER_HOME"] = env["DAGSTER_HOME"]
    with dg.DagsterInstance.get() as instance:
        result = evaluate_manifest(dg.build_sensor_context(instance=instance, cursor=cursor), source)
    tick_s = time.perf_counter() - started
    requests = list(result.run_requests or [])
    with ThreadPoolExecutor(RUN_CONCURRENCY) as pool:
        runs = list(pool.map(lambda pair: _launch(pair[1], env, tmp, pair[0]), enumerate(requests)))
    wall = time.perf_counter() - started
    manifest = read_manifest(str(cda / "manifest.json"))
    behind = [t for t in chosen if read_table_state(raw_table_location(env["GW_DELTA_ROOT"], t)).loaded_watermark
              != manifest.entries[t].manifest_watermark]
    for run in runs:
        if run["exit"]:
            log(f"run failed: {run['tail']}")
    row = {"scenario": label, "tables_per_run": tables_per_run, "advanced": len(chosen), "tick_s": tick_s,
           "runs": len(requests), "runs_goal": math.ceil(len(chosen) / tables_per_run),
           "ray_starts": sum(r["ray_starts"] for r in runs), "wall_s": wall,
           "slowest_run_s": max((r["s"] for r in runs), default=0.0), "failed_runs": sum(1 for r in runs if r["exit"]),
           "still_behind": len(behind)}
    return row, result.cursor


def run(quick: bool = False) -> dict[str, Any]:
    from guidewire_pipeline.cda.manifest import read_manifest
    from guidewire_pipeline.cda.sync import sync_tables
    from guidewire_pipeline.raw.partitions import GUIDEWIRE_TABLES
    from guidewire_pipeline.sample.generator import generate

    total, advanced = (500, 60) if quick else (2500, 300)
    rows = []
    with temp_dir("steady") as tmp:
        cda, delta, home = tmp / "cda", tmp / "delta", tmp / "dagster_home"
        home.mkdir()
        (home / "dagster.yaml").write_text((REPO_ROOT / "dagster.yaml").read_text())
        started = time.perf_counter()
        generate(str(cda), tables=total, batches=1, rows=5, seed=8, files_per_batch=1)
        log(f"generated {total} tables in {time.perf_counter() - started:.0f} s")
        manifest = read_manifest(str(cda / "manifest.json"))
        started = time.perf_counter()
        results = sync_tables(manifest.entries.values(), str(delta))
        log(f"initial load of {total} tables: {time.perf_counter() - started:.0f} s, "
            f"{sum(1 for r in results if not r.ok)} failed")
        env = {**os.environ, "DAGSTER_HOME": str(home), "GW_MANIFEST_URI": str(cda / "manifest.json"),
               "GW_DELTA_ROOT": str(delta)}
        for name in ("RAY_ADDRESS", "DATABRICKS_HOST", "DATABRICKS_TOKEN"):
            env.pop(name, None)

        import dagster as dg

        from guidewire_pipeline.raw.resources import CdaSource
        from guidewire_pipeline.raw.sensors import evaluate_manifest

        os.environ["DAGSTER_HOME"] = str(home)
        try:
            with dg.DagsterInstance.get() as instance:  # the tick that saw the tables first
                first = evaluate_manifest(dg.build_sensor_context(instance=instance),
                                          CdaSource(manifest_uri=str(cda / "manifest.json")))
                instance.add_dynamic_partitions(GUIDEWIRE_TABLES, sorted(manifest.entries))
            cursor = first.cursor
            generic = sorted(t for t in manifest.entries if t.startswith("cc_table_"))
            chosen = sorted(random.Random(1).sample(generic, advanced))
            for label, per_run in (("default (tables_per_run 100)", 100), ("one run (tables_per_run 300)", 300)):
                row, cursor = _scenario(label, per_run, chosen, cda, env, tmp, cursor)
                rows.append(row)
                log(f"{label}: {row['wall_s']:.1f} s, {row['runs']} runs, {row['ray_starts']} Ray start-ups")
        finally:
            os.environ.pop("DAGSTER_HOME", None)
    print_table(f"Steady state: {total}-table manifest, {advanced} advanced by one batch, sensor tick to caught up",
                rows, ["scenario", "advanced", "tick_s", "runs", "runs_goal", "ray_starts", "slowest_run_s", "wall_s",
                       "failed_runs", "still_behind"])
    payload = {"tables": total, "advanced": advanced, "figures": rows}
    save_results("steady_state", payload)
    return payload


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    run(quick=parser.parse_args().quick)
