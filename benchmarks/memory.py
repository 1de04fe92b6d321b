"""5. Memory: one table with at least 2 GB of parquet across its folders (``--quick``: about 300 MB).

The table's first folder is generated, then hard-linked into further committed folders (same bytes,
new timestamps), so that 2 GB costs seconds to prepare. Timed and sampled: one deep engine run in a
fresh process; peak RSS of that process and every descendant (Ray's raylet, GCS and workers
included), sampled every 100 ms. Goal: peak < 1 GB, by streaming record batches.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from benchmarks.common import TreeRssSampler, dir_bytes, engine_run, log, print_table, save_results, temp_dir


def _prepare(root: Path, rows: int, folders: int) -> None:
    from guidewire_pipeline.sample.generator import generate

    generate(str(root), tables=1, batches=1, rows=rows, seed=6, files_per_batch=4)
    manifest = json.loads((root / "manifest.json").read_text())
    table = next(t for t, e in manifest.items() if e["totalProcessedRecordsCount"])
    entry = manifest[table]
    first = int(entry["lastSuccessfulWriteTimestamp"])
    [fingerprint] = [p for p in (root / table).iterdir() if (p / str(first)).exists()]
    source = fingerprint / str(first)
    for k in range(1, folders):
        target = fingerprint / str(first + k)  # 1 ms apart: below the in-flight folder
        target.mkdir()
        for part in source.glob("*.parquet"):
            os.link(part, target / part.name)
    entry["lastSuccessfulWriteTimestamp"] = str(first + folders - 1)
    entry["totalProcessedRecordsCount"] *= folders
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2))


def _measured(manifest: str, delta_root: str, **kwargs: Any) -> dict[str, Any]:
    box: dict[str, TreeRssSampler] = {}

    def start(pid: int) -> None:
        box["sampler"] = TreeRssSampler(pid).__enter__()

    result = engine_run(manifest, delta_root, "deep", pid_callback=start, **kwargs)
    box["sampler"].__exit__(None, None, None)
    return {**result, "peak_rss_mb": box["sampler"].peak / 2**20, "peak_pss_mb": box["sampler"].peak_pss / 2**20}


def run(quick: bool = False) -> dict[str, Any]:
    rows, folders = (300_000, 4) if quick else (700_000, 40)
    with temp_dir("memory") as tmp:
        _prepare(tmp / "cda", rows, folders)
        committed = dir_bytes(tmp / "cda") * folders // (folders + 1)  # the in-flight folder is the same size
        log(f"{committed / 1e9:.2f} GB of parquet in {folders} committed folders (plus the in-flight one)")
        manifest = str(tmp / "cda" / "manifest.json")
        figures = []
        for name, kwargs in (("local Ray, 2 workers", {"driver_max_bytes": 0}),
                             ("driver threads (driver_max_bytes above the table)", {"driver_max_bytes": 2**40})):
            result = _measured(manifest, str(tmp / f"delta-{len(figures)}"), num_cpus=2, **kwargs)
            figures.append({"run": name, "peak_rss_mb": result["peak_rss_mb"], "peak_pss_mb": result["peak_pss_mb"],
                            "run_s": result["run_s"],
                            "ray_start_s": result["ray_start_s"], "rows": result["rows_added"],
                            "MB_per_s": committed / 1e6 / max(result["run_s"] - result["ray_start_s"], 1e-9)})
            log(f"{name}: peak {result['peak_rss_mb']:.0f} MB")
        print_table(f"Memory: one table, {committed / 1e9:.2f} GB parquet, peak RSS of the whole process tree",
                    figures, ["run", "peak_rss_mb", "peak_pss_mb", "run_s", "ray_start_s", "MB_per_s", "rows"])
        payload = {"parquet_gb": committed / 1e9, "folders": folders, "figures": figures}
        save_results("memory", payload)
        return payload


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    run(quick=parser.parse_args().quick)
