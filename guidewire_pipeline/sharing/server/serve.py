"""Start the Delta Sharing server: uvicorn serving ``SharingServer.app()`` (no Dagster here).

``serve(...)`` blocks until the process is stopped. It serves whatever the state database holds, so
a ``delta_sharing_job`` applied while it runs takes effect on the next request.
"""

from __future__ import annotations

import logging
import os

from guidewire_pipeline.lakehouse import Lakehouse
from guidewire_pipeline.sharing.server.app import SharingServer
from guidewire_pipeline.sharing.server.signing import DEFAULT_URL_TTL_SECONDS
from guidewire_pipeline.sharing.server.state import SharingState

log = logging.getLogger("guidewire_pipeline.sharing.server")
ENDPOINT_ENV = "GW_SHARING_ENDPOINT"
URL_TTL_ENV = "GW_SHARING_URL_TTL_SECONDS"


def public_url_for(host: str, port: int) -> str:
    """``GW_SHARING_ENDPOINT`` (what profile files name), else ``http://<host>:<port>/delta-sharing``."""
    return os.environ.get(ENDPOINT_ENV) or f"http://{host}:{port}/delta-sharing"


def url_ttl_from_env() -> int:
    value = os.environ.get(URL_TTL_ENV) or str(DEFAULT_URL_TTL_SECONDS)
    if not value.isdigit() or int(value) <= 0:
        raise ValueError(f"{URL_TTL_ENV}={value!r}: give the data file URL lifetime in seconds, e.g. 900")
    return int(value)


def serve(host: str, port: int, state_url: str | None, lakehouse: Lakehouse, public_url: str | None = None,
          url_ttl_seconds: int | None = None, forwarded_allow_ips: str | None = None) -> None:
    """Serve until stopped. ``forwarded_allow_ips``: proxies whose X-Forwarded-For is trusted for the
    client address that ``allowed_ips`` checks (none by default: a client cannot claim another address)."""
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    state = SharingState(state_url)
    server = SharingServer(state, lakehouse, public_url or public_url_for(host, port),
                           url_ttl_seconds or url_ttl_from_env())
    log.info("Delta Sharing server on http://%s:%d%s, public URL %s, state %s, tables under %s (catalog %s)",
             host, port, server.prefix, server.public_url, state.description, lakehouse.delta_root, lakehouse.catalog)
    uvicorn.run(server.app(), host=host, port=port, access_log=False, log_level="info",
                proxy_headers=bool(forwarded_allow_ips), forwarded_allow_ips=forwarded_allow_ips or "")
