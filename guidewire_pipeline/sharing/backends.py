"""Where shares live: one interface, two implementations (no Dagster here).

- ``SharingServerBackend``: the project's own Delta Sharing server (``sharing/server/``), the
  default when no workspace is configured. Its state (shares, tables, recipients, grants, hashed
  tokens) is a SQLAlchemy database; token recipients get a profile file instead of an activation link.
- ``UnityCatalogBackend``: a Databricks workspace through ``databricks-sdk`` (0.60).

Backends speak the plan's types (``LiveState``, attribute dicts); SDK and database types stay here
and in ``server/state.py``. Server errors are raised as ``SharingApiError`` carrying the HTTP status
and the (Databricks-style) error code, so the reconciler can tell "already exists" and "does not
exist" answers from real failures, whichever backend answered.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from datetime import UTC, timedelta
from typing import Any, Protocol

from guidewire_pipeline.lakehouse import Lakehouse
from guidewire_pipeline.sharing.plan import LiveObject, LiveRecipient, LiveShare, LiveState, managing_pack
from guidewire_pipeline.sharing.server.state import IssuedToken, SharingState, StateError
from guidewire_pipeline.sharing.sharepack import SharePack

ALREADY_EXISTS_CODES = {
    "SHARE_ALREADY_EXISTS",
    "RECIPIENT_ALREADY_EXISTS",
    "RESOURCE_ALREADY_EXISTS",
    "ALREADY_EXISTS",
}
DOES_NOT_EXIST_CODES = {
    "SHARE_DOES_NOT_EXIST",
    "RECIPIENT_DOES_NOT_EXIST",
    "RESOURCE_DOES_NOT_EXIST",
    "NOT_FOUND",
    "TABLE_DOES_NOT_EXIST",
}


class SharingApiError(Exception):
    """A write or read the sharing service answered with an error."""

    def __init__(self, status: int | None, error_code: str, message: str) -> None:
        super().__init__(f"{error_code} ({status}): {message}")
        self.status = status
        self.error_code = error_code
        self.message = message

    @property
    def already_exists(self) -> bool:
        return self.error_code in ALREADY_EXISTS_CODES or self.status == 409

    @property
    def does_not_exist(self) -> bool:
        return self.error_code in DOES_NOT_EXIST_CODES or self.status == 404


class SharingBackend(Protocol):
    """The operations the reconciler needs. Writes raise ``SharingApiError`` on a server error."""

    description: str
    can_write: bool
    credential_kind: str
    """What ``create_recipient`` returns for token recipients: "activation link" or "profile file"."""

    def read_state(self, pack: SharePack) -> LiveState:
        """The pack's shares (with objects and grants) and recipients that exist, plus every share and
        recipient marked as managed by ``pack.pack_id`` (to find orphans)."""
        ...

    def get_share(self, name: str) -> LiveShare | None:
        """One share with its objects and grants, or None when it does not exist."""
        ...

    def get_recipient(self, name: str) -> LiveRecipient | None: ...

    def create_recipient(self, name: str, attributes: dict[str, Any]) -> str | None:
        """Create a recipient; return its activation link for TOKEN recipients (a secret), else None."""
        ...

    def update_recipient(self, name: str, attributes: dict[str, Any]) -> None: ...
    def delete_recipient(self, name: str) -> None: ...

    def rotate_token(self, name: str) -> str | None:
        """Give a token recipient a new credential (returned, a secret); its old token stops working."""
        ...

    def known_tables(self, names: Collection[str]) -> set[str]:
        """Those of ``names`` (``catalog.schema.table``) that exist or that this pipeline produces."""
        ...

    def create_share(self, name: str, comment: str) -> None: ...
    def update_share_comment(self, name: str, comment: str) -> None: ...

    def update_share_objects(self, name: str, updates: list[tuple[str, str, dict[str, Any]]]) -> None:
        """Apply ``(ADD|UPDATE|REMOVE, object name, attributes)`` in one atomic request."""
        ...

    def update_share_permissions(self, name: str, grant: list[str], revoke: list[str]) -> None:
        """Add / remove SELECT for recipients on a share, in one atomic request."""
        ...

    def delete_share(self, name: str) -> None: ...


@contextmanager
def _api_errors() -> Iterator[None]:
    """Turn SDK errors into ``SharingApiError`` with the HTTP status (from the SDK's error class) and
    the exact Databricks error code (``SHARE_ALREADY_EXISTS`` is a ``BadRequest``, for instance)."""
    from databricks.sdk.errors import DatabricksError
    from databricks.sdk.errors.platform import STATUS_CODE_MAPPING

    try:
        yield
    except DatabricksError as exc:
        status = next((code for code, cls in STATUS_CODE_MAPPING.items() if isinstance(exc, cls)), None)
        raise SharingApiError(status, exc.error_code or type(exc).__name__, str(exc)) from None


class _ActivationLinkRedactor(logging.Filter):
    """The SDK logs response bodies at DEBUG, activation links included; scrub them before any handler."""

    _LINK = re.compile(r'("activation_url"\s*:\s*")[^"]*(")')

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "activation_url" in message:
            record.msg, record.args = self._LINK.sub(r"\1**REDACTED**\2", message), ()
        return True


_REDACTOR = _ActivationLinkRedactor()


class UnityCatalogBackend:
    """Unity Catalog shares, recipients and share permissions through a ``WorkspaceClient``."""

    can_write = True
    credential_kind = "activation link"

    def __init__(self, client: Any, produced_tables: Collection[str] = ()) -> None:
        self._w = client
        self._produced = frozenset(produced_tables)
        sdk_logger = logging.getLogger("databricks.sdk")
        if _REDACTOR not in sdk_logger.filters:
            sdk_logger.addFilter(_REDACTOR)
        self.description = f"Databricks workspace {client.config.host}"

    # -- read ------------------------------------------------------------------------------------
    def read_state(self, pack: SharePack) -> LiveState:
        state = LiveState()
        for spec in pack.share:
            share = self.get_share(spec.name)
            if share is not None:
                state.shares[spec.name] = share
        for spec in pack.recipient:
            recipient = self.get_recipient(spec.name)
            if recipient is not None:
                state.recipients[spec.name] = recipient
        # Orphans: marked for this pack, no longer listed in it. The listing carries the comment.
        with _api_errors():
            for info in self._w.shares.list():
                if info.name not in state.shares and managing_pack(info.comment) == pack.pack_id:
                    state.shares[info.name] = LiveShare(info.name, info.comment)
            for info in self._w.recipients.list():
                if info.name not in state.recipients and managing_pack(info.comment) == pack.pack_id:
                    state.recipients[info.name] = _live_recipient(info)
        return state

    def get_share(self, name: str) -> LiveShare | None:
        try:
            with _api_errors():
                info = self._w.shares.get(name, include_shared_data=True)
                permissions = self._w.shares.share_permissions(name)
        except SharingApiError as exc:
            if exc.does_not_exist:
                return None
            raise
        objects = {}
        for obj in info.objects or []:
            history = obj.history_data_sharing_status
            objects[obj.name] = LiveObject(
                name=obj.name,
                data_object_type=obj.data_object_type.value if obj.data_object_type else "TABLE",
                shared_as=obj.shared_as,
                comment=obj.comment,
                cdf_enabled=obj.cdf_enabled,
                history_sharing=None if history is None else history.value == "ENABLED",
            )
        grants = frozenset(
            a.principal
            for a in permissions.privilege_assignments or []
            if a.principal and any(getattr(p, "value", p) == "SELECT" for p in a.privileges or [])
        )
        return LiveShare(name, info.comment, objects, grants)

    def get_recipient(self, name: str) -> LiveRecipient | None:
        try:
            with _api_errors():
                info = self._w.recipients.get(name)
        except SharingApiError as exc:
            if exc.does_not_exist:
                return None
            raise
        return _live_recipient(info)

    # -- write -----------------------------------------------------------------------------------
    def create_recipient(self, name: str, attributes: dict[str, Any]) -> str | None:
        from databricks.sdk.service.sharing import (
            AuthenticationType,
            IpAccessList,
            SecurablePropertiesKvPairs,
        )

        with _api_errors():
            info = self._w.recipients.create(
                name=name,
                authentication_type=AuthenticationType(attributes["authentication_type"]),
                comment=attributes["comment"],
                data_recipient_global_metastore_id=attributes.get("metastore_id"),
                ip_access_list=IpAccessList(allowed_ip_addresses=attributes["allowed_ips"])
                if attributes.get("allowed_ips")
                else None,
                properties_kvpairs=SecurablePropertiesKvPairs(properties=attributes["properties"])
                if attributes.get("properties")
                else None,
            )
        links = [t.activation_url for t in info.tokens or [] if t.activation_url]
        return links[0] if links else info.activation_url

    def update_recipient(self, name: str, attributes: dict[str, Any]) -> None:
        from databricks.sdk.service.sharing import IpAccessList, SecurablePropertiesKvPairs

        is_token = attributes.get("authentication_type") == "TOKEN"
        with _api_errors():
            self._w.recipients.update(
                name,
                comment=attributes["comment"],
                # An empty list lifts the restriction; D2D recipients have no IP access list.
                ip_access_list=IpAccessList(allowed_ip_addresses=attributes["allowed_ips"])
                if is_token
                else None,
                properties_kvpairs=SecurablePropertiesKvPairs(properties=attributes["properties"])
                if attributes.get("properties")
                else None,
            )

    def delete_recipient(self, name: str) -> None:
        with _api_errors():
            self._w.recipients.delete(name)

    def rotate_token(self, name: str) -> str | None:
        with _api_errors():
            # The old token stops at once: a rotation answers a leak, so no grace period.
            info = self._w.recipients.rotate_token(name, existing_token_expire_in_seconds=0)
        links = [t.activation_url for t in info.tokens or [] if t.activation_url]
        return links[-1] if links else info.activation_url

    def known_tables(self, names: Collection[str]) -> set[str]:
        """Produced by this pipeline, or a table Unity Catalog knows (``tables.exists``)."""
        known = {n for n in names if n in self._produced}
        for name in sorted(set(names) - known):
            try:
                with _api_errors():
                    if self._w.tables.exists(name).table_exists:
                        known.add(name)
            except SharingApiError as exc:
                if not exc.does_not_exist:
                    raise
        return known

    def create_share(self, name: str, comment: str) -> None:
        with _api_errors():
            self._w.shares.create(name, comment=comment)

    def update_share_comment(self, name: str, comment: str) -> None:
        with _api_errors():
            self._w.shares.update(name, comment=comment)

    def update_share_objects(self, name: str, updates: list[tuple[str, str, dict[str, Any]]]) -> None:
        from databricks.sdk.service.sharing import (
            SharedDataObject,
            SharedDataObjectDataObjectType,
            SharedDataObjectHistoryDataSharingStatus,
            SharedDataObjectUpdate,
            SharedDataObjectUpdateAction,
        )

        requests = []
        for action, object_name, attrs in updates:
            history = attrs.get("history_sharing")
            data_object = SharedDataObject(
                name=object_name,
                # 0.60 needs the enum here: a plain "TABLE" fails in as_dict().
                data_object_type=SharedDataObjectDataObjectType(attrs.get("data_object_type") or "TABLE"),
            )
            if action != "REMOVE":
                data_object.shared_as = attrs.get("shared_as")
                data_object.comment = attrs.get("comment")
                data_object.cdf_enabled = attrs.get("cdf_enabled")
                if history is not None:
                    data_object.history_data_sharing_status = SharedDataObjectHistoryDataSharingStatus(
                        "ENABLED" if history else "DISABLED"
                    )
            requests.append(
                SharedDataObjectUpdate(action=SharedDataObjectUpdateAction(action), data_object=data_object)
            )
        with _api_errors():
            self._w.shares.update(name, updates=requests)

    def update_share_permissions(self, name: str, grant: list[str], revoke: list[str]) -> None:
        from databricks.sdk.service.sharing import PermissionsChange

        # 0.60: privileges must be plain strings; the Privilege enum is not JSON serialisable.
        changes = [PermissionsChange(principal=r, add=["SELECT"]) for r in grant]
        changes += [PermissionsChange(principal=r, remove=["SELECT"]) for r in revoke]
        with _api_errors():
            self._w.shares.update_permissions(name, changes=changes)

    def delete_share(self, name: str) -> None:
        with _api_errors():
            self._w.shares.delete(name)


def _live_recipient(info: Any) -> LiveRecipient:
    """Only the fields a pack manages; tokens, activation links and timestamps are left behind."""
    properties = info.properties_kvpairs.properties if info.properties_kvpairs else {}
    return LiveRecipient(
        name=info.name,
        authentication_type=info.authentication_type.value if info.authentication_type else "TOKEN",
        comment=info.comment,
        metastore_id=info.data_recipient_global_metastore_id,
        allowed_ips=tuple(info.ip_access_list.allowed_ip_addresses or []) if info.ip_access_list else (),
        properties=dict(properties or {}),
    )


class SharingServerBackend:
    """The local Delta Sharing server's state (``server/state.py``) as a sharing backend.

    Token (D2O) recipients get a bearer token; ``create_recipient`` and ``rotate_token`` return the
    profile file's JSON (``shareCredentialsVersion``, ``endpoint``, ``bearerToken``, ``expirationTime``),
    which the reconciler writes to a 0600 file. Only the token's hash is stored. D2D recipients are
    kept so that plans match Unity Catalog's, but cannot read from this server (they have no token).
    A data object must be a table of ``lakehouse`` that exists or that the pipeline produces
    (``produced_tables``), as Unity Catalog refuses unknown tables with ``TABLE_DOES_NOT_EXIST``.
    """

    can_write = True
    credential_kind = "profile file"

    def __init__(self, state: SharingState, lakehouse: Lakehouse, endpoint: str,
                 token_lifetime: timedelta, produced_tables: Collection[str] = ()) -> None:
        self._state = state
        self._lakehouse = lakehouse
        self._endpoint = endpoint.rstrip("/")
        self._token_lifetime = token_lifetime
        self._produced = frozenset(produced_tables)
        self.description = f"Delta Sharing server {self._endpoint} (state {state.description})"

    # -- read ------------------------------------------------------------------------------------
    def read_state(self, pack: SharePack) -> LiveState:
        state = LiveState()
        wanted_shares = {s.name for s in pack.share}
        for row in self._state.shares():
            if row.name in wanted_shares or managing_pack(row.comment) == pack.pack_id:
                state.shares[row.name] = self._live_share(row.name, row.comment)
        wanted_recipients = {r.name for r in pack.recipient}
        for recipient in self._state.recipients():
            if recipient.name in wanted_recipients or managing_pack(recipient.comment) == pack.pack_id:
                state.recipients[recipient.name] = _live_server_recipient(recipient)
        return state

    def get_share(self, name: str) -> LiveShare | None:
        row = self._state.share(name)
        return self._live_share(name, row.comment) if row else None

    def get_recipient(self, name: str) -> LiveRecipient | None:
        row = self._state.recipient(name)
        return _live_server_recipient(row) if row else None

    def _live_share(self, name: str, comment: str | None) -> LiveShare:
        objects = {
            o.name: LiveObject(o.name, o.data_object_type, o.shared_as, o.comment, o.cdf_enabled, o.history_sharing)
            for o in self._state.objects(name)
        }
        return LiveShare(name, comment, objects, self._state.grants(name))

    def known_tables(self, names: Collection[str]) -> set[str]:
        """Produced by the pipeline, or a Delta table of the lakehouse that exists now."""
        from deltalake import DeltaTable

        known = set()
        for name in names:
            parsed = self._lakehouse.parse_table_name(name)
            if name in self._produced:
                known.add(name)
            elif parsed:
                location = self._lakehouse.location(*parsed)
                if DeltaTable.is_deltatable(location.delta_uri, storage_options=location.delta_storage_options()):
                    known.add(name)
        return known

    # -- write -----------------------------------------------------------------------------------
    def create_recipient(self, name: str, attributes: dict[str, Any]) -> str | None:
        with _state_errors():
            self._state.create_recipient(name, attributes)
            if attributes["authentication_type"] != "TOKEN":
                return None
            return self._profile(self._state.issue_token(name, self._token_lifetime))

    def rotate_token(self, name: str) -> str | None:
        with _state_errors():
            recipient = self._state.recipient(name)
            if recipient is None:
                raise StateError(404, "RECIPIENT_DOES_NOT_EXIST", f"Recipient '{name}' does not exist.")
            if recipient.authentication_type != "TOKEN":
                raise StateError(400, "INVALID_PARAMETER_VALUE",
                                 f"Recipient '{name}' is not a token recipient: it has no token to rotate.")
            return self._profile(self._state.issue_token(name, self._token_lifetime))

    def update_recipient(self, name: str, attributes: dict[str, Any]) -> None:
        with _state_errors():
            self._state.update_recipient(name, attributes)

    def delete_recipient(self, name: str) -> None:
        with _state_errors():
            self._state.delete_recipient(name)

    def create_share(self, name: str, comment: str) -> None:
        with _state_errors():
            self._state.create_share(name, comment)

    def update_share_comment(self, name: str, comment: str) -> None:
        with _state_errors():
            self._state.update_share_comment(name, comment)

    def update_share_objects(self, name: str, updates: list[tuple[str, str, dict[str, Any]]]) -> None:
        missing = sorted({n for action, n, _ in updates if action == "ADD"} - self.known_tables(
            {n for action, n, _ in updates if action == "ADD"}))
        if missing:  # checked before the transaction: the request stays all or nothing
            raise SharingApiError(404, "TABLE_DOES_NOT_EXIST", f"Table '{missing[0]}' does not exist.")
        with _state_errors():
            self._state.update_share_objects(name, updates)

    def update_share_permissions(self, name: str, grant: list[str], revoke: list[str]) -> None:
        with _state_errors():
            self._state.update_share_permissions(name, grant, revoke)

    def delete_share(self, name: str) -> None:
        with _state_errors():
            self._state.delete_share(name)

    def _profile(self, token: IssuedToken) -> str:
        expires = token.expires_at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        return json.dumps({"shareCredentialsVersion": 1, "endpoint": self._endpoint,
                           "bearerToken": token.bearer_token, "expirationTime": expires}, indent=2)


@contextmanager
def _state_errors() -> Iterator[None]:
    try:
        yield
    except StateError as exc:
        raise SharingApiError(exc.status, exc.error_code, exc.message) from None


def _live_server_recipient(row: Any) -> LiveRecipient:
    return LiveRecipient(
        name=row.name,
        authentication_type=row.authentication_type,
        comment=row.comment,
        metastore_id=row.metastore_id,
        allowed_ips=tuple(row.allowed_ips),
        properties=dict(row.properties),
    )
