"""A fake Databricks workspace: a small HTTP server that the real ``databricks-sdk`` talks to.

The core only knows about authentication, routing and error rendering. Endpoints come from
plug-in modules with ``def install(ws: FakeDatabricksWorkspace) -> None`` that register routes
with ``@ws.route(METHOD, PATH_REGEX)`` and keep their state on ``ws`` (``ws.jobs``, ``ws.uc`` ...).

Handler contract::

    def handler(ws, match: re.Match, query: dict[str, list[str]], body: dict) -> (status, payload) | payload

- ``match`` is ``re.fullmatch(pattern, path)`` (path without the query string).
- ``body`` is the parsed JSON body ({} when empty). A body that is not JSON (Files API uploads)
  arrives as ``{"_raw": <bytes>}``.
- ``payload`` is a JSON-serialisable object, or ``bytes`` (sent as application/octet-stream).
- Raise ``FakeApiError(status, error_code, message)`` to answer the way Databricks does:
  ``{"error_code": ..., "message": ...}`` with that HTTP status.

Routes are matched newest first, so a plug-in may override an earlier one. Handlers run on the
server's request threads; plug-ins guard their state with ``ws.lock`` (an ``RLock``).
An exception other than FakeApiError answers 500 INTERNAL_ERROR and is kept in ``ws.errors``
so that a test can show the fake's own bug instead of a confusing client-side symptom.

Authentication: the PAT ``ws.token``, or OAuth M2M for the service principals in
``ws.service_principals`` (client id -> secret; ``ws.add_service_principal()`` makes one). With one
registered, ``/oidc/.well-known/oauth-authorization-server`` answers the endpoints the SDK discovers
and ``POST /oidc/v1/token`` (client credentials, HTTP Basic) issues a bearer token; a wrong id or
secret is ``401 invalid_client``, as Databricks answers.
"""

from __future__ import annotations

import base64
import json
import pathlib
import re
import secrets
import threading
import traceback
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from databricks.sdk import WorkspaceClient
from databricks.sdk.config import Config

Handler = Callable[..., Any]

# Discovery endpoints the SDK (or other clients) may probe; they answer 404 without auth so nothing hangs.
_UNAUTHENTICATED_404 = (
    r"/\.well-known/databricks-config",
    r"/oidc/\.well-known/oauth-authorization-server",
    r"/oidc/accounts/[^/]+/\.well-known/oauth-authorization-server",
    r"/\.well-known/openid-configuration",
    r"/oidc/v1/\.well-known/openid-configuration",
)


class FakeApiError(Exception):
    """An API error answered as ``{"error_code": ..., "message": ...}`` with HTTP ``status``."""

    def __init__(self, status: int, error_code: str, message: str):
        super().__init__(f"{status} {error_code}: {message}")
        self.status = status
        self.error_code = error_code
        self.message = message


class FakeDatabricksWorkspace:
    """An in-process fake Databricks workspace on ``127.0.0.1:<free port>``.

    ``root`` is a directory the plug-ins use for DBFS, workspace files and notebook runs.
    Start it (``start()`` or ``with``) before creating any client: a client pointed at a dead
    port retries for minutes.
    """

    def __init__(self, root: pathlib.Path):
        self.root = pathlib.Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        # Deliberately not dapi + 32 hex digits, so that it can never be mistaken for a real PAT.
        self.token: str = f"fake-pat-{secrets.token_hex(8)}"
        self.host: str = ""
        self.requests: list[tuple[str, str]] = []
        self.errors: list[str] = []
        self.service_principals: dict[str, str] = {}
        self.oauth_tokens: dict[str, str] = {}  # issued access token -> client id
        # Cleanups plug-ins register (e.g. kill notebook processes); stop() runs them newest first.
        self.on_stop: list[Callable[[], None]] = []
        self.lock = threading.RLock()
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ----------------------------------------------------------------- plug-in interface

    def route(self, method: str, pattern: str) -> Callable[[Handler], Handler]:
        """Register ``handler`` for ``METHOD`` and a path regex matched with ``re.fullmatch``."""

        def register(handler: Handler) -> Handler:
            with self.lock:
                self._routes.append((method.upper(), re.compile(pattern), handler))
            return handler

        return register

    def add_service_principal(self) -> tuple[str, str]:
        """A new OAuth M2M service principal: ``(client_id, client_secret)``."""
        client_id, secret = f"fake-sp-{secrets.token_hex(4)}", f"fake-secret-{secrets.token_hex(12)}"
        with self.lock:
            self.service_principals[client_id] = secret
        return client_id, secret

    def writes(self, prefix: str = "") -> list[tuple[str, str]]:
        """The non-GET requests received so far, in order, optionally only those under ``prefix``."""
        with self.lock:
            return [(m, p) for m, p in self.requests if m != "GET" and p.startswith(prefix)]

    # ----------------------------------------------------------------- life cycle

    def start(self) -> FakeDatabricksWorkspace:
        """Bind a free port and serve on a daemon thread; sets ``host``."""
        if self._server is not None:
            return self
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _make_request_handler(self))
        self._server.daemon_threads = True
        self.host = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="fake-databricks", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; plug-ins that own processes register cleanups in ``ws.on_stop``."""
        for cleanup in reversed(self.on_stop):
            cleanup()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeDatabricksWorkspace:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def client(self, retry_timeout_seconds: int = 30) -> WorkspaceClient:
        """A real ``WorkspaceClient`` pointed at this fake with PAT auth."""
        if not self.host:
            raise RuntimeError(
                "FakeDatabricksWorkspace.client(): call start() first (a dead port retries for minutes)"
            )
        return WorkspaceClient(
            config=Config(
                host=self.host,
                token=self.token,
                auth_type="pat",
                retry_timeout_seconds=retry_timeout_seconds,
            )
        )

    # ----------------------------------------------------------------- dispatch

    def _dispatch(self, method: str, raw_path: str, headers: Any, raw_body: bytes) -> tuple[int, Any]:
        split = urlsplit(raw_path)
        path = split.path
        with self.lock:
            self.requests.append((method, path))
            routes = list(reversed(self._routes))
        if path == "/oidc/.well-known/oauth-authorization-server" and self.service_principals:
            return 200, {"authorization_endpoint": f"{self.host}/oidc/v1/authorize",
                         "token_endpoint": f"{self.host}/oidc/v1/token"}
        if path == "/oidc/v1/token" and method == "POST":
            return self._issue_token(headers, raw_body)
        if any(re.fullmatch(p, path) for p in _UNAUTHENTICATED_404):
            return 404, {"error_code": "NOT_FOUND", "message": f"No such endpoint: {path}"}
        auth = headers.get("Authorization")
        if not auth or not auth.startswith("Bearer "):
            return 401, {
                "error_code": "UNAUTHENTICATED",
                "message": "Credential was not sent or was of an unsupported type for this API.",
            }
        bearer = auth[len("Bearer ") :]
        with self.lock:
            known = bearer in self.oauth_tokens
        if not known and not secrets.compare_digest(bearer, self.token):
            return 401, {"error_code": "UNAUTHENTICATED", "message": "Invalid access token."}
        query = parse_qs(split.query, keep_blank_values=True)
        body = _parse_body(raw_body)
        for route_method, pattern, handler in routes:
            if route_method != method:
                continue
            match = pattern.fullmatch(path)
            if match is None:
                continue
            try:
                result = handler(self, match, query, body)
            except FakeApiError as e:
                return e.status, {"error_code": e.error_code, "message": e.message}
            except Exception:  # a bug in the fake itself: answer 500 and keep it for the test
                trace = traceback.format_exc()
                with self.lock:
                    self.errors.append(f"{method} {path}\n{trace}")
                return 500, {
                    "error_code": "INTERNAL_ERROR",
                    "message": f"fake workspace bug: {trace.splitlines()[-1]}",
                }
            if isinstance(result, tuple):
                return result
            return 200, result
        return 404, {"error_code": "ENDPOINT_NOT_FOUND", "message": f"No API found for '{method} {path}'"}


    def _issue_token(self, headers: Any, raw_body: bytes) -> tuple[int, Any]:
        """OAuth client credentials: HTTP Basic client id/secret (or form fields), grant client_credentials."""
        form = {k: v[0] for k, v in parse_qs(raw_body.decode("utf-8", errors="replace")).items()}
        client_id, secret = form.get("client_id"), form.get("client_secret")
        auth = headers.get("Authorization") or ""
        if auth.startswith("Basic "):
            client_id, _, secret = base64.b64decode(auth[len("Basic ") :]).decode().partition(":")
            client_id, secret = unquote(client_id), unquote(secret)
        if form.get("grant_type") != "client_credentials":
            return 400, {"error": "unsupported_grant_type", "error_description": "grant_type must be client_credentials"}
        with self.lock:
            expected = self.service_principals.get(client_id or "")
        if expected is None or not secrets.compare_digest(secret or "", expected):
            return 401, {"error": "invalid_client", "error_description": "Client authentication failed"}
        token = f"fake-oauth-{secrets.token_hex(12)}"
        with self.lock:
            self.oauth_tokens[token] = client_id or ""
        return 200, {"access_token": token, "token_type": "Bearer", "expires_in": 3600, "scope": "all-apis"}


def _parse_body(raw_body: bytes) -> dict[str, Any]:
    if not raw_body:
        return {}
    try:
        parsed = json.loads(raw_body)
    except (ValueError, UnicodeDecodeError):
        return {"_raw": raw_body}
    return parsed if isinstance(parsed, dict) else {"_raw": raw_body}


def _make_request_handler(ws: FakeDatabricksWorkspace) -> type[BaseHTTPRequestHandler]:
    class _RequestHandler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the SDK's requests session expects

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw_body = self.rfile.read(length) if length else b""
            status, payload = ws._dispatch(self.command, self.path, self.headers, raw_body)
            if isinstance(payload, bytes | bytearray):
                data, content_type = bytes(payload), "application/octet-stream"
            else:
                data, content_type = json.dumps(payload).encode(), "application/json"
            if status == 204 or self.command == "HEAD":
                data = b""  # 204 and HEAD carry no body; a stray one would corrupt the kept-alive connection
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _handle

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - keep test output quiet
            pass

    return _RequestHandler
