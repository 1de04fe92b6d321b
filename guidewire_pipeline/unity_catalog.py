"""Register tables written outside Databricks (the raw layer's Ray/delta-rs tables) in Unity Catalog.

``register_tables(client, lakehouse, [(layer, table, columns), ...], warehouse_id=None)`` makes each
``<catalog>.<layer>.<table>`` an EXTERNAL Delta table at ``<delta_root>/<layer>/<table>`` (no Dagster
here; the raw layer calls it after a sync). Idempotent: a table already registered at the same
location is left as it is.

- With a SQL warehouse (``warehouse_id``, e.g. ``DATABRICKS_WAREHOUSE_ID``): the Statement Execution
  API runs ``CREATE TABLE IF NOT EXISTS ... USING DELTA LOCATION ...`` (Unity Catalog reads the columns
  from the Delta log).
- Without one: ``POST /api/2.1/unity-catalog/tables`` (databricks-sdk 0.60's ``TablesAPI`` has no
  create), which needs the columns, and EXTERNAL_USE_SCHEMA / EXTERNAL_USE_LOCATION for the caller.
- Schemas are created with ``SchemasAPI`` when missing. The location must lie under a Unity Catalog
  external location the caller may use; otherwise Databricks refuses and the error names the table.

Bad input (a name that is not an identifier, a table registered at another location, a refused
request) raises ``UnityCatalogError`` naming the table and what to do; earlier tables stay registered.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from guidewire_pipeline.lakehouse import Lakehouse

Column = tuple[str, str]  # (name, Spark SQL type, e.g. "bigint", "decimal(18,2)", "timestamp")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_TYPE_NAMES = {
    "bigint": "LONG", "long": "LONG", "int": "INT", "integer": "INT", "smallint": "SHORT", "tinyint": "BYTE",
    "string": "STRING", "boolean": "BOOLEAN", "double": "DOUBLE", "float": "FLOAT", "date": "DATE",
    "timestamp": "TIMESTAMP", "timestamp_ntz": "TIMESTAMP_NTZ", "binary": "BINARY",
}
_JSON_TYPES = {"bigint": "long", "int": "integer", "smallint": "short", "tinyint": "byte"}


class UnityCatalogError(RuntimeError):
    """A table could not be registered; the message names it and says what to do."""


@dataclass(frozen=True)
class RegisteredTable:
    full_name: str  # <catalog>.<layer>.<table>, for dagster/table_name
    storage_location: str
    action: str  # "created" or "unchanged"


def arrow_columns(schema: Any) -> list[Column]:
    """``(name, Spark SQL type)`` of a pyarrow schema, for ``register_tables`` without a warehouse."""
    import pyarrow as pa

    def spark_type(t: pa.DataType) -> str:
        if pa.types.is_int64(t):
            return "bigint"
        if pa.types.is_int32(t):
            return "int"
        if pa.types.is_int16(t):
            return "smallint"
        if pa.types.is_int8(t):
            return "tinyint"
        if pa.types.is_boolean(t):
            return "boolean"
        if pa.types.is_float64(t):
            return "double"
        if pa.types.is_float32(t):
            return "float"
        if pa.types.is_decimal(t):
            return f"decimal({t.precision},{t.scale})"
        if pa.types.is_timestamp(t):
            return "timestamp" if t.tz else "timestamp_ntz"
        if pa.types.is_date(t):
            return "date"
        if pa.types.is_binary(t) or pa.types.is_large_binary(t):
            return "binary"
        return "string"

    return [(f.name, spark_type(f.type)) for f in schema]


def register_tables(client: Any, lakehouse: Lakehouse, tables: Iterable[tuple[str, str, Sequence[Column]]],
                    warehouse_id: str | None = None) -> list[RegisteredTable]:
    """Register every ``(layer, table, columns)`` as an external Delta table; see the module docstring."""
    from databricks.sdk.errors import DatabricksError, NotFound

    registered: list[RegisteredTable] = []
    schemas_seen: set[str] = set()
    for layer, table, columns in tables:
        full_name = lakehouse.table_name(layer, table)
        location = lakehouse.uri(layer, table)
        if not all(_IDENTIFIER.match(p) for p in full_name.split(".")):
            raise UnityCatalogError(f"{full_name!r} is not a valid Unity Catalog name: rename the table "
                                    "(letters, digits and _ only)")
        try:
            if layer not in schemas_seen:
                _ensure_schema(client, lakehouse.catalog, layer)
                schemas_seen.add(layer)
            try:
                existing = client.tables.get(full_name)
            except NotFound:
                existing = None
            if existing is not None:
                if (existing.storage_location or "").rstrip("/") != location.rstrip("/"):
                    raise UnityCatalogError(
                        f"{full_name} is already registered at {existing.storage_location}, not at {location}: "
                        "drop that table in Unity Catalog, or point GW_DELTA_ROOT / GW_UC_CATALOG elsewhere")
                registered.append(RegisteredTable(full_name, location, "unchanged"))
                continue
            if warehouse_id:
                _execute(client, warehouse_id,
                         f"CREATE TABLE IF NOT EXISTS {_quoted(full_name)} USING DELTA LOCATION '{location}'",
                         full_name)
            else:
                client.api_client.do("POST", "/api/2.1/unity-catalog/tables", body={
                    "name": table, "catalog_name": lakehouse.catalog, "schema_name": layer,
                    "table_type": "EXTERNAL", "data_source_format": "DELTA", "storage_location": location,
                    "columns": [_column(name, type_text, i) for i, (name, type_text) in enumerate(columns)],
                })
        except DatabricksError as error:
            raise UnityCatalogError(
                f"Unity Catalog refused to register {full_name} at {location} ({error.error_code}: {error}). "
                "Check that an external location covers it and that this identity has CREATE TABLE, "
                "EXTERNAL USE SCHEMA and EXTERNAL USE LOCATION there.") from error
        registered.append(RegisteredTable(full_name, location, "created"))
    return registered


def _ensure_schema(client: Any, catalog: str, schema: str) -> None:
    from databricks.sdk.errors import NotFound, ResourceAlreadyExists

    try:
        client.schemas.get(f"{catalog}.{schema}")
    except NotFound:
        try:
            client.schemas.create(name=schema, catalog_name=catalog,
                                  comment="guidewire_pipeline: one schema per lakehouse layer")
        except ResourceAlreadyExists:  # created meanwhile by another writer
            pass


def _execute(client: Any, warehouse_id: str, statement: str, full_name: str) -> None:
    """Run ``statement`` on the warehouse and wait for it (polls until a terminal state, 10 min at most)."""
    from databricks.sdk.service.sql import StatementState

    response = client.statement_execution.execute_statement(
        statement=statement, warehouse_id=warehouse_id, wait_timeout="30s")
    deadline = time.monotonic() + 600
    while response.status and response.status.state in (StatementState.PENDING, StatementState.RUNNING):
        if time.monotonic() > deadline:
            raise UnityCatalogError(f"registering {full_name}: statement {response.statement_id} still running "
                                    "after 10 minutes; check the SQL warehouse")
        time.sleep(1)
        response = client.statement_execution.get_statement(response.statement_id)
    state = response.status.state if response.status else None
    if state != StatementState.SUCCEEDED:
        error = response.status.error if response.status else None
        raise UnityCatalogError(
            f"registering {full_name} on SQL warehouse {warehouse_id} ended {state.value if state else 'unknown'}: "
            f"{error.message if error else 'no error message'}. Check the warehouse and the grants.")


def _quoted(full_name: str) -> str:
    return ".".join(f"`{part}`" for part in full_name.split("."))


def _column(name: str, type_text: str, position: int) -> dict[str, Any]:
    base = type_text.split("(")[0].strip().lower()
    column: dict[str, Any] = {
        "name": name, "type_text": type_text, "position": position, "nullable": True,
        "type_name": "DECIMAL" if base == "decimal" else _TYPE_NAMES.get(base, base.upper()),
        "type_json": json.dumps({"name": name, "type": _JSON_TYPES.get(base, type_text), "nullable": True,
                                 "metadata": {}}),
    }
    if base == "decimal":
        precision, scale = (int(x) for x in type_text[type_text.index("(") + 1 : -1].split(","))
        column.update(type_precision=precision, type_scale=scale)
    return column
