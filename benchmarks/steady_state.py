"""7. Steady state at scale: a 2,500-table manifest (``--quick``: 500), all loaded in raw, of which 300
(``--quick``: 60) then advance by one small batch. Timed: from the manifest sensor's tick until raw,
bronze and silver of all of them are caught up, the daemon's path without the daemon: the real sensors
(``evaluate_manifest``, then ``medallion_sensor`` after every run that ends, as its next tick would)
on a local DAGSTER_HOME, and real runs (``dagster job execute`` with each request's job, config and
tags), at most 2 at a time as dagster.yaml's pool limit allows. Reported: raw and medallion runs, Ray
start-ups (from the runs' logs), wall time, tables still behind; then one no-op tick of the whole
automation (both sensors, nothing new). Goals: raw, bronze and silver of the 300 in <= 180 s with a
bounded number of runs (not 300 x 3); a no-op tick < 1 s with no run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import subprocess
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

from benchmarks.common import PYTHON, REPO_ROOT, log, print_table, save_results, temp_dir

RUN_CONCURRENCY = 2  # dagster.yaml: concurrency.pools.default_limit


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


def _launch(job_name: str, request: Any, env: dict[str, str], tmp: Path, number: int) -> dict[str, Any]:
    config = tmp / f"run-{number}.json"
    config.write_text(json.dumps(request.run_config))
    tags = {**request.tags, "dagster/run_key": request.run_key}  # what the daemon adds; the sensors settle by it
    started = time.perf_counter()
    completed = subprocess.run(
        [str(Path(PYTHON).parent / "dagster"), "job", "execute", "-m", "guidewire_pipeline.definitions",
         "-j", job_name, "-c", str(config), "--tags", json.dumps(tags)],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=1800)
    output = completed.stdout + completed.stderr
    return {"job": job_name, "s": time.perf_counter() - started, "exit": completed.returncode,
            "ray_starts": output.count("starting a local Ray"),  # the engine's own log line
            "tail": output[-1500:] if completed.returncode else ""}


class Automation:
    """Both sensors with their cursors, ticked on the benchmark's instance."""

    def __init__(self, instance: Any, source: Any, manifest_cursor: str | None) -> None:
        from guidewire_pipeline.medallion.defs import build_medallion_sensor

        self.instance, self.source = instance, source
        self.manifest_cursor, self.medallion_cursor = manifest_cursor, None
        self.medallion_sensor = build_medallion_sensor(automation=True)

    def tick_manifest(self) -> list[tuple[str, Any]]:
        import dagster as dg

        from guidewire_pipeline.raw.sensors import evaluate_manifest

        result = evaluate_manifest(dg.build_sensor_context(instance=self.instance, cursor=self.manifest_cursor),
                                   self.source)
        self.manifest_cursor = result.cursor
        return [(r.job_name, r) for r in result.run_requests or []]

    def tick_medallion(self) -> list[tuple[str, Any]]:
        import dagster as dg

        from guidewire_pipeline.medallion.defs import MEDALLION_JOB

        result = self.medallion_sensor(dg.build_sensor_context(
            instance=self.instance, cursor=self.medallion_cursor, resources={"cda_source": self.source}))
        self.medallion_cursor = result.cursor
        return [(r.job_name or MEDALLION_JOB, r) for r in result.run_requests or []]


def _scenario(label: str, tables_per_run: int, chosen: list[str], cda: Path, env: dict[str, str],
              tmp: Path, automation: Automation) -> dict[str, Any]:
    from guidewire_pipeline.cda.manifest import read_manifest
    from guidewire_pipeline.cda.raw_table import read_table_state
    from guidewire_pipeline.cda.sync import raw_table_location
    from guidewire_pipeline.medallion.layers import medallion_backlog

    _advance_some(str(cda), chosen)
    automation.source = automation.source.model_copy(update={"tables_per_run": tables_per_run})
    started = time.perf_counter()
    queue = automation.tick_manifest()
    tick_s = time.perf_counter() - started
    runs: list[dict[str, Any]] = []
    with ThreadPoolExecutor(RUN_CONCURRENCY) as pool:
        running: set[Future] = set()
        while queue or running:
            while queue and len(running) < RUN_CONCURRENCY:
                job_name, request = queue.pop(0)
                running.add(pool.submit(_launch, job_name, request, env, tmp, len(runs) + len(running)))
            done, running = wait(running, return_when=FIRST_COMPLETED)
            runs.extend(future.result() for future in done)
            queue.extend(automation.tick_medallion())  # its next tick sees what the finished run recorded
    wall = time.perf_counter() - started
    manifest = read_manifest(str(cda / "manifest.json"))
    behind = [t for t in chosen if read_table_state(raw_table_location(env["GW_DELTA_ROOT"], t)).loaded_watermark
              != manifest.entries[t].manifest_watermark]
    medallion_behind, _ = medallion_backlog(automation.instance, chosen)
    for run in runs:
        if run["exit"]:
            log(f"{run['job']} run failed: {run['tail']}")
    raw_runs = [r for r in runs if r["job"] == "cda_sync_job"]
    return {"scenario": label, "tables_per_run": tables_per_run, "advanced": len(chosen), "tick_s": tick_s,
            "raw_runs": len(raw_runs), "medallion_runs": len(runs) - len(raw_runs),
            "runs_floor": 2 * math.ceil(len(chosen) / tables_per_run),
            "ray_starts": sum(r["ray_starts"] for r in runs), "wall_s": wall,
            "slowest_run_s": max((r["s"] for r in runs), default=0.0), "failed_runs": sum(1 for r in runs if r["exit"]),
            "raw_behind": len(behind), "medallion_behind": len(medallion_behind)}


def _noop_tick(automation: Automation) -> dict[str, Any]:
    started = time.perf_counter()
    requests = automation.tick_manifest()
    manifest_s = time.perf_counter() - started
    requests += automation.tick_medallion()
    return {"scenario": "no-op tick (both sensors, nothing new)", "manifest_tick_s": manifest_s,
            "whole_tick_s": time.perf_counter() - started, "runs_requested": len(requests)}


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
                source = CdaSource(manifest_uri=str(cda / "manifest.json"))
                first = evaluate_manifest(dg.build_sensor_context(instance=instance), source)
                instance.add_dynamic_partitions(GUIDEWIRE_TABLES, sorted(manifest.entries))
                # The initial load above stands for that tick's runs: they ended, nothing is in flight.
                cursor = {**json.loads(first.cursor), "runs": {}}
                automation = Automation(instance, source, json.dumps(cursor))
                generic = sorted(t for t in manifest.entries if t.startswith("cc_table_"))
                chosen = sorted(random.Random(1).sample(generic, advanced))
                for label, per_run in (("default (tables_per_run 100)", 100), ("one run (tables_per_run 300)", 300)):
                    row = _scenario(label, per_run, chosen, cda, env, tmp, automation)
                    rows.append(row)
                    log(f"{label}: {row['wall_s']:.1f} s, {row['raw_runs']} raw and {row['medallion_runs']} medallion "
                        f"runs, {row['ray_starts']} Ray start-ups")
                noop = _noop_tick(automation)
                log(f"no-op tick: {noop['whole_tick_s'] * 1000:.0f} ms, {noop['runs_requested']} runs")
        finally:
            os.environ.pop("DAGSTER_HOME", None)
    print_table(f"Steady state: {total}-table manifest, {advanced} advanced by one batch, sensor tick to caught up",
                rows, ["scenario", "advanced", "tick_s", "raw_runs", "medallion_runs", "runs_floor", "ray_starts",
                       "slowest_run_s", "wall_s", "failed_runs", "raw_behind", "medallion_behind"])
    print_table("No-op tick of the whole automation", [noop], ["scenario", "manifest_tick_s", "whole_tick_s",
                                                               "runs_requested"])
    payload = {"tables": total, "advanced": advanced, "figures": rows, "noop_tick": noop}
    save_results("steady_state", payload)
    return payload


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    run(quick=parser.parse_args().quick)
