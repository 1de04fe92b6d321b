"""The Delta Sharing protocol over HTTP (Starlette; served by uvicorn), on the state the share pack
writes (no Dagster here). Endpoints, headers, NDJSON lines, error bodies and status codes follow
delta-io/delta-sharing ``PROTOCOL.md``:

- ``GET /shares``, ``/shares/{share}``, ``/shares/{share}/schemas``, ``.../schemas/{schema}/tables``,
  ``/shares/{share}/all-tables``: JSON, paginated with ``maxResults`` / ``pageToken``;
- ``GET .../tables/{table}/version`` (and the deprecated ``HEAD .../tables/{table}``): the
  ``Delta-Table-Version`` header;
- ``GET .../metadata``, ``POST .../query``, ``GET .../changes``: NDJSON (``application/x-ndjson;
  charset=utf-8``), a protocol line, a metaData line, then file lines with short-lived URLs, in the
  ``parquet`` response format, or ``delta`` when the ``delta-sharing-capabilities`` header asks for
  only that (or the table needs it);
- ``GET /files/{signed}``: a local data file behind an HMAC-signed, expiring URL.

Every API call needs ``Authorization: Bearer <token>`` of a recipient, from an allowed IP address.
A recipient sees only the shares granted to it: any other share is ``404 RESOURCE_DOES_NOT_EXIST``,
worded exactly as for a share that does not exist, so that names do not leak. Errors are
``{"errorCode": ..., "message": ...}`` and name what was wrong; nothing a request does changes state.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlparse

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route

from guidewire_pipeline.cda.storage import Location
from guidewire_pipeline.lakehouse import Lakehouse
from guidewire_pipeline.sharing.server.predicates import PredicateError, file_may_match, parse_predicate
from guidewire_pipeline.sharing.server.signing import FileUrlSigner, UrlRejected
from guidewire_pipeline.sharing.server.state import ObjectRow, RecipientRow, ShareRow, SharingState
from guidewire_pipeline.sharing.server.tables import (
    DataFile,
    SharedTable,
    TableReadError,
    TableSnapshot,
    parse_timestamp,
)

log = logging.getLogger("guidewire_pipeline.sharing.server")

NDJSON = "application/x-ndjson; charset=utf-8"
JSON_UTF8 = "application/json; charset=utf-8"
CAPABILITIES = "delta-sharing-capabilities"
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
_INT32_MAX = 2**31 - 1


class ProtocolError(Exception):
    """An error answer: HTTP status, the protocol's errorCode, and a message naming what was wrong."""

    def __init__(self, status: int, error_code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.message = message


def _not_found(what: str) -> ProtocolError:
    return ProtocolError(404, "RESOURCE_DOES_NOT_EXIST", f"{what} does not exist or is not shared with you")


def _bad(message: str, code: str = "INVALID_PARAMETER_VALUE") -> ProtocolError:
    return ProtocolError(400, code, message)


class SharingServer:
    """The server over ``state`` (shares, recipients, tokens) and ``lakehouse`` (where tables are).

    ``public_url`` is the endpoint recipients use (also in their profile files); its path is the
    protocol's ``{prefix}``. Data file URLs live ``url_ttl_seconds``."""

    def __init__(self, state: SharingState, lakehouse: Lakehouse, public_url: str, url_ttl_seconds: int) -> None:
        self.state = state
        self.lakehouse = lakehouse
        self.public_url = public_url.rstrip("/")
        self.prefix = urlparse(self.public_url).path.rstrip("/")
        self.signer = FileUrlSigner(state.signing_key(), self.public_url, url_ttl_seconds)

    # -- the application ---------------------------------------------------------------------------
    def app(self) -> Starlette:
        table = "/shares/{share}/schemas/{schema}/tables/{table}"
        routes = [
            Route("/shares", self._endpoint(self.list_shares)),
            Route("/shares/{share}", self._endpoint(self.get_share)),
            Route("/shares/{share}/schemas", self._endpoint(self.list_schemas)),
            Route("/shares/{share}/schemas/{schema}/tables", self._endpoint(self.list_tables)),
            Route("/shares/{share}/all-tables", self._endpoint(self.list_all_tables)),
            Route(table, self._endpoint(self.table_version_head), methods=["HEAD"]),
            Route(f"{table}/version", self._endpoint(self.table_version)),
            Route(f"{table}/metadata", self._endpoint(self.table_metadata)),
            Route(f"{table}/query", self._endpoint(self.query_table), methods=["POST"]),
            Route(f"{table}/changes", self._endpoint(self.table_changes)),
            Route("/files/{signed}", self._serve_file, methods=["GET", "HEAD"]),
        ]
        app = Starlette(
            routes=[Mount(self.prefix, routes=routes)] if self.prefix else routes,
            exception_handlers={HTTPException: _http_exception, Exception: _unexpected},
        )
        app.add_middleware(_AccessLog)
        return app

    def _endpoint(self, handler: Callable[..., Response]) -> Callable[[Request], Any]:
        """An API endpoint: authenticate, read the body, then run ``handler`` off the event loop."""

        async def endpoint(request: Request) -> Response:
            try:
                body = None
                if request.method == "POST":
                    raw = await request.body()
                    try:
                        body = json.loads(raw) if raw.strip() else {}
                    except ValueError as exc:
                        raise _bad(f"the request body is not JSON: {exc}", "MALFORMED_REQUEST") from None
                    if not isinstance(body, dict):
                        raise _bad("the request body must be a JSON object", "MALFORMED_REQUEST")
                return await run_in_threadpool(self._authorized, handler, request, body)
            except ProtocolError as exc:
                return _error(exc)

        return endpoint

    def _authorized(self, handler: Callable[..., Response], request: Request, body: dict | None) -> Response:
        recipient = self._recipient(request)
        try:
            return handler(request, recipient, body) if body is not None else handler(request, recipient)
        except TableReadError as exc:
            raise ProtocolError(exc.status, exc.error_code, exc.message) from None

    # -- authentication ----------------------------------------------------------------------------
    def _recipient(self, request: Request) -> RecipientRow:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ProtocolError(401, "UNAUTHENTICATED", "no bearer token: send 'Authorization: Bearer <token>' "
                                "with the bearerToken of your profile file")
        found = self.state.recipient_for_token(token.strip())
        if found is None:
            raise ProtocolError(401, "UNAUTHENTICATED", "the bearer token is not valid (wrong, revoked or "
                                "rotated): use the profile file you were sent last, or ask the provider for a new one")
        recipient, expires = found
        if expires <= datetime.now(UTC):
            raise ProtocolError(401, "UNAUTHENTICATED", f"the bearer token expired at "
                                f"{expires.strftime('%Y-%m-%dT%H:%M:%SZ')}: ask the provider for a new profile file")
        if recipient.allowed_ips:
            client = request.client.host if request.client else ""
            if not _ip_allowed(client, recipient.allowed_ips):
                raise ProtocolError(403, "PERMISSION_DENIED", f"requests from {client or 'an unknown address'} "
                                    "are not allowed for this recipient: ask the provider to add your address "
                                    "to its allowed_ips")
        return recipient

    # -- shares, schemas, tables --------------------------------------------------------------------
    def _share(self, recipient: RecipientRow, name: str) -> ShareRow:
        for share in self.state.granted_shares(recipient.name):
            if share.name.lower() == name.lower():
                return share
        raise _not_found(f"share {name!r}")

    def _objects(self, share: ShareRow) -> list[ObjectRow]:
        return [o for o in self.state.objects(share.name) if o.data_object_type == "TABLE"]

    def _object(self, recipient: RecipientRow, share_name: str, schema: str, table: str) -> tuple[ShareRow, ObjectRow]:
        share = self._share(recipient, share_name)
        objects = self._objects(share)
        if not any(o.shared_schema_and_table[0].lower() == schema.lower() for o in objects):
            raise _not_found(f"schema {schema!r} in share {share.name!r}")
        for obj in objects:
            shared_schema, shared_table = obj.shared_schema_and_table
            if shared_schema.lower() == schema.lower() and shared_table.lower() == table.lower():
                return share, obj
        raise _not_found(f"table {table!r} in schema {schema!r} of share {share.name!r}")

    def _table(self, obj: ObjectRow) -> SharedTable:
        parsed = self.lakehouse.parse_table_name(obj.name)
        schema, table = obj.shared_schema_and_table
        if parsed is None:
            raise ProtocolError(404, "RESOURCE_DOES_NOT_EXIST", f"table {schema}.{table} is shared but this server "
                                "does not hold its data: ask the provider")
        return SharedTable(self.lakehouse.location(*parsed), f"{schema}.{table}")

    def list_shares(self, request: Request, recipient: RecipientRow) -> Response:
        items = [{"name": s.name, "id": s.id} for s in self.state.granted_shares(recipient.name)]
        return _json(_page(request, items, "shares", lambda i: i["name"]))

    def get_share(self, request: Request, recipient: RecipientRow) -> Response:
        share = self._share(recipient, request.path_params["share"])
        return _json({"share": {"name": share.name, "id": share.id}})

    def list_schemas(self, request: Request, recipient: RecipientRow) -> Response:
        share = self._share(recipient, request.path_params["share"])
        names = sorted({o.shared_schema_and_table[0] for o in self._objects(share)})
        items = [{"name": n, "share": share.name} for n in names]
        return _json(_page(request, items, f"schemas/{share.name}", lambda i: i["name"]))

    def _table_items(self, share: ShareRow, schema: str | None) -> list[dict[str, Any]]:
        items = []
        for obj in self._objects(share):
            shared_schema, shared_table = obj.shared_schema_and_table
            if schema is None or shared_schema.lower() == schema.lower():
                items.append({"name": shared_table, "schema": shared_schema, "share": share.name,
                              "shareId": share.id, "id": obj.id})
        return sorted(items, key=lambda i: (i["schema"], i["name"]))

    def list_tables(self, request: Request, recipient: RecipientRow) -> Response:
        share = self._share(recipient, request.path_params["share"])
        schema = request.path_params["schema"]
        items = self._table_items(share, schema)
        if not items:
            raise _not_found(f"schema {schema!r} in share {share.name!r}")
        return _json(_page(request, items, f"tables/{share.name}/{schema.lower()}", lambda i: i["name"]))

    def list_all_tables(self, request: Request, recipient: RecipientRow) -> Response:
        share = self._share(recipient, request.path_params["share"])
        items = self._table_items(share, None)
        return _json(_page(request, items, f"all-tables/{share.name}", lambda i: f"{i['schema']}.{i['name']}"))

    # -- version and metadata -----------------------------------------------------------------------
    def _resolve(self, request: Request, recipient: RecipientRow) -> tuple[ObjectRow, SharedTable]:
        p = request.path_params
        _, obj = self._object(recipient, p["share"], p["schema"], p["table"])
        return obj, self._table(obj)

    def table_version(self, request: Request, recipient: RecipientRow) -> Response:
        obj, table = self._resolve(request, recipient)
        starting = request.query_params.get("startingTimestamp")
        if starting is None:
            version = table.latest_version()
        else:
            _require_history(obj, "startingTimestamp")
            version = table.version_at_or_after(parse_timestamp(starting, "startingTimestamp"), "startingTimestamp")
        return Response(status_code=200, headers={"delta-table-version": str(version)})

    def table_version_head(self, request: Request, recipient: RecipientRow) -> Response:
        _, table = self._resolve(request, recipient)
        return Response(status_code=200, headers={"delta-table-version": str(table.latest_version())})

    def table_metadata(self, request: Request, recipient: RecipientRow) -> Response:
        obj, table = self._resolve(request, recipient)
        query = request.query_params
        version = _int_param(query.get("version"), "version")
        timestamp = query.get("timestamp")
        if version is not None and timestamp is not None:
            raise _bad("version and timestamp are mutually exclusive: give one of them")
        if version is not None or timestamp is not None:
            _require_history(obj, "version" if version is not None else "timestamp")
        if timestamp is not None:
            version = table.version_at_or_before(parse_timestamp(timestamp, "timestamp"), "timestamp")
        snapshot = table.snapshot(version, with_files=True)
        response_format = _response_format(request, snapshot)
        lines = [_protocol_line(snapshot, response_format),
                 _metadata_line(snapshot, response_format, version is not None, obj)]
        return _ndjson(lines, snapshot.version, response_format, request)

    # -- query ----------------------------------------------------------------------------------------
    def query_table(self, request: Request, recipient: RecipientRow, body: dict[str, Any]) -> Response:
        obj, table = self._resolve(request, recipient)
        limit = _body_int(body, "limitHint")
        version = _body_int(body, "version")
        starting = _body_int(body, "startingVersion")
        ending = _body_int(body, "endingVersion")
        timestamp = body.get("timestamp")
        if timestamp is not None and not isinstance(timestamp, str):
            raise _bad("timestamp must be a string in ISO 8601 (e.g. 2022-01-01T00:00:00Z)")
        predicate_text = body.get("jsonPredicateHints")
        if predicate_text is not None and not isinstance(predicate_text, str):
            raise _bad("jsonPredicateHints must be a string holding the JSON predicate")
        hints = body.get("predicateHints")
        if hints is not None and not (isinstance(hints, list) and all(isinstance(h, str) for h in hints)):
            raise _bad("predicateHints must be a list of strings")
        given = [n for n, v in (("version", version), ("timestamp", timestamp), ("startingVersion", starting)) if v is not None]
        if len(given) > 1:
            raise _bad(f"{' and '.join(given)} are mutually exclusive: give one of them")
        if ending is not None and starting is None:
            raise _bad("endingVersion needs startingVersion")
        if given:
            _require_history(obj, given[0])
        if timestamp is not None:
            version = table.version_at_or_before(parse_timestamp(timestamp, "timestamp"), "timestamp")

        if starting is not None:
            latest = table.latest_version()
            end = min(ending, latest) if ending is not None else latest
            if starting > latest:
                raise _bad(f"startingVersion {starting} is after the latest version of {table.name} ({latest})")
            if starting > end:
                raise _bad(f"startingVersion ({starting}) must be smaller than or equal to endingVersion ({ending})")
            snapshot = table.snapshot(end, with_files=False)
            response_format = _response_format(request, snapshot)
            lines = [_protocol_line(snapshot, response_format), _metadata_line(snapshot, response_format, False, obj)]
            files = table.changes(starting, end, with_cdc=False)
            lines += self._file_lines(files, response_format, snapshot, change_lines=True)
            return _ndjson(lines, starting, response_format, request)

        snapshot = table.snapshot(version, with_files=True)
        response_format = _response_format(request, snapshot)
        files = _skip_files(snapshot, predicate_text)
        files = _apply_limit(files, limit)
        if version is not None:
            files = [_at_version(f, snapshot) for f in files]
        lines = [_protocol_line(snapshot, response_format),
                 _metadata_line(snapshot, response_format, version is not None, obj)]
        lines += self._file_lines(files, response_format, snapshot, change_lines=False)
        return _ndjson(lines, snapshot.version, response_format, request)

    def table_changes(self, request: Request, recipient: RecipientRow) -> Response:
        obj, table = self._resolve(request, recipient)
        query = request.query_params
        if obj.history_sharing is not True and obj.cdf_enabled is not True:
            raise _bad(f"the change data feed of {table.name} is not shared: the provider must set cdf_enabled: "
                       "true (or history_sharing: true) on its data object in the share pack")
        starting = _int_param(query.get("startingVersion"), "startingVersion")
        ending = _int_param(query.get("endingVersion"), "endingVersion")
        start_ts, end_ts = query.get("startingTimestamp"), query.get("endingTimestamp")
        if starting is not None and start_ts is not None:
            raise _bad("startingVersion and startingTimestamp are mutually exclusive: give one of them")
        if ending is not None and end_ts is not None:
            raise _bad("endingVersion and endingTimestamp are mutually exclusive: give one of them")
        if starting is None and start_ts is None:
            raise _bad("the change data feed needs startingVersion or startingTimestamp")
        if start_ts is not None:
            starting = table.version_at_or_after(parse_timestamp(start_ts, "startingTimestamp"), "startingTimestamp")
        latest = table.latest_version()
        if end_ts is not None:
            ending = table.version_at_or_before(parse_timestamp(end_ts, "endingTimestamp"), "endingTimestamp")
        end = latest if ending is None else min(ending, latest)
        assert starting is not None
        if starting > latest:
            raise _bad(f"startingVersion {starting} is after the latest version of {table.name} ({latest})")
        if starting > end:
            raise _bad(f"the starting version ({starting}) must be smaller than or equal to the ending version ({end})")
        snapshot = table.snapshot(end, with_files=False)
        if not snapshot.cdf_enabled:
            raise _bad(f"{table.name} has no change data feed (delta.enableChangeDataFeed is not true on the table)")
        response_format = _response_format(request, snapshot)
        files = table.changes(starting, end, with_cdc=True)
        lines = [_protocol_line(snapshot, response_format), _metadata_line(snapshot, response_format, False, obj)]
        lines += self._file_lines(files, response_format, snapshot, change_lines=True)
        return _ndjson(lines, starting, response_format, request)

    def _file_lines(self, files: list[DataFile], response_format: str, snapshot: TableSnapshot,
                    change_lines: bool) -> list[dict[str, Any]]:
        lines = []
        for file in files:
            signed = self.signer.sign(file.uri)
            if response_format == "delta":
                lines.append({"file": _delta_file(file, signed.url, signed.expires_ms)})
                continue
            entry: dict[str, Any] = {"url": signed.url, "id": file.id, "partitionValues": file.partition_values,
                                     "size": file.size, "expirationTimestamp": signed.expires_ms}
            if file.stats and file.kind != "cdf":
                entry["stats"] = file.stats
            if file.version is not None:
                entry["version"] = file.version
                entry["timestamp"] = file.timestamp
            lines.append({file.kind if change_lines else "file": entry})
        return lines

    # -- data files ------------------------------------------------------------------------------------
    async def _serve_file(self, request: Request) -> Response:
        try:
            path = self.signer.verify(request.path_params["signed"])
        except UrlRejected as exc:
            return _error(ProtocolError(403, "PERMISSION_DENIED", str(exc)))
        location = Location.parse(path)
        if location.is_s3 or not await run_in_threadpool(_is_file, location.path):
            return _error(ProtocolError(404, "RESOURCE_DOES_NOT_EXIST", "the data file no longer exists (vacuumed?): "
                                        "query the table again"))
        return FileResponse(location.path, media_type="application/octet-stream")


# -- helpers ---------------------------------------------------------------------------------------
def _is_file(path: str) -> bool:
    import os

    return os.path.isfile(path)


def _ip_allowed(client: str, allowed: tuple[str, ...]) -> bool:
    try:
        address = ipaddress.ip_address(client)
    except ValueError:
        return False
    return any(address in ipaddress.ip_network(cidr, strict=False) for cidr in allowed)


def _require_history(obj: ObjectRow, parameter: str) -> None:
    if obj.history_sharing is not True:
        schema, table = obj.shared_schema_and_table
        raise _bad(f"{parameter} is not supported on {schema}.{table}: its history is not shared (the provider must "
                   "set history_sharing: true on its data object in the share pack)")


def _int_param(value: str | None, name: str) -> int | None:
    if value is None:
        return None
    try:
        number = int(value)
    except ValueError:
        raise _bad(f"{name} must be a whole number, not {value!r}") from None
    if number < 0:
        raise _bad(f"{name} must not be negative ({number})")
    return number


def _body_int(body: dict[str, Any], name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad(f"{name} must be a whole number, not {json.dumps(value)}")
    if value < 0:
        raise _bad(f"{name} must not be negative ({value})")
    return value


def _page(request: Request, items: list[dict[str, Any]], scope: str, key: Callable[[dict[str, Any]], str]) -> dict:
    """One page of ``items`` (sorted by ``key``) after ``pageToken``, at most ``maxResults``."""
    size = _int_param(request.query_params.get("maxResults"), "maxResults")
    if size is not None and size > _INT32_MAX:
        raise _bad(f"maxResults must fit in a 32-bit integer ({size})")
    size = DEFAULT_PAGE_SIZE if size is None else min(size, MAX_PAGE_SIZE)
    items = sorted(items, key=key)
    after = None
    token = request.query_params.get("pageToken")
    if token:
        try:
            decoded = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
            if decoded.get("scope") != scope:
                raise ValueError
            after = decoded.get("after")
        except (ValueError, binascii.Error, AttributeError):
            raise _bad("pageToken is not a token this server issued for this list: pass the nextPageToken "
                       "of the previous page, or leave it out to start over") from None
    start = 0 if after is None else next((i for i, item in enumerate(items) if key(item) > after), len(items))
    chunk = items[start:start + size]
    page: dict[str, Any] = {"items": chunk}
    if start + size < len(items):
        last = key(chunk[-1]) if chunk else after
        page["nextPageToken"] = base64.urlsafe_b64encode(
            json.dumps({"scope": scope, "after": last}).encode()).decode().rstrip("=")
    return page


def _capabilities(request: Request) -> dict[str, list[str]]:
    result: dict[str, list[str]] = {}
    for part in request.headers.get(CAPABILITIES, "").split(";"):
        key, _, values = part.partition("=")
        if key.strip():
            result[key.strip().lower()] = [v.strip().lower() for v in values.split(",") if v.strip()]
    return result


def _response_format(request: Request, snapshot: TableSnapshot) -> str:
    """``parquet`` unless the client asks for ``delta`` only, or the table needs it and the client takes it."""
    asked = _capabilities(request).get("responseformat") or ["parquet"]
    if snapshot.needs_delta_format:
        if "delta" in asked:
            return "delta"
        raise _bad("this table uses Delta reader features that need responseformat=delta: upgrade the client "
                   "or ask for the delta response format")
    if "parquet" in asked or "delta" not in asked:
        return "parquet"
    return "delta"


def _protocol_line(snapshot: TableSnapshot, response_format: str) -> dict[str, Any]:
    if response_format == "delta":
        return {"protocol": {"deltaProtocol": snapshot.protocol}}
    return {"protocol": {"minReaderVersion": 1}}


def _metadata_line(snapshot: TableSnapshot, response_format: str, with_version: bool, obj: ObjectRow) -> dict:
    meta = snapshot.metadata
    if response_format == "delta":
        wrapper: dict[str, Any] = {"deltaMetadata": meta}
    else:
        wrapper = {"id": meta["id"], "format": {"provider": "parquet"}, "schemaString": meta["schemaString"],
                   "partitionColumns": meta["partitionColumns"],
                   "configuration": {"enableChangeDataFeed": "true"} if snapshot.cdf_enabled else {}}
        if obj.comment:
            wrapper["description"] = obj.comment
    if with_version:
        wrapper["version"] = snapshot.version
    if snapshot.files:
        wrapper["size"] = sum(f.size for f in snapshot.files)
        wrapper["numFiles"] = len(snapshot.files)
    return {"metaData": wrapper}


def _delta_file(file: DataFile, url: str, expires_ms: int) -> dict[str, Any]:
    if file.kind == "remove":
        action: dict[str, Any] = {"remove": {"path": url, "deletionTimestamp": file.timestamp, "dataChange": True,
                                             "partitionValues": file.partition_values, "size": file.size}}
    elif file.kind == "cdf":
        action = {"cdc": {"path": url, "partitionValues": file.partition_values, "size": file.size,
                          "dataChange": False}}
    else:
        add = {"path": url, "partitionValues": file.partition_values, "size": file.size,
               "modificationTime": file.modification_time or file.timestamp or 0, "dataChange": True}
        if file.stats:
            add["stats"] = file.stats
        action = {"add": add}
    wrapper: dict[str, Any] = {"id": file.id, "deltaSingleAction": action, "expirationTimestamp": expires_ms}
    if file.version is not None:
        wrapper["version"] = file.version
        wrapper["timestamp"] = file.timestamp
    return wrapper


def _skip_files(snapshot: TableSnapshot, predicate_text: str | None) -> list[DataFile]:
    if not predicate_text:
        return snapshot.files
    try:
        tree = parse_predicate(predicate_text)
        return [f for f in snapshot.files if file_may_match(tree, f, snapshot.partition_columns)]
    except (PredicateError, KeyError, TypeError) as exc:  # best effort, as the protocol says: return every file
        log.info("jsonPredicateHints ignored (%s): returning every file", exc)
        return snapshot.files


def _apply_limit(files: list[DataFile], limit: int | None) -> list[DataFile]:
    """Files until their statistics cover ``limit`` rows (files without statistics always go)."""
    if limit is None:
        return files
    chosen, rows = [], 0
    for file in files:
        if rows >= limit:
            break
        chosen.append(file)
        rows += file.num_records or 0
    return chosen


def _at_version(file: DataFile, snapshot: TableSnapshot) -> DataFile:
    from dataclasses import replace

    return replace(file, version=snapshot.version, timestamp=snapshot.timestamp)


def _json(payload: dict[str, Any]) -> Response:
    return Response(json.dumps(payload), media_type=JSON_UTF8)


def _ndjson(lines: list[dict[str, Any]], version: int, response_format: str, request: Request) -> Response:
    capabilities = f"responseformat={response_format}"
    if _capabilities(request).get("includeendstreamaction") == ["true"]:
        capabilities += ";includeendstreamaction=true"
        expiries = [v["expirationTimestamp"] for line in lines[2:] for v in line.values()
                    if isinstance(v, dict) and "expirationTimestamp" in v]
        lines = [*lines, {"endStreamAction": {"minUrlExpirationTimestamp": min(expiries)} if expiries else {}}]
    body = "".join(json.dumps(line, separators=(",", ":")) + "\n" for line in lines)
    return Response(body, headers={"content-type": NDJSON, "delta-table-version": str(version), CAPABILITIES: capabilities})


def _error(exc: ProtocolError) -> JSONResponse:
    return JSONResponse({"errorCode": exc.error_code, "message": exc.message}, status_code=exc.status)


async def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return _error(ProtocolError(404, "RESOURCE_DOES_NOT_EXIST", f"no such endpoint: {request.method} "
                                    f"{request.url.path} (see the Delta Sharing protocol for the endpoints)"))
    if exc.status_code == 405:
        return _error(ProtocolError(405, "MALFORMED_REQUEST", f"{request.method} is not allowed on {request.url.path}"))
    return _error(ProtocolError(exc.status_code, "MALFORMED_REQUEST", str(exc.detail)))


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("Unexpected error on %s %s", request.method, _redacted(request.url.path))
    return _error(ProtocolError(500, "INTERNAL_ERROR", "the server failed to answer this request; it is logged "
                                "on the server: retry, or tell the provider the time of the request"))


def _redacted(path: str) -> str:
    """Access logs never carry a data file's signed token."""
    head, marker, _ = path.partition("/files/")
    return f"{head}/files/<signed>" if marker else path


class _AccessLog:
    """One log line per request (method, path with signed tokens redacted, status, ms); never headers."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status: dict[str, int] = {}

        async def send_status(message: dict) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        await self.app(scope, receive, send_status)
        log.info("%s %s %s %.1f ms", scope["method"], _redacted(scope["path"]), status.get("code", 0),
                 (time.perf_counter() - started) * 1000)
