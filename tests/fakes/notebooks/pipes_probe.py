# Databricks notebook source
# ruff: noqa: F821  (dbutils is a global that Databricks provides)
# MAGIC %md
# MAGIC Test notebook for the fake Databricks workspace. It opens Dagster Pipes the way the
# MAGIC medallion notebooks do and reports one custom message per table of the `tables` parameter (a JSON list).
# MAGIC `mode`: `ok` (default), `raise` (fails after logging), `block` (never ends; for cancellation).

# COMMAND ----------

import json
import os
import time
from contextlib import contextmanager

from dagster_pipes import (
    DagsterPipesError,
    PipesBufferedFilesystemMessageWriterChannel,
    PipesContextLoader,
    PipesDatabricksNotebookWidgetsParamsLoader,
    PipesDbfsMessageWriter,
    open_dagster_pipes,
)


def _local_path(remote_path):
    """/Volumes/... and DBFS paths as this process sees them (GW_*_MOUNT are set by the fake only)."""
    if remote_path.startswith("/Volumes/"):
        return os.path.join(
            os.environ.get("GW_VOLUMES_MOUNT", "/Volumes"), remote_path.removeprefix("/Volumes/")
        )
    return os.path.join(
        os.environ.get("GW_DBFS_MOUNT", "/dbfs"), remote_path.removeprefix("dbfs:").lstrip("/")
    )


class MountedContextLoader(PipesContextLoader):
    @contextmanager
    def load_context(self, params):
        with open(_local_path(params["path"]), encoding="utf-8") as f:
            yield json.load(f)


class MountedMessageWriter(PipesDbfsMessageWriter):
    def make_channel(self, params):
        return PipesBufferedFilesystemMessageWriterChannel(
            path=_local_path(params["path"]), interval=self.interval
        )

    def get_opened_extras(self):
        try:
            return super().get_opened_extras()
        except DagsterPipesError:  # no Spark session: the fake workspace, or serverless without cluster logs
            return {}


# COMMAND ----------

with open_dagster_pipes(
    params_loader=PipesDatabricksNotebookWidgetsParamsLoader(dbutils.widgets),
    context_loader=MountedContextLoader(),
    message_writer=MountedMessageWriter(interval=1),
) as pipes:
    tables = json.loads(
        dbutils.widgets.get("tables")
    )  # a JSON list of table names, as in the medallion notebooks
    dbutils.widgets.text("mode", "ok")
    mode = dbutils.widgets.get("mode")
    pipes.log.info(f"pipes_probe: mode={mode} tables={tables}")
    if mode == "raise":
        raise ValueError(f"pipes_probe was told to fail (tables: {', '.join(tables)})")
    if mode == "block":
        while True:
            time.sleep(0.1)
    for table in tables:
        pipes.report_custom_message({"table": table, "status": "ok", "rows": len(table)})
