"""guidewire_e2e_job: the command users put in CI, run as they would, and its failure behaviour."""

from __future__ import annotations

import subprocess
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from guidewire_pipeline.medallion.runners.local import LocalNotebookRunner
from guidewire_pipeline.pipeline import build_e2e_job
from guidewire_pipeline.raw.defs import build_resources
from guidewire_pipeline.raw.partitions import BRONZE_ASSET_KEY, RAW_ASSET_KEY, SILVER_ASSET_KEY
from guidewire_pipeline.sample.generator import generate
from guidewire_pipeline.settings import Settings
from guidewire_pipeline.sharing.assets import DeltaSharingResource
from tests.raw.helpers import committed_folders
from tests.test_newcomer import DAGSTER, clean_env


def test_e2e_job_from_the_command_line(tmp_path: Path):
    generate(str(tmp_path / "data" / "cda"), tables=6, batches=2, rows=40, seed=8)
    command = [DAGSTER, "job", "execute", "-m", "guidewire_pipeline.definitions", "-j", "guidewire_e2e_job"]
    result = subprocess.run(command, cwd=tmp_path, env=clean_env(GW_ACTIVATION_LINK_DIR=str(tmp_path / "links")),
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    delta = tmp_path / "data" / "delta"
    for layer in ("raw", "bronze", "silver"):
        assert DeltaTable(str(delta / layer / "cc_claim")).version() >= 0
    for mart in ("claims_by_state_month", "policies_in_force_by_month"):
        assert len(DeltaTable(str(delta / "gold" / mart)).to_pyarrow_table()) > 0
    assert "dry run: no Databricks workspace configured" in result.stdout + result.stderr


@pytest.mark.usefixtures("ray_local")
def test_a_failing_table_does_not_stop_the_others(sample_cda: Path, tmp_path: Path):
    bad = committed_folders(sample_cda, "cc_contact")[-1]
    for path in bad.glob("*.parquet"):
        if path.stat().st_size:
            data = pq.read_table(path)
            index = data.schema.get_field_index("email")
            pq.write_table(data.set_column(index, "email", pa.array([1] * len(data), pa.int64())), path)
    settings = Settings(manifest_uri=str(sample_cda / "manifest.json"), delta_root=str(tmp_path / "delta"),
                        sharepack=None, ray_address=None, databricks_host=None)
    resources = {**build_resources(settings), "notebook_runner": LocalNotebookRunner(),
                 "delta_sharing": DeltaSharingResource(activation_link_dir=str(tmp_path / "links"))}
    with dg.instance_for_test() as instance:
        result = build_e2e_job(settings).execute_in_process(instance=instance, resources=resources,
                                                            raise_on_error=False)
        assert not result.success
        failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
        assert failure.step_key == "delta_sharing"  # every step ran; the last one reports
        assert "raw cc_contact" in failure.step_failure_data.error.message
        assert "email" in failure.step_failure_data.error.message
        for key in (RAW_ASSET_KEY, BRONZE_ASSET_KEY, SILVER_ASSET_KEY):
            materialized = instance.get_materialized_partitions(key)
            assert "cc_claim" in materialized and "cc_contact" not in materialized, key
        assert len(DeltaTable(str(tmp_path / "delta" / "gold" / "claims_by_state_month")).to_pyarrow_table()) > 0
