"""The medallion runner interface: one call runs bronze -> silver -> gold for a set of tables and marts.

``NotebookRunner.run_medallion(context, MedallionRequest)`` -> ``MedallionRun``: one local process
(``LocalNotebookRunner``) or one multi-task Databricks run (``DatabricksNotebookRunner``). Both execute
the same notebooks (``notebooks/01_bronze.py``, ``02_silver.py``, ``03_gold.py``), which call the one
engine (``notebooks/gw_medallion_engine.py``) on a Spark session: Sail locally, Databricks' Spark remotely.

Semantics, the same for both runners:
- per-table problems are per-table results (status "failed" with the reason), never an exception;
- silver runs for the tables whose bronze did not fail; a mart whose silver input failed or is missing
  is "skipped" with the reason;
- a whole task that fails (notebook crash, Databricks task FAILED) still returns: completed tasks'
  results as they are, the failed task's tables "failed" with the task's error, downstream tasks'
  tables "skipped" ("upstream task silver failed: ..."), and ``run_metadata["failed_task"]``;
- ``dagster.Failure`` only when nothing could run at all (cannot upload or submit, bad settings).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import dagster as dg

from guidewire_pipeline.lakehouse import Lakehouse
from guidewire_pipeline.medallion.marts import Mart

NOTEBOOKS_DIR = Path(__file__).resolve().parent.parent / "notebooks"
GOLD_DIR = Path(__file__).resolve().parent.parent / "gold"
ENGINE_FILE = "gw_medallion_engine.py"

LayerName = Literal["bronze", "silver", "gold"]
Status = Literal["changed", "unchanged", "skipped", "failed"]
LAYER_ORDER: tuple[LayerName, ...] = ("bronze", "silver", "gold")
NOTEBOOKS: dict[str, str] = {"bronze": "01_bronze.py", "silver": "02_silver.py", "gold": "03_gold.py"}


@dataclass(frozen=True)
class MedallionRequest:
    lakehouse: Lakehouse
    tables: tuple[str, ...]  # bronze + silver for these tables
    marts: tuple[Mart, ...]  # gold marts to compute
    layers: tuple[LayerName, ...] = ("bronze", "silver", "gold")

    def payload(self, chunk_rows: int | None = None) -> dict[str, Any]:
        """The JSON the notebooks read from their ``request`` widget."""
        payload: dict[str, Any] = {
            "catalog": self.lakehouse.catalog,
            "delta_root": self.lakehouse.delta_root,
            "tables": list(self.tables),
            "marts": [m.name for m in self.marts],
            "layers": [layer for layer in LAYER_ORDER if layer in self.layers],
        }
        if chunk_rows:
            payload["chunk_rows"] = chunk_rows
        return payload

    def names(self, layer: str) -> list[str]:
        return [m.name for m in self.marts] if layer == "gold" else list(self.tables)


@dataclass(frozen=True)
class LayerResult:
    layer: LayerName
    name: str  # table (bronze/silver) or mart (gold)
    status: Status  # unchanged: nothing new, nothing committed
    reason: str | None
    # JSON-able; when known: row_count, uri, table_name (three-part), columns [[name, type], ...], rows_in,
    # rows_out, seconds, savepoint_before/after, warnings
    metadata: dict[str, Any]


@dataclass
class MedallionRun:
    results: list[LayerResult]
    run_metadata: dict[str, Any]  # runner, databricks run id and URL, task run URLs ...

    def for_layer(self, layer: str) -> list[LayerResult]:
        return [r for r in self.results if r.layer == layer]


@dataclass
class TaskOutcome:
    """What one task (layer) of a run did: ``ok`` with the notebook's results, ``failed`` with its error,
    or ``not_run`` (an upstream task failed, or the run was cancelled first)."""

    layer: str
    status: Literal["ok", "failed", "not_run"]
    results: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


def parse_notebook_output(layer: str, output: str | None) -> list[dict[str, Any]]:
    """The per-table results in a notebook's exit value (``{"layer": ..., "results": [...]}``).
    Raises ValueError when the value is not that JSON (e.g. truncated)."""
    if not output:
        raise ValueError(f"notebook {NOTEBOOKS[layer]} returned no result")
    parsed = json.loads(output)
    if not isinstance(parsed, dict) or parsed.get("layer") != layer or not isinstance(parsed.get("results"), list):
        raise ValueError(f"notebook {NOTEBOOKS[layer]} returned {output[:200]!r}, not its results")
    return parsed["results"]


def assemble_results(request: MedallionRequest, outcomes: dict[str, TaskOutcome]) -> list[LayerResult]:
    """One ``LayerResult`` per requested (layer, table or mart), from the tasks' outcomes."""
    results: list[LayerResult] = []
    upstream_failure: str | None = None
    for layer in (lay for lay in LAYER_ORDER if lay in request.layers):
        outcome = outcomes.get(layer) or TaskOutcome(layer, "not_run")
        by_name = {str(r.get("name")): r for r in outcome.results if isinstance(r, dict)}
        for name in request.names(layer):
            if outcome.status == "failed":
                status, reason, metadata = "failed", f"task {layer} failed: {outcome.error}", {}
            elif outcome.status == "not_run":
                why = upstream_failure or "the run ended before it started"
                status, reason, metadata = "skipped", why, {}
            elif name not in by_name:
                status, reason, metadata = "failed", f"notebook {NOTEBOOKS[layer]} reported nothing for {name}", {}
            else:
                found = by_name[name]
                status, reason, metadata = found.get("status", "failed"), found.get("reason"), found.get("metadata") or {}
            results.append(LayerResult(layer=layer, name=name, status=status, reason=reason,  # type: ignore[arg-type]
                                       metadata={**outcome.metadata, **metadata}))
        if outcome.status == "failed" and upstream_failure is None:
            upstream_failure = f"upstream task {layer} failed: {outcome.error}"
    return results


class NotebookRunner(dg.ConfigurableResource):
    """Base class of the medallion runners (local process or one Databricks multi-task run)."""

    def run_medallion(
        self, context: dg.OpExecutionContext | dg.AssetExecutionContext, request: MedallionRequest
    ) -> MedallionRun:
        """Run ``request``'s layers once for all its tables and marts; see the module docstring."""
        raise NotImplementedError
