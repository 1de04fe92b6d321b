# Databricks notebook source
# MAGIC %md
# MAGIC # 03 Gold: marts computed with DataFusion SQL over the silver tables
# MAGIC Each mart is one SQL file of `guidewire_pipeline/medallion/gold/`; Dagster passes the SQL text and the
# MAGIC silver tables it reads (its `-- inputs:` line) in the `marts` parameter, so this notebook needs no other file.
# MAGIC Each input is registered under its table name; the result replaces `<delta_root>/gold/<mart>`.
# MAGIC A mart whose inputs and SQL are unchanged since its last commit is not rewritten (no new version).
# MAGIC A mart with a missing silver input is skipped with the reason. One Pipes custom message per mart.
# MAGIC
# MAGIC Parameters: `marts` (JSON object: mart -> {"sql": ..., "inputs": [...]}), `delta_root`.
# COMMAND ----------

# MAGIC %md
# MAGIC Serverless compute takes no task libraries: the notebook installs its two dependencies itself
# MAGIC (on a cluster with them as task libraries this is quick). A comment when run as a local process.

# COMMAND ----------

# MAGIC %pip install --quiet dagster-pipes==1.13.27 deltalake==1.6.6

# COMMAND ----------

# MAGIC %md
# MAGIC ## Parameters and reporting (Pipes shim)
# MAGIC The same cell opens every notebook. On Databricks the parameters are job widgets and Pipes talks
# MAGIC through DBFS; on a laptop Dagster starts this file as a subprocess and passes them as Pipes extras.
# MAGIC The cells below only see `pipes` (log and report) and `params` (a dict of strings).
# MAGIC Run by hand (no Dagster), parameters are widgets on Databricks or `name=value` arguments locally,
# MAGIC and each table's result is printed as a JSON line.
# MAGIC Pipes files are DBFS paths (read under `/dbfs`) or Unity Catalog volume paths (`/Volumes/...`);
# MAGIC `GW_DBFS_MOUNT` / `GW_VOLUMES_MOUNT` move those mount points (the fake workspace in tests sets them).

# COMMAND ----------

import json
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from dagster_pipes import (
    DAGSTER_PIPES_CONTEXT_ENV_VAR,
    DagsterPipesError,
    PipesBufferedFilesystemMessageWriterChannel,
    PipesContextLoader,
    PipesDatabricksNotebookWidgetsParamsLoader,
    PipesDbfsMessageWriter,
    PipesEnvVarParamsLoader,
    open_dagster_pipes,
)


def _mounted_path(remote_path: str) -> str:
    """A DBFS or /Volumes path as this process opens it (through the FUSE mounts)."""
    if remote_path.startswith("/Volumes/"):
        return os.path.join(
            os.environ.get("GW_VOLUMES_MOUNT") or "/Volumes", remote_path.removeprefix("/Volumes/")
        )
    return os.path.join(
        os.environ.get("GW_DBFS_MOUNT") or "/dbfs", remote_path.removeprefix("dbfs:").lstrip("/")
    )


class _MountedContextLoader(PipesContextLoader):
    @contextmanager
    def load_context(self, params: Any) -> Iterator[Any]:
        with open(_mounted_path(params["path"]), encoding="utf-8") as context_file:
            yield json.load(context_file)


class _MountedMessageWriter(PipesDbfsMessageWriter):
    def make_channel(self, params: Any) -> PipesBufferedFilesystemMessageWriterChannel:
        return PipesBufferedFilesystemMessageWriterChannel(
            path=_mounted_path(params["path"]), interval=self.interval
        )

    def get_opened_extras(self) -> Any:
        try:
            return super().get_opened_extras()
        except (
            DagsterPipesError
        ):  # no Spark session (serverless, or the fake workspace): no driver log location
            return {}


class _StandalonePipes:
    """Stands in for Pipes when no orchestrator started the notebook (run by hand): logs go to
    stderr and each table's result is printed as one JSON line."""

    log = logging.getLogger("guidewire_notebook")

    def report_custom_message(self, payload: Any) -> None:
        print(json.dumps(payload, default=str), flush=True)

    def __enter__(self) -> "_StandalonePipes":
        logging.basicConfig(level=logging.INFO)
        return self

    def __exit__(self, *exc_info: Any) -> None:
        return None


def _widget(widgets: Any, name: str) -> str | None:
    try:
        return widgets.get(name)
    except Exception:  # Databricks raises InputWidgetNotDefined for a widget nobody passed or declared
        return None


def open_notebook_pipes(names: list[str]) -> tuple[Any, dict[str, str]]:
    """Pipes (or a stand-in) and the parameters ``names`` as strings.

    Databricks: widgets (declared here, so a run by hand shows them). Dagster on a laptop: Pipes extras.
    By hand on a laptop: ``python <notebook>.py name=value ...``. A missing parameter raises ValueError."""
    widgets = getattr(globals().get("dbutils"), "widgets", None)
    if widgets is not None:
        for name in names:
            if _widget(widgets, name) is None:
                widgets.text(name, "")
        if _widget(widgets, DAGSTER_PIPES_CONTEXT_ENV_VAR) is None:  # the widget name Pipes uses
            pipes: Any = _StandalonePipes()
        else:
            pipes = open_dagster_pipes(
                params_loader=PipesDatabricksNotebookWidgetsParamsLoader(widgets),
                context_loader=_MountedContextLoader(),
                message_writer=_MountedMessageWriter(interval=2),
            )
        values = {name: _widget(widgets, name) for name in names}
    elif PipesEnvVarParamsLoader().is_dagster_pipes_process():
        pipes = open_dagster_pipes()
        values = {name: pipes.extras.get(name) for name in names}
    else:
        pipes = _StandalonePipes()
        arguments = dict(arg.split("=", 1) for arg in sys.argv[1:] if "=" in arg)
        values = {name: arguments.get(name) for name in names}
    missing = [name for name, value in values.items() if value is None or value == ""]
    if missing:
        raise ValueError(
            f"Notebook parameters {missing} are missing: pass them as widgets (Databricks), Pipes extras "
            f"(Dagster) or name=value arguments (by hand)."
        )
    return pipes, {name: str(value) for name, value in values.items()}


def delta_storage_options(uri: str) -> dict[str, str]:
    """delta-rs options for ``uri`` from the standard AWS_* variables (never from parameters: no secrets in Pipes)."""
    if not uri.startswith(("s3://", "s3a://")):
        return {}
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    options = {"AWS_REGION": region, "aws_conditional_put": "etag"}
    if endpoint:
        options["AWS_ENDPOINT_URL"] = endpoint
        if endpoint.startswith("http://"):
            options["AWS_ALLOW_HTTP"] = "true"
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        if os.environ.get(name):
            options[name] = os.environ[name]
    return options


# COMMAND ----------

pipes, params = open_notebook_pipes(["marts", "delta_root"])
marts: dict[str, dict[str, Any]] = json.loads(params["marts"])
delta_root = params["delta_root"].rstrip("/")

# COMMAND ----------

# MAGIC %md
# MAGIC ## Gold for one mart

# COMMAND ----------

import hashlib
import time
import traceback

import pyarrow as pa
from deltalake import CommitProperties, DeltaTable, QueryBuilder, write_deltalake

VIEW_TYPES = {pa.string_view(): pa.string(), pa.binary_view(): pa.binary()}


def plain_types(result: pa.Table) -> pa.Table:
    """DataFusion returns view types; store plain strings and binaries, which every Delta reader knows."""
    schema = pa.schema([field.with_type(VIEW_TYPES.get(field.type, field.type)) for field in result.schema])
    return result.cast(schema)


def gold_mart(mart: str, sql: str, inputs: list[str]) -> dict[str, Any]:
    """Recompute ``<delta_root>/gold/<mart>`` from its silver inputs. Returns the Pipes message."""
    gold_uri = f"{delta_root}/gold/{mart}"
    result: dict[str, Any] = {"table": mart, "layer": "gold", "gold_uri": gold_uri, "inputs": inputs}
    query = QueryBuilder()
    input_versions: dict[str, int] = {}
    registered: list[DeltaTable] = []
    for table_name in inputs:
        silver_uri = f"{delta_root}/silver/{table_name}"
        options = delta_storage_options(silver_uri)
        if not DeltaTable.is_deltatable(silver_uri, storage_options=options):
            return {
                **result,
                "status": "skipped",
                "reason": f"silver table {table_name} does not exist at {silver_uri}: materialize cda_silver for {table_name} (or drop mart {mart})",
            }
        silver = DeltaTable(silver_uri, storage_options=options)
        input_versions[table_name] = silver.version()
        registered.append(silver)
        query.register(table_name, silver)
    # What this mart was computed from: the same inputs and SQL give the same mart, so nothing to commit.
    state = json.dumps(
        {"inputs": input_versions, "sql_sha256": hashlib.sha256(sql.encode()).hexdigest()}, sort_keys=True
    )
    result.update(input_versions=input_versions)
    gold_options = delta_storage_options(gold_uri)
    if DeltaTable.is_deltatable(gold_uri, storage_options=gold_options):
        gold = DeltaTable(gold_uri, storage_options=gold_options)
        last_state = gold.history(1)[0].get("gw_gold_state")
        if last_state == state:
            return {
                **result,
                "status": "ok",
                "reason": "inputs and SQL unchanged",
                "rows_out": gold.to_pyarrow_dataset().count_rows(),
                "gold_version": gold.version(),
                "committed": False,
            }
    rows = plain_types(pa.table(query.execute(sql).read_all()))
    write_deltalake(
        gold_uri,
        rows,
        mode="overwrite",
        schema_mode="overwrite",
        storage_options=gold_options,
        commit_properties=CommitProperties(custom_metadata={"gw_layer": "gold", "gw_gold_state": state}),
    )
    rows_in = sum(table.to_pyarrow_dataset().count_rows() for table in registered)
    gold = DeltaTable(gold_uri, storage_options=gold_options)
    return {
        **result,
        "status": "ok",
        "rows_in": rows_in,
        "rows_out": rows.num_rows,
        "gold_version": gold.version(),
        "committed": True,
    }


# COMMAND ----------

# MAGIC %md
# MAGIC ## Run every mart and report each one

# COMMAND ----------

with pipes:
    for mart_name, mart in marts.items():
        started = time.monotonic()
        try:
            message = gold_mart(mart_name, mart["sql"], list(mart["inputs"]))
        except Exception as error:  # one mart's problem is reported for that mart; the others carry on
            pipes.log.error(f"gold {mart_name} failed: {error}\n{traceback.format_exc()}")
            message = {
                "table": mart_name,
                "layer": "gold",
                "status": "failed",
                "reason": f"{type(error).__name__}: {error}",
            }
        if message["status"] == "skipped":
            pipes.log.warning(f"gold {mart_name} skipped: {message['reason']}")
        message["seconds"] = round(time.monotonic() - started, 3)
        pipes.report_custom_message(message)
