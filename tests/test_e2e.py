"""guidewire_job: the one command users put in CI, run as they would, and its failure behaviour."""

from __future__ import annotations

import subprocess
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from guidewire_pipeline.pipeline import guidewire_job
from guidewire_pipeline.raw.partitions import (
    BRONZE_ASSET_KEY,
    RAW_ASSET_KEY,
    SILVER_ASSET_KEY,
    gold_asset_key,
)
from guidewire_pipeline.sample.generator import generate
from tests.helpers import resources_for, settings_for
from tests.raw.helpers import committed_folders
from tests.test_newcomer import DAGSTER, clean_env


def test_guidewire_job_from_the_command_line(tmp_path: Path):
    generate(str(tmp_path / "data" / "cda"), tables=6, batches=2, rows=40, seed=8)
    command = [DAGSTER, "job", "execute", "-m", "guidewire_pipeline.definitions", "-j", "guidewire_job"]
    result = subprocess.run(command, cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    delta = tmp_path / "data" / "delta"
    for layer in ("raw", "bronze", "silver"):
        assert DeltaTable(str(delta / layer / "cc_claim")).version() >= 0
    for mart in ("claims_by_state_month", "policies_in_force_by_month"):
        assert len(DeltaTable(str(delta / "gold" / mart)).to_pyarrow_table()) > 0
    assert "delta_sharing" not in result.stderr  # sharing is not part of the data refresh


@pytest.mark.usefixtures("ray_local")
def test_a_failing_table_does_not_stop_the_others(sample_cda: Path, tmp_path: Path):
    bad = committed_folders(sample_cda, "cc_contact")[-1]
    for path in bad.glob("*.parquet"):
        if path.stat().st_size:
            data = pq.read_table(path)
            index = data.schema.get_field_index("email")
            pq.write_table(data.set_column(index, "email", pa.array([1] * len(data), pa.int64())), path)
    settings = settings_for(str(sample_cda / "manifest.json"), str(tmp_path / "delta"))
    with dg.instance_for_test() as instance:
        result = guidewire_job.execute_in_process(instance=instance, resources=resources_for(settings),
                                                  raise_on_error=False)
        assert not result.success
        failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
        assert failure.step_key == "medallion_after_raw"  # both steps ran; the last one reports
        message = failure.step_failure_data.error.message
        assert "raw/cc_contact" in message and "email" in message
        for key in (RAW_ASSET_KEY, BRONZE_ASSET_KEY, SILVER_ASSET_KEY):
            materialized = instance.get_materialized_partitions(key)
            assert "cc_claim" in materialized and "cc_contact" not in materialized, key
        assert instance.fetch_materializations(gold_asset_key("claims_by_state_month"), limit=1).records
        assert len(DeltaTable(str(tmp_path / "delta" / "gold" / "claims_by_state_month")).to_pyarrow_table()) > 0
