"""``guidewire-pipeline``: the command line.

- ``status``: per-table manifest and Delta state (``--json`` for machines).
"""

from __future__ import annotations

import argparse
import json
import sys

from guidewire_pipeline.cda.manifest import ManifestError, read_manifest
from guidewire_pipeline.settings import load_settings
from guidewire_pipeline.status import all_statuses, format_table


def main(argv: list[str] | None = None) -> int:
    settings = load_settings()
    parser = argparse.ArgumentParser(prog="guidewire-pipeline")
    commands = parser.add_subparsers(dest="command", required=True)
    status = commands.add_parser("status", help="per-table watermarks, pending batches, lag and health")
    status.add_argument("--manifest", default=settings.manifest_uri, help="manifest URI (default: GW_MANIFEST_URI)")
    status.add_argument("--delta-root", default=settings.delta_root, help="Delta root (default: GW_DELTA_ROOT)")
    status.add_argument("--json", action="store_true", help="one JSON object per table, as a list")
    status.add_argument("--no-rows", action="store_true", help="skip counting pending rows (no footer reads)")
    args = parser.parse_args(argv)

    try:
        manifest = read_manifest(args.manifest)
    except ManifestError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    statuses = all_statuses(manifest, args.delta_root, count_pending_rows=not args.no_rows)
    if args.json:
        print(json.dumps([s.to_json() for s in statuses], indent=2))
    else:
        print(format_table(statuses))
    return 1 if any(s.health == "error" for s in statuses) else 0


if __name__ == "__main__":
    sys.exit(main())
