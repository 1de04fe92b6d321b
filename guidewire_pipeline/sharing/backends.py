"""Where shares live: one interface, two implementations (no Dagster here).

- ``UnityCatalogBackend``: a Databricks workspace through ``databricks-sdk`` (0.60).
- ``LocalBackend``: no workspace configured. It reads an empty live state, so the plan shows what a
  first apply would create, and it refuses every write. It does not pretend to share anything.

Backends speak the plan's types (``LiveState``, attribute dicts); SDK types stay in this module.
Server errors are raised as ``SharingApiError`` carrying the HTTP status and Databricks error code,
so the reconciler can tell "already exists" and "does not exist" answers from real failures.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

from guidewire_pipeline.sharing.plan import LiveObject, LiveRecipient, LiveShare, LiveState, managing_pack
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
    def create_share(self, name: str, comment: str) -> None: ...
    def update_share_comment(self, name: str, comment: str) -> None: ...

    def update_share_objects(self, name: str, updates: list[tuple[str, str, dict[str, Any]]]) -> None:
        """Apply ``(ADD|UPDATE|REMOVE, object name, attributes)`` in one atomic request."""
        ...

    def update_share_permissions(self, name: str, grant: list[str], revoke: list[str]) -> None:
        """Add / remove SELECT for recipients on a share, in one atomic request."""
        ...

    def delete_share(self, name: str) -> None: ...


class LocalBackend:
    """No workspace configured: an empty live state, and no writes."""

    description = "dry run: no Databricks workspace configured"
    can_write = False

    def read_state(self, pack: SharePack) -> LiveState:
        return LiveState()

    def get_share(self, name: str) -> LiveShare | None:
        return None

    def get_recipient(self, name: str) -> LiveRecipient | None:
        return None

    def _refuse(self, *args: object) -> None:
        raise RuntimeError(
            "No Databricks workspace is configured, so nothing can be shared: set DATABRICKS_HOST and "
            "DATABRICKS_TOKEN to apply the plan."
        )

    create_recipient = update_recipient = delete_recipient = _refuse  # type: ignore[assignment]
    create_share = update_share_comment = update_share_objects = _refuse  # type: ignore[assignment]
    update_share_permissions = delete_share = _refuse  # type: ignore[assignment]


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

    def __init__(self, client: Any) -> None:
        self._w = client
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
