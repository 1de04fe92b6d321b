# Databricks notebook source
# MAGIC %md
# MAGIC # 01 Bronze: raw CDA change rows, typed and with lineage
# MAGIC For each table in `tables`, reads what `<delta_root>/raw/<table>` gained since the raw Delta
# MAGIC version bronze last consumed (kept as bronze's app transaction `guidewire-bronze`), and appends it
# MAGIC to `<delta_root>/bronze/<table>`:
# MAGIC - epoch-ms change columns `gwcbi___*_ts_ms` become UTC timestamps named without `_ms`;
# MAGIC - `gw_seq_key`: `gwcbi___seqval_hex` lower-cased and zero-padded to 32 digits, so it sorts as a number;
# MAGIC - lineage: `gw_fingerprint`, `gw_batch_ts` (the CDA batch folder time), `gw_raw_version`;
# MAGIC - exact duplicate change rows are dropped, within the new rows and against rows bronze already holds.
# MAGIC
# MAGIC A table without the change columns (`id`, `gwcbi___operation`, `gwcbi___seqval_hex`) passes through
# MAGIC with a warning. A missing raw table is skipped. One Pipes custom message per table; never fails the run
# MAGIC for one table's problem.
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
# MAGIC ## Bronze for one table

# COMMAND ----------

import time
import traceback

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.fs as pafs
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake

BRONZE_APP_ID = "guidewire-bronze"
CHANGE_COLUMNS = ("id", "gwcbi___operation", "gwcbi___seqval_hex")
SEQ_KEY_WIDTH = 32  # hex digits: room above SQL Server's binary(10) seqval (20 digits)
LINEAGE_COLUMNS = ("gw_seq_key", "gw_fingerprint", "gw_batch_ts", "gw_raw_version")
DELTA_TIMESTAMP = pa.timestamp("us", tz="UTC")  # the precision Delta stores


def arrow_schema(table: DeltaTable) -> pa.Schema:
    return pa.schema(table.schema().to_arrow())


def read_raw_increment(raw: DeltaTable, after_version: int, until_version: int) -> pa.Table:
    """Rows the raw commits (after_version, until_version] appended, in raw's column types, plus
    ``gw_raw_version``. Deep raw tables: the change data feed. Shallow ones (add actions pointing at
    the CDA files in place, absolute paths): the files each commit added, since delta-rs' feed joins
    those paths onto the table root and cannot read them."""
    target = arrow_schema(raw)
    if has_absolute_paths(raw):
        feed = read_added_files(raw, after_version, until_version, target)
    else:
        feed = pa.table(
            raw.load_cdf(starting_version=after_version + 1, ending_version=until_version).read_all()
        )
        change_types = set(pc.unique(feed["_change_type"]).to_pylist()) if feed.num_rows else set()
        if change_types - {"insert"}:
            raise ValueError(
                f"raw table {raw.table_uri} has {sorted(change_types)} changes after version {after_version}: "
                "raw must be append-only; rebuild bronze from raw (delete the bronze table) after fixing raw"
            )
    # The feed returns view types: cast back to raw's own column types (missing columns read as null).
    columns = [
        feed[field.name].cast(field.type)
        if field.name in feed.column_names
        else pa.nulls(feed.num_rows, field.type)
        for field in target
    ]
    versions = feed["_commit_version"].cast(pa.int64())
    return pa.Table.from_arrays(
        columns + [versions], schema=target.append(pa.field("gw_raw_version", pa.int64()))
    )


def _is_absolute(path: str) -> bool:
    return "://" in path or path.startswith("/")


def add_paths(table: DeltaTable) -> list[str]:
    return [str(p) for p in pa.table(table.get_add_actions(flatten=True))["path"].to_pylist()]


def has_absolute_paths(raw: DeltaTable) -> bool:
    return any(_is_absolute(p) for p in add_paths(raw))


def read_added_files(raw: DeltaTable, after_version: int, until_version: int, schema: pa.Schema) -> pa.Table:
    """The rows of the files each version in (after_version, until_version] added (append-only raw)."""
    from urllib.parse import unquote

    root = raw.table_uri.rstrip("/")
    options = delta_storage_options(root)

    def files_at(version: int) -> set[str]:
        if version < 0:
            return set()
        return set(add_paths(DeltaTable(root, version=version, storage_options=options)))

    parts = []
    seen = files_at(after_version)
    for version in range(after_version + 1, until_version + 1):
        current = files_at(version)
        added = sorted(current - seen)
        seen = current
        if not added:
            continue
        uris = [unquote(p) if _is_absolute(p) else f"{root}/{unquote(p)}" for p in added]
        filesystem, _ = arrow_filesystem(uris[0])
        paths = [arrow_filesystem(uri)[1] for uri in uris]
        rows = pads.dataset(paths, schema=schema, format="parquet", filesystem=filesystem).to_table()
        parts.append(rows.append_column("_commit_version", pa.array([version] * rows.num_rows, pa.int64())))
    if not parts:
        return schema.empty_table().append_column("_commit_version", pa.array([], pa.int64()))
    return pa.concat_tables(parts)


def arrow_filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """A pyarrow filesystem and path for a local path, file:// or s3:// URI (AWS_* variables for S3)."""
    if uri.startswith("file://"):
        uri = uri[len("file://") :]
    if not uri.startswith(("s3://", "s3a://")):
        return pafs.LocalFileSystem(), uri
    options = delta_storage_options(uri)
    kwargs: dict[str, Any] = {"region": options["AWS_REGION"]}
    endpoint = options.get("AWS_ENDPOINT_URL")
    if endpoint:
        scheme, _, host = endpoint.partition("://")
        kwargs.update(endpoint_override=host.rstrip("/"), scheme=scheme)
    if options.get("AWS_ACCESS_KEY_ID") and options.get("AWS_SECRET_ACCESS_KEY"):
        kwargs.update(access_key=options["AWS_ACCESS_KEY_ID"], secret_key=options["AWS_SECRET_ACCESS_KEY"])
        kwargs["session_token"] = options.get("AWS_SESSION_TOKEN")
    return pafs.S3FileSystem(**kwargs), uri.split("://", 1)[1]


def batch_lineage(raw: DeltaTable, commits: int) -> dict[int, tuple[str | None, int | None]]:
    """raw version -> (gw_fingerprint, gw_watermark) from the custom metadata of the last ``commits`` commits."""
    lineage = {}
    for commit in raw.history(limit=commits):  # only the new commits: the log may be long
        watermark = commit.get("gw_watermark")
        lineage[int(commit["version"])] = (
            commit.get("gw_fingerprint"),
            int(watermark) if watermark else None,
        )
    return lineage


def epoch_ms_to_timestamps(rows: pa.Table) -> pa.Table:
    """``gwcbi___<name>_ts_ms`` (epoch ms) -> ``gwcbi___<name>_ts`` (UTC timestamp; Delta keeps microseconds), same position."""
    for index, name in enumerate(rows.column_names):
        if (
            name.startswith("gwcbi___")
            and name.endswith("_ts_ms")
            and pa.types.is_integer(rows.schema.field(name).type)
        ):
            column = rows[name].cast(pa.int64()).cast(pa.timestamp("ms", tz="UTC")).cast(DELTA_TIMESTAMP)
            rows = rows.set_column(index, name[: -len("_ms")], column)
    return rows


def sequence_key(table_name: str, seqval_hex: pa.ChunkedArray) -> pa.ChunkedArray:
    """Fixed-width lower-case hex, so that string order is numeric order whatever the source widths."""
    digits = pc.utf8_ltrim(pc.utf8_lower(pc.utf8_trim_whitespace(seqval_hex)), characters="0")
    valid = pc.match_substring_regex(digits, f"^[0-9a-f]{{0,{SEQ_KEY_WIDTH}}}$")
    bad = pc.invert(pc.fill_null(valid, False))
    if pc.any(bad).as_py():
        examples = pc.filter(seqval_hex, bad).slice(0, 3).to_pylist()
        raise ValueError(
            f"{table_name}: {pc.sum(bad.cast(pa.int64())).as_py()} rows have a gwcbi___seqval_hex that is null, not hex "
            f"or longer than {SEQ_KEY_WIDTH} digits (e.g. {examples}); fix the source rows or widen SEQ_KEY_WIDTH"
        )
    return pc.utf8_lpad(digits, width=SEQ_KEY_WIDTH, padding="0")


def drop_exact_duplicates(rows: pa.Table, compared: list[str]) -> pa.Table:
    """Keep the first of rows equal in every ``compared`` column (nulls compare equal)."""
    if not rows.num_rows or any(pa.types.is_nested(rows.schema.field(c).type) for c in compared):
        return rows
    numbered = rows.select(compared).append_column("__row", pa.array(range(rows.num_rows), pa.int64()))
    first = numbered.group_by(compared, use_threads=False).aggregate([("__row", "min")])["__row_min"]
    return rows.take(pc.sort_indices(first))


def to_bronze(
    table_name: str, raw_rows: pa.Table, lineage: dict[int, tuple[str | None, int | None]]
) -> tuple[pa.Table, list[str]]:
    """Typed bronze rows and the warnings about them."""
    warnings = []
    has_changes = all(c in raw_rows.column_names for c in CHANGE_COLUMNS)
    rows = epoch_ms_to_timestamps(raw_rows)
    versions = rows["gw_raw_version"].to_pylist()
    fingerprints = pa.array([lineage.get(v, (None, None))[0] for v in versions], pa.string())
    batch_ms = pa.array([lineage.get(v, (None, None))[1] for v in versions], pa.int64())
    batch_ts = batch_ms.cast(pa.timestamp("ms", tz="UTC")).cast(DELTA_TIMESTAMP)
    rows = rows.drop_columns(["gw_raw_version"])
    if has_changes:
        rows = rows.append_column("gw_seq_key", sequence_key(table_name, rows["gwcbi___seqval_hex"]))
    else:
        missing = [c for c in CHANGE_COLUMNS if c not in raw_rows.column_names]
        warnings.append(
            f"{table_name} has no change columns {missing}: passed through without a sequence key; silver will skip it"
        )
    rows = rows.append_column("gw_fingerprint", fingerprints)
    rows = rows.append_column("gw_batch_ts", batch_ts)
    rows = rows.append_column("gw_raw_version", pa.array(versions, pa.int64()))
    if None in set(fingerprints.to_pylist()):
        warnings.append(
            f"{table_name}: some raw commits carry no gw_fingerprint/gw_watermark metadata; lineage is null for their rows"
        )
    compared = [c for c in rows.column_names if c not in LINEAGE_COLUMNS]
    return drop_exact_duplicates(rows, compared), warnings


def bronze_table(table_name: str) -> dict[str, Any]:
    """Bring ``<delta_root>/bronze/<table_name>`` up to the latest raw version. Returns the Pipes message."""
    raw_uri, bronze_uri = f"{delta_root}/raw/{table_name}", f"{delta_root}/bronze/{table_name}"
    result: dict[str, Any] = {"table": table_name, "layer": "bronze", "bronze_uri": bronze_uri}
    raw_options, bronze_options = delta_storage_options(raw_uri), delta_storage_options(bronze_uri)
    if not DeltaTable.is_deltatable(raw_uri, storage_options=raw_options):
        return {
            **result,
            "status": "skipped",
            "reason": f"no raw Delta table at {raw_uri}: CDA has delivered no data for it yet, or raw has not loaded it",
        }
    raw = DeltaTable(raw_uri, storage_options=raw_options)
    raw_version = raw.version()
    bronze = (
        DeltaTable(bronze_uri, storage_options=bronze_options)
        if DeltaTable.is_deltatable(bronze_uri, storage_options=bronze_options)
        else None
    )
    consumed = bronze.transaction_version(BRONZE_APP_ID) if bronze is not None else None
    consumed = -1 if consumed is None else consumed
    result.update(raw_version=raw_version, raw_version_before=consumed)
    if consumed > raw_version:
        raise ValueError(
            f"bronze {bronze_uri} has consumed raw version {consumed} but raw {raw_uri} is at version {raw_version}: "
            f"raw was recreated. Delete the bronze and silver tables of {table_name} to rebuild them from raw."
        )
    if consumed == raw_version:
        return {
            **result,
            "status": "ok",
            "reason": "nothing new in raw",
            "rows_in": 0,
            "rows_out": 0,
            "bronze_version": bronze.version() if bronze is not None else None,
            "committed": False,
        }
    raw_rows = read_raw_increment(raw, consumed, raw_version)
    rows, warnings = to_bronze(table_name, raw_rows, batch_lineage(raw, raw_version - consumed))
    duplicates_in_batch = raw_rows.num_rows - rows.num_rows
    commit = CommitProperties(
        custom_metadata={"gw_layer": "bronze", "gw_raw_version": str(raw_version)},
        app_transactions=[Transaction(BRONZE_APP_ID, raw_version)],
    )
    has_changes = "gw_seq_key" in rows.column_names
    if bronze is not None and has_changes and rows.num_rows:
        # Insert-only merge: a change row bronze already holds (a replayed batch) is not added twice.
        existing = set(arrow_schema(bronze).names)
        same = [
            f"(t.`{c}` IS NOT DISTINCT FROM s.`{c}`)"
            for c in rows.column_names
            if c in existing and c not in LINEAGE_COLUMNS and c not in ("id",)
        ]
        predicate = " AND ".join(["t.id = s.id", "t.gw_seq_key = s.gw_seq_key", *same])
        metrics = (
            bronze.merge(
                rows,
                predicate=predicate,
                source_alias="s",
                target_alias="t",
                merge_schema=True,
                commit_properties=commit,
            )
            .when_not_matched_insert_all()
            .execute()
        )
        rows_out = int(metrics.get("num_target_rows_inserted", 0))
    else:
        write_deltalake(
            bronze_uri,
            rows,
            mode="append",
            schema_mode="merge",
            storage_options=bronze_options,
            commit_properties=commit,
        )
        rows_out = rows.num_rows
    bronze = DeltaTable(bronze_uri, storage_options=bronze_options)
    for warning in warnings:
        pipes.log.warning(warning)
    return {
        **result,
        "status": "ok",
        "rows_in": raw_rows.num_rows,
        "rows_out": rows_out,
        "duplicates_dropped": raw_rows.num_rows - rows_out,
        "duplicates_in_batch": duplicates_in_batch,
        "bronze_version": bronze.version(),
        "committed": True,
        "has_change_columns": has_changes,
        "warnings": warnings,
    }


# COMMAND ----------

# MAGIC %md
# MAGIC ## Run every table and report each one

# COMMAND ----------

with pipes:
    for table_name in tables:
        started = time.monotonic()
        try:
            message = bronze_table(table_name)
        except Exception as error:  # one table's problem is reported for that table; the others carry on
            pipes.log.error(f"bronze {table_name} failed: {error}\n{traceback.format_exc()}")
            message = {
                "table": table_name,
                "layer": "bronze",
                "status": "failed",
                "reason": f"{type(error).__name__}: {error}",
            }
        if message["status"] == "skipped":
            pipes.log.warning(f"bronze {table_name} skipped: {message['reason']}")
        message["seconds"] = round(time.monotonic() - started, 3)
        pipes.report_custom_message(message)
