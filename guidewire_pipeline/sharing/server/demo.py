"""``make demo``'s sharing step: start the Delta Sharing server, share the gold marts with the shipped
share pack, and read one back through the official ``delta-sharing`` client (no Dagster here).

Everything it creates (state database, profile files) lives in a temporary folder removed at the
end, so the demo never touches the state of a real server. The server runs as a process of its own.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from datetime import timedelta
from pathlib import Path

import yaml

from guidewire_pipeline.lakehouse import GOLD
from guidewire_pipeline.settings import Settings
from guidewire_pipeline.sharing.backends import SharingServerBackend
from guidewire_pipeline.sharing.reconciler import ActivationLinkStore, reconcile
from guidewire_pipeline.sharing.server.state import SharingState
from guidewire_pipeline.sharing.sharepack import DEFAULT_SHAREPACK, load_sharepack

DEMO_TABLE = ("claims_gold", "gold", "claims_by_state_month")
DEMO_RECIPIENT = "demo-reader"
"""Added to the shipped pack for the demo, allowed from loopback only: the shipped partner-acme may
connect from 203.0.113.0/24 only, which the demo shows by being refused as partner-acme."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def share_and_read_back(settings: Settings, rows: int = 5) -> str:
    """Apply the shipped pack to a fresh server state, serve it on loopback, read ``claims_gold`` back
    as partner-acme would, and return a summary with the first ``rows`` rows. Raises ``RuntimeError``
    naming the cause when the server does not start or the read fails."""
    import delta_sharing  # the official client (dev extra); imported here so the package never needs it

    with tempfile.TemporaryDirectory(prefix="gw-sharing-demo-") as scratch:
        state_url = f"sqlite:///{Path(scratch) / 'state.db'}"
        endpoint = f"http://127.0.0.1:{_free_port()}/delta-sharing"
        lakehouse = settings.lakehouse
        produced = {lakehouse.table_name(GOLD, m) for m in ("claims_by_state_month", "policies_in_force_by_month")}
        raw = yaml.safe_load(DEFAULT_SHAREPACK.read_text())
        raw["recipient"].append({"name": DEMO_RECIPIENT, "type": "D2O", "allowed_ips": ["127.0.0.1/32"]})
        next(s for s in raw["share"] if s["name"] == DEMO_TABLE[0])["recipients"].append(DEMO_RECIPIENT)
        pack_path = Path(scratch) / "gold_marts_demo.yaml"
        pack_path.write_text(yaml.safe_dump(raw, sort_keys=False))
        loaded = load_sharepack(pack_path)
        backend = SharingServerBackend(SharingState(state_url), lakehouse, endpoint, timedelta(days=1), produced)
        applied = reconcile(loaded.pack, backend, ActivationLinkStore(Path(scratch) / "profiles", "profile file"),
                            apply=True, locate=loaded.locate)
        if not applied.ok:
            raise RuntimeError(f"the shipped share pack did not apply: {applied.summary()}")
        profile = applied.activation_links[DEMO_RECIPIENT]
        env = {**os.environ, "GW_SHARING_STATE_URL": state_url, "GW_SHARING_ENDPOINT": endpoint,
               "GW_DELTA_ROOT": lakehouse.delta_root}
        port = endpoint.split(":")[2].split("/")[0]
        log_path = Path(scratch) / "server.log"
        with open(log_path, "wb") as log:
            server = subprocess.Popen([sys.executable, "-m", "guidewire_pipeline.sharing.server", "--port", port],
                                      stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            _wait_until_listening(endpoint, server, log_path)
            share, schema, table = DEMO_TABLE
            client = delta_sharing.SharingClient(str(profile))
            tables = sorted(f"{t.share}.{t.schema}.{t.name}" for t in client.list_all_tables())
            frame = delta_sharing.load_as_pandas(f"{profile}#{share}.{schema}.{table}")
            try:
                delta_sharing.SharingClient(str(applied.activation_links["partner-acme"])).list_shares()
                fenced = "partner-acme was NOT refused from loopback (allowed_ips not enforced?)"
            except Exception as exc:  # the client raises requests' HTTPError carrying the protocol's body
                fenced = f"partner-acme from 127.0.0.1: refused ({str(exc).splitlines()[0][:40]}...), as its allowed_ips say"
        finally:
            server.terminate()
            server.wait(timeout=15)
        return "\n".join([
            f"Delta Sharing: {applied.summary()}",
            f"Server {endpoint}; {DEMO_RECIPIENT} sees {', '.join(tables)}; {fenced}",
            f"Read {share}.{schema}.{table} with the official delta-sharing client: {len(frame)} rows; first rows:",
            frame.head(rows).to_string(index=False),
        ])


def _wait_until_listening(endpoint: str, server: subprocess.Popen, log_path: Path) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"{endpoint}/shares", timeout=1).close()
            return
        except urllib.error.HTTPError:  # 401 without a token: it listens
            return
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                raise RuntimeError(f"the sharing server did not start:\n{log_path.read_text()[-2000:]}") from None
            time.sleep(0.1)
