"""``python -m benchmarks [NAME ...] [--quick]``: run every benchmark (``make bench``) or the named ones.

Each prints a table of figures with the ratio to a floor measured in the same run, and saves it
under benchmarks/results/. Figures, not pass/fail tests: the exit code is non-zero only when a
benchmark could not run at all.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
import traceback

from benchmarks.common import machine

BENCHMARKS = {
    "deep_clone": "1. Deep clone against the floor",
    "incremental": "2. Incremental cost: long history vs short",
    "sensor_tick": "3. Sensor tick on a 2,500-table manifest",
    "ray_overhead": "4. Ray: workers, no-op cost, start vs connect",
    "memory": "5. Memory: one table of 2 GB",
    "e2e": "6. End to end: guidewire_job per step",
    "steady_state": "7. Steady state: 2,500 tables, 300 advanced, raw to silver by the sensors",
    "shallow": "Shallow vs deep on S3, against the list-and-footer floor",
    "sharing_load": "Delta Sharing server: 50 readers for 60 s against one share",
    "medallion": "Medallion on the local engine: silver vs history, first-load memory, no-op step",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("names", nargs="*", choices=[*BENCHMARKS, []], metavar="NAME",
                        help=f"benchmarks to run (default: all): {', '.join(BENCHMARKS)}")
    parser.add_argument("--quick", action="store_true", help="smaller data, for a smoke run")
    args = parser.parse_args(argv)
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    print(f"Machine: {machine()}\nCommand: python -m benchmarks {' '.join(sys.argv[1:])}".rstrip())
    failed = []
    started = time.perf_counter()
    for name in args.names or list(BENCHMARKS):
        print(f"\n##### {BENCHMARKS[name]} ({name})", flush=True)
        began = time.perf_counter()
        try:
            importlib.import_module(f"benchmarks.{name}").run(quick=args.quick)
        except Exception:  # one benchmark's failure must not hide the others' figures
            traceback.print_exc()
            failed.append(name)
        print(f"  ({name}: {time.perf_counter() - began:.0f} s)", flush=True)
    print(f"\nAll done in {time.perf_counter() - started:.0f} s" + (f"; could not run: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
