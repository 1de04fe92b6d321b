"""Runs one Databricks-source notebook in this process, the way a notebook task on a cluster would.

Usage (by the fake jobs service, never by hand)::

    python notebook_host.py NOTEBOOK_FILE WORKSPACE_PATH PARAMS_JSON RESULT_JSON TASK_VALUES_DIR TASK_KEY CREATED_JSON

- The notebook runs with ``guidewire_pipeline.medallion.runners.notebook_host`` (cells in order, magics
  skipped, its folder importable) and ``dbutils`` (widgets = the task's ``base_parameters``,
  ``notebook.exit``, ``jobs.taskValues`` in TASK_VALUES_DIR, shared by the run's tasks).
- ``spark`` is the local Spark engine (Sail, started in this process on first use), as a cluster's
  session would be; the catalog is ``GW_UC_CATALOG`` (default ``main``).
- RESULT_JSON receives ``{"notebook_output": {...}}`` or ``{"error": ..., "error_trace": ...}``; the exit
  status is 0 on success and 1 when the notebook raised. CREATED_JSON lists the tables Spark created
  in the session's catalog (full name, location, columns), for the fake's Unity Catalog.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any

from guidewire_pipeline.medallion.runners.notebook_host import Dbutils, TaskValues, run_notebook_file

NOTEBOOKS_DIR = Path(__file__).resolve().parents[2] / "guidewire_pipeline" / "medallion" / "notebooks"


class LazySpark:
    """Starts Sail on first attribute access, so notebooks that never touch ``spark`` start nothing."""

    def __init__(self) -> None:
        self._server: Any = None
        self._spark: Any = None

    def _session(self) -> Any:
        if self._spark is None:
            sys.path.insert(0, str(NOTEBOOKS_DIR))
            import gw_medallion_engine

            self._server, self._spark = gw_medallion_engine.start_local_spark(os.environ.get("GW_UC_CATALOG") or "main")
        return self._spark

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session(), name)

    def created_tables(self, delta_root: str) -> list[dict[str, Any]]:
        """The bronze/silver/gold tables in the session's catalog; locations by the lakehouse layout
        (``<delta_root>/<schema>/<table>``, what the engine creates them with)."""
        if self._spark is None:
            return []
        catalog = self._spark.sql("SELECT current_catalog() AS c").collect()[0]["c"]
        tables = []
        for schema in ("bronze", "silver", "gold"):
            try:
                rows = self._spark.sql(f"SHOW TABLES IN `{catalog}`.`{schema}`").collect()
            except Exception:  # the schema does not exist in this session
                continue
            for row in rows:
                if row.asDict().get("isTemporary"):  # temp views are no catalog tables
                    continue
                full_name = f"{catalog}.{schema}.{row['tableName']}"
                frame = self._spark.table(full_name)
                location = f"{delta_root.rstrip('/')}/{schema}/{row['tableName']}"
                tables.append({
                    "full_name": full_name, "catalog_name": catalog, "schema_name": schema,
                    "name": row["tableName"], "table_type": "EXTERNAL", "data_source_format": "DELTA",
                    "storage_location": location,
                    "columns": [{"name": f.name, "type_text": f.dataType.simpleString(), "position": i}
                                for i, f in enumerate(frame.schema.fields)],
                })
        return tables

    def stop(self) -> None:
        if self._spark is not None:
            self._spark.stop()
            self._server.stop()


def main(argv: list[str]) -> int:
    notebook_file, workspace_path, params_json, result_json, values_dir, task_key, created_json = argv
    parameters = json.loads(Path(params_json).read_text(encoding="utf-8"))
    spark = LazySpark()
    dbutils = Dbutils(parameters, TaskValues(task_key, folder=Path(values_dir)))
    result: dict[str, Any]
    try:
        output = run_notebook_file(Path(notebook_file), workspace_path, {"spark": spark, "dbutils": dbutils})
        result = {"notebook_output": {} if output is None else {"result": output, "truncated": False}}
        status = 0
    except BaseException as e:  # noqa: BLE001 - everything a notebook raises is its error, as on Databricks
        trace = traceback.format_exc()
        result, status = {"error": f"{type(e).__name__}: {e}", "error_trace": trace}, 1
        sys.stderr.write(trace)
    try:
        delta_root = json.loads(parameters.get("request") or "{}").get("delta_root") or ""
        Path(created_json).write_text(json.dumps(spark.created_tables(delta_root)), encoding="utf-8")
    finally:
        spark.stop()
    Path(result_json).write_text(json.dumps(result), encoding="utf-8")
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
