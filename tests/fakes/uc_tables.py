"""Unity Catalog catalogs, schemas and tables for the fake workspace, plus the Statement Execution API.

``install(ws)`` registers the routes. The table registry is ``ws.uc_tables`` (full name -> table info
with ``full_name``, ``catalog_name``, ``schema_name``, ``name``, ``table_type``, ``storage_location``,
``data_source_format``, ``columns``), created with ``ws.__dict__.setdefault("uc_tables", {})`` so that
the share fake (``unity_catalog.py``) and the jobs fake (tables Spark creates in a task) share it.
Schemas live in ``ws.uc_schemas``; catalogs in ``ws.uc_catalogs`` (``main`` exists).

- ``POST /api/2.1/unity-catalog/tables``: EXTERNAL + DELTA only, as the real endpoint; 409
  TABLE_ALREADY_EXISTS; 404 SCHEMA_DOES_NOT_EXIST; 400 for a missing field.
- ``GET .../tables/{full_name}``, ``GET .../tables/{full_name}/exists``, ``GET .../tables?catalog_name&schema_name``.
- ``POST/GET .../schemas``, ``GET .../schemas/{full_name}``, ``GET .../catalogs/{name}``.
- ``POST /api/2.0/sql/statements``: on a known warehouse (``ws.warehouses``, default ``{"fake-warehouse"}``)
  runs ``CREATE SCHEMA IF NOT EXISTS`` and ``CREATE TABLE [IF NOT EXISTS] name USING DELTA LOCATION '...'``;
  the columns come from the Delta log at the location (delta-rs), as Unity Catalog reads them. Anything
  else FAILS with a PARSE_SYNTAX_ERROR; a location without a Delta table FAILS with DELTA_TABLE_NOT_FOUND.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

from tests.fakes.databricks_workspace import FakeApiError, FakeDatabricksWorkspace

UC = r"/api/2\.1/unity-catalog"
_NAME = r"`?([A-Za-z_][A-Za-z0-9_]*)`?"
_CREATE_SCHEMA = re.compile(rf"^\s*CREATE\s+SCHEMA\s+(IF\s+NOT\s+EXISTS\s+)?{_NAME}\.{_NAME}\s*;?\s*$", re.I)
_CREATE_TABLE = re.compile(
    rf"^\s*CREATE\s+TABLE\s+(IF\s+NOT\s+EXISTS\s+)?{_NAME}\.{_NAME}\.{_NAME}\s+USING\s+DELTA\s+LOCATION\s+'([^']+)'\s*;?\s*$",
    re.I)


def install(ws: FakeDatabricksWorkspace) -> None:
    tables: dict[str, dict[str, Any]] = ws.__dict__.setdefault("uc_tables", {})
    schemas: dict[str, dict[str, Any]] = ws.__dict__.setdefault("uc_schemas", {})
    catalogs: dict[str, dict[str, Any]] = ws.__dict__.setdefault("uc_catalogs", {"main": {"name": "main"}})
    warehouses: set[str] = ws.__dict__.setdefault("warehouses", {"fake-warehouse"})
    statements: dict[str, dict[str, Any]] = ws.__dict__.setdefault("statements", {})

    def need_schema(catalog: str, schema: str) -> None:
        if catalog not in catalogs:
            raise FakeApiError(404, "CATALOG_DOES_NOT_EXIST", f"Catalog '{catalog}' does not exist.")
        if f"{catalog}.{schema}" not in schemas:
            raise FakeApiError(404, "SCHEMA_DOES_NOT_EXIST", f"Schema '{catalog}.{schema}' does not exist.")

    def add_schema(catalog: str, schema: str, comment: str | None = None) -> dict[str, Any]:
        if catalog not in catalogs:
            raise FakeApiError(404, "CATALOG_DOES_NOT_EXIST", f"Catalog '{catalog}' does not exist.")
        full = f"{catalog}.{schema}"
        if full in schemas:
            raise FakeApiError(409, "SCHEMA_ALREADY_EXISTS", f"Schema '{full}' already exists.")
        schemas[full] = {"name": schema, "catalog_name": catalog, "full_name": full, "comment": comment,
                         "created_at": int(time.time() * 1000)}
        return schemas[full]

    def add_table(catalog: str, schema: str, name: str, location: str, columns: list[dict[str, Any]],
                  created_by: str) -> dict[str, Any]:
        need_schema(catalog, schema)
        full = f"{catalog}.{schema}.{name}"
        if full in tables:
            raise FakeApiError(409, "TABLE_ALREADY_EXISTS", f"Table '{full}' already exists.")
        tables[full] = {"full_name": full, "catalog_name": catalog, "schema_name": schema, "name": name,
                        "table_type": "EXTERNAL", "data_source_format": "DELTA", "storage_location": location,
                        "columns": columns, "created_by": created_by, "created_at": int(time.time() * 1000)}
        return tables[full]

    @ws.route("GET", rf"{UC}/catalogs/([^/]+)")
    def get_catalog(ws_, match, query, body):
        with ws.lock:
            if match.group(1) not in catalogs:
                raise FakeApiError(404, "CATALOG_DOES_NOT_EXIST", f"Catalog '{match.group(1)}' does not exist.")
            return catalogs[match.group(1)]

    @ws.route("POST", rf"{UC}/schemas")
    def create_schema(ws_, match, query, body):
        if not body.get("name") or not body.get("catalog_name"):
            raise FakeApiError(400, "INVALID_PARAMETER_VALUE", "name and catalog_name are required.")
        with ws.lock:
            return add_schema(body["catalog_name"], body["name"], body.get("comment"))

    @ws.route("GET", rf"{UC}/schemas/([^/]+)")
    def get_schema(ws_, match, query, body):
        with ws.lock:
            if match.group(1) not in schemas:
                raise FakeApiError(404, "SCHEMA_DOES_NOT_EXIST", f"Schema '{match.group(1)}' does not exist.")
            return schemas[match.group(1)]

    @ws.route("GET", rf"{UC}/schemas")
    def list_schemas(ws_, match, query, body):
        catalog = (query.get("catalog_name") or [""])[0]
        with ws.lock:
            return {"schemas": [s for s in schemas.values() if s["catalog_name"] == catalog]}

    @ws.route("POST", rf"{UC}/tables")
    def create_table(ws_, match, query, body):
        for key in ("name", "catalog_name", "schema_name", "table_type", "data_source_format", "storage_location"):
            if not body.get(key):
                raise FakeApiError(400, "INVALID_PARAMETER_VALUE", f"Missing required field: {key}")
        if body["table_type"] != "EXTERNAL" or body["data_source_format"] != "DELTA":
            raise FakeApiError(400, "INVALID_PARAMETER_VALUE",
                               "Only EXTERNAL tables with data_source_format DELTA can be created here.")
        with ws.lock:
            return add_table(body["catalog_name"], body["schema_name"], body["name"], body["storage_location"],
                             body.get("columns") or [], "tables API")

    @ws.route("GET", rf"{UC}/tables/([^/]+)/exists")
    def table_exists(ws_, match, query, body):
        with ws.lock:
            return {"table_exists": match.group(1) in tables}

    @ws.route("GET", rf"{UC}/tables/([^/]+)")
    def get_table(ws_, match, query, body):
        with ws.lock:
            if match.group(1) not in tables:
                raise FakeApiError(404, "TABLE_DOES_NOT_EXIST", f"Table '{match.group(1)}' does not exist.")
            return tables[match.group(1)]

    @ws.route("GET", rf"{UC}/tables")
    def list_tables(ws_, match, query, body):
        catalog, schema = (query.get("catalog_name") or [""])[0], (query.get("schema_name") or [""])[0]
        with ws.lock:
            return {"tables": [t for t in tables.values()
                               if t["catalog_name"] == catalog and t["schema_name"] == schema]}

    @ws.route("POST", r"/api/2\.0/sql/statements/?")
    def execute_statement(ws_, match, query, body):
        warehouse = body.get("warehouse_id")
        if warehouse not in warehouses:
            raise FakeApiError(404, "RESOURCE_DOES_NOT_EXIST", f"SQL warehouse {warehouse!r} does not exist.")
        statement_id = uuid.uuid4().hex
        with ws.lock:
            try:
                _run_statement(str(body.get("statement") or ""))
                status: dict[str, Any] = {"state": "SUCCEEDED"}
            except FakeApiError as error:
                status = {"state": "FAILED", "error": {"error_code": error.error_code, "message": error.message}}
            statements[statement_id] = {"statement": body.get("statement"), "status": status}
        return {"statement_id": statement_id, "status": status}

    @ws.route("GET", r"/api/2\.0/sql/statements/([^/]+)")
    def get_statement(ws_, match, query, body):
        with ws.lock:
            if match.group(1) not in statements:
                raise FakeApiError(404, "RESOURCE_DOES_NOT_EXIST", f"Statement {match.group(1)} does not exist.")
            return {"statement_id": match.group(1), "status": statements[match.group(1)]["status"]}

    def _run_statement(statement: str) -> None:
        schema_match = _CREATE_SCHEMA.match(statement)
        if schema_match:
            if_not_exists, catalog, schema = schema_match.groups()
            if not (if_not_exists and f"{catalog}.{schema}" in schemas):
                add_schema(catalog, schema)
            return
        table_match = _CREATE_TABLE.match(statement)
        if not table_match:
            raise FakeApiError(400, "PARSE_SYNTAX_ERROR", f"The fake warehouse cannot run: {statement[:200]}")
        if_not_exists, catalog, schema, name, location = table_match.groups()
        if if_not_exists and f"{catalog}.{schema}.{name}" in tables:
            return
        from deltalake import DeltaTable

        if not DeltaTable.is_deltatable(location):
            raise FakeApiError(400, "DELTA_TABLE_NOT_FOUND", f"No Delta table at {location}.")
        import pyarrow as pa

        arrow = pa.schema(DeltaTable(location).schema().to_arrow())
        columns = [{"name": f.name, "type_text": str(f.type), "position": i} for i, f in enumerate(arrow)]
        add_table(catalog, schema, name, location, columns, "statement execution")
