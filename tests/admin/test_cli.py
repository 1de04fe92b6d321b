"""``guidewire-pipeline`` as a user types it: fresh processes, the instance at DAGSTER_HOME, the
embedded defaults for everything else."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pyarrow.compute as pc
from deltalake import DeltaTable

from guidewire_pipeline.sample.generator import generate
from tests.test_newcomer import REPO, clean_env

CLI = str(Path(sys.executable).parent / "guidewire-pipeline")


def cli(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = clean_env(**{"DAGSTER_HOME": str(tmp_path / "home"), "GW_DELTA_ROOT": str(tmp_path / "delta"),
                               "GW_MANIFEST_URI": str(tmp_path / "cda" / "manifest.json"), **env})
    return subprocess.run([CLI, *args], cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=600)


def raw_rows(tmp_path: Path, table: str) -> list[tuple]:
    data = DeltaTable(str(tmp_path / "delta" / "raw" / table)).to_pyarrow_table(columns=["id", "gwcbi___seqval_hex"])
    return sorted(zip(data["id"].to_pylist(), data["gwcbi___seqval_hex"].to_pylist(), strict=True))


def test_sync_then_reset_then_sync_restores_the_exact_rows_and_every_run_shows_in_the_ui(tmp_path: Path):
    generate(str(tmp_path / "cda"), tables=2, batches=2, rows=40, seed=5)
    (tmp_path / "home").mkdir()
    shutil.copy(REPO / "dagster.yaml", tmp_path / "home" / "dagster.yaml")

    first = cli(tmp_path, "sync", "--raw-only", "pc_policyperiod")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert first.stdout.strip().splitlines()[-1].startswith("cda_sync_job succeeded (run ")
    assert "changed cda_raw 1" in first.stdout
    assert " DEBUG - " not in first.stderr  # the console shows the pipeline's lines, not Dagster's bookkeeping
    assert "[1/1] pc_policyperiod: 2 batches" in first.stderr and "UTC (" in first.stderr  # progress, readable times
    loaded = raw_rows(tmp_path, "pc_policyperiod")
    assert loaded

    dry = cli(tmp_path, "reset", "pc_policyperiod", "--layers", "raw", "--dry-run")
    assert dry.returncode == 0 and "raw/pc_policyperiod" in dry.stdout, dry.stdout + dry.stderr
    assert raw_rows(tmp_path, "pc_policyperiod") == loaded
    reset = cli(tmp_path, "reset", "pc_policyperiod", "--layers", "raw", "--yes")
    assert reset.returncode == 0, reset.stdout + reset.stderr
    assert not DeltaTable.is_deltatable(str(tmp_path / "delta" / "raw" / "pc_policyperiod"))

    again = cli(tmp_path, "sync", "--raw-only", "pc_policyperiod")
    assert again.returncode == 0, again.stderr[-3000:]
    assert raw_rows(tmp_path, "pc_policyperiod") == loaded

    with dg.DagsterInstance.from_config(str(tmp_path / "home")) as instance:
        runs = instance.get_runs()
        assert [r.job_name for r in runs] == ["cda_sync_job", "cda_sync_job"]
        # The workspace's code location: the UI lists these runs on the job's page and the timeline.
        assert all(r.remote_job_origin and r.remote_job_origin.location_name == "guidewire_pipeline" for r in runs)
        assert "pc_policyperiod" in instance.get_materialized_partitions(dg.AssetKey("cda_raw"))


def test_sync_exits_non_zero_naming_the_failed_table_and_loads_the_others(tmp_path: Path):
    generate(str(tmp_path / "cda"), tables=2, batches=1, rows=20, seed=6)
    result = cli(tmp_path, "sync", "--raw-only", "pc_policyperiod", "cc_nosuchtable")
    assert result.returncode == 1
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith("cda_sync_job FAILED") and "cc_nosuchtable" in last and "1 of 2 tables failed" in last
    assert "DAGSTER_HOME is not set" not in result.stderr
    assert pc.sum(DeltaTable(str(tmp_path / "delta" / "raw" / "pc_policyperiod")).to_pyarrow_table(columns=["id"])
                  .column("id").is_valid()).as_py() > 0


def test_status_names_an_unwritable_delta_root(tmp_path: Path):
    generate(str(tmp_path / "cda"), tables=1, batches=1, rows=10, seed=7)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the Delta root should be")
    result = cli(tmp_path, "status", GW_DELTA_ROOT=str(blocker))
    assert result.returncode == 2
    assert "GW_DELTA_ROOT" in result.stderr and str(blocker) in result.stderr
    assert "pc_policyperiod" in result.stdout  # the manifest side is still shown
