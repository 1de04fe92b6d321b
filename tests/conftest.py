"""Shared fixtures: a real S3 API server (moto, its own process), one local Ray per session, and
sample CDA trees.

The AWS variables are set before any test runs, so that a Ray worker started later inherits the
same endpoint as the test process. They point at a loopback port that the ``s3`` fixture fills with
moto's standalone server on first use.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest_plugins = ["tests.conftest_databricks"]

REPO_ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


_S3_PORT = _free_port()


def pytest_configure(config: pytest.Config) -> None:
    os.environ.update(
        AWS_ENDPOINT_URL=f"http://127.0.0.1:{_S3_PORT}",
        AWS_REGION="us-east-1",
        AWS_ACCESS_KEY_ID="test-access-key",
        AWS_SECRET_ACCESS_KEY="test-secret-key",
        RAY_DEDUP_LOGS="0",
        # The local sharing server's state of this test session, never ~/.guidewire_pipeline's.
        GW_SHARING_STATE_URL=f"sqlite:///{Path(tempfile.mkdtemp(prefix='gw-tests-sharing-')) / 'state.db'}",
    )
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "RAY_ADDRESS", "DATABRICKS_HOST", "DATABRICKS_TOKEN",
                 "GW_MANIFEST_URI", "GW_DELTA_ROOT", "GW_SHAREPACK", "DAGSTER_HOME"):
        os.environ.pop(name, None)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """moto's S3 server as a process of its own (a server thread in this process would starve while
    deltalake holds the GIL). Yields the endpoint URL."""
    endpoint = os.environ["AWS_ENDPOINT_URL"]
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(_S3_PORT)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while True:  # readiness poll: the server answers once it has bound its port
        try:
            urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1).close()
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError("moto's S3 server did not start; run `python -m moto.server` to see why.") from None
            time.sleep(0.1)
    yield endpoint
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture
def s3_bucket(s3_server: str) -> str:
    """A fresh bucket on the moto server; returns its name."""
    import boto3

    name = f"gw-{uuid.uuid4().hex[:12]}"
    boto3.client("s3").create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="session")
def ray_local() -> Iterator[None]:
    """One local Ray for the whole session: starting it costs seconds on this machine."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


@pytest.fixture
def sample_cda(tmp_path: Path) -> Path:
    """A small synthetic CDA tree: 6 tables with data, 1 without, 4 committed batches each."""
    from guidewire_pipeline.sample.generator import generate

    root = tmp_path / "cda"
    generate(str(root), tables=6, batches=4, rows=60, seed=11)
    return root
