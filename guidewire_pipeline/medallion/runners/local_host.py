"""The local medallion process: ``python -m guidewire_pipeline.medallion.runners.local_host``.

Started by ``LocalNotebookRunner`` through Dagster Pipes (extras: ``request``, the notebooks' JSON
request). It starts Sail once, then executes the notebooks of the requested layers in order, in this
process, with ``spark`` and ``dbutils`` bound (``notebook_host.py``), exactly as the Databricks tasks
run them. The engine's log lines go to Dagster through ``pipes.log``. For each task it reports one
Pipes custom message ``{"task": layer, "status": "ok", "output": <exit value>}`` or
``{"task": layer, "status": "failed", "error": ...}``; after a failed task it stops (downstream tasks
do not run, as on Databricks). A hard crash (the process killed) leaves the messages sent so far.
Each task message also carries ``seconds``, and the first one ``start_seconds`` (imports and Sail start).

Start-up is most of a no-op run, so this module imports neither Dagster nor ``runners.base`` (Dagster
alone is 0.65 s): the notebooks' names come from ``NOTEBOOKS`` below (a test checks them against
``runners.base.NOTEBOOKS``), and the engine sets the allocator variables before pyarrow loads.
"""

from __future__ import annotations

import json
import logging
import time
import traceback
from pathlib import Path
from typing import Any

from guidewire_pipeline.medallion.runners.notebook_host import Dbutils, TaskValues, run_notebook_file

NOTEBOOKS_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = {"bronze": "01_bronze.py", "silver": "02_silver.py", "gold": "03_gold.py"}  # in run order


class _PipesLogHandler(logging.Handler):
    def __init__(self, pipes: Any):
        super().__init__(logging.INFO)
        self.pipes = pipes

    def emit(self, record: logging.LogRecord) -> None:
        level = "warning" if record.levelno == logging.WARNING else "error" if record.levelno >= logging.ERROR else "info"
        try:
            getattr(self.pipes.log, level)(record.getMessage())
        except Exception:  # logging must never end the run
            pass


def main() -> None:
    started = time.perf_counter()
    import sys

    from dagster_pipes import open_dagster_pipes

    with open_dagster_pipes() as pipes:
        request = json.loads(pipes.extras["request"])
        engine_log = logging.getLogger("gw_medallion")
        engine_log.setLevel(logging.INFO)
        engine_log.addHandler(_PipesLogHandler(pipes))
        engine_log.propagate = False
        sys.path.insert(0, str(NOTEBOOKS_DIR))  # the engine beside the notebooks, as on Databricks
        import gw_medallion_engine as engine

        server, spark = engine.start_local_spark(request["catalog"])
        timing: dict[str, float] = {"start_seconds": round(time.perf_counter() - started, 3)}
        shared: dict[str, dict[str, Any]] = {}
        try:
            for layer in (lay for lay in NOTEBOOKS if lay in request["layers"]):
                dbutils = Dbutils({"request": json.dumps(request)}, TaskValues(layer, shared=shared))
                notebook = NOTEBOOKS_DIR / NOTEBOOKS[layer]
                began = time.perf_counter()
                try:
                    output = run_notebook_file(notebook, str(notebook), {"spark": spark, "dbutils": dbutils})
                except Exception as error:  # the task failed as a whole: report it, run nothing downstream
                    pipes.log.error(f"task {layer} failed: {error}\n{traceback.format_exc()}")
                    pipes.report_custom_message({"task": layer, "status": "failed",
                                                 "error": f"{type(error).__name__}: {error}"})
                    break
                timing["seconds"] = round(time.perf_counter() - began, 3)
                pipes.report_custom_message({"task": layer, "status": "ok", "output": output, **timing})
                timing = {}
        finally:
            spark.stop()
            server.stop()


if __name__ == "__main__":
    main()
