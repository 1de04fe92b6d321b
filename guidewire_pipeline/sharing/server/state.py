"""The local Delta Sharing server's state: shares, their tables, recipients, grants and tokens, in a
real database through SQLAlchemy (no Dagster here).

SQLite is the embedded default: one file, no service to run, and WAL mode lets the server read
while a ``delta_sharing_job`` writes. Any SQLAlchemy URL works instead (``postgresql+psycopg://...``)
when several servers or machines must share one state. The schema is created on first use.

Bearer tokens are never stored: only their SHA-256 (tokens are 256 random bits, so a fast hash is
enough to make a stolen database useless for reading shares). ``StateError`` carries an HTTP status
and an error code in the style of Unity Catalog (``SHARE_ALREADY_EXISTS``, ``RECIPIENT_DOES_NOT_EXIST``,
``TABLE_DOES_NOT_EXIST`` ...), so the sharing backend and the reconciler treat the local server and
Unity Catalog alike.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

DEFAULT_STATE_DIR = Path("~/.guidewire_pipeline/sharing")
STATE_URL_ENV = "GW_SHARING_STATE_URL"


def default_state_url() -> str:
    """``GW_SHARING_STATE_URL``, else SQLite at ``~/.guidewire_pipeline/sharing/state.db``."""
    configured = os.environ.get(STATE_URL_ENV)
    if configured:
        return configured
    return f"sqlite:///{(DEFAULT_STATE_DIR.expanduser() / 'state.db')}"


metadata = sa.MetaData()

shares_table = sa.Table(
    "shares", metadata,
    sa.Column("name", sa.String(255), primary_key=True),
    sa.Column("id", sa.String(36), nullable=False, unique=True),
    sa.Column("comment", sa.Text),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)
objects_table = sa.Table(
    "share_objects", metadata,
    sa.Column("share", sa.String(255), sa.ForeignKey("shares.name", ondelete="CASCADE"), primary_key=True),
    sa.Column("name", sa.String(767), primary_key=True),
    sa.Column("id", sa.String(36), nullable=False),
    sa.Column("data_object_type", sa.String(32), nullable=False),
    sa.Column("shared_as", sa.String(511)),
    sa.Column("comment", sa.Text),
    sa.Column("cdf_enabled", sa.Boolean),
    sa.Column("history_sharing", sa.Boolean),
    sa.Column("added_at", sa.DateTime(timezone=True), nullable=False),
)
recipients_table = sa.Table(
    "recipients", metadata,
    sa.Column("name", sa.String(255), primary_key=True),
    sa.Column("id", sa.String(36), nullable=False, unique=True),
    sa.Column("authentication_type", sa.String(32), nullable=False),
    sa.Column("comment", sa.Text),
    sa.Column("metastore_id", sa.String(255)),
    sa.Column("allowed_ips", sa.Text, nullable=False),  # JSON list of CIDRs; empty: any address
    sa.Column("properties", sa.Text, nullable=False),  # JSON object
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)
tokens_table = sa.Table(
    "recipient_tokens", metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("recipient", sa.String(255), sa.ForeignKey("recipients.name", ondelete="CASCADE"),
              nullable=False, index=True),
    sa.Column("token_sha256", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
)
grants_table = sa.Table(
    "grants", metadata,
    sa.Column("share", sa.String(255), sa.ForeignKey("shares.name", ondelete="CASCADE"), primary_key=True),
    sa.Column("recipient", sa.String(255), sa.ForeignKey("recipients.name", ondelete="CASCADE"),
              primary_key=True),
)
secrets_table = sa.Table(
    "server_secrets", metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.String(128), nullable=False),
)


class StateError(Exception):
    """A write the state refuses; ``status`` and ``error_code`` as Unity Catalog would answer."""

    def __init__(self, status: int, error_code: str, message: str) -> None:
        super().__init__(f"{error_code} ({status}): {message}")
        self.status = status
        self.error_code = error_code
        self.message = message


@dataclass(frozen=True)
class ShareRow:
    name: str
    id: str
    comment: str | None


@dataclass(frozen=True)
class ObjectRow:
    share: str
    name: str
    id: str
    data_object_type: str
    shared_as: str | None
    comment: str | None
    cdf_enabled: bool | None
    history_sharing: bool | None

    @property
    def shared_schema_and_table(self) -> tuple[str, str]:
        """What recipients see: ``shared_as`` (``schema.table``), else the name's last two parts."""
        schema, table = (self.shared_as or ".".join(self.name.split(".")[-2:])).split(".", 1)
        return schema, table


@dataclass(frozen=True)
class RecipientRow:
    name: str
    id: str
    authentication_type: str
    comment: str | None
    metastore_id: str | None
    allowed_ips: tuple[str, ...]
    properties: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class IssuedToken:
    """A new bearer token: shown once (to write the profile file), stored only as its hash."""

    recipient: str
    bearer_token: str
    expires_at: datetime


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(value: datetime) -> datetime:
    """SQLite hands datetimes back without their zone; they were written in UTC."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class SharingState:
    """The server's state in the database at ``url``. Safe to use from several threads and processes."""

    def __init__(self, url: str | None = None) -> None:
        self.url = url or default_state_url()
        engine_url = sa.make_url(self.url)
        if engine_url.get_backend_name() == "sqlite" and engine_url.database not in (None, "", ":memory:"):
            Path(engine_url.database).expanduser().parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            engine_url = engine_url.set(database=str(Path(engine_url.database).expanduser()))
        self.engine = sa.create_engine(engine_url)
        if self.engine.dialect.name == "sqlite":
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
        metadata.create_all(self.engine)

    @property
    def description(self) -> str:
        """The URL without its password, for logs and metadata."""
        return sa.make_url(self.url).render_as_string(hide_password=True)

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _write(self) -> Iterator[sa.Connection]:
        with self.engine.begin() as connection:
            yield connection

    # -- reads --------------------------------------------------------------------------------
    def shares(self) -> list[ShareRow]:
        with self.engine.connect() as c:
            rows = c.execute(sa.select(shares_table).order_by(shares_table.c.name)).all()
        return [ShareRow(r.name, r.id, r.comment) for r in rows]

    def share(self, name: str) -> ShareRow | None:
        with self.engine.connect() as c:
            r = c.execute(sa.select(shares_table).where(shares_table.c.name == name)).first()
        return ShareRow(r.name, r.id, r.comment) if r else None

    def objects(self, share: str) -> list[ObjectRow]:
        with self.engine.connect() as c:
            rows = c.execute(
                sa.select(objects_table).where(objects_table.c.share == share).order_by(objects_table.c.name)
            ).all()
        return [_object_row(r) for r in rows]

    def grants(self, share: str) -> frozenset[str]:
        with self.engine.connect() as c:
            rows = c.execute(sa.select(grants_table.c.recipient).where(grants_table.c.share == share)).all()
        return frozenset(r.recipient for r in rows)

    def recipients(self) -> list[RecipientRow]:
        with self.engine.connect() as c:
            rows = c.execute(sa.select(recipients_table).order_by(recipients_table.c.name)).all()
        return [_recipient_row(r) for r in rows]

    def recipient(self, name: str) -> RecipientRow | None:
        with self.engine.connect() as c:
            r = c.execute(sa.select(recipients_table).where(recipients_table.c.name == name)).first()
        return _recipient_row(r) if r else None

    def recipient_for_token(self, token: str, at: datetime | None = None) -> tuple[RecipientRow, datetime] | None:
        """The recipient holding ``token`` and when the token expires; None for an unknown token.
        Expiry is the caller's to judge (it names the time in its error)."""
        with self.engine.connect() as c:
            row = c.execute(
                sa.select(recipients_table, tokens_table.c.expires_at)
                .join(tokens_table, tokens_table.c.recipient == recipients_table.c.name)
                .where(tokens_table.c.token_sha256 == hash_token(token))
            ).first()
        return (_recipient_row(row), _aware(row.expires_at)) if row else None

    def granted_shares(self, recipient: str) -> list[ShareRow]:
        with self.engine.connect() as c:
            rows = c.execute(
                sa.select(shares_table)
                .join(grants_table, grants_table.c.share == shares_table.c.name)
                .where(grants_table.c.recipient == recipient)
                .order_by(shares_table.c.name)
            ).all()
        return [ShareRow(r.name, r.id, r.comment) for r in rows]

    def signing_key(self) -> bytes:
        """The HMAC key for data file URLs: made once, kept in the database so that every server
        process on this state signs and checks alike, and restarts keep issued URLs valid."""
        query = sa.select(secrets_table.c.value).where(secrets_table.c.name == "url_signing_key")
        with self.engine.connect() as c:
            row = c.execute(query).first()
        if row:
            return bytes.fromhex(row.value)
        key = secrets.token_hex(32)
        try:
            with self._write() as c:
                c.execute(sa.insert(secrets_table).values(name="url_signing_key", value=key))
        except sa.exc.IntegrityError:  # another process made it first: use theirs
            return self.signing_key()
        return bytes.fromhex(key)

    # -- writes (each one transaction) -------------------------------------------------------
    def create_share(self, name: str, comment: str | None) -> None:
        now = _now()
        with self._write() as c:
            if c.execute(sa.select(shares_table.c.name).where(shares_table.c.name == name)).first():
                raise StateError(400, "SHARE_ALREADY_EXISTS", f"Share '{name}' already exists.")
            c.execute(sa.insert(shares_table).values(name=name, id=str(uuid.uuid4()), comment=comment,
                                                     created_at=now, updated_at=now))

    def update_share_comment(self, name: str, comment: str | None) -> None:
        with self._write() as c:
            self._require_share(c, name)
            c.execute(sa.update(shares_table).where(shares_table.c.name == name)
                      .values(comment=comment, updated_at=_now()))

    def delete_share(self, name: str) -> None:
        with self._write() as c:
            self._require_share(c, name)
            c.execute(sa.delete(grants_table).where(grants_table.c.share == name))
            c.execute(sa.delete(objects_table).where(objects_table.c.share == name))
            c.execute(sa.delete(shares_table).where(shares_table.c.name == name))

    def update_share_objects(self, name: str, updates: list[tuple[str, str, dict[str, Any]]]) -> None:
        """``(ADD|UPDATE|REMOVE, object name, attributes)``, all or nothing."""
        with self._write() as c:
            self._require_share(c, name)
            existing = {r.name for r in c.execute(sa.select(objects_table.c.name).where(objects_table.c.share == name))}
            for action, object_name, attributes in updates:
                values = {k: attributes.get(k) for k in ("shared_as", "comment", "cdf_enabled", "history_sharing")}
                where = sa.and_(objects_table.c.share == name, objects_table.c.name == object_name)
                if action == "ADD":
                    if object_name in existing:
                        raise StateError(409, "RESOURCE_ALREADY_EXISTS",
                                         f"Data object '{object_name}' already exists in share '{name}'.")
                    c.execute(sa.insert(objects_table).values(
                        share=name, name=object_name, id=str(uuid.uuid4()),
                        data_object_type=attributes.get("data_object_type") or "TABLE", added_at=_now(), **values))
                    existing.add(object_name)
                elif action in ("UPDATE", "REMOVE"):
                    if object_name not in existing:
                        raise StateError(404, "RESOURCE_DOES_NOT_EXIST",
                                         f"Data object '{object_name}' does not exist in share '{name}'.")
                    if action == "REMOVE":
                        c.execute(sa.delete(objects_table).where(where))
                        existing.discard(object_name)
                    else:
                        c.execute(sa.update(objects_table).where(where).values(**values))
                else:
                    raise StateError(400, "INVALID_PARAMETER_VALUE", f"Unknown update action {action!r}.")
            c.execute(sa.update(shares_table).where(shares_table.c.name == name).values(updated_at=_now()))

    def update_share_permissions(self, name: str, grant: list[str], revoke: list[str]) -> None:
        with self._write() as c:
            self._require_share(c, name)
            known = {r.name for r in c.execute(sa.select(recipients_table.c.name))}
            for recipient in grant:
                if recipient not in known:
                    raise StateError(404, "RECIPIENT_DOES_NOT_EXIST", f"Recipient '{recipient}' does not exist.")
            holders = {r.recipient for r in c.execute(sa.select(grants_table.c.recipient)
                                                      .where(grants_table.c.share == name))}
            for recipient in grant:
                if recipient not in holders:
                    c.execute(sa.insert(grants_table).values(share=name, recipient=recipient))
            for recipient in revoke:
                c.execute(sa.delete(grants_table).where(
                    sa.and_(grants_table.c.share == name, grants_table.c.recipient == recipient)))

    def create_recipient(self, name: str, attributes: dict[str, Any]) -> None:
        now = _now()
        with self._write() as c:
            if c.execute(sa.select(recipients_table.c.name).where(recipients_table.c.name == name)).first():
                raise StateError(409, "RESOURCE_ALREADY_EXISTS", f"Recipient '{name}' already exists.")
            c.execute(sa.insert(recipients_table).values(
                name=name, id=str(uuid.uuid4()), authentication_type=attributes["authentication_type"],
                comment=attributes.get("comment"), metastore_id=attributes.get("metastore_id"),
                allowed_ips=json.dumps(sorted(attributes.get("allowed_ips") or [])),
                properties=json.dumps(attributes.get("properties") or {}, sort_keys=True),
                created_at=now, updated_at=now))

    def update_recipient(self, name: str, attributes: dict[str, Any]) -> None:
        with self._write() as c:
            self._require_recipient(c, name)
            c.execute(sa.update(recipients_table).where(recipients_table.c.name == name).values(
                comment=attributes.get("comment"),
                allowed_ips=json.dumps(sorted(attributes.get("allowed_ips") or [])),
                properties=json.dumps(attributes.get("properties") or {}, sort_keys=True),
                updated_at=_now()))

    def delete_recipient(self, name: str) -> None:
        with self._write() as c:
            self._require_recipient(c, name)
            c.execute(sa.delete(grants_table).where(grants_table.c.recipient == name))
            c.execute(sa.delete(tokens_table).where(tokens_table.c.recipient == name))
            c.execute(sa.delete(recipients_table).where(recipients_table.c.name == name))

    def issue_token(self, recipient: str, lifetime: timedelta) -> IssuedToken:
        """A new bearer token for ``recipient``; every token it held before stops working at once."""
        token = secrets.token_urlsafe(32)
        now = _now()
        with self._write() as c:
            self._require_recipient(c, recipient)
            c.execute(sa.delete(tokens_table).where(tokens_table.c.recipient == recipient))
            c.execute(sa.insert(tokens_table).values(
                id=str(uuid.uuid4()), recipient=recipient, token_sha256=hash_token(token),
                created_at=now, expires_at=now + lifetime))
        return IssuedToken(recipient, token, now + lifetime)

    @staticmethod
    def _require_share(c: sa.Connection, name: str) -> None:
        if not c.execute(sa.select(shares_table.c.name).where(shares_table.c.name == name)).first():
            raise StateError(404, "SHARE_DOES_NOT_EXIST", f"Share '{name}' does not exist.")

    @staticmethod
    def _require_recipient(c: sa.Connection, name: str) -> None:
        if not c.execute(sa.select(recipients_table.c.name).where(recipients_table.c.name == name)).first():
            raise StateError(404, "RECIPIENT_DOES_NOT_EXIST", f"Recipient '{name}' does not exist.")


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL: the server keeps reading while a delta_sharing_job writes; wait for a lock, do not fail.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _object_row(r: Any) -> ObjectRow:
    return ObjectRow(r.share, r.name, r.id, r.data_object_type, r.shared_as, r.comment, r.cdf_enabled,
                     r.history_sharing)


def _recipient_row(r: Any) -> RecipientRow:
    return RecipientRow(r.name, r.id, r.authentication_type, r.comment, r.metastore_id,
                        tuple(json.loads(r.allowed_ips)), json.loads(r.properties))
