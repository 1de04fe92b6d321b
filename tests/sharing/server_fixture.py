"""The Delta Sharing server as tests meet it: a real uvicorn process on a free loopback port (its own
process, like moto: deltalake can hold the GIL), polled for readiness with a deadline."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class RunningServer:
    endpoint: str
    log_path: Path
    process: subprocess.Popen

    def log(self) -> str:
        return self.log_path.read_text()


@contextmanager
def running_server(state_url: str, delta_root: str, log_path: Path, **env: str) -> Iterator[RunningServer]:
    """Start ``python -m guidewire_pipeline.sharing.server`` and yield once it answers HTTP."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}/delta-sharing"
    environment = {**os.environ, "GW_SHARING_STATE_URL": state_url, "GW_DELTA_ROOT": delta_root,
                   "GW_SHARING_ENDPOINT": endpoint, "PYTHONPATH": str(REPO_ROOT), **env}
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "guidewire_pipeline.sharing.server", "--port", str(port)],
            stdout=log, stderr=subprocess.STDOUT, env=environment, cwd=REPO_ROOT,
        )
    deadline = time.monotonic() + 60
    while True:  # readiness: any HTTP answer (401 without a token) means it listens
        try:
            urllib.request.urlopen(f"{endpoint}/shares", timeout=1).close()
            break
        except urllib.error.HTTPError:
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(f"the sharing server did not start:\n{log_path.read_text()[-3000:]}") from None
            time.sleep(0.1)
    try:
        yield RunningServer(endpoint, log_path, process)
    finally:
        process.terminate()
        process.wait(timeout=15)
