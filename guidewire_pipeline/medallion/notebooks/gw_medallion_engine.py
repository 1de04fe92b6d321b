"""The medallion engine: bronze, silver and gold written once, in PySpark (DataFrame API + Spark SQL).

The same file runs on Databricks (the cluster's or serverless Spark, imported by the notebooks as the
workspace file uploaded beside them) and locally on LakeSail Sail (a Spark Connect server started in
this process by ``start_local_spark``; no JVM, no network). It imports only the standard library and
pyspark at module level; the Sail adapters import ``deltalake`` when they run.

Tables (``TableRef``): ``<catalog>.<layer>.<table>`` at ``<delta_root>/<layer>/<table>``, the layout of
``guidewire_pipeline/lakehouse.py``. On Databricks they are Unity Catalog tables; under Sail the
session's memory catalog registers the same names over the same locations (``register_local_tables``).

Layers (each returns one result dict per table or mart, never raises for one table's problem):
- bronze: raw rows with ``gw_batch_ts_ms`` above bronze's savepoint, typed, appended;
- silver: per chunk, the latest change per id (a Spark window), applied with Guidewire's MERGED
  semantics by ``MERGE_ON``/``MERGE_UPDATE_WHEN``, deleted records kept in silver as tombstones;
- gold: each mart's Spark SQL over views of silver that hide tombstones; replaces the gold table.

Silver's apply step (``SilverApply``) has two implementations built from the same merge conditions:
``SparkSqlSilver`` runs the SQL ``MERGE INTO`` (Databricks); ``DeltaRsSilver`` runs delta-rs'
``DeltaTable.merge`` (Sail, whose MERGE scans the whole target: delta-rs prunes target files with the
source's id range). The contract tests run the same fixtures through both and compare the tables.

Exactly-once: no savepoint is ever written apart from the data. Bronze's savepoint is the greatest
``gw_batch_ts`` it holds. Silver's is Delta's app transaction ``guidewire-silver`` = chunk end, in the
merge commit itself (delta-rs), or on Databricks the greatest ``gw_batch_ts`` of silver's rows: never
above what silver holds, so at worst a chunk whose every change lost is read again, and its MERGE,
which carries ``txnAppId``/``txnVersion`` = chunk end, is dropped by Delta as already applied. Sail
ignores those write options; its bronze relies on the data-derived savepoint alone.

Scale: bronze and silver process the increment in chunks of whole CDA folders of about
``chunk_rows`` rows (``DEFAULT_CHUNK_ROWS`` on Databricks, ``LOCAL_CHUNK_ROWS`` on Sail), each chunk
committed on its own. Local silver files are kept sorted by id (``cluster_by_id``) so that a merge of
recent changes rewrites only the few files that hold recent ids.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

LOG = logging.getLogger("gw_medallion")

RAW, BRONZE, SILVER, GOLD = "raw", "bronze", "silver", "gold"
LAYERS = (RAW, BRONZE, SILVER, GOLD)
ENGINE_CONF = "spark.guidewire.engine"  # set to "sail" by start_local_spark: turns the Sail guards on
SAIL = "sail"

# Lineage and change columns.
BATCH_MS = "gw_batch_ts_ms"  # raw: the CDA timestamp folder of each row (epoch ms)
BATCH_TS = "gw_batch_ts"  # bronze/silver: the same folder as a UTC timestamp
FINGERPRINT = "gw_fingerprint"
SEQ_KEY = "gw_seq_key"
DELETED = "gw_deleted"  # silver: a tombstone (the record's latest change is a delete)
OPERATION = "gwcbi___operation"
SEQVAL_HEX = "gwcbi___seqval_hex"
CHANGE_COLUMNS = ("id", OPERATION, SEQVAL_HEX)
SEQ_KEY_WIDTH = 32  # hex digits: room above SQL Server's binary(10) seqval (20 digits)
DELETE = 1
KNOWN_OPERATIONS = (0, 1, 2, 4)  # 0 and 2 insert, 4 updates, 1 deletes; 3 (a before-image) is never state

BRONZE_TXN_APP = "guidewire-bronze"
SILVER_TXN_APP = "guidewire-silver"
GOLD_STATE_PROPERTY = "guidewire.gold_state"
# File statistics only on what the layers filter (gw_batch_ts) and merge (id, gw_seq_key) by.
BRONZE_PROPERTIES = {"delta.dataSkippingStatsColumns": f"id,{SEQ_KEY},{BATCH_TS}", "delta.appendOnly": "true"}
SILVER_PROPERTIES = {"delta.dataSkippingStatsColumns": f"id,{SEQ_KEY},{BATCH_TS},{DELETED}"}
DEFAULT_CHUNK_ROWS = 5_000_000  # Databricks: the chunk is spread over the cluster's executors
# Sail and delta-rs share one local process, and a chunk's memory follows its bytes more than its rows:
# a local chunk holds at most LOCAL_CHUNK_ROWS rows and about LOCAL_CHUNK_BYTES of its table's parquet
# (measurements in benchmarks/README.md, "Medallion").
LOCAL_CHUNK_ROWS = 1_000_000
LOCAL_CHUNK_BYTES = 32 * 2**20
# Local silver files: a merge rewrites every file holding a changed id, so a change costs about one file.
LOCAL_SILVER_FILE_BYTES = 4 * 2**20
# One local process holds three native heaps: Sail's and pyarrow's (mimalloc) and delta-rs' (jemalloc).
# Each keeps freed pages for seconds by default, so their peaks add up: returning them at once halved a
# first load's peak RSS (1.48 -> 0.77 GB for 10 M rows) for more system time (benchmarks/README.md).
LOCAL_ALLOCATOR_ENV = {"MIMALLOC_PURGE_DELAY": "0", "_RJEM_MALLOC_CONF": "dirty_decay_ms:0,muzzy_decay_ms:0"}
SILVER_APPLY_ENV = "GW_MEDALLION_SILVER_APPLY"  # tests and diagnostics: force "spark-sql" on Sail
SPARK_SQL, DELTA_RS = "spark-sql", "delta-rs"

# Silver's merge conditions, stated once: the Spark SQL text (``silver_merge_sql``) and the delta-rs
# builder calls (``DeltaRsSilver``) are both made of these strings.
MERGE_TARGET, MERGE_SOURCE = "t", "s"
MERGE_ON = f"{MERGE_TARGET}.id = {MERGE_SOURCE}.id"
# Only a newer change replaces state: an older one (late) or the same one (replayed) never does.
MERGE_UPDATE_WHEN = f"{MERGE_SOURCE}.{SEQ_KEY} > {MERGE_TARGET}.{SEQ_KEY}"
FAULT_ENV = "GW_MEDALLION_FAULT_AFTER_COMMITS"  # test-only fault injection: "<layer>:<n>" kills the process

GOLD_SQL_DIR = Path(__file__).resolve().parent.parent / "gold"
_INPUTS_LINE = re.compile(r"^\s*--\s*inputs\s*:\s*(.+?)\s*$", re.IGNORECASE | re.MULTILINE)
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class TableProblem(ValueError):
    """One table's bad input: the message names the table and what to do. That table fails, others go on."""


# --------------------------------------------------------------------------------------- naming


@dataclass(frozen=True)
class TableRef:
    layer: str
    name: str
    full_name: str  # <catalog>.<layer>.<name>
    location: str  # <delta_root>/<layer>/<name>

    @property
    def quoted(self) -> str:
        return ".".join(f"`{part}`" for part in self.full_name.split("."))


def table_ref(catalog: str, delta_root: str, layer: str, name: str) -> TableRef:
    """The lakehouse layout (same as ``guidewire_pipeline.lakehouse.Lakehouse``). Raises ValueError for a
    name that is not an identifier (it would not be a valid Unity Catalog name)."""
    for part in (catalog, layer, name):
        if not _IDENTIFIER.match(part):
            raise ValueError(f"{part!r} is not a valid table, schema or catalog name: use letters, digits and _")
    root = delta_root.rstrip("/")
    if root.startswith("file://"):
        root = root[len("file://") :]
    return TableRef(layer, name, f"{catalog}.{layer}.{name}", f"{root}/{layer}/{name}")


def mart_inputs(sql: str) -> tuple[str, ...]:
    """The silver tables a mart reads, from its ``-- inputs: a, b`` line (empty when there is none)."""
    found = _INPUTS_LINE.search(sql)
    return tuple(t.strip() for t in found.group(1).split(",") if t.strip()) if found else ()


# --------------------------------------------------------------------------------------- sessions


def start_local_spark(catalog: str = "main") -> tuple[Any, SparkSession]:
    """Start Sail in this process and connect a Spark Connect session to it: ``(server, spark)``.

    The session's memory catalog is named ``catalog`` (lost at exit: tables are re-registered by
    ``register_local_tables``). Stop with ``server.stop()`` after ``spark.stop()``.

    Called before pyarrow, pysail or deltalake is loaded (as ``local_host`` does), it also sets
    ``LOCAL_ALLOCATOR_ENV`` (unless the variables are set already)."""
    for name, value in LOCAL_ALLOCATOR_ENV.items():
        os.environ.setdefault(name, value)
    os.environ["SAIL_CATALOG__LIST"] = f'[{{name="{catalog}", type="memory", initial_database=["default"]}}]'
    os.environ["SAIL_CATALOG__DEFAULT_CATALOG"] = catalog
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or ""
    if endpoint.startswith("http://"):  # Sail's object store refuses plain HTTP unless told (MinIO, moto)
        os.environ.setdefault("AWS_ALLOW_HTTP", "true")
    from pysail.spark import SparkConnectServer

    server = SparkConnectServer("127.0.0.1", 0)
    server.start(background=True)
    _, port = server.listening_address
    spark = SparkSession.builder.remote(f"sc://127.0.0.1:{port}").getOrCreate()
    spark.conf.set(ENGINE_CONF, SAIL)
    return server, spark


def is_sail(spark: SparkSession) -> bool:
    try:
        return spark.conf.get(ENGINE_CONF, None) == SAIL
    except Exception:  # a conf the server does not know
        return False


def _storage_options(uri: str) -> dict[str, str]:
    """delta-rs options for the Sail adapters, from the standard AWS_* variables (never parameters)."""
    if not uri.startswith(("s3://", "s3a://")):
        return {}
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    options = {"AWS_REGION": os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"}
    if endpoint:
        options["AWS_ENDPOINT_URL"] = endpoint
        if endpoint.startswith("http://"):
            options["AWS_ALLOW_HTTP"] = "true"
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        if os.environ.get(name):
            options[name] = os.environ[name]
    return options


def _is_delta_table(location: str) -> bool:
    from deltalake import DeltaTable

    return DeltaTable.is_deltatable(location, storage_options=_storage_options(location))


# --------------------------------------------------------------------------------------- the engine


@dataclass
class Engine:
    """One Spark session, one catalog and Delta root. ``sail`` turns on the Sail guards."""

    spark: SparkSession
    catalog: str
    delta_root: str
    chunk_rows: int | None = None  # None: DEFAULT_CHUNK_ROWS on Databricks, LOCAL_CHUNK_ROWS on Sail
    sail: bool = False
    silver_apply: str | None = None  # None: DELTA_RS on Sail, SPARK_SQL elsewhere (or $GW_MEDALLION_SILVER_APPLY)
    silver_file_bytes: int = LOCAL_SILVER_FILE_BYTES  # delta.targetFileSize of silver tables created on Sail
    commits: dict[str, int] = field(default_factory=dict)  # layer -> commits so far (fault injection)

    @classmethod
    def for_session(cls, spark: SparkSession, catalog: str, delta_root: str, **kwargs: Any) -> Engine:
        spark.conf.set("spark.sql.session.timeZone", "UTC")  # marts truncate instants to UTC months
        return cls(spark=spark, catalog=catalog, delta_root=delta_root, sail=is_sail(spark), **kwargs)

    def rows_per_chunk(self, source: TableRef) -> int:
        """Rows per chunk read from ``source``: the request's ``chunk_rows``, else ``DEFAULT_CHUNK_ROWS`` on
        Databricks; on Sail ``LOCAL_CHUNK_ROWS``, or fewer so that a chunk holds about ``LOCAL_CHUNK_BYTES``
        of ``source``'s parquet (its bytes per row from the log's file sizes and row counts)."""
        if self.chunk_rows:
            return self.chunk_rows
        if not self.sail:
            return DEFAULT_CHUNK_ROWS
        import pyarrow as pa
        from deltalake import DeltaTable

        actions = pa.table(DeltaTable(source.location, storage_options=_storage_options(source.location))
                           .get_add_actions(flatten=True))
        rows = sum(r or 0 for r in actions.column("num_records").to_pylist()) if actions.num_rows else 0
        size = sum(actions.column("size_bytes").to_pylist()) if actions.num_rows else 0
        return max(1, min(LOCAL_CHUNK_ROWS, LOCAL_CHUNK_BYTES * rows // size)) if rows and size else LOCAL_CHUNK_ROWS

    def silver_writer(self, ref: TableRef) -> SilverApply:
        """The apply step for silver table ``ref``: delta-rs under Sail, the SQL MERGE elsewhere. Raises
        ValueError for an unknown choice, or delta-rs off Sail (it would write past Unity Catalog)."""
        choice = self.silver_apply or os.environ.get(SILVER_APPLY_ENV) or (DELTA_RS if self.sail else SPARK_SQL)
        if choice == SPARK_SQL:
            return SparkSqlSilver(self, ref)
        if choice == DELTA_RS and self.sail:
            return DeltaRsSilver(self, ref)
        raise ValueError(f"silver apply {choice!r}: use {SPARK_SQL!r}, or {DELTA_RS!r} on the local engine (Sail)")

    def ref(self, layer: str, name: str) -> TableRef:
        return table_ref(self.catalog, self.delta_root, layer, name)

    # ----------------------------------------------------------------- catalog

    def ensure_schemas(self) -> None:
        for layer in LAYERS:
            self.spark.sql(f"CREATE SCHEMA IF NOT EXISTS `{self.catalog}`.`{layer}`")

    def register_local_tables(self, tables: Sequence[str], marts: Sequence[str] = ()) -> None:
        """Sail only: register every existing ``<root>/<layer>/<table>`` under its three-part name
        (the memory catalog starts empty in every session). A no-op on Databricks (Unity Catalog)."""
        if not self.sail:
            return
        self.ensure_schemas()
        wanted = [(layer, t) for t in tables for layer in (RAW, BRONZE, SILVER)]
        for mart in marts:
            path = GOLD_SQL_DIR / f"{mart}.sql"
            inputs = mart_inputs(path.read_text(encoding="utf-8")) if path.is_file() else ()
            wanted += [(SILVER, t) for t in inputs] + [(GOLD, mart)]
        for layer, name in wanted:
            ref = self.ref(layer, name)
            if not self.spark.catalog.tableExists(ref.full_name) and _is_delta_table(ref.location):
                self.spark.sql(f"CREATE TABLE IF NOT EXISTS {ref.quoted} USING delta LOCATION '{ref.location}'")

    def exists(self, ref: TableRef) -> bool:
        return bool(self.spark.catalog.tableExists(ref.full_name))

    def list_raw_tables(self) -> list[str]:
        """Every table of ``<catalog>.raw`` (for a run over all tables, e.g. the bundle job)."""
        rows = self.spark.sql(f"SHOW TABLES IN `{self.catalog}`.`{RAW}`").collect()
        return sorted(str(r["tableName"]) for r in rows)

    def ensure_table(self, ref: TableRef, schema: T.StructType, properties: dict[str, str]) -> None:
        """Create ``ref`` at its location with ``schema`` and ``properties`` unless it exists."""
        if self.exists(ref):
            return
        columns = ", ".join(f"`{f.name}` {f.dataType.simpleString()}" for f in schema.fields)
        props = ", ".join(f"'{k}' = '{v}'" for k, v in properties.items())
        self.spark.sql(
            f"CREATE TABLE IF NOT EXISTS {ref.quoted} ({columns}) USING delta "
            f"LOCATION '{ref.location}' TBLPROPERTIES ({props})"
        )

    def columns(self, ref: TableRef) -> list[list[str]]:
        return [[f.name, f.dataType.simpleString()] for f in self.spark.table(ref.full_name).schema.fields]

    def max_batch_ms(self, ref: TableRef) -> int | None:
        """The layer's savepoint: the greatest ``gw_batch_ts`` it holds, as epoch ms (None: empty)."""
        if not self.exists(ref):
            return None
        row = self.spark.sql(f"SELECT unix_millis(max(`{BATCH_TS}`)) AS m FROM {ref.quoted}").collect()[0]
        return None if row["m"] is None else int(row["m"])

    def table_property(self, ref: TableRef, key: str) -> str | None:
        if self.sail:  # Sail guard: SHOW TBLPROPERTIES is not supported; read the Delta metadata
            from deltalake import DeltaTable

            table = DeltaTable(ref.location, storage_options=_storage_options(ref.location))
            return table.metadata().configuration.get(key)
        rows = self.spark.sql(f"SHOW TBLPROPERTIES {ref.quoted} ('{key}')").collect()
        value = rows[0]["value"] if rows else None
        return None if value is None or "does not have property" in str(value) else str(value)

    # ----------------------------------------------------------------- writes

    @contextmanager
    def _txn(self, app_id: str, version: int) -> Iterator[None]:
        """Delta's app transaction for SQL DML (MERGE) on Databricks: a second identical commit is dropped.
        Sail ignores it (its data-derived savepoint is the guard)."""
        if self.sail:
            yield
            return
        self.spark.conf.set("spark.databricks.delta.write.txnAppId", app_id)
        self.spark.conf.set("spark.databricks.delta.write.txnVersion", str(version))
        try:
            yield
        finally:
            self.spark.conf.unset("spark.databricks.delta.write.txnAppId")
            self.spark.conf.unset("spark.databricks.delta.write.txnVersion")

    def append(self, ref: TableRef, rows: DataFrame, app_id: str, version: int) -> None:
        writer = rows.write.format("delta").mode("append").option("mergeSchema", "true")
        if not self.sail:  # Sail silently ignores these (no txn action): its savepoint is the data
            writer = writer.option("txnAppId", app_id).option("txnVersion", str(version))
        writer.saveAsTable(ref.full_name)

    def committed(self, layer: str) -> None:
        """Count a commit; the test-only fault injection (``GW_MEDALLION_FAULT_AFTER_COMMITS``) ends the
        process here, right after a data commit, as a killed driver would."""
        self.commits[layer] = self.commits.get(layer, 0) + 1
        fault = os.environ.get(FAULT_ENV, "")
        if fault and fault == f"{layer}:{self.commits[layer]}":
            LOG.error(f"{FAULT_ENV}={fault}: ending the process after the commit, as a crash would")
            logging.shutdown()
            os._exit(137)

    # ----------------------------------------------------------------- raw sources

    def raw_source(self, ref: TableRef) -> RawSource:
        if self.sail:
            shallow = ShallowRawSource.open(self.spark, ref)
            if shallow is not None:
                return shallow
        return RawSource(self.spark, ref)

    # ----------------------------------------------------------------- bronze

    def bronze(self, tables: Sequence[str]) -> list[dict[str, Any]]:
        return [self._each(BRONZE, t, self._bronze_table) for t in tables]

    def _bronze_table(self, name: str) -> dict[str, Any]:
        raw, bronze = self.ref(RAW, name), self.ref(BRONZE, name)
        result = _result(BRONZE, name, bronze)
        if not self.exists(raw):
            return {**result, "status": "skipped",
                    "reason": f"no raw table {raw.full_name} at {raw.location}: CDA has delivered no data for "
                              f"{name} yet, or raw has not loaded (or registered) it"}
        source = self.raw_source(raw)
        if BATCH_MS not in source.columns:
            raise TableProblem(
                f"raw table {raw.full_name} has no {BATCH_MS} column: it was written by a raw layer older than "
                "v2. Re-sync it (delete the raw table and run cda_sync_job) so that every row names its CDA folder."
            )
        before = self.max_batch_ms(bronze)
        pending = source.pending(before)
        result["metadata"].update(savepoint_before=before, savepoint_after=before, rows_in=0, rows_out=0)
        if not pending:
            return {**result, "status": "unchanged", "reason": "nothing new in raw"}
        has_changes = all(c in source.columns for c in CHANGE_COLUMNS)
        warnings = [] if has_changes else [
            f"{name} has no change columns {[c for c in CHANGE_COLUMNS if c not in source.columns]}: passed "
            "through without a sequence key; silver will skip it"]
        chunk_rows = self.rows_per_chunk(raw)
        chunks = plan_chunks(pending, chunk_rows)
        held_before = self.spark.table(bronze.full_name).count() if self.exists(bronze) else 0  # the log's counts
        rows_in = 0
        for low, high, count in chunks:
            rows = source.rows(low, high)
            if has_changes:
                check_seqval_hex(name, rows)
            typed = to_bronze(rows, has_changes)
            self.ensure_table(bronze, typed.schema, _present(BRONZE_PROPERTIES, typed.columns))
            self.append(bronze, typed, BRONZE_TXN_APP, high)
            self.committed(BRONZE)
            rows_in += count
            result["metadata"]["savepoint_after"] = high
        # The reconciliation check's figures: what bronze holds now against what it held plus what raw's
        # folders delivered (both counts come from the Delta log; no scan of bronze's history).
        held = self.spark.table(bronze.full_name).count()
        result["metadata"].update(rows_in=rows_in, rows_out=rows_in, chunks=len(chunks), chunk_rows=chunk_rows,
                                  warnings=warnings, bronze_rows=held, raw_rows_consumed=held_before + rows_in,
                                  row_count=held)
        for warning in warnings:
            LOG.warning(warning)
        return {**result, "status": "changed"}

    # ----------------------------------------------------------------- silver

    def silver(self, tables: Sequence[str]) -> list[dict[str, Any]]:
        return [self._each(SILVER, t, self._silver_table) for t in tables]

    def _silver_table(self, name: str) -> dict[str, Any]:
        bronze, silver = self.ref(BRONZE, name), self.ref(SILVER, name)
        result = _result(SILVER, name, silver)
        if not self.exists(bronze):
            return {**result, "status": "skipped",
                    "reason": f"no bronze table {bronze.full_name}: bronze has not loaded {name} yet "
                              "(or its raw table does not exist)"}
        changes_table = self.spark.table(bronze.full_name)
        missing = [c for c in ("id", OPERATION, SEQ_KEY, BATCH_TS) if c not in changes_table.columns]
        if missing:
            return {**result, "status": "skipped",
                    "reason": f"{name} has no change columns {missing}: without id, operation and sequence "
                              "there is no current state to compute"}
        writer = self.silver_writer(silver)
        before = writer.savepoint()
        increment = changes_table if before is None else changes_table.where(F.col(BATCH_TS) > _ts(before))
        # One pass over two narrow columns of the increment: rows per folder, and operation codes.
        counts = increment.groupBy(F.unix_millis(F.col(BATCH_TS)).alias("b"), F.col(OPERATION).alias("op")).count()
        per_folder: dict[int, int] = {}
        unknown: dict[int, int] = {}
        for row in counts.collect():
            per_folder[int(row["b"])] = per_folder.get(int(row["b"]), 0) + int(row["count"])
            if row["op"] not in KNOWN_OPERATIONS:
                unknown[row["op"]] = unknown.get(row["op"], 0) + int(row["count"])
        result["metadata"].update(savepoint_before=before, savepoint_after=before, rows_in=0, rows_out=0,
                                  silver_apply=writer.name)
        if not per_folder:
            return {**result, "status": "unchanged", "reason": "nothing new in bronze"}
        warnings = []
        if unknown:
            warnings.append(
                f"silver {name}: ignored {sum(unknown.values())} change rows with operation codes "
                f"{sorted(unknown, key=str)} (only {list(KNOWN_OPERATIONS)} are insert, delete, insert, update)")
            LOG.warning(warnings[-1])
        writer.budget_rows = self.rows_per_chunk(bronze)
        chunks = plan_chunks(sorted(per_folder.items()), writer.budget_rows)
        figures = {"rows_in": 0, "rows_out": 0, "files_rewritten": 0, "files_reclustered": 0}
        for low, high, count in chunks:
            chunk = changes_table.where((F.col(BATCH_TS) > _ts(low)) & (F.col(BATCH_TS) <= _ts(high)))
            applied = writer.apply(self.winners(name, chunk), high)
            figures["rows_in"] += count
            for key, value in applied.items():
                figures[key] = figures.get(key, 0) + value
            result["metadata"]["savepoint_after"] = high
        # The uniqueness check's figures: one pass over silver's current state (its size, not bronze's history).
        live = self.spark.table(silver.full_name).where(~F.col(DELETED))
        [totals] = live.agg(F.count(F.lit(1)).alias("rows"), F.countDistinct("id").alias("ids")).collect()
        result["metadata"].update(**figures, chunks=len(chunks), chunk_rows=writer.budget_rows,
                                  unknown_operations_ignored=sum(unknown.values()),
                                  warnings=warnings, live_rows=int(totals["rows"]), distinct_live_ids=int(totals["ids"]))
        return {**result, "status": "changed"}

    def winners(self, name: str, chunk: DataFrame) -> DataFrame:
        """Per id, the chunk's latest known change (largest ``gw_seq_key``; on a tie the later folder),
        with ``gw_deleted`` = it is a delete. Raises ``TableProblem`` for a null id."""
        null_ids = chunk.where(F.col("id").isNull()).limit(1).count()
        if null_ids:
            raise TableProblem(f"{name}: bronze change rows with a null id: fix the source rows, silver cannot key them")
        known = chunk.where(F.col(OPERATION).isin(*KNOWN_OPERATIONS))
        latest = Window.partitionBy("id").orderBy(F.col(SEQ_KEY).desc(), F.col(BATCH_TS).desc())
        return (known.withColumn("__rank", F.row_number().over(latest)).where(F.col("__rank") == 1)
                .drop("__rank").withColumn(DELETED, F.col(OPERATION) == F.lit(DELETE)))

    def silver_savepoint(self, table: str) -> int | None:
        return self.silver_writer(self.ref(SILVER, table)).savepoint()

    # ----------------------------------------------------------------- gold

    def gold(self, marts: Sequence[str], unavailable: dict[str, str] | None = None) -> list[dict[str, Any]]:
        unavailable = unavailable or {}
        return [self._each(GOLD, m, lambda mart: self._gold_mart(mart, unavailable)) for m in marts]

    def _gold_mart(self, mart: str, unavailable: dict[str, str]) -> dict[str, Any]:
        gold = self.ref(GOLD, mart)
        result = _result(GOLD, mart, gold)
        path = GOLD_SQL_DIR / f"{mart}.sql"
        if not path.is_file():
            raise TableProblem(f"gold mart {mart}: no SQL file {path}; add gold/{mart}.sql or drop the mart")
        sql = path.read_text(encoding="utf-8")
        inputs = mart_inputs(sql)
        result["metadata"]["inputs"] = list(inputs)
        for table in inputs:
            if table in unavailable:
                return {**result, "status": "skipped", "reason": f"input {table} {unavailable[table]}"}
            if not self.exists(self.ref(SILVER, table)):
                return {**result, "status": "skipped",
                        "reason": f"silver table {self.ref(SILVER, table).full_name} does not exist: "
                                  f"materialize silver for {table} (or drop mart {mart})"}
        savepoints = {table: self.current_view(table) for table in inputs}
        # Same inputs (their savepoints) and same SQL give the same mart: nothing to write.
        state = hashlib.sha256(json.dumps({"inputs": savepoints, "sql": sql}, sort_keys=True).encode()).hexdigest()
        result["metadata"]["input_savepoints"] = savepoints
        if self.exists(gold) and self.table_property(gold, GOLD_STATE_PROPERTY) == state:
            result["metadata"]["row_count"] = self.spark.table(gold.full_name).count()
            result["metadata"]["columns"] = self.columns(gold)
            self._empty_mart_inputs(result["metadata"], inputs)
            return {**result, "status": "unchanged", "reason": "inputs and SQL unchanged"}
        body = sql.strip().rstrip(";")  # Spark SQL reads the file's comments itself
        self.spark.sql(
            f"CREATE OR REPLACE TABLE {gold.quoted} USING delta LOCATION '{gold.location}' "
            f"TBLPROPERTIES ('{GOLD_STATE_PROPERTY}' = '{state}') AS {body}"
        )
        if self.sail:  # Sail guard: CREATE OR REPLACE keeps the old table's properties
            self.spark.sql(f"ALTER TABLE {gold.quoted} SET TBLPROPERTIES ('{GOLD_STATE_PROPERTY}' = '{state}')")
        self.committed(GOLD)
        row_count = self.spark.table(gold.full_name).count()
        result["metadata"].update(row_count=row_count, rows_out=row_count, columns=self.columns(gold))
        self._empty_mart_inputs(result["metadata"], inputs)
        return {**result, "status": "changed"}

    def _empty_mart_inputs(self, metadata: dict[str, Any], inputs: Sequence[str]) -> None:
        """The not-empty check's second figure, counted only when the mart is empty: the live rows of its
        inputs (the views ``current_view`` registered). A mart with rows passes without them."""
        if metadata.get("row_count") == 0:
            metadata["input_rows"] = sum(self.spark.table(table).count() for table in inputs)

    def current_view(self, table: str) -> int | None:
        """Register ``table`` (unqualified, as the marts name it) as a view of silver's current state:
        tombstones (deleted records) hidden, ``gw_deleted`` dropped. Returns silver's savepoint."""
        silver = self.ref(SILVER, table)
        current = self.spark.table(silver.full_name).where(~F.col(DELETED)).drop(DELETED)
        current.createOrReplaceTempView(table)
        return self.silver_savepoint(table)

    # ----------------------------------------------------------------- per table

    def _each(self, layer: str, name: str, run: Callable[[str], dict[str, Any]]) -> dict[str, Any]:
        """Run one table; its failure becomes its result (the others carry on)."""
        started = time.monotonic()
        try:
            result = run(name)
            if result["status"] in ("changed", "unchanged") and layer != GOLD:
                ref = self.ref(layer, name)
                if self.exists(ref):
                    result["metadata"]["columns"] = self.columns(ref)
                    if layer == BRONZE and "row_count" not in result["metadata"]:  # counted by a changed run
                        # Delta answers a plain count from the log's statistics
                        result["metadata"]["row_count"] = self.spark.table(ref.full_name).count()
        except Exception as error:  # one table's problem is reported for that table
            LOG.error(f"{layer} {name} failed: {error}\n{traceback.format_exc()}")
            result = {**_result(layer, name, self.ref(layer, name)), "status": "failed",
                      "reason": f"{type(error).__name__}: {_short(str(error))}"}
        if result["status"] == "skipped":
            LOG.warning(f"{layer} {name} skipped: {result['reason']}")
        else:
            LOG.info(f"{layer} {name}: {result['status']} {result.get('reason') or ''}".rstrip())
        result["metadata"]["seconds"] = round(time.monotonic() - started, 3)
        return result


def _result(layer: str, name: str, ref: TableRef) -> dict[str, Any]:
    return {"layer": layer, "name": name, "status": "failed", "reason": None,
            "metadata": {"table_name": ref.full_name, "uri": ref.location}}


def _present(properties: dict[str, str], columns: list[str]) -> dict[str, str]:
    """``properties`` with the statistics columns limited to those the table has (Delta refuses others)."""
    key = "delta.dataSkippingStatsColumns"
    kept = [c for c in properties[key].split(",") if c in columns]
    return {**properties, key: ",".join(kept)} if kept else {k: v for k, v in properties.items() if k != key}


def _short(text: str, limit: int = 2000) -> str:
    return text if len(text) <= limit else text[:limit] + " ..."


def _ts(epoch_ms: int) -> Any:
    return F.timestamp_millis(F.lit(int(epoch_ms)))


def _affected_rows(answer: list[Any]) -> int:
    """Databricks answers num_affected_rows; Sail answers count."""
    if not answer:
        return 0
    row = answer[0].asDict()
    return int(row.get("num_affected_rows", row.get("count", 0)) or 0)


# --------------------------------------------------------------------------------------- transforms


def plan_chunks(pending: Sequence[tuple[int, int]], chunk_rows: int) -> list[tuple[int, int, int]]:
    """Group ``(folder_ms, rows)`` (ascending) into ``(after_ms, through_ms, rows)`` ranges of whole
    folders of about ``chunk_rows`` rows; a folder larger than that is a chunk of its own."""
    chunks: list[tuple[int, int, int]] = []
    low, last, rows = 0, 0, 0
    for index, (folder, count) in enumerate(sorted(pending)):
        if index == 0:
            low = folder - 1  # the first chunk starts just below the first pending folder
        elif rows + count > chunk_rows:
            chunks.append((low, last, rows))
            low, rows = last, 0
        rows += count
        last = folder
    if pending:
        chunks.append((low, last, rows))
    return chunks


def check_seqval_hex(table: str, rows: DataFrame) -> None:
    """Raise ``TableProblem`` when a ``gwcbi___seqval_hex`` is null, not hex or too long (one narrow scan)."""
    digits = F.regexp_replace(F.lower(F.trim(F.col(SEQVAL_HEX))), "^0+", "")
    bad = rows.select(SEQVAL_HEX).where(
        F.col(SEQVAL_HEX).isNull() | ~digits.rlike(f"^[0-9a-f]{{0,{SEQ_KEY_WIDTH}}}$"))
    examples = [r[SEQVAL_HEX] for r in bad.limit(3).collect()]
    if examples:
        raise TableProblem(
            f"{table}: rows have a {SEQVAL_HEX} that is null, not hex or longer than {SEQ_KEY_WIDTH} digits "
            f"(e.g. {examples}); fix the source rows or widen SEQ_KEY_WIDTH")


def to_bronze(rows: DataFrame, has_changes: bool) -> DataFrame:
    """Typed bronze rows: epoch-ms ``gwcbi___*_ts_ms`` and ``gw_batch_ts_ms`` become UTC timestamps named
    without ``_ms`` (same position); ``gw_seq_key`` = the hex sequence left-padded to 32 digits."""
    columns = []
    for field_ in rows.schema.fields:
        name = field_.name
        is_epoch = name.endswith("_ts_ms") and (name.startswith("gwcbi___") or name == BATCH_MS)
        if is_epoch and isinstance(field_.dataType, T.IntegralType):
            columns.append(F.timestamp_millis(F.col(name).cast("bigint")).alias(name[: -len("_ms")]))
        else:
            columns.append(F.col(f"`{name}`"))
    if has_changes:
        digits = F.regexp_replace(F.lower(F.trim(F.col(SEQVAL_HEX))), "^0+", "")
        columns.append(F.lpad(digits, SEQ_KEY_WIDTH, "0").alias(SEQ_KEY))
    return rows.select(*columns)


# --------------------------------------------------------------------------------------- silver apply


def silver_merge_sql(target: str, source_view: str, evolve: bool) -> str:
    """Silver's ``MERGE INTO`` text, from ``MERGE_ON`` and ``MERGE_UPDATE_WHEN``; ``evolve`` adds WITH SCHEMA
    EVOLUTION (the source has columns the target lacks)."""
    return (f"MERGE{' WITH SCHEMA EVOLUTION' if evolve else ''} INTO {target} AS {MERGE_TARGET} "
            f"USING {source_view} AS {MERGE_SOURCE} ON {MERGE_ON} "
            f"WHEN MATCHED AND {MERGE_UPDATE_WHEN} THEN UPDATE SET * WHEN NOT MATCHED THEN INSERT *")


class SilverApply:
    """Applies one chunk's winners to one silver table, and reads that table's savepoint.

    Contract, for every implementation (``tests/medallion/test_silver_correctness.py`` runs the same
    fixtures through both): the same chunks applied in the same order leave the same rows in silver;
    applying a chunk again changes no row (``MERGE_UPDATE_WHEN`` is strict, tombstones stay); ``savepoint()``
    is None before the first chunk and never above the end of the last chunk applied, so resuming from it
    loses nothing. ``apply`` commits the chunk's data at most once and counts it (``Engine.committed``)."""

    name = ""

    def __init__(self, engine: Engine, ref: TableRef, budget_rows: int = LOCAL_CHUNK_ROWS):
        self.engine, self.ref = engine, ref
        self.budget_rows = budget_rows  # rows a chunk may hold in memory (the engine sets it per table)

    def savepoint(self) -> int | None:
        """The end (epoch ms) of the last chunk applied, or a lower bound of it; None: nothing applied."""
        raise NotImplementedError

    def apply(self, winners: DataFrame, high: int) -> dict[str, int]:
        """Merge ``winners`` (one row per id) as the chunk ending at ``high``; returns figures (``rows_out``...)."""
        raise NotImplementedError


class SparkSqlSilver(SilverApply):
    """The SQL ``MERGE INTO`` (Databricks). Savepoint: the greatest ``gw_batch_ts`` of silver's rows, a lower
    bound (a chunk whose every change lost leaves no row of its own); its re-run changes no row, and
    Databricks drops that MERGE as a repeated ``txnAppId``/``txnVersion``."""

    name = SPARK_SQL

    def savepoint(self) -> int | None:
        return self.engine.max_batch_ms(self.ref)

    def apply(self, winners: DataFrame, high: int) -> dict[str, int]:
        engine, silver = self.engine, self.ref
        engine.ensure_table(silver, winners.schema, SILVER_PROPERTIES)
        evolve = bool(set(winners.columns) - set(engine.spark.table(silver.full_name).columns))
        view = f"gw_silver_source_{silver.name}"
        winners.createOrReplaceTempView(view)
        with engine._txn(SILVER_TXN_APP, high):
            answer = engine.spark.sql(silver_merge_sql(silver.quoted, view, evolve)).collect()
        engine.spark.catalog.dropTempView(view)
        engine.committed(SILVER)
        return {"rows_out": _affected_rows(answer)}


class DeltaRsSilver(SilverApply):
    """Sail only: delta-rs ``DeltaTable.merge`` with the same conditions, the winners pulled from Sail as
    Arrow. Sail's own MERGE reads the whole target; delta-rs (``streamed_exec=False``) prunes target files
    to the source's id range with the files' id statistics, and ``cluster_by_id`` keeps those ranges narrow.
    Savepoint: Delta's app transaction ``guidewire-silver`` = chunk end, in the merge commit itself (an empty
    commit carries it when no row changed); a table without one (written by the SQL path) falls back to
    ``SparkSqlSilver``'s."""

    name = DELTA_RS

    def _table(self) -> Any:
        from deltalake import DeltaTable

        return DeltaTable(self.ref.location, storage_options=_storage_options(self.ref.location))

    def savepoint(self) -> int | None:
        if not self.engine.exists(self.ref):
            return None
        version = self._table().transaction_version(SILVER_TXN_APP)
        return int(version) if version is not None else self.engine.max_batch_ms(self.ref)

    def apply(self, winners: DataFrame, high: int) -> dict[str, int]:
        import pyarrow as pa
        from deltalake import CommitProperties, Transaction, write_deltalake

        engine, silver = self.engine, self.ref
        engine.ensure_table(silver, winners.schema,
                            {**SILVER_PROPERTIES, "delta.targetFileSize": str(engine.silver_file_bytes)})
        table = self._table()  # one snapshot for the whole chunk: delta-rs updates it with each commit
        target = pa.schema(table.schema().to_arrow())
        source = _conform(winners.toArrow(), target)
        before = set(_paths(table))
        version = table.version()
        savepoint = CommitProperties(app_transactions=[Transaction(SILVER_TXN_APP, int(high))])
        metrics = (
            table.merge(source, MERGE_ON, source_alias=MERGE_SOURCE, target_alias=MERGE_TARGET,
                        merge_schema=bool(set(source.column_names) - set(target.names)),
                        streamed_exec=False,  # True drops the source statistics that prune the target's files
                        commit_properties=savepoint)
            .when_matched_update_all(predicate=MERGE_UPDATE_WHEN)
            .when_not_matched_insert_all()
            .execute()
        )
        del source
        if table.version() == version:  # no row changed, so delta-rs made no commit: record the end
            write_deltalake(table, target.empty_table(), mode="append", commit_properties=savepoint,
                            storage_options=_storage_options(silver.location))
        engine.committed(SILVER)
        reclustered = cluster_by_id(table, before, self.budget_rows, engine.silver_file_bytes)
        return {"rows_out": int(metrics.get("num_target_rows_inserted") or 0)
                + int(metrics.get("num_target_rows_updated") or 0),
                "files_rewritten": int(metrics.get("num_target_files_removed") or 0),
                "files_reclustered": reclustered}


def _conform(source: Any, target: Any) -> Any:
    """``source`` (Arrow) with each column the target has cast to the target's type (Sail's Arrow types and
    nullability differ in details); columns the target lacks keep theirs (schema evolution)."""
    import pyarrow as pa

    fields = [target.field(f.name).with_nullable(True) if f.name in target.names else f for f in source.schema]
    return source.cast(pa.schema(fields))


def _paths(table: Any) -> list[str]:
    import pyarrow as pa

    return [str(p) for p in pa.table(table.get_add_actions(flatten=True)).column("path").to_pylist()]


def _id_ranges(table: Any) -> list[tuple[int, int, int, str, int]] | None:
    """``(min id, max id, rows, path, bytes)`` of every file, from the log; None without id statistics."""
    import pyarrow as pa

    actions = pa.table(table.get_add_actions(flatten=True))
    if "min.id" not in actions.column_names or not pa.types.is_integer(actions.schema.field("min.id").type):
        return None
    rows = actions.select(["min.id", "max.id", "num_records", "path", "size_bytes"]).to_pylist()
    if any(r["min.id"] is None or r["max.id"] is None for r in rows):
        return None
    return [(int(r["min.id"]), int(r["max.id"]), int(r["num_records"] or 0), str(r["path"]), int(r["size_bytes"]))
            for r in rows]


def cluster_by_id(table: Any, before: set[str], budget_rows: int, file_bytes: int) -> int:
    """Keep a silver table's files disjoint id ranges after a merge. delta-rs writes a merge's output in
    join order and from parallel writers, so each new file would span the whole id range the merge touched;
    every later merge would then touch them all, and that range would only grow. The files added since
    ``before`` (paths), with every file whose id range overlaps theirs, are replaced by files of about
    ``file_bytes`` written here in id order, in one commit of ``dataChange=false`` actions (the rows are
    exactly the same). Memory: about ``budget_rows`` rows at a time (a larger range is sorted bucket by
    bucket through a scratch directory). ``table``: a location or an open ``DeltaTable`` (at its latest
    version). Returns the number of files replaced; 0 when already disjoint."""
    import tempfile
    import uuid

    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.dataset as pads
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq
    from deltalake import CommitProperties, DeltaTable
    from deltalake.fs import DeltaStorageHandler
    from deltalake.transaction import AddAction, RemoveAction

    if isinstance(table, str):
        table = DeltaTable(table, storage_options=_storage_options(table))
    files = _id_ranges(table) or []
    added = [f for f in files if f[3] not in before]
    if not added:
        return 0
    lo, hi = min(f[0] for f in added), max(f[1] for f in added)
    while True:  # widen to every file that straddles the range, so that each is replaced whole
        group = [f for f in files if f[0] <= hi and f[1] >= lo]
        wider = (min(f[0] for f in group), max(f[1] for f in group))
        if wider == (lo, hi):
            break
        lo, hi = wider
    ordered = sorted(group)
    if all(a[1] < b[0] for a, b in zip(ordered, ordered[1:], strict=False)):
        return 0
    rows = sum(f[2] for f in group)
    rows_per_file = max(1, file_bytes * rows // max(1, sum(f[4] for f in group)))
    stats_columns = (table.metadata().configuration.get("delta.dataSkippingStatsColumns") or "id").split(",")
    # A dataset of the group's files only (the table's own would list every file of the table).
    filesystem = pafs.PyFileSystem(DeltaStorageHandler(table.table_uri, _storage_options(table.table_uri),
                                                       {f[3]: f[4] for f in group}))
    parquet = pads.ParquetFileFormat()
    dataset = pads.FileSystemDataset([parquet.make_fragment(f[3], filesystem=filesystem) for f in group],
                                     pa.schema(table.schema().to_arrow()), parquet, filesystem)
    now = int(time.time() * 1000)
    actions: list[Any] = []

    def write(part: Any) -> None:
        path = f"part-{uuid.uuid4()}-c000.gw-clustered.snappy.parquet"
        pq.write_table(part, path, filesystem=dataset.filesystem, compression="snappy")
        actions.append(AddAction(path=path, size=dataset.filesystem.get_file_info(path).size, partition_values={},
                                 modification_time=now, data_change=False, stats=_delta_stats(part, stats_columns)))

    in_range = (pc.field("id") >= lo) & (pc.field("id") <= hi)
    with tempfile.TemporaryDirectory(prefix="gw-silver-cluster-") as scratch:
        pending: list[Any] = []
        held = 0
        for batch in _sorted_by_id(dataset, in_range, lo, hi, max(1, -(-rows // max(budget_rows, 1))), scratch):
            pending.append(batch)
            held += batch.num_rows
            while held >= rows_per_file:  # a file is cut from the front of the id-ordered rows
                rest = pa.Table.from_batches(pending, schema=dataset.schema)
                ids = rest.column("id")
                cut = rows_per_file
                while cut < rest.num_rows and ids[cut] == ids[cut - 1]:  # an id never spans two files
                    cut += 1
                if cut == rest.num_rows:
                    break
                write(rest.slice(0, cut))
                rest = rest.slice(cut)
                pending, held = rest.to_batches(), rest.num_rows
        if held:
            write(pa.Table.from_batches(pending, schema=dataset.schema))
    actions += [RemoveAction(path=f[3], data_change=False, deletion_timestamp=now, size=f[4],
                             partition_values={}) for f in group]
    table.create_write_transaction(actions, mode="append", schema=table.schema(),
                                   commit_properties=CommitProperties(
                                       custom_metadata={"gw_operation": "cluster silver by id"}))
    return len(group)


def _delta_stats(rows: Any, columns: Sequence[str]) -> str:
    """The Delta log statistics of one file's ``rows`` (Arrow) for ``columns``: row count, null counts, and
    min/max for integer, boolean, string and UTC timestamp columns (others have none, so readers read the
    file). Timestamps are widened to whole milliseconds, the log's precision."""
    import pyarrow as pa
    import pyarrow.compute as pc

    minimum: dict[str, Any] = {}
    maximum: dict[str, Any] = {}
    nulls: dict[str, int] = {}
    for name in (c for c in columns if c in rows.column_names):
        column = rows.column(name)
        nulls[name] = column.null_count
        if column.null_count == len(column):
            continue
        kind = column.type
        if pa.types.is_integer(kind) or pa.types.is_boolean(kind) or pa.types.is_string(kind):
            bounds = pc.min_max(column)
            minimum[name], maximum[name] = bounds["min"].as_py(), bounds["max"].as_py()
        elif pa.types.is_timestamp(kind) and kind.tz is not None:
            micros = pc.min_max(column.cast(pa.timestamp("us", tz="UTC")).cast(pa.int64()))
            low, high = micros["min"].as_py() // 1000, -(-micros["max"].as_py() // 1000)
            minimum[name], maximum[name] = _iso_ms(low), _iso_ms(high)
    return json.dumps({"numRecords": rows.num_rows, "minValues": minimum, "maxValues": maximum, "nullCount": nulls})


def _iso_ms(epoch_ms: int) -> str:
    from datetime import UTC, datetime, timedelta

    instant = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=epoch_ms)
    return instant.strftime("%Y-%m-%dT%H:%M:%S.") + f"{instant.microsecond // 1000:03d}Z"


def _sorted_by_id(dataset: Any, in_range: Any, lo: int, hi: int, buckets: int, scratch: str) -> Iterator[Any]:
    """The rows of ``dataset`` matching ``in_range`` as batches in id order: sorted in memory when
    ``buckets`` is 1, else split into ``buckets`` equal id ranges spilled to ``scratch`` and sorted one by one."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    if buckets == 1:
        yield from dataset.to_table(filter=in_range).sort_by("id").to_batches()
        return
    writers: dict[int, Any] = {}
    try:
        # One file and two batches in flight: the defaults read ahead 4 files and 16 batches.
        scanner = dataset.scanner(filter=in_range, batch_size=64 * 1024, batch_readahead=2, fragment_readahead=1)
        for batch in scanner.to_batches():
            ids = batch.column("id").to_numpy(zero_copy_only=False)
            index = np.minimum(((ids - lo) / (hi - lo + 1) * buckets).astype(np.int64), buckets - 1)
            for bucket in (int(b) for b in np.unique(index)):
                if bucket not in writers:
                    writers[bucket] = pq.ParquetWriter(f"{scratch}/{bucket}.parquet", dataset.schema)
                writers[bucket].write_batch(batch.filter(pa.array(index == bucket)))
    finally:
        for writer in writers.values():
            writer.close()
    for bucket in sorted(writers):
        yield from pq.read_table(f"{scratch}/{bucket}.parquet").sort_by("id").to_batches()


# --------------------------------------------------------------------------------------- raw readers


class RawSource:
    """A raw table read by Spark through its catalog name (deep tables; any shape on Databricks)."""

    def __init__(self, spark: SparkSession, ref: TableRef):
        self.spark, self.ref = spark, ref
        self.frame = spark.table(ref.full_name)
        self.columns = self.frame.columns

    def pending(self, after_ms: int | None) -> list[tuple[int, int]]:
        """``(folder_ms, rows)`` of every folder above ``after_ms`` (one pass over one column, file skipping
        on its statistics)."""
        frame = self.frame if after_ms is None else self.frame.where(F.col(BATCH_MS) > F.lit(after_ms))
        return sorted((int(r[BATCH_MS]), int(r["count"])) for r in frame.groupBy(BATCH_MS).count().collect())

    def rows(self, after_ms: int, through_ms: int) -> DataFrame:
        return self.frame.where((F.col(BATCH_MS) > F.lit(after_ms)) & (F.col(BATCH_MS) <= F.lit(through_ms)))


class ShallowRawSource(RawSource):
    """Sail guard: Sail cannot read a partitioned Delta table whose add actions hold absolute paths (a
    shallow raw table: the CDA files in place). The add actions (path, partition values, row counts) come
    from delta-rs; Spark reads the parquet files of each folder and adds the lineage columns."""

    def __init__(self, spark: SparkSession, ref: TableRef, actions: list[dict[str, Any]], schema: Any):
        self.spark, self.ref = spark, ref
        self.actions = actions
        self.columns = [f.name for f in schema]
        self.types = {f.name: f.type for f in schema}

    @classmethod
    def open(cls, spark: SparkSession, ref: TableRef) -> ShallowRawSource | None:
        import pyarrow as pa
        from deltalake import DeltaTable

        table = DeltaTable(ref.location, storage_options=_storage_options(ref.location))
        partitions = table.metadata().partition_columns
        actions = pa.table(table.get_add_actions(flatten=True)).to_pylist()
        absolute = any("://" in a["path"] or a["path"].startswith("/") for a in actions)
        if not partitions or not absolute:
            return None
        return cls(spark, ref, actions, pa.schema(table.schema().to_arrow()))

    def _folders(self) -> dict[int, list[dict[str, Any]]]:
        folders: dict[int, list[dict[str, Any]]] = {}
        for action in self.actions:
            folders.setdefault(int(action[f"partition.{BATCH_MS}"]), []).append(action)
        return folders

    def pending(self, after_ms: int | None) -> list[tuple[int, int]]:
        return sorted((folder, sum(int(a.get("num_records") or 0) for a in actions))
                      for folder, actions in self._folders().items() if after_ms is None or folder > after_ms)

    def rows(self, after_ms: int, through_ms: int) -> DataFrame:
        from urllib.parse import unquote

        groups: dict[tuple[int, str], list[str]] = {}
        for folder, actions in self._folders().items():
            if after_ms < folder <= through_ms:
                for a in actions:
                    path = unquote(a["path"])
                    path = path if "://" in path or path.startswith("/") else f"{self.ref.location}/{path}"
                    groups.setdefault((folder, a.get(f"partition.{FINGERPRINT}")), []).append(path)
        from pyspark.sql.pandas.types import from_arrow_type

        def full_width(frame: DataFrame) -> DataFrame:
            # Columns a file lacks (a later fingerprint's) as typed nulls: Sail's union would type them Null.
            present = set(frame.columns)
            return frame.select(*[F.col(f"`{c}`") if c in present
                                  else F.lit(None).cast(from_arrow_type(self.types[c])).alias(c)
                                  for c in self.columns])

        frames = [
            full_width(self.spark.read.parquet(*paths)
                       .withColumn(BATCH_MS, F.lit(folder).cast("bigint"))
                       .withColumn(FINGERPRINT, F.lit(fingerprint).cast("string")))
            for (folder, fingerprint), paths in sorted(groups.items())
        ]
        frame = frames[0]
        for other in frames[1:]:
            frame = frame.unionByName(other)
        return frame


# --------------------------------------------------------------------------------------- notebook tasks


def run_layer(engine: Engine, layer: str, request: dict[str, Any],
              upstream_failed: dict[str, str]) -> list[dict[str, Any]]:
    """Run one layer of ``request`` (``tables``, ``marts``: lists, or ``"*"`` for every raw table / SQL
    file). ``upstream_failed``: table -> why an earlier layer failed it (those are skipped here)."""
    tables = request.get("tables") or []
    if tables == "*":
        tables = engine.list_raw_tables()
    marts = request.get("marts") or []
    if marts == "*":
        marts = sorted(p.stem for p in GOLD_SQL_DIR.glob("*.sql"))
    if layer in (BRONZE, SILVER, GOLD) and not engine.sail:
        engine.spark.sql(f"CREATE SCHEMA IF NOT EXISTS `{engine.catalog}`.`{layer}`")
    if layer == BRONZE:
        return engine.bronze(tables)
    if layer == SILVER:
        runnable = [t for t in tables if t not in upstream_failed]
        results = {r["name"]: r for r in engine.silver(runnable)}
        return [results.get(t) or {**_result(SILVER, t, engine.ref(SILVER, t)), "status": "skipped",
                                   "reason": f"{t} {upstream_failed[t]}"} for t in tables]
    if layer == GOLD:
        return engine.gold(marts, upstream_failed)
    raise ValueError(f"unknown layer {layer!r}: use bronze, silver or gold")


def failed_tables(results: list[dict[str, Any]], layer: str) -> dict[str, str]:
    """table -> "failed: <reason>" for the downstream layer, short enough for a Databricks task value."""
    return {r["name"]: f"failed in {layer}: {_short(str(r.get('reason')), 300)}" for r in results
            if r["status"] == "failed"}


def run_notebook(spark: SparkSession, dbutils: Any, layer: str) -> str:
    """The body of notebook 01/02/03: read the ``request`` widget (JSON: catalog, delta_root, tables,
    marts, chunk_rows), take the failed tables of the upstream task (a task value), run ``layer``, publish
    this layer's failed tables as a task value and return the results as JSON for ``dbutils.notebook.exit``.
    A bad request raises ValueError naming the missing field."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    request = json.loads(dbutils.widgets.get("request"))
    for key in ("catalog", "delta_root"):
        if not request.get(key):
            raise ValueError(f"notebook parameter 'request' has no {key!r}: pass the JSON the runner builds")
    engine = Engine.for_session(spark, request["catalog"], request["delta_root"],
                                chunk_rows=int(request.get("chunk_rows") or 0) or None)
    # Tables an earlier task of this run failed (task values; only tasks this run has).
    layers = request.get("layers") or [BRONZE, SILVER, GOLD]
    upstream_failed: dict[str, str] = {}
    for earlier in [lay for lay in (BRONZE, SILVER) if lay in layers and LAYERS.index(lay) < LAYERS.index(layer)]:
        upstream_failed.update(dbutils.jobs.taskValues.get(taskKey=earlier, key="failed", default={},
                                                           debugValue={}) or {})
    tables = request.get("tables") or []
    engine.register_local_tables(tables if isinstance(tables, list) else [],
                                 request.get("marts") if isinstance(request.get("marts"), list) else [])
    results = run_layer(engine, layer, request, upstream_failed)
    dbutils.jobs.taskValues.set(key="failed", value=failed_tables(results, layer))
    return json.dumps({"layer": layer, "results": results}, default=str)
