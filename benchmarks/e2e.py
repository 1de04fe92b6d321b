"""6. End to end: ``guidewire_job`` on the demo data, wall time per step.

Runs ``guidewire-pipeline sync`` (``guidewire_job``: raw, then the medallion) as ``make demo`` does, on
a fresh sample tree (the generator's defaults) and a fresh local DAGSTER_HOME, then reads each step's
start and end from the run's event log. Run twice: the first run loads everything, the second finds
nothing new. Then once more with ``dagster job execute -j guidewire_job`` (the CI command) on that
caught-up state, for the start-up cost of each entry point.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time
from pathlib import Path
from typing import Any

from benchmarks.common import PYTHON, REPO_ROOT, log, print_table, save_results, temp_dir

JOB = "guidewire_job"
SYNC = [str(Path(PYTHON).parent / "guidewire-pipeline"), "sync"]
CI = [str(Path(PYTHON).parent / "dagster"), "job", "execute", "-m", "guidewire_pipeline.definitions", "-j", JOB]


def _execute(env: dict[str, str], command: list[str]) -> tuple[float, int, str]:
    started = time.perf_counter()
    completed = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=1800)
    return time.perf_counter() - started, completed.returncode, completed.stderr[-2000:]


def _step_times(dagster_home: Path) -> list[dict[str, Any]]:
    import dagster as dg

    os.environ["DAGSTER_HOME"] = str(dagster_home)
    try:
        with dg.DagsterInstance.get() as instance:
            runs = instance.get_runs(filters=dg.RunsFilter(job_name=JOB))
            rows = []
            for number, run in enumerate(reversed(runs), start=1):
                for stats in instance.get_run_step_stats(run.run_id):
                    rows.append({"run": number, "step": stats.step_key, "status": str(stats.status.value),
                                 "s": (stats.end_time or 0) - (stats.start_time or 0)})
                record = instance.get_run_record_by_id(run.run_id)
                if record and record.start_time and record.end_time:
                    rows.append({"run": number, "step": "(whole run, in the instance)", "status": run.status.value,
                                 "s": record.end_time - record.start_time})
            return rows
    finally:
        os.environ.pop("DAGSTER_HOME", None)


def run(quick: bool = False) -> dict[str, Any]:
    with temp_dir("e2e") as tmp:
        home = tmp / "dagster_home"
        home.mkdir()
        (home / "dagster.yaml").write_text((REPO_ROOT / "dagster.yaml").read_text())
        subprocess.run([PYTHON, "-m", "guidewire_pipeline.sample", "generate", "--out", str(tmp / "cda")],
                       cwd=REPO_ROOT, check=True, capture_output=True)
        env = {**os.environ, "DAGSTER_HOME": str(home), "GW_MANIFEST_URI": str(tmp / "cda" / "manifest.json"),
               "GW_DELTA_ROOT": str(tmp / "delta")}
        for name in ("RAY_ADDRESS", "DATABRICKS_HOST", "DATABRICKS_TOKEN"):
            env.pop(name, None)
        walls = []
        for label, command in (("sync: first run (loads everything)", SYNC), ("sync: second run (nothing new)", SYNC),
                               ("dagster job execute (nothing new)", CI)):
            seconds, code, stderr = _execute(env, command)
            walls.append({"run": label, "cli_wall_s": seconds, "exit_code": code})
            log(f"{label}: {seconds:.1f} s, exit {code}")
            if code != 0:
                log(f"stderr tail: {stderr[-800:]}")
        steps = _step_times(home)
    print_table(f"{JOB} on the demo data: CLI wall time", walls, ["run", "cli_wall_s", "exit_code"])
    print_table(f"{JOB}: wall time per step", steps, ["run", "step", "status", "s"])
    payload = {"runs": walls, "steps": steps}
    save_results("e2e", payload)
    return payload


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    run(quick=parser.parse_args().quick)
