"""The sharing commands of ``guidewire-pipeline`` (registered through ``cli.COMMANDS``; no Dagster here):

- ``share-server``: start the local Delta Sharing server on the state the share pack writes;
- ``plan-shares``: read and validate the share pack, plan it against the live state, print the plan,
  write nothing. Exit code 0 when the plan can be applied, 1 when it is refused, 2 when the pack
  cannot be read or is invalid.
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import timedelta
from pathlib import Path

from guidewire_pipeline.lakehouse import GOLD, Lakehouse
from guidewire_pipeline.settings import Settings, load_settings
from guidewire_pipeline.sharing.server.state import STATE_URL_ENV

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 8080


def register(subparsers: argparse._SubParsersAction, settings: Settings) -> None:
    server = subparsers.add_parser("share-server", help="serve the shares of the share pack (Delta Sharing protocol)")
    _server_arguments(server, settings)
    server.set_defaults(handler=run_share_server)

    plan = subparsers.add_parser("plan-shares", help="plan the share pack against the live state; writes nothing")
    plan.add_argument("--sharepack", default=settings.sharepack, help="the pack (default: GW_SHAREPACK or the shipped one)")
    plan.add_argument("--delta-root", default=settings.delta_root, help="lakehouse root (default: GW_DELTA_ROOT)")
    plan.add_argument("--state-url", default=None, help=f"local server state (default: {STATE_URL_ENV} or SQLite)")
    plan.set_defaults(handler=run_plan_shares, catalog=settings.uc_catalog)


def _server_arguments(parser: argparse.ArgumentParser, settings: Settings) -> None:
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"address to listen on (default {DEFAULT_HOST})")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    parser.add_argument("--state-url", default=None,
                        help=f"SQLAlchemy URL of the state (default: {STATE_URL_ENV}, else SQLite at "
                        "~/.guidewire_pipeline/sharing/state.db)")
    parser.add_argument("--public-url", default=None,
                        help="URL recipients use, written in profile files (default: GW_SHARING_ENDPOINT, "
                        "else http://HOST:PORT/delta-sharing)")
    parser.add_argument("--delta-root", default=settings.delta_root, help="lakehouse root (default: GW_DELTA_ROOT)")
    parser.add_argument("--forwarded-allow-ips", default=None,
                        help="proxies whose X-Forwarded-For names the client address (default: none)")
    parser.set_defaults(catalog=settings.uc_catalog)


def run_share_server(args: argparse.Namespace) -> int:
    from guidewire_pipeline.sharing.server.serve import serve

    try:
        serve(args.host, args.port, args.state_url, Lakehouse(args.delta_root, args.catalog), args.public_url,
              forwarded_allow_ips=args.forwarded_allow_ips)
    except ValueError as exc:  # a setting the server cannot use: named by the message
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def main_share_server(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m guidewire_pipeline.sharing.server")
    _server_arguments(parser, load_settings())
    return run_share_server(parser.parse_args(argv))


def run_plan_shares(args: argparse.Namespace) -> int:
    """Print the plan; exit 0 (can apply), 1 (refused) or 2 (pack unreadable or invalid)."""
    from guidewire_pipeline.databricks_auth import DatabricksAuthError, auth_from_env
    from guidewire_pipeline.medallion.marts import load_marts
    from guidewire_pipeline.sharing.backends import SharingServerBackend, UnityCatalogBackend
    from guidewire_pipeline.sharing.reconciler import ActivationLinkStore, reconcile
    from guidewire_pipeline.sharing.server import DEFAULT_SHARING_ENDPOINT
    from guidewire_pipeline.sharing.server.state import SharingState
    from guidewire_pipeline.sharing.sharepack import DEFAULT_SHAREPACK, SharePackInvalid, load_sharepack

    try:
        loaded = load_sharepack(Path(args.sharepack) if args.sharepack else DEFAULT_SHAREPACK)
    except SharePackInvalid as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    lakehouse = Lakehouse(args.delta_root, args.catalog)
    produced = {lakehouse.table_name(GOLD, mart) for mart in load_marts()}
    try:
        auth = auth_from_env()
    except DatabricksAuthError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if auth is not None:
        backend = UnityCatalogBackend(auth.workspace_client(), produced)
    else:
        backend = SharingServerBackend(SharingState(args.state_url), lakehouse,
                                       os.environ.get("GW_SHARING_ENDPOINT") or DEFAULT_SHARING_ENDPOINT,
                                       timedelta(days=1), produced)
    result = reconcile(loaded.pack, backend, ActivationLinkStore("/nonexistent"), apply=False, locate=loaded.locate)
    print(f"Share pack {loaded.source} against {backend.description}\n")
    print(result.plan.to_markdown())
    return 1 if result.plan.blocked else 0
