"""databricks.yml defines the same multi-task job the runner submits: three notebook tasks in
bronze -> silver -> gold order, every notebook path existing, and a request the engine accepts."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from guidewire_pipeline.medallion.runners.base import LAYER_ORDER, NOTEBOOKS

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_the_bundle_job_is_the_runners_multi_task_job():
    bundle = yaml.safe_load((REPO_ROOT / "databricks.yml").read_text())
    (job,) = bundle["resources"]["jobs"].values()
    tasks = job["tasks"]
    assert [t["task_key"] for t in tasks] == list(LAYER_ORDER)
    assert [t.get("depends_on") for t in tasks] == [None, [{"task_key": "bronze"}], [{"task_key": "silver"}]]
    for task in tasks:
        path = REPO_ROOT / task["notebook_task"]["notebook_path"]
        assert path.is_file() and path.name == NOTEBOOKS[task["task_key"]]
    (parameter,) = job["parameters"]
    request = json.loads(parameter["default"].replace("${var.catalog}", "main").replace("${var.delta_root}", "s3://b"))
    assert request["tables"] == "*" and request["marts"] == "*" and request["catalog"] == "main"
    included = bundle["sync"]["include"]
    assert "guidewire_pipeline/medallion/notebooks/*.py" in included  # the engine file beside the notebooks
