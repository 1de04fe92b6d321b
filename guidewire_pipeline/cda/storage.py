"""Where files live: a local path, a ``file://`` URI or an ``s3://`` URI.

This is the only module that knows about S3. Everything else asks a ``Location`` for:
- ``filesystem()`` / ``fs_path``: a pyarrow filesystem and path, to read parquet and JSON;
- ``delta_uri`` / ``delta_storage_options()``: what delta-rs needs to read and write a table;
- ``list_children(start_after=...)``: one level of a folder, sorted, with ``StartAfter`` on S3 so that
  a listing costs what is new, not the whole history;
- ``stat()``: a cheap change token (ETag or mtime) for the sensor.

S3 honours the standard variables: ``AWS_ENDPOINT_URL`` (plain HTTP allowed when it is ``http://``),
``AWS_REGION`` and ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` / ``AWS_SESSION_TOKEN``.
Secrets are passed to the clients only; ``Location`` never prints them (see ``__repr__``).
"""

from __future__ import annotations

import functools
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import pyarrow.fs as pafs


class StorageError(Exception):
    """A location could not be read, listed or parsed. The message names the URI."""


@dataclass(frozen=True)
class S3Settings:
    """S3 connection settings from the standard AWS environment variables."""

    endpoint_url: str | None
    region: str
    access_key_id: str | None
    secret_access_key: str | None
    session_token: str | None

    @classmethod
    def from_env(cls) -> S3Settings:
        return cls(
            endpoint_url=os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None,
            region=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
            access_key_id=os.environ.get("AWS_ACCESS_KEY_ID") or None,
            secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY") or None,
            session_token=os.environ.get("AWS_SESSION_TOKEN") or None,
        )

    @property
    def allow_http(self) -> bool:
        return bool(self.endpoint_url and self.endpoint_url.startswith("http://"))

    def __repr__(self) -> str:  # never show keys
        return f"S3Settings(endpoint_url={self.endpoint_url!r}, region={self.region!r})"


@dataclass(frozen=True)
class ChildEntry:
    """One entry of a folder listing: a sub-folder or a file with its size in bytes."""

    name: str
    is_dir: bool
    size: int = 0


@dataclass(frozen=True)
class Location:
    """A parsed storage location. Build it with ``Location.parse(uri)``."""

    scheme: str  # "local" or "s3"
    path: str  # local: absolute POSIX path; s3: "bucket/key" without a trailing slash

    @classmethod
    def parse(cls, uri: str | os.PathLike[str]) -> Location:
        """Parse a local path, ``file://`` URI or ``s3://`` URI. Other schemes raise ``StorageError``."""
        text = os.fspath(uri).strip()
        if not text:
            raise StorageError("Empty storage location: give a local path, a file:// URI or an s3:// URI.")
        if text.startswith(("s3://", "s3a://")):
            parsed = urlparse(text)
            if not parsed.netloc:
                raise StorageError(f"{text!r} has no bucket: write it as s3://bucket/prefix.")
            key = parsed.path.strip("/")
            return cls("s3", f"{parsed.netloc}/{key}" if key else parsed.netloc)
        if text.startswith("file://"):
            parsed = urlparse(text)
            return cls("local", str(Path(unquote(parsed.netloc + parsed.path)).resolve()))
        if "://" in text:
            raise StorageError(
                f"Unsupported storage location {text!r}: use a local path, a file:// URI or an s3:// URI."
            )
        return cls("local", str(Path(text).expanduser().resolve()))

    # -- naming ---------------------------------------------------------------------------------
    @property
    def uri(self) -> str:
        return f"s3://{self.path}" if self.scheme == "s3" else self.path

    @property
    def name(self) -> str:
        return self.path.rstrip("/").rsplit("/", 1)[-1]

    def join(self, *parts: str) -> Location:
        tail = "/".join(p.strip("/") for p in parts if p.strip("/"))
        return Location(self.scheme, f"{self.path.rstrip('/')}/{tail}" if tail else self.path)

    def __str__(self) -> str:
        return self.uri

    # -- what readers and writers need ----------------------------------------------------------
    @property
    def is_s3(self) -> bool:
        return self.scheme == "s3"

    @property
    def bucket(self) -> str:
        return self.path.split("/", 1)[0]

    @property
    def key(self) -> str:
        return self.path.split("/", 1)[1] if "/" in self.path else ""

    def filesystem(self) -> pafs.FileSystem:
        """A pyarrow filesystem for this location; use it with ``fs_path``."""
        if not self.is_s3:
            return _local_filesystem()
        return _s3_filesystem(S3Settings.from_env())

    @property
    def fs_path(self) -> str:
        return self.path

    @property
    def delta_uri(self) -> str:
        return self.uri

    def delta_storage_options(self) -> dict[str, str]:
        """delta-rs ``storage_options``. On S3 commits use conditional puts (``If-None-Match``), so
        concurrent writers are safe without a DynamoDB lock table."""
        if not self.is_s3:
            return {}
        s3 = S3Settings.from_env()
        options = {"AWS_REGION": s3.region, "aws_conditional_put": "etag"}
        if s3.endpoint_url:
            options["AWS_ENDPOINT_URL"] = s3.endpoint_url
        if s3.allow_http:
            options["AWS_ALLOW_HTTP"] = "true"
        if s3.access_key_id:
            options["AWS_ACCESS_KEY_ID"] = s3.access_key_id
        if s3.secret_access_key:
            options["AWS_SECRET_ACCESS_KEY"] = s3.secret_access_key
        if s3.session_token:
            options["AWS_SESSION_TOKEN"] = s3.session_token
        return options

    # -- operations -----------------------------------------------------------------------------
    def exists(self) -> bool:
        info = self.filesystem().get_file_info(self.fs_path)
        return info.type != pafs.FileType.NotFound

    def read_bytes(self) -> bytes:
        """The whole file. On S3 one GET (pyarrow's stream would HEAD first)."""
        if self.is_s3:
            client = _s3_client(S3Settings.from_env())
            try:
                return client.get_object(Bucket=self.bucket, Key=self.key)["Body"].read()
            except client.exceptions.NoSuchKey as exc:
                raise StorageError(f"{self.uri} does not exist.") from exc
            except client.exceptions.NoSuchBucket as exc:
                raise StorageError(f"Bucket {self.bucket!r} of {self.uri} does not exist.") from exc
            except Exception as exc:  # botocore's ClientError and connection errors
                raise StorageError(f"Could not read {self.uri}: {exc}") from exc
        try:
            with self.filesystem().open_input_stream(self.fs_path) as stream:
                return stream.read()
        except FileNotFoundError as exc:
            raise StorageError(f"{self.uri} does not exist.") from exc
        except OSError as exc:
            raise StorageError(f"Could not read {self.uri}: {exc}") from exc

    def read_tail(self, size: int, length: int) -> bytes:
        """The last ``length`` bytes of a file of known ``size``: ONE ranged GET on S3 (no HEAD)."""
        length = min(length, size)
        if length <= 0:
            return b""
        if self.is_s3:
            client = _s3_client(S3Settings.from_env())
            try:
                response = client.get_object(Bucket=self.bucket, Key=self.key, Range=f"bytes={size - length}-{size - 1}")
                return response["Body"].read()
            except client.exceptions.NoSuchKey as exc:
                raise StorageError(f"{self.uri} does not exist.") from exc
        try:
            with open(self.path, "rb") as handle:
                handle.seek(size - length)
                return handle.read(length)
        except OSError as exc:
            raise StorageError(f"Could not read {self.uri}: {exc}") from exc

    def write_bytes(self, payload: bytes) -> None:
        fs = self.filesystem()
        if not self.is_s3:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        with fs.open_output_stream(self.fs_path) as stream:
            stream.write(payload)

    def delete(self) -> None:
        """Delete this one file."""
        if self.is_s3:
            _s3_client(S3Settings.from_env()).delete_object(Bucket=self.bucket, Key=self.key)
        else:
            Path(self.path).unlink(missing_ok=True)

    def tree_size(self) -> tuple[int, int]:
        """(files, bytes) under this folder, recursively; (0, 0) when it does not exist."""
        if self.is_s3:
            client = _s3_client(S3Settings.from_env())
            files = size = 0
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=f"{self.key}/"):
                for obj in page.get("Contents", []):
                    files, size = files + 1, size + int(obj["Size"])
            return files, size
        root = Path(self.path)
        found = [p.stat().st_size for p in root.rglob("*") if p.is_file()] if root.is_dir() else []
        return len(found), sum(found)

    def delete_tree(self) -> None:
        """Delete this folder and everything under it (nothing when it does not exist)."""
        if self.is_s3:
            client = _s3_client(S3Settings.from_env())
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=f"{self.key}/"):
                keys = [{"Key": obj["Key"]} for obj in page.get("Contents", [])]
                if keys:  # one request per page of up to 1,000 keys
                    client.delete_objects(Bucket=self.bucket, Delete={"Objects": keys, "Quiet": True})
            return
        if Path(self.path).exists():
            shutil.rmtree(self.path)

    def stat(self) -> str | None:
        """A token that changes whenever the file changes (S3 ETag, or local mtime and size).
        None when the file does not exist. One HEAD request on S3, one ``stat`` locally."""
        if self.is_s3:
            client = _s3_client(S3Settings.from_env())
            try:
                head = client.head_object(Bucket=self.bucket, Key=self.key)
            except client.exceptions.ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                    return None
                raise StorageError(f"Could not stat {self.uri}: {exc}") from exc
            return f"etag:{head['ETag'].strip(chr(34))}:{head['ContentLength']}"
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return f"mtime:{st.st_mtime_ns}:{st.st_size}"

    def list_children(self, start_after: str | None = None) -> list[ChildEntry]:
        """The entries directly inside this folder, sorted by name, names greater than
        ``start_after`` only. A folder that does not exist has no children (not an error).

        On S3 this is a delimiter listing with ``StartAfter``, so a folder with a long history costs
        one request for what is new, not one per old sub-folder."""
        if self.is_s3:
            return list(self._list_s3(start_after))
        try:
            with os.scandir(self.path) as it:
                entries = [
                    ChildEntry(e.name, e.is_dir(), 0 if e.is_dir() else e.stat().st_size)
                    for e in it
                    if start_after is None or e.name > start_after
                ]
        except (FileNotFoundError, NotADirectoryError):
            return []
        return sorted(entries, key=lambda e: e.name)

    def walk_batches(self, start_after: str, stop_after: str) -> Iterator[tuple[str, str, int]]:
        """Files one level down in sub-folders named ``start_after < name <= stop_after``:
        yields ``(folder, file_name, size)`` sorted by folder then file. Deeper entries (``.cda/``,
        ``cda/``) are not yielded. On S3 this is ONE paginated listing with ``StartAfter`` that stops
        at the first key past ``stop_after``, so its cost follows the new folders, not the history.

        Sub-folders whose names are not digits are yielded once as ``(folder, "", 0)`` so the caller can
        report them: locally all of them (the folder is read whole anyway), on S3 those that sort
        inside the range (the listing never reads past it)."""
        if self.is_s3:
            yield from self._walk_s3(start_after, stop_after)
            return
        for folder in self.list_children(start_after=start_after):
            if not folder.is_dir:
                continue
            if not folder.name.isdigit():
                yield folder.name, "", 0
                continue
            if folder.name > stop_after:
                continue  # not break: non-digit names sort after the digits
            for child in self.join(folder.name).list_children():
                if not child.is_dir:
                    yield folder.name, child.name, child.size

    def _walk_s3(self, start_after: str, stop_after: str) -> Iterator[tuple[str, str, int]]:
        client = _s3_client(S3Settings.from_env())
        prefix = f"{self.key}/" if self.key else ""
        kwargs: dict[str, Any] = {
            "Bucket": self.bucket,
            "Prefix": prefix,
            "StartAfter": f"{prefix}{start_after}/\U0010ffff",
        }
        try:
            for page in client.get_paginator("list_objects_v2").paginate(**kwargs):
                for obj in page.get("Contents", []):
                    parts = obj["Key"][len(prefix) :].split("/")
                    if parts[0] > stop_after:
                        return
                    if len(parts) == 2:
                        yield parts[0], parts[1], int(obj["Size"])
        except client.exceptions.NoSuchBucket as exc:
            raise StorageError(f"Bucket {self.bucket!r} of {self.uri} does not exist.") from exc

    def _list_s3(self, start_after: str | None) -> Iterator[ChildEntry]:
        client = _s3_client(S3Settings.from_env())
        prefix = f"{self.key}/" if self.key else ""
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix, "Delimiter": "/"}
        if start_after is not None:
            # Keys under "<prefix><start_after>/" sort after "<prefix><start_after>" too, so start
            # after the last possible key of that sub-folder to skip it entirely.
            kwargs["StartAfter"] = f"{prefix}{start_after}/\U0010ffff"
        try:
            for page in client.get_paginator("list_objects_v2").paginate(**kwargs):
                for common in page.get("CommonPrefixes", []):
                    yield ChildEntry(common["Prefix"][len(prefix) :].rstrip("/"), True)
                for obj in page.get("Contents", []):
                    yield ChildEntry(obj["Key"][len(prefix) :], False, int(obj["Size"]))
        except client.exceptions.NoSuchBucket as exc:
            raise StorageError(f"Bucket {self.bucket!r} of {self.uri} does not exist.") from exc


def check_writable(location: Location, variable: str) -> None:
    """Write and delete a small probe file under ``location``; raise ``StorageError`` naming
    ``variable`` (the setting that chose the location) when that is not possible."""
    probe = location.join(f".gw-write-probe-{os.getpid()}")
    try:
        probe.write_bytes(b"probe")
        probe.delete()
    except Exception as exc:  # permissions, a missing bucket, a read-only disk: all the same to the user
        raise StorageError(
            f"{variable}={location.uri.rsplit('/', 1)[0]} cannot be written ({type(exc).__name__}: {exc}). "
            f"Set {variable} to a folder or bucket this process may write to."
        ) from exc


@functools.cache
def _local_filesystem() -> pafs.FileSystem:
    return pafs.LocalFileSystem()


@functools.lru_cache(maxsize=8)
def _s3_filesystem(s3: S3Settings) -> pafs.FileSystem:
    endpoint = s3.endpoint_url
    kwargs: dict[str, Any] = {"region": s3.region}
    if endpoint:
        parsed = urlparse(endpoint)
        kwargs["endpoint_override"] = parsed.netloc or parsed.path
        kwargs["scheme"] = parsed.scheme or "https"
    if s3.access_key_id and s3.secret_access_key:
        kwargs.update(access_key=s3.access_key_id, secret_key=s3.secret_access_key)
        if s3.session_token:
            kwargs["session_token"] = s3.session_token
    return pafs.S3FileSystem(**kwargs)


@functools.lru_cache(maxsize=8)
def _s3_client(s3: S3Settings) -> Any:
    import boto3  # imported lazily: local runs never pay for it
    from botocore.config import Config

    return boto3.session.Session().client(
        "s3",
        endpoint_url=s3.endpoint_url,
        region_name=s3.region,
        aws_access_key_id=s3.access_key_id,
        aws_secret_access_key=s3.secret_access_key,
        aws_session_token=s3.session_token,
        config=Config(retries={"max_attempts": 5, "mode": "standard"}, max_pool_connections=32),
    )
