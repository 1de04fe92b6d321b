"""A counting reverse proxy for moto's S3 server, on loopback only.

``python -m benchmarks.s3_proxy LISTEN_PORT BACKEND_PORT`` forwards every request to
``127.0.0.1:BACKEND_PORT`` and counts it at the server side, by kind: LIST (``list-type=2`` or a
bucket-level GET), GET, HEAD, PUT, POST, DELETE. ``GET /__counts__`` returns the counts as JSON
(with the LIST prefixes), ``GET /__log__`` lists the requests, ``POST /__reset__`` zeroes them. Neither is forwarded.

It runs as its own process: a thread in the benchmark process would starve while deltalake holds
the GIL.
"""

from __future__ import annotations

import http.client
import json
import sys
import threading
from collections import Counter, deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "expect",
              "proxy-connection", "content-length"}

counts: Counter[str] = Counter()
list_prefixes: Counter[str] = Counter()
lock = threading.Lock()
recent: deque[str] = deque(maxlen=200_000)  # 'KIND path', for GET /__log__
local = threading.local()


def classify(method: str, path: str) -> tuple[str, str | None]:
    parts = urlsplit(path)
    query = parse_qs(parts.query, keep_blank_values=True)
    key = parts.path.lstrip("/").split("/", 1)
    if method == "GET" and ("list-type" in query or len(key) == 1 or key[1] == ""):
        return "LIST", (query.get("prefix") or [""])[0]
    return method, None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    backend_port = 0

    def log_message(self, *args: object) -> None:  # quiet
        pass

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _reply_json(self, payload: object) -> None:
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _forward(self) -> None:
        if self.path.startswith("/__counts__"):
            with lock:
                return self._reply_json({"counts": dict(counts), "list_prefixes": dict(list_prefixes)})
        if self.path.startswith("/__log__"):
            with lock:
                return self._reply_json(list(recent))
        if self.path.startswith("/__reset__"):
            self._body()
            with lock:
                counts.clear()
                list_prefixes.clear()
                recent.clear()
            return self._reply_json({"reset": True})
        body = self._body()
        kind, prefix = classify(self.command, self.path)
        with lock:
            counts[kind] += 1
            recent.append(f"{kind} {self.path}")
            if prefix is not None:
                list_prefixes[prefix] += 1
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        headers["Content-Length"] = str(len(body))
        for attempt in range(2):
            conn = getattr(local, "conn", None)
            if conn is None:
                conn = local.conn = http.client.HTTPConnection("127.0.0.1", self.backend_port, timeout=300)
            try:
                conn.request(self.command, self.path, body=body, headers=headers)
                response = conn.getresponse()
                data = response.read()
                break
            except (http.client.HTTPException, OSError):
                conn.close()
                local.conn = None
                if attempt:
                    raise
        self.send_response(response.status, response.reason)
        for name, value in response.getheaders():
            if name.lower() not in HOP_BY_HOP:
                self.send_header(name, value)
        if self.command == "HEAD":
            self.send_header("Content-Length", response.getheader("Content-Length") or "0")
        else:
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward


def main() -> None:
    listen, backend = int(sys.argv[1]), int(sys.argv[2])
    Handler.backend_port = backend
    server = ThreadingHTTPServer(("127.0.0.1", listen), Handler)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
