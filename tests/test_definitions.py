"""The Definitions as a whole: concurrency is declared on every step that writes, and the shipped
instance config limits those pools."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from guidewire_pipeline.deployment import build_definitions
from guidewire_pipeline.medallion.defs import MEDALLION_POOL
from guidewire_pipeline.raw.assets import RAW_IO_MANAGER_KEY, RAW_POOL
from tests.helpers import settings_for

REPO = Path(__file__).resolve().parent.parent


def test_every_step_that_writes_a_layer_is_in_its_pool(tmp_path: Path):
    defs = build_definitions(settings_for(str(tmp_path / "manifest.json"), str(tmp_path / "delta")))
    repository = defs.get_repository_def()
    readers = {checks.node_def.name for checks in defs.asset_checks or []}  # checks read, never write
    writers: dict[str, set[str]] = {}
    for job in repository.get_all_jobs():
        for node in job.graph.iterate_op_defs():
            if node.name in readers:
                continue
            keys = set(node.required_resource_keys) | {out.io_manager_key for out in node.output_defs}
            for resource, pool in ((RAW_IO_MANAGER_KEY, RAW_POOL), ("notebook_runner", MEDALLION_POOL)):
                if resource in keys:
                    assert node.pool == pool, f"{job.name}/{node.name} writes through {resource} outside {pool}"
                    writers.setdefault(pool, set()).add(f"{job.name}/{node.name}")
    # The raw asset, cda_sync_job and guidewire_job write raw; the medallion asset, its job and guidewire_job
    # the other layers: a test that found fewer would prove nothing.
    assert len(writers[RAW_POOL]) >= 3 and len(writers[MEDALLION_POOL]) >= 3, writers


def test_the_shipped_instance_config_limits_runs_and_pools(tmp_path: Path):
    (tmp_path / "dagster.yaml").write_text((REPO / "dagster.yaml").read_text())
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        config = instance.get_concurrency_config()
        assert config.run_queue_config.max_concurrent_runs == 4
        assert config.pool_config.default_pool_limit == 2
        assert instance.run_retries_enabled
