"""The notebook runner interface: one shape, a local and a Databricks implementation.

A runner executes one notebook file from ``guidewire_pipeline/medallion/notebooks/`` with a dict of
string parameters, through Dagster Pipes, and returns what the notebook reported. The notebook
reports one Pipes custom message per table (see ``NotebookRun.table_results``); the caller (an asset
or an op) turns each into metadata on that table's partition.

Implementations:
- ``LocalNotebookRunner`` (default): the notebook file runs as a local subprocess.
- ``DatabricksNotebookRunner``: the notebook is uploaded and runs as a one-time Databricks job run.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg

NOTEBOOKS_DIR = Path(__file__).resolve().parent.parent / "notebooks"


@dataclass
class NotebookRun:
    """What one notebook run reported back through Pipes."""

    notebook: str
    # Pipes custom messages, one per table: {"table": ..., "status": "ok"|"skipped"|"failed", ...figures}
    table_results: list[dict[str, Any]]
    # Run-level metadata for the UI, e.g. {"runner": "local"} or the Databricks run id and page URL.
    run_metadata: dict[str, Any] = field(default_factory=dict)


class NotebookRunner(dg.ConfigurableResource):
    """Base class of the notebook runners. Subclasses implement ``run_notebook``."""

    def run_notebook(
        self,
        context: dg.OpExecutionContext | dg.AssetExecutionContext,
        notebook: str,
        parameters: Mapping[str, str],
    ) -> NotebookRun:
        """Run ``notebook`` (a file name in NOTEBOOKS_DIR, e.g. ``"02_silver.py"``) with ``parameters``.

        Raises ``dagster.Failure`` naming the notebook (and, remotely, the run page) when it fails.
        """
        raise NotImplementedError
