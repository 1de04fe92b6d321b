"""2. Incremental cost: what one new CDA folder costs on a table with a long history, against a table
with a short one, on local disk and on S3 (moto behind the counting proxy).

Tables: "long" has H committed folders already loaded (H = 1,000; ``--quick``: 100), "short" has 1.
Each then gets 1 new committed folder. Timed: ``sync_tables`` for that one table (the engine of a
run: read the savepoint, list from the watermark's folder, load, commit), Ray already not
needed (the work is small). Requests are counted at the S3 server. Goals: time(long) / time(short)
<= 1.5, and LIST calls per table per run that do not grow with history.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

from benchmarks.common import (
    S3TestServer,
    log,
    print_table,
    rewrite_manifest_paths,
    save_results,
    temp_dir,
)

CYCLES = 10  # consecutive runs, each with one new folder: one full checkpoint cycle (interval 10)


def _load(cda: Path, delta_root: Path) -> str:
    from guidewire_pipeline.cda.manifest import read_manifest
    from guidewire_pipeline.cda.sync import sync_tables

    manifest = read_manifest(str(cda / "manifest.json"))
    entry = next(e for e in manifest.entries.values() if e.total_processed_records)
    [result] = sync_tables([entry], str(delta_root))
    if not result.ok:
        raise RuntimeError(result.error)
    return entry.table


def _cycles(cda_root: str, table: str, delta_root: str, s3: S3TestServer | None) -> list[dict[str, Any]]:
    """CYCLES times: CDA commits one new folder, then one engine run loads it."""
    from guidewire_pipeline.cda.manifest import read_manifest
    from guidewire_pipeline.cda.sync import sync_tables
    from guidewire_pipeline.sample.generator import advance

    runs = []
    for _ in range(CYCLES):
        advance(cda_root, batches=0)  # the in-flight folder is committed: exactly one new folder
        if s3:
            s3.reset()
        started = time.perf_counter()
        entry = read_manifest(f"{cda_root}/manifest.json").entries[table]
        [result] = sync_tables([entry], delta_root)
        seconds = time.perf_counter() - started
        if not result.ok or result.batches_applied != 1:
            raise RuntimeError(f"expected one new batch, got {result.status} {result.batches_applied}: {result.error}")
        counts = s3.counts() if s3 else {}
        runs.append({"s": seconds, **{k: counts.get(k, 0) for k in ("LIST", "GET", "HEAD", "PUT")},
                     "delta_version": result.delta_version})
    return runs


def _summary(storage: str, name: str, history: int, runs: list[dict[str, Any]]) -> dict[str, Any]:
    row: dict[str, Any] = {"storage": storage, "table": name, "history": history,
                           "median_s": statistics.median(r["s"] for r in runs),
                           "mean_s": statistics.fmean(r["s"] for r in runs), "max_s": max(r["s"] for r in runs),
                           "versions": f"{runs[0]['delta_version']}-{runs[-1]['delta_version']}"}
    if storage != "local":
        for kind in ("LIST", "GET", "HEAD", "PUT"):
            values = [r[kind] for r in runs]
            row[kind] = f"{min(values)}-{max(values)}" if min(values) != max(values) else str(values[0])
    return row


def run(quick: bool = False, history: int | None = None) -> dict[str, Any]:
    from guidewire_pipeline.sample.generator import generate

    history = history or (100 if quick else 1000)
    figures: list[dict[str, Any]] = []
    with temp_dir("incremental") as tmp:
        prepared: dict[str, tuple[Path, Path, str]] = {}
        for name, batches in (("long", history), ("short", 1)):
            cda, delta = tmp / f"cda-{name}", tmp / f"delta-{name}"
            started = time.perf_counter()
            generate(str(cda), tables=1, batches=batches, rows=40, seed=3, files_per_batch=1)
            table = _load(cda, delta)
            log(f"{name}: {batches} folders generated and loaded in {time.perf_counter() - started:.0f} s")
            prepared[name] = (cda, delta, table)

        for name, (cda, delta, table) in prepared.items():
            cda_copy, delta_copy = tmp / f"local-cda-{name}", tmp / f"local-delta-{name}"
            shutil.copytree(cda, cda_copy)
            shutil.copytree(delta, delta_copy)
            (cda_copy / "manifest.json").write_bytes(rewrite_manifest_paths(cda / "manifest.json", str(cda), str(cda_copy)))
            runs = _cycles(str(cda_copy), table, str(delta_copy), None)
            figures.append(_summary("local", name, history if name == "long" else 1, runs))

        with S3TestServer() as s3:
            import boto3

            bucket = s3.bucket()
            for name, (cda, delta, table) in prepared.items():
                cda_uri, delta_root = f"s3://{bucket}/cda-{name}", f"s3://{bucket}/delta-{name}"
                s3.upload_tree(cda, cda_uri)
                boto3.client("s3", endpoint_url=s3.direct_endpoint).put_object(
                    Bucket=bucket, Key=f"cda-{name}/manifest.json",
                    Body=rewrite_manifest_paths(cda / "manifest.json", str(cda), cda_uri))
                s3.upload_tree(delta, delta_root)
                runs = _cycles(cda_uri, table, delta_root, s3)
                figures.append(_summary("S3 (moto)", name, history if name == "long" else 1, runs))
    for storage in ("local", "S3 (moto)"):
        long_, short = (next(f for f in figures if f["storage"] == storage and f["table"] == t) for t in ("long", "short"))
        long_["x_short_median"] = long_["median_s"] / short["median_s"]
        long_["x_short_mean"] = long_["mean_s"] / short["mean_s"]
    print_table(f"Incremental cost of 1 new folder: {history} folders of history vs 1 "
                f"({CYCLES} consecutive runs each; requests per run, min-max)", figures,
                ["storage", "table", "history", "median_s", "mean_s", "max_s", "x_short_median", "x_short_mean",
                 "LIST", "GET", "HEAD", "PUT", "versions"])
    payload = {"history": history, "cycles": CYCLES, "figures": figures}
    save_results("incremental", payload)
    return payload


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--history", type=int, default=None)
    args = parser.parse_args()
    run(quick=args.quick, history=args.history)
