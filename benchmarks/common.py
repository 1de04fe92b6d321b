"""Shared pieces of the benchmarks: temp data, a counted S3 test server, timers, RSS sampling, tables.

Benchmarks print figures; they never assert. Each writes its rows to ``benchmarks/results/<name>.json``
too, so that the README's Performance section can be refreshed from the latest run.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
PYTHON = sys.executable


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    return (f"{os.cpu_count()} cores ({cpu}), {psutil.virtual_memory().total / 2**30:.0f} GB RAM, "
            f"{platform.system()} {platform.release()}, Python {platform.python_version()}")


@contextlib.contextmanager
def temp_dir(name: str) -> Iterator[Path]:
    """A scratch folder for one benchmark's data, removed afterwards (GW_BENCH_KEEP=1 keeps it)."""
    path = Path(tempfile.mkdtemp(prefix=f"gwbench-{name}-"))
    try:
        yield path
    finally:
        if not os.environ.get("GW_BENCH_KEEP"):
            shutil.rmtree(path, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_http(url: str, process: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(f"{what} did not start") from None
            time.sleep(0.1)


class S3TestServer:
    """moto's S3 server (its own process) behind a counting proxy (another process), loopback only.

    ``endpoint`` goes through the proxy and is counted; ``direct_endpoint`` is for bulk uploads of
    test data that should not be counted or slowed down."""

    def __init__(self) -> None:
        self.backend_port, self.proxy_port = free_port(), free_port()
        self.processes: list[subprocess.Popen] = []

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.proxy_port}"

    @property
    def direct_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.backend_port}"

    def __enter__(self) -> S3TestServer:
        moto = subprocess.Popen([PYTHON, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.backend_port)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.processes.append(moto)
        _wait_http(f"{self.direct_endpoint}/moto-api/", moto, "moto's S3 server")
        proxy = subprocess.Popen([PYTHON, "-m", "benchmarks.s3_proxy", str(self.proxy_port), str(self.backend_port)],
                                 cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.processes.append(proxy)
        _wait_http(f"{self.endpoint}/__counts__", proxy, "the counting proxy")
        os.environ.update(AWS_ENDPOINT_URL=self.endpoint, AWS_REGION="us-east-1",
                          AWS_ACCESS_KEY_ID="bench-access-key", AWS_SECRET_ACCESS_KEY="bench-secret-key")
        for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL_S3"):
            os.environ.pop(name, None)
        return self

    def __exit__(self, *exc: object) -> None:
        for process in reversed(self.processes):
            process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=10)

    def bucket(self) -> str:
        import boto3

        name = f"gwbench-{uuid.uuid4().hex[:10]}"
        boto3.client("s3", endpoint_url=self.direct_endpoint).create_bucket(Bucket=name)
        return name

    def counts(self) -> dict[str, int]:
        with urllib.request.urlopen(f"{self.endpoint}/__counts__", timeout=10) as response:
            return json.loads(response.read())["counts"]

    def list_prefixes(self) -> dict[str, int]:
        with urllib.request.urlopen(f"{self.endpoint}/__counts__", timeout=10) as response:
            return json.loads(response.read())["list_prefixes"]

    def request_log(self) -> list[str]:
        with urllib.request.urlopen(f"{self.endpoint}/__log__", timeout=30) as response:
            return json.loads(response.read())

    def reset(self) -> None:
        request = urllib.request.Request(f"{self.endpoint}/__reset__", data=b"", method="POST")
        urllib.request.urlopen(request, timeout=10).close()

    def upload_tree(self, local_root: Path, uri: str) -> None:
        """Copy a local folder to ``s3://bucket/prefix`` straight to moto (not counted)."""
        import pyarrow.fs as pafs

        target = pafs.S3FileSystem(endpoint_override=f"127.0.0.1:{self.backend_port}", scheme="http",
                                   region="us-east-1", access_key="bench-access-key", secret_key="bench-secret-key")
        pafs.copy_files(str(local_root), uri.removeprefix("s3://"), source_filesystem=pafs.LocalFileSystem(),
                        destination_filesystem=target, use_threads=True, chunk_size=8 * 2**20)


def rewrite_manifest_paths(manifest_path: Path, old_root: str, new_root: str) -> bytes:
    """The manifest with every ``dataFilesPath`` moved from ``old_root`` to ``new_root``."""
    document = json.loads(manifest_path.read_text())
    for entry in document.values():
        entry["dataFilesPath"] = entry["dataFilesPath"].replace(old_root.rstrip("/"), new_root.rstrip("/"), 1)
    return json.dumps(document, indent=2).encode()


@contextlib.contextmanager
def timed() -> Iterator[dict[str, float]]:
    box: dict[str, float] = {}
    started = time.perf_counter()
    try:
        yield box
    finally:
        box["s"] = time.perf_counter() - started


class TreeRssSampler:
    """Peak RSS of a process and all its descendants (Ray workers included), sampled every 100 ms."""

    def __init__(self, pid: int | None = None, interval: float = 0.1) -> None:
        self.root = psutil.Process(pid or os.getpid())
        self.interval = interval
        self.peak = 0
        self.peak_pss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> int:
        """RSS summed over the tree (counts shared library pages once per process), and PSS (shares
        them out: the tree's real footprint)."""
        total = pss = 0
        with contextlib.suppress(psutil.Error):
            for process in [self.root, *self.root.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    info = process.memory_full_info()
                    total += info.rss
                    pss += getattr(info, "pss", info.rss)
        self.peak = max(self.peak, total)
        self.peak_pss = max(self.peak_pss, pss)
        return total

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self) -> TreeRssSampler:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


def run_python(code: str, env: dict[str, str] | None = None, timeout: float = 1800) -> dict[str, Any]:
    """Run ``code`` in a fresh interpreter (a fresh Ray, a fresh import cache); it must print one JSON
    object as its last line, which is returned."""
    completed = subprocess.run([PYTHON, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True,
                               env={**os.environ, **(env or {})}, timeout=timeout)
    lines = [line for line in completed.stdout.splitlines() if line.startswith("{")]
    if completed.returncode != 0 or not lines:
        raise RuntimeError(f"benchmark subprocess failed ({completed.returncode}):\n{completed.stderr[-3000:]}")
    return json.loads(lines[-1])


def engine_run(manifest: str, delta_root: str, clone_mode: str, num_cpus: int | None = 2,
               profile: str | None = None, driver_max_bytes: int | None = None,
               ray_address: str | None = None, pid_callback: Any = None, commit_max_bytes: int | None = None,
               commit_max_batches: int | None = None) -> dict[str, Any]:
    """One engine run in a fresh process (``benchmarks.engine_run``); returns its JSON figures."""
    command = [PYTHON, "-m", "benchmarks.engine_run", manifest, delta_root, "--clone-mode", clone_mode]
    if commit_max_bytes:
        command += ["--commit-max-bytes", str(commit_max_bytes)]
    if commit_max_batches:
        command += ["--commit-max-batches", str(commit_max_batches)]
    if driver_max_bytes is not None:
        command += ["--driver-max-bytes", str(driver_max_bytes)]
    if ray_address:
        command += ["--ray-address", ray_address]
    if num_cpus:
        command += ["--num-cpus", str(num_cpus)]
    if profile:
        command += ["--profile", profile]
    process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if pid_callback:
        pid_callback(process.pid)
    stdout, stderr = process.communicate(timeout=3600)
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    if process.returncode != 0 or not lines:
        raise RuntimeError(f"engine run failed:\n{stderr[-3000:]}")
    return json.loads(lines[-1])


def print_table(title: str, rows: list[dict[str, Any]], columns: list[str] | None = None) -> None:
    """A plain text table, and the rows saved under benchmarks/results/."""
    columns = columns or list(dict.fromkeys(k for row in rows for k in row))
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) if cells else len(c) for i, c in enumerate(columns)]
    print(f"\n== {title}")
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for r in cells:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)))
    sys.stdout.flush()


def save_results(name: str, payload: dict[str, Any]) -> None:
    RESULTS.mkdir(exist_ok=True)
    payload = {"benchmark": name, "machine": machine(),
               "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **payload}
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=2, default=str) + "\n")


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def dir_bytes(path: Path, suffix: str = ".parquet") -> int:
    return sum(p.stat().st_size for p in path.rglob(f"*{suffix}"))


def log(message: str) -> None:
    print(f"  [{time.strftime('%H:%M:%S')}] {message}", flush=True)


Progress = Callable[[str], None]
