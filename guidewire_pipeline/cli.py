"""``guidewire-pipeline``: the command line.

Each command lives with its domain and registers itself here through ``COMMANDS``: a module with
``register(subparsers, settings)`` that adds its parser and sets ``handler`` (a function of the
parsed arguments returning the exit code). Commands call the same engine as the Dagster UI.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from guidewire_pipeline.settings import load_settings

# Modules that each define ``register(subparsers, settings)``.
COMMANDS = (
    "guidewire_pipeline.status",
    "guidewire_pipeline.runs",
    "guidewire_pipeline.admin",
    "guidewire_pipeline.maintenance",
    "guidewire_pipeline.sharing.cli",
)


def build_parser() -> argparse.ArgumentParser:
    settings = load_settings()
    parser = argparse.ArgumentParser(prog="guidewire-pipeline", description="Guidewire CDA to a Delta lakehouse: the same engine as the Dagster UI, from a terminal.")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for module in COMMANDS:
        importlib.import_module(module).register(subparsers, settings)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.handler(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
