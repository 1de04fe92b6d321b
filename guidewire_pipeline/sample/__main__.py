"""``python -m guidewire_pipeline.sample generate|advance --out DIR ...``: see generator.py."""

from __future__ import annotations

import argparse
import sys
import time

from guidewire_pipeline.sample.generator import advance, generate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m guidewire_pipeline.sample", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    gen = commands.add_parser("generate", help="write a fresh synthetic CDA tree")
    gen.add_argument("--out", required=True, help="local folder, file:// or s3:// URI")
    gen.add_argument("--tables", type=int, default=6, help="tables with data (the first six are ClaimCenter/PolicyCenter-like)")
    gen.add_argument("--batches", type=int, default=4, help="committed batches per table")
    gen.add_argument("--rows", type=int, default=200, help="change rows per batch")
    gen.add_argument("--files-per-batch", type=int, default=2)
    gen.add_argument("--seed", type=int, default=7)
    adv = commands.add_parser("advance", help="commit in-flight folders, add batches, move the watermarks")
    adv.add_argument("--out", required=True)
    adv.add_argument("--batches", type=int, default=1)
    adv.add_argument("--rows", type=int, default=None)
    args = parser.parse_args(argv)

    started = time.monotonic()
    if args.command == "generate":
        manifest = generate(args.out, tables=args.tables, batches=args.batches, rows=args.rows,
                            seed=args.seed, files_per_batch=args.files_per_batch, progress=print)
    else:
        manifest = advance(args.out, batches=args.batches, rows=args.rows, progress=print)
    records = sum(e["totalProcessedRecordsCount"] for e in manifest.values())
    print(f"{args.command}: {len(manifest)} tables, {records} committed change rows, "
          f"manifest at {args.out.rstrip('/')}/manifest.json ({time.monotonic() - started:.1f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
