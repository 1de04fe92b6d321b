"""What a newcomer types, run as they would: subprocesses on a fresh machine state."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from deltalake import DeltaTable

from guidewire_pipeline.cda.savepoint import APP_ID
from guidewire_pipeline.sample.generator import generate

REPO = Path(__file__).resolve().parent.parent
DAGSTER = str(Path(sys.executable).parent / "dagster")


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GW_", "DAGSTER_", "DATABRICKS_", "RAY_"))}
    env.update(extra)
    return env


def test_definitions_validate():
    result = subprocess.run([DAGSTER, "definitions", "validate", "-w", "workspace.yaml"], cwd=REPO,
                            env=clean_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


def test_cda_sync_job_on_a_fresh_machine(tmp_path: Path):
    # No DAGSTER_HOME, no GW_* variables: the embedded defaults (./data/cda, ./data/delta) apply.
    generate(str(tmp_path / "data" / "cda"), tables=3, batches=2, rows=30, seed=2)
    command = [DAGSTER, "job", "execute", "-m", "guidewire_pipeline.definitions", "-j", "cda_sync_job"]
    first = subprocess.run(command, cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    manifest = json.loads((tmp_path / "data" / "cda" / "manifest.json").read_text())
    for table in ("pc_policyperiod", "pc_policyline", "cc_claim"):
        delta = DeltaTable(str(tmp_path / "data" / "delta" / "raw" / table))
        assert delta.transaction_version(APP_ID) == int(manifest[table]["lastSuccessfulWriteTimestamp"])

    started = time.monotonic()
    again = subprocess.run(command, cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "0 to load" in again.stdout + again.stderr  # a no-op: Ray never started
    assert DeltaTable(str(tmp_path / "data" / "delta" / "raw" / "cc_claim")).version() == 0  # one commit, no more
    print(f"no-op rerun took {time.monotonic() - started:.1f}s")
