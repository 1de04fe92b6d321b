"""Short-lived URLs for data files (no Dagster, no HTTP framework here).

- Files on S3: a pre-signed ``GetObject`` URL from boto3 (honours ``AWS_ENDPOINT_URL``), valid for
  the URL lifetime.
- Local files: a URL to the server itself, ``<endpoint>/files/<payload>.<signature>``. The payload
  is the file's URI and the expiry, base64url JSON; the signature is HMAC-SHA256 over the payload
  text with the server's key (kept in its state database). The signature is compared as text, so
  a URL that differs in any byte fails, and an expired one fails even with a valid signature.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import time
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from guidewire_pipeline.cda.storage import Location

DEFAULT_URL_TTL_SECONDS = 900


class UrlRejected(Exception):
    """A data file URL that is forged, altered or expired; the message says which."""


@dataclass(frozen=True)
class SignedUrl:
    url: str
    expires_ms: int


class FileUrlSigner:
    """Signs data file URLs for ``public_url`` (the server's endpoint, e.g. ``http://host:8080/delta-sharing``)."""

    def __init__(self, key: bytes, public_url: str, ttl_seconds: int = DEFAULT_URL_TTL_SECONDS) -> None:
        self._key = key
        self.public_url = public_url.rstrip("/")
        self.ttl_seconds = ttl_seconds

    def sign(self, uri: str, now_ms: int | None = None) -> SignedUrl:
        expires = (now_ms if now_ms is not None else int(time.time() * 1000)) + self.ttl_seconds * 1000
        location = Location.parse(uri)
        if location.is_s3:
            url = self._s3.generate_presigned_url(
                "get_object", Params={"Bucket": location.bucket, "Key": location.key}, ExpiresIn=self.ttl_seconds
            )
            return SignedUrl(url, expires)
        payload = base64.urlsafe_b64encode(
            json.dumps({"u": location.path, "e": expires}, separators=(",", ":")).encode()
        ).decode().rstrip("=")
        return SignedUrl(f"{self.public_url}/files/{payload}.{self._signature(payload)}", expires)

    def verify(self, token: str, now_ms: int | None = None) -> str:
        """The local path a ``files/<token>`` URL grants, or ``UrlRejected`` saying why not."""
        payload, dot, signature = token.partition(".")
        if not dot or not hmac.compare_digest(signature, self._signature(payload)):
            raise UrlRejected("the URL's signature does not match: it was altered or not issued by this server; "
                              "query the table again for fresh URLs")
        try:
            granted: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
            path, expires = str(granted["u"]), int(granted["e"])
        except (ValueError, KeyError, TypeError, binascii.Error):
            raise UrlRejected("the URL is malformed: query the table again for fresh URLs") from None
        now = now_ms if now_ms is not None else int(time.time() * 1000)
        if now > expires:
            raise UrlRejected(f"the URL expired {(now - expires) // 1000} s ago (URLs live {self.ttl_seconds} s): "
                              "query the table again for fresh URLs")
        return path

    def _signature(self, payload: str) -> str:
        return hmac.new(self._key, payload.encode(), hashlib.sha256).hexdigest()

    @cached_property
    def _s3(self) -> Any:
        import boto3
        from botocore.config import Config

        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        # A custom endpoint (MinIO, moto) is addressed by path; AWS itself by virtual host.
        config = Config(signature_version="s3v4", s3={"addressing_style": "path" if endpoint else "auto"})
        return boto3.client("s3", endpoint_url=endpoint, region_name=os.environ.get("AWS_REGION") or "us-east-1",
                            config=config)
