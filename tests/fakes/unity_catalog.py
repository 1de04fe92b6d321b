"""Unity Catalog Delta Sharing endpoints for the fake workspace: shares, recipients, share permissions.

``install(ws)`` registers the routes and puts the state on ``ws.uc`` (a ``UnityCatalogState``).
Answers follow the real API (``/api/2.1/unity-catalog/...``), including server-set fields the
reconciler must ignore (``added_at``, ``added_by``, ``status``, ``history_data_sharing_status``,
timestamps, tokens) and the error bodies the workspace returns:

- ``SHARE_ALREADY_EXISTS`` (400) when a share is created twice;
- ``RESOURCE_ALREADY_EXISTS`` (409) when a recipient is created twice or an object added twice;
- ``TABLE_DOES_NOT_EXIST`` (404) when a share adds a table that is not in the table registry
  ``ws.uc_tables`` (full name → table info; shared with the UC tables endpoints, which fill it, and
  with tests, which may register tables with ``register_table``);
- ``SHARE_DOES_NOT_EXIST`` / ``RECIPIENT_DOES_NOT_EXIST`` / ``RESOURCE_DOES_NOT_EXIST`` (404);
- ``INVALID_PARAMETER_VALUE`` (400) for requests the server would reject.

``ws.uc.fail_next(method, path_regex, status, error_code, message)`` makes the next matching request
fail once (after it was counted in ``ws.requests``), to test partial failures.
``ws.uc.activation_links`` lists every activation link issued (rotations included), so tests can
look for leaks.
"""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.databricks_workspace import FakeApiError, FakeDatabricksWorkspace

UC = "/api/2.1/unity-catalog"
ME = "admin@example.com"


@dataclass
class UnityCatalogState:
    shares: dict[str, dict[str, Any]] = field(default_factory=dict)
    recipients: dict[str, dict[str, Any]] = field(default_factory=dict)
    grants: dict[str, set[str]] = field(default_factory=dict)
    """share name → recipients holding SELECT."""
    activation_links: list[str] = field(default_factory=list)
    failures: list[tuple[str, re.Pattern[str], FakeApiError]] = field(default_factory=list)

    def fail_next(self, method: str, path_regex: str, status: int, error_code: str, message: str) -> None:
        self.failures.append(
            (method.upper(), re.compile(path_regex), FakeApiError(status, error_code, message))
        )

    def check_failure(self, method: str, path: str) -> None:
        for i, (m, pattern, error) in enumerate(self.failures):
            if m == method and pattern.fullmatch(path):
                del self.failures[i]
                raise error


def _now() -> int:
    return int(time.time() * 1000)


def _share_missing(name: str) -> FakeApiError:
    return FakeApiError(404, "SHARE_DOES_NOT_EXIST", f"Share '{name}' does not exist.")


def _recipient_missing(name: str) -> FakeApiError:
    return FakeApiError(404, "RECIPIENT_DOES_NOT_EXIST", f"Recipient '{name}' does not exist.")


def register_table(ws: FakeDatabricksWorkspace, full_name: str, storage_location: str = "",
                   columns: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Put an external Delta table into ``ws.uc_tables``, as the UC tables endpoints would."""
    catalog, schema, name = full_name.split(".")
    info = {"full_name": full_name, "catalog_name": catalog, "schema_name": schema, "name": name,
            "table_type": "EXTERNAL", "data_source_format": "DELTA",
            "storage_location": storage_location or f"s3://fake-lake/{schema}/{name}", "columns": columns or []}
    ws.__dict__.setdefault("uc_tables", {})[full_name] = info
    return info


def install(ws: FakeDatabricksWorkspace) -> None:
    """Register the sharing routes on ``ws`` and keep their state on ``ws.uc``."""
    uc = UnityCatalogState()
    ws.uc = uc  # type: ignore[attr-defined]
    tables: dict[str, dict[str, Any]] = ws.__dict__.setdefault("uc_tables", {})

    def guarded(method: str, pattern: str):  # noqa: ANN202 - decorator factory
        def register(handler):  # noqa: ANN001, ANN202
            def wrapped(ws_, match, query, body):  # noqa: ANN001, ANN202
                with ws.lock:
                    uc.check_failure(method, match.string)
                    return handler(match, query, body)

            return ws.route(method, pattern)(wrapped)

        return register

    # -- shares ------------------------------------------------------------------------------
    def share_view(share: dict[str, Any], include_objects: bool) -> dict[str, Any]:
        view = {k: v for k, v in share.items() if k != "objects"}
        if include_objects:
            view["objects"] = [dict(o) for o in share["objects"].values()]
        return view

    @guarded("POST", f"{UC}/shares")
    def create_share(match, query, body):
        name = body.get("name")
        if not name:
            raise FakeApiError(400, "INVALID_PARAMETER_VALUE", "Share name must be provided.")
        if name in uc.shares:
            raise FakeApiError(400, "SHARE_ALREADY_EXISTS", f"Share '{name}' already exists.")
        share = {
            "name": name,
            "owner": ME,
            "created_at": _now(),
            "created_by": ME,
            "updated_at": _now(),
            "updated_by": ME,
            "objects": {},
        }
        if body.get("comment") is not None:
            share["comment"] = body["comment"]
        uc.shares[name] = share
        uc.grants[name] = set()
        return share_view(share, False)

    @guarded("GET", f"{UC}/shares")
    def list_shares(match, query, body):
        return {"shares": [share_view(s, False) for s in uc.shares.values()]}

    @guarded("GET", f"{UC}/shares/([^/]+)")
    def get_share(match, query, body):
        name = match.group(1)
        if name not in uc.shares:
            raise _share_missing(name)
        include = query.get("include_shared_data", ["false"])[0].lower() == "true"
        return share_view(uc.shares[name], include)

    @guarded("PATCH", f"{UC}/shares/([^/]+)")
    def update_share(match, query, body):
        name = match.group(1)
        if name not in uc.shares:
            raise _share_missing(name)
        share = uc.shares[name]
        objects = dict(share["objects"])
        for update in body.get("updates", []):  # validated as a whole: the request is atomic
            action, obj = update.get("action"), dict(update.get("data_object") or {})
            obj_name = obj.get("name")
            if obj.get("data_object_type") not in (None, "TABLE", "SCHEMA", "VIEW", "MATERIALIZED_VIEW"):
                raise FakeApiError(
                    400, "INVALID_PARAMETER_VALUE", f"Invalid data_object_type for {obj_name}."
                )
            if action == "ADD":
                if obj.get("data_object_type", "TABLE") == "TABLE" and obj_name not in tables:
                    raise FakeApiError(404, "TABLE_DOES_NOT_EXIST", f"Table '{obj_name}' does not exist.")
                if obj_name in objects:
                    raise FakeApiError(
                        409,
                        "RESOURCE_ALREADY_EXISTS",
                        f"Data object '{obj_name}' already exists in share '{name}'.",
                    )
                obj.setdefault("data_object_type", "TABLE")
                obj.setdefault("cdf_enabled", False)
                obj.setdefault("history_data_sharing_status", "DISABLED")
                obj.update(added_at=_now(), added_by=ME, status="ACTIVE", start_version=0)
                objects[obj_name] = obj
            elif action in ("UPDATE", "REMOVE"):
                if obj_name not in objects:
                    raise FakeApiError(
                        404,
                        "RESOURCE_DOES_NOT_EXIST",
                        f"Data object '{obj_name}' does not exist in share '{name}'.",
                    )
                if action == "REMOVE":
                    del objects[obj_name]
                else:
                    objects[obj_name] = {
                        **objects[obj_name],
                        **{k: v for k, v in obj.items() if k not in ("name", "data_object_type")},
                    }
            else:
                raise FakeApiError(400, "INVALID_PARAMETER_VALUE", f"Unknown update action {action!r}.")
        share["objects"] = objects
        for key in ("comment", "owner"):
            if key in body:
                share[key] = body[key]
        share.update(updated_at=_now(), updated_by=ME)
        return share_view(share, True)

    @guarded("DELETE", f"{UC}/shares/([^/]+)")
    def delete_share(match, query, body):
        name = match.group(1)
        if name not in uc.shares:
            raise _share_missing(name)
        del uc.shares[name]
        uc.grants.pop(name, None)
        return {}

    def assignments(name: str) -> dict[str, Any]:
        return {
            "privilege_assignments": [
                {"principal": r, "privileges": ["SELECT"]} for r in sorted(uc.grants.get(name, set()))
            ]
        }

    @guarded("GET", f"{UC}/shares/([^/]+)/permissions")
    def get_permissions(match, query, body):
        name = match.group(1)
        if name not in uc.shares:
            raise _share_missing(name)
        return assignments(name)

    @guarded("PATCH", f"{UC}/shares/([^/]+)/permissions")
    def update_permissions(match, query, body):
        name = match.group(1)
        if name not in uc.shares:
            raise _share_missing(name)
        changes = body.get("changes", [])
        for change in changes:  # validated as a whole: the request is atomic
            for privilege in change.get("add", []) + change.get("remove", []):
                if privilege != "SELECT":
                    raise FakeApiError(
                        400, "INVALID_PARAMETER_VALUE", f"Privilege {privilege!r} is not valid for a share."
                    )
            if change.get("add") and change.get("principal") not in uc.recipients:
                raise _recipient_missing(change.get("principal"))
        for change in changes:
            if change.get("add"):
                uc.grants[name].add(change["principal"])
            if change.get("remove"):
                uc.grants[name].discard(change["principal"])
        return {} if body.get("omit_permissions_list") else assignments(name)

    # -- recipients --------------------------------------------------------------------------
    def recipient_view(recipient: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in recipient.items()}

    @guarded("POST", f"{UC}/recipients")
    def create_recipient(match, query, body):
        name = body.get("name")
        auth = body.get("authentication_type")
        if not name or auth not in ("TOKEN", "DATABRICKS", "OAUTH_CLIENT_CREDENTIALS", "OIDC_FEDERATION"):
            raise FakeApiError(
                400, "INVALID_PARAMETER_VALUE", "name and a valid authentication_type are required."
            )
        if name in uc.recipients:
            raise FakeApiError(409, "RESOURCE_ALREADY_EXISTS", f"Recipient '{name}' already exists.")
        metastore = body.get("data_recipient_global_metastore_id")
        if auth == "DATABRICKS" and not metastore:
            raise FakeApiError(
                400,
                "INVALID_PARAMETER_VALUE",
                "data_recipient_global_metastore_id is required for DATABRICKS recipients.",
            )
        if auth == "DATABRICKS" and body.get("ip_access_list"):
            raise FakeApiError(
                400, "INVALID_PARAMETER_VALUE", "IP access lists are only supported for TOKEN recipients."
            )
        recipient: dict[str, Any] = {
            "name": name,
            "authentication_type": auth,
            "owner": ME,
            "created_at": _now(),
            "created_by": ME,
            "updated_at": _now(),
            "updated_by": ME,
            "activated": auth == "DATABRICKS",
            "cloud": "aws",
            "region": "us-west-2",
            "metastore_id": "11111111-2222-3333-4444-555555555555",
        }
        for key in ("comment", "ip_access_list", "properties_kvpairs", "data_recipient_global_metastore_id"):
            if body.get(key) is not None:
                recipient[key] = body[key]
        if auth == "TOKEN":
            link = f"{ws.host}/delta_sharing/retrieve_config.html?{secrets.token_urlsafe(24)}"
            uc.activation_links.append(link)
            recipient["tokens"] = [
                {
                    "id": secrets.token_hex(8),
                    "activation_url": link,
                    "created_at": _now(),
                    "created_by": ME,
                    "expiration_time": _now() + 86_400_000,
                    "updated_at": _now(),
                    "updated_by": ME,
                }
            ]
        uc.recipients[name] = recipient
        return recipient_view(recipient)

    @guarded("GET", f"{UC}/recipients")
    def list_recipients(match, query, body):
        return {"recipients": [recipient_view(r) for r in uc.recipients.values()]}

    @guarded("GET", f"{UC}/recipients/([^/]+)")
    def get_recipient(match, query, body):
        name = match.group(1)
        if name not in uc.recipients:
            raise _recipient_missing(name)
        return recipient_view(uc.recipients[name])

    @guarded("PATCH", f"{UC}/recipients/([^/]+)")
    def update_recipient(match, query, body):
        name = match.group(1)
        if name not in uc.recipients:
            raise _recipient_missing(name)
        recipient = uc.recipients[name]
        if body.get("ip_access_list") is not None and recipient["authentication_type"] != "TOKEN":
            raise FakeApiError(
                400, "INVALID_PARAMETER_VALUE", "IP access lists are only supported for TOKEN recipients."
            )
        for key in ("comment", "ip_access_list", "owner", "properties_kvpairs"):
            if key in body:
                recipient[key] = body[key]
        recipient.update(updated_at=_now(), updated_by=ME)
        return recipient_view(recipient)

    @guarded("POST", f"{UC}/recipients/([^/]+)/rotate-token")
    def rotate_token(match, query, body):
        name = match.group(1)
        if name not in uc.recipients:
            raise _recipient_missing(name)
        recipient = uc.recipients[name]
        if recipient["authentication_type"] != "TOKEN":
            raise FakeApiError(400, "INVALID_PARAMETER_VALUE", "Only TOKEN recipients have tokens to rotate.")
        if "existing_token_expire_in_seconds" not in body:
            raise FakeApiError(400, "INVALID_PARAMETER_VALUE", "existing_token_expire_in_seconds is required.")
        link = f"{ws.host}/delta_sharing/retrieve_config.html?{secrets.token_urlsafe(24)}"
        uc.activation_links.append(link)
        recipient["tokens"] = [{"id": secrets.token_hex(8), "activation_url": link, "created_at": _now(),
                                "created_by": ME, "expiration_time": _now() + 86_400_000,
                                "updated_at": _now(), "updated_by": ME}]
        return recipient_view(recipient)

    @guarded("GET", f"{UC}/tables/([^/]+)/exists")
    def table_exists(match, query, body):
        return {"table_exists": match.group(1) in tables}

    @guarded("DELETE", f"{UC}/recipients/([^/]+)")
    def delete_recipient(match, query, body):
        name = match.group(1)
        if name not in uc.recipients:
            raise _recipient_missing(name)
        del uc.recipients[name]
        for holders in uc.grants.values():
            holders.discard(name)
        return {}
