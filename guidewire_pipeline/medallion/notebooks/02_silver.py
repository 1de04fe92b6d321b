# Databricks notebook source
# MAGIC %md
# MAGIC # 02 Silver: the current state of every Guidewire record (Guidewire's MERGED output)
# MAGIC For each table in `tables`, applies the bronze change rows that silver has not seen yet to
# MAGIC `<delta_root>/silver/<table>`, one row per `id`:
# MAGIC - per id only the latest change by `gw_seq_key` counts; operation 0 and 2 insert, 4 updates, 1 deletes
# MAGIC   (rows with any other code are ignored and counted, with a warning);
# MAGIC - `DeltaTable.merge`, guarded by `s.gw_seq_key > t.gw_seq_key`: an older change never overwrites newer state;
# MAGIC - an id deleted in an earlier run stays deleted when an older insert or update arrives late
# MAGIC   (the delete is looked up in bronze, which keeps every change);
# MAGIC - incremental: silver records the raw version it has applied as app transaction `guidewire-silver`
# MAGIC   and reads bronze rows with a larger `gw_raw_version`. Nothing new: no commit, no new Delta version.
# MAGIC
# MAGIC The change columns of the last change (`gwcbi___seqval_hex`, `gw_seq_key`, `gwcbi___operation`,
# MAGIC the `gwcbi___*_ts` operation times) and the lineage columns stay, for audit.
# MAGIC Skipped with a reason: no bronze table, or a bronze table without the change columns.
# MAGIC
# MAGIC Parameters: `tables` (JSON list of table names), `delta_root`.
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

pipes, params = open_notebook_pipes(["tables", "delta_root"])
tables: list[str] = json.loads(params["tables"])
delta_root = params["delta_root"].rstrip("/")

# COMMAND ----------

# MAGIC %md
# MAGIC ## Silver for one table

# COMMAND ----------

import time
import traceback

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake

BRONZE_APP_ID = "guidewire-bronze"
SILVER_APP_ID = "guidewire-silver"
REQUIRED_COLUMNS = ("id", "gwcbi___operation", "gwcbi___seqval_hex", "gw_seq_key", "gw_raw_version")
DELETE = 1
KNOWN_OPERATIONS = (0, 1, 2, 4)  # 3 would be a SQL Server CDC before-image: never state to apply


def latest_change_per_id(changes: pa.Table) -> pa.Table:
    """One row per id: the largest ``gw_seq_key``; on a tie, the later raw version."""
    ordered = changes.sort_by(
        [("id", "ascending"), ("gw_seq_key", "descending"), ("gw_raw_version", "descending")]
    )
    ids = ordered["id"].combine_chunks()
    if len(ids) == 0:
        return ordered
    first_of_id = pa.concat_arrays([pa.array([True]), pc.not_equal(ids.slice(1), ids.slice(0, len(ids) - 1))])
    return ordered.filter(first_of_id)


def drop_if_deleted_earlier(
    bronze: DeltaTable, winners: pa.Table, applied_raw_version: int
) -> tuple[pa.Table, int]:
    """Drop inserts/updates older than a delete that silver applied in an earlier run (the row is gone
    from silver, so the merge guard cannot see it). Returns the kept rows and how many were dropped."""
    upserts = pc.not_equal(winners["gwcbi___operation"], DELETE)
    if applied_raw_version < 0 or not pc.any(upserts).as_py():
        return winners, 0
    candidate_ids = pc.filter(winners["id"], upserts)
    dataset = bronze.to_pyarrow_dataset()
    earlier_deletes = dataset.to_table(
        columns=["id", "gw_seq_key"],
        filter=(pads.field("gwcbi___operation") == DELETE)
        & (pads.field("gw_raw_version") <= applied_raw_version)
        & pads.field("id").isin(candidate_ids),
    )
    if not earlier_deletes.num_rows:
        return winners, 0
    last_delete = earlier_deletes.group_by("id").aggregate([("gw_seq_key", "max")])
    joined = winners.join(last_delete, keys="id", join_type="left outer")
    stale = pc.and_(
        pc.not_equal(joined["gwcbi___operation"], DELETE),
        pc.fill_null(pc.less_equal(joined["gw_seq_key"], joined["gw_seq_key_max"]), False),
    )
    kept = joined.filter(pc.invert(stale)).drop_columns(["gw_seq_key_max"]).select(winners.column_names)
    return kept, winners.num_rows - kept.num_rows


def silver_table(table_name: str) -> dict[str, Any]:
    """Apply the new bronze changes of ``table_name`` to silver. Returns the Pipes message."""
    bronze_uri, silver_uri = f"{delta_root}/bronze/{table_name}", f"{delta_root}/silver/{table_name}"
    result: dict[str, Any] = {"table": table_name, "layer": "silver", "silver_uri": silver_uri}
    bronze_options, silver_options = delta_storage_options(bronze_uri), delta_storage_options(silver_uri)
    if not DeltaTable.is_deltatable(bronze_uri, storage_options=bronze_options):
        return {
            **result,
            "status": "skipped",
            "reason": f"no bronze Delta table at {bronze_uri}: materialize cda_bronze for {table_name} first (or its raw table does not exist yet)",
        }
    bronze = DeltaTable(bronze_uri, storage_options=bronze_options)
    bronze_columns = pa.schema(bronze.schema().to_arrow()).names
    missing = [c for c in REQUIRED_COLUMNS if c not in bronze_columns]
    if missing:
        return {
            **result,
            "status": "skipped",
            "reason": f"{table_name} has no change columns {missing}: without id, operation and sequence there is no current state to compute",
        }
    bronze_raw_version = bronze.transaction_version(BRONZE_APP_ID)
    silver = (
        DeltaTable(silver_uri, storage_options=silver_options)
        if DeltaTable.is_deltatable(silver_uri, storage_options=silver_options)
        else None
    )
    applied = silver.transaction_version(SILVER_APP_ID) if silver is not None else None
    applied = -1 if applied is None else applied
    result.update(bronze_version=bronze.version(), raw_version=bronze_raw_version, raw_version_before=applied)
    if bronze_raw_version is None or bronze_raw_version <= applied:
        return {
            **result,
            "status": "ok",
            "reason": "nothing new in bronze",
            "rows_in": 0,
            "rows_out": 0,
            "silver_rows": silver_row_count(silver) if silver is not None else 0,
            "silver_version": silver.version() if silver is not None else None,
            "committed": False,
        }
    changes = bronze.to_pyarrow_dataset().to_table(
        filter=(pads.field("gw_raw_version") > applied) & (pads.field("gw_raw_version") <= bronze_raw_version)
    )
    without_id = pc.sum(pc.is_null(changes["id"]).cast(pa.int64())).as_py() or 0
    if without_id:
        raise ValueError(
            f"{table_name}: {without_id} bronze change rows have a null id; fix the source rows, silver cannot key them"
        )
    known = pc.is_in(
        changes["gwcbi___operation"],
        value_set=pa.array(KNOWN_OPERATIONS, changes.schema.field("gwcbi___operation").type),
    )
    unknown_operations = changes.num_rows - (pc.sum(known.cast(pa.int64())).as_py() or 0)
    if unknown_operations:
        codes = pc.unique(pc.filter(changes["gwcbi___operation"], pc.invert(known))).to_pylist()
        pipes.log.warning(
            f"silver {table_name}: ignored {unknown_operations} change rows with operation codes {codes} "
            f"(only {list(KNOWN_OPERATIONS)} are insert, delete, insert, update)"
        )
    winners = latest_change_per_id(changes.filter(known))
    winners, stale_after_delete = drop_if_deleted_earlier(bronze, winners, applied)
    commit = CommitProperties(
        custom_metadata={
            "gw_layer": "silver",
            "gw_raw_version": str(bronze_raw_version),
            "gw_bronze_version": str(bronze.version()),
        },
        app_transactions=[Transaction(SILVER_APP_ID, bronze_raw_version)],
    )
    counts = {"inserted": 0, "updated": 0, "deleted": 0}
    if silver is None:
        live = winners.filter(pc.not_equal(winners["gwcbi___operation"], DELETE))
        write_deltalake(
            silver_uri, live, mode="append", storage_options=silver_options, commit_properties=commit
        )
        counts["inserted"] = live.num_rows
    else:
        metrics = (
            silver.merge(
                winners,
                predicate="t.id = s.id",
                source_alias="s",
                target_alias="t",
                merge_schema=True,
                commit_properties=commit,
            )
            .when_matched_delete(predicate=f"s.gwcbi___operation = {DELETE} AND s.gw_seq_key > t.gw_seq_key")
            .when_matched_update_all(
                predicate=f"s.gwcbi___operation <> {DELETE} AND s.gw_seq_key > t.gw_seq_key"
            )
            .when_not_matched_insert_all(predicate=f"s.gwcbi___operation <> {DELETE}")
            .execute()
        )
        counts = {
            "inserted": int(metrics.get("num_target_rows_inserted", 0)),
            "updated": int(metrics.get("num_target_rows_updated", 0)),
            "deleted": int(metrics.get("num_target_rows_deleted", 0)),
        }
    silver = DeltaTable(silver_uri, storage_options=silver_options)
    # rows_in: bronze changes read; rows_out: silver rows inserted, updated or deleted; silver_rows: rows now.
    return {
        **result,
        "status": "ok",
        "rows_in": changes.num_rows,
        "ids_changed": winners.num_rows + stale_after_delete,
        "stale_after_delete": stale_after_delete,
        "unknown_operations_ignored": unknown_operations,
        **counts,
        "rows_out": sum(counts.values()),
        "silver_rows": silver_row_count(silver),
        "silver_version": silver.version(),
        "committed": True,
    }


def silver_row_count(silver: DeltaTable) -> int:
    """Rows in the current silver version, from the Delta log's file statistics (no data read)."""
    actions = pa.table(silver.get_add_actions(flatten=True))
    if "num_records" not in actions.column_names:
        return silver.to_pyarrow_dataset().count_rows()
    return int(pc.sum(actions["num_records"]).as_py() or 0)


# COMMAND ----------

# MAGIC %md
# MAGIC ## Run every table and report each one

# COMMAND ----------

with pipes:
    for table_name in tables:
        started = time.monotonic()
        try:
            message = silver_table(table_name)
        except Exception as error:  # one table's problem is reported for that table; the others carry on
            pipes.log.error(f"silver {table_name} failed: {error}\n{traceback.format_exc()}")
            message = {
                "table": table_name,
                "layer": "silver",
                "status": "failed",
                "reason": f"{type(error).__name__}: {error}",
            }
        if message["status"] == "skipped":
            pipes.log.warning(f"silver {table_name} skipped: {message['reason']}")
        message["seconds"] = round(time.monotonic() - started, 3)
        pipes.report_custom_message(message)
