"""Delta Sharing server under load: 50 concurrent readers for 60 s against one share.

Each reader is a thread with its own HTTP session that repeats what the official client does to read
a table: list the share's tables, query one (NDJSON with signed URLs), then download every data file
the query returned. The server is a uvicorn process of its own on loopback, serving gold-mart-shaped
Delta tables from local disk; its state is SQLite. Reported: requests/s, p50/p99 latency per request
kind, errors (goal: 0) and the server's peak RSS (sampled every 100 ms). Figures, not a test.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import requests
from deltalake import write_deltalake

from benchmarks.common import REPO_ROOT, TreeRssSampler, free_port, log, print_table, save_results, temp_dir

READERS = 50
SECONDS = 60
PACK = """\
metadata: {requestor: bench@example.com, project_name: Sharing load}
recipient:
  - {name: bench-reader, type: D2O}
share:
  - name: gold_marts
    recipients: [bench-reader]
    data_objects: [main.gold.claims_by_state_month, main.gold.policies_in_force_by_month]
"""


def _build_lake(delta: Path) -> None:
    """Two marts: one of 8 files x 5,000 rows (8 commits), one of 1 file."""
    for commit in range(8):
        rows = 5_000
        write_deltalake(str(delta / "gold" / "claims_by_state_month"), pa.table({
            "loss_state": pa.array([f"S{i % 50:02d}" for i in range(rows)]),
            "loss_month": pa.array([dt.date(2024, 1 + commit % 12, 1)] * rows, pa.date32()),
            "claim_count": pa.array(range(rows), pa.int64()),
            "incurred_amount": pa.array([decimal.Decimal(f"{i}.25") for i in range(rows)], pa.decimal128(18, 2)),
        }), mode="append")
    write_deltalake(str(delta / "gold" / "policies_in_force_by_month"), pa.table({
        "product_code": ["PersonalAuto", "Homeowners"], "policies_in_force": pa.array([10, 7], pa.int64())}))


def _reader(endpoint: str, token: str, stop: float, samples: list, errors: list) -> None:
    session = requests.Session()
    auth = {"Authorization": f"Bearer {token}"}
    table = f"{endpoint}/shares/gold_marts/schemas/gold/tables/claims_by_state_month"
    while time.monotonic() < stop:
        try:
            started = time.perf_counter()
            listed = session.get(f"{endpoint}/shares/gold_marts/all-tables", headers=auth, timeout=60)
            samples.append(("list", time.perf_counter() - started, listed.status_code))
            started = time.perf_counter()
            queried = session.post(f"{table}/query", json={}, headers=auth, timeout=60)
            samples.append(("query", time.perf_counter() - started, queried.status_code))
            for line in queried.text.splitlines()[2:]:
                started = time.perf_counter()
                data = session.get(json.loads(line)["file"]["url"], timeout=60)
                samples.append(("file", time.perf_counter() - started, data.status_code))
        except Exception as exc:  # a broken connection counts as an error, the reader goes on
            errors.append(f"{type(exc).__name__}: {exc}")


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else 0.0


def run(quick: bool = False) -> None:
    from guidewire_pipeline.lakehouse import Lakehouse
    from guidewire_pipeline.sharing.backends import SharingServerBackend
    from guidewire_pipeline.sharing.reconciler import ActivationLinkStore, reconcile
    from guidewire_pipeline.sharing.server.state import SharingState
    from guidewire_pipeline.sharing.sharepack import load_sharepack

    seconds = 10 if quick else SECONDS
    with temp_dir("sharing") as root:
        delta = root / "delta"
        _build_lake(delta)
        port = free_port()
        endpoint = f"http://127.0.0.1:{port}/delta-sharing"
        state_url = f"sqlite:///{root / 'state.db'}"
        (root / "pack.yaml").write_text(PACK)
        loaded = load_sharepack(root / "pack.yaml")
        backend = SharingServerBackend(SharingState(state_url), Lakehouse(str(delta)), endpoint, timedelta(days=1))
        result = reconcile(loaded.pack, backend, ActivationLinkStore(root / "profiles", "profile file"), apply=True)
        token = json.loads(result.activation_links["bench-reader"].read_text())["bearerToken"]
        env = {**os.environ, "GW_SHARING_STATE_URL": state_url, "GW_SHARING_ENDPOINT": endpoint,
               "GW_DELTA_ROOT": str(delta)}
        server = subprocess.Popen([sys.executable, "-m", "guidewire_pipeline.sharing.server", "--port", str(port)],
                                  cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    urllib.request.urlopen(f"{endpoint}/shares", timeout=1)
                except urllib.error.HTTPError:
                    break
                except OSError:
                    if server.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError("the sharing server did not start") from None
                    time.sleep(0.1)
            log(f"{READERS} readers for {seconds} s against {endpoint}")
            samples: list = []
            errors: list = []
            with TreeRssSampler(server.pid) as rss:
                stop = time.monotonic() + seconds
                threads = [threading.Thread(target=_reader, args=(endpoint, token, stop, samples, errors))
                           for _ in range(READERS)]
                began = time.perf_counter()
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()
                elapsed = time.perf_counter() - began
        finally:
            server.terminate()
            server.wait(timeout=15)
    bad = [s for s in samples if s[2] != 200]
    rows = []
    for kind in ("list", "query", "file", "all"):
        chosen = [s for s in samples if kind == "all" or s[0] == kind]
        latencies = [s[1] for s in chosen]
        rows.append({"request": kind, "requests": len(chosen), "per_s": len(chosen) / elapsed,
                     "p50_ms": _percentile(latencies, 0.5), "p99_ms": _percentile(latencies, 0.99)})
    summary = {"readers": READERS, "seconds": round(elapsed, 1), "errors": len(errors) + len(bad),
               "non_200": len(bad), "exceptions": len(errors), "server_peak_rss_mb": round(rss.peak / 2**20, 1),
               "first_errors": (errors + [str(b) for b in bad])[:5]}
    print_table(f"Delta Sharing server: {READERS} readers, {elapsed:.0f} s, one share", rows)
    print(f"  errors: {summary['errors']} (non-200: {len(bad)}, exceptions: {len(errors)}); "
          f"server peak RSS {summary['server_peak_rss_mb']} MB")
    save_results("sharing_load", {"rows": rows, "summary": summary})


if __name__ == "__main__":
    run(quick="--quick" in sys.argv)
