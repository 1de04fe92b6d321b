"""The other Python/Ray/delta-rs clone tool (databricks-industry-solutions/guidewire), run side by side.

``run_other_tool`` runs its ``Processor`` (every manifest table, one Ray task each, a shallow Delta
table per table) in a fresh process of its own virtualenv against our S3 data, and returns its
times and what it reports; ``inspect_target`` then counts, from the Delta logs it wrote, the files
and rows it committed and how many come from folders above the manifest watermark (in-flight data).
Nothing of the tool is in this repository: it lives in a scratch checkout and venv under /tmp.

Set-up (by hand; CI never runs benchmarks). The snapshot of databricks-industry-solutions/guidewire
that the ``fetch`` tool brings here is the older Scala/Spark code; its Python package (commit
71d6733, version 0.0.4) is, file for file, the branch ``dev`` of laurencewells/guidewire-cda-delta-clone
(the fork it was merged from), which ``fetch`` brings whole::

    # fetch github:laurencewells/guidewire-cda-delta-clone  -> /work/.mirror/laurencewells+guidewire-cda-delta-clone/repo
    git clone --branch dev /work/.mirror/laurencewells+guidewire-cda-delta-clone/repo /tmp/other_tool
    python3 -m venv /tmp/other_tool_venv
    /tmp/other_tool_venv/bin/pip install pyarrow==21.0.0 "ray[default]==2.45.0" deltalake==1.1.4 tqdm==4.67.0
    export GW_OTHER_TOOL_CHECKOUT=/tmp/other_tool GW_OTHER_TOOL_PYTHON=/tmp/other_tool_venv/bin/python
    python -m benchmarks shallow

How it is pointed at the data (its README, main.py and processor.py): environment variables only.
``AWS_MANIFEST_LOCATION`` is the manifest's folder as ``bucket/prefix`` (no ``s3://``: its pyarrow
filesystem refuses URIs); ``AWS_ENDPOINT_URL``/``AWS_REGION``/``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``
serve both source and target; ``AWS_TARGET_S3_BUCKET`` + ``AWS_TARGET_S3_PREFIX`` is where the
tables go (``<prefix>/<table>``); ``SHOW_TABLE_PROGRESS=0`` turns its progress bars off.

``python -m benchmarks.other_tool --checkout PATH --python PATH s3://bucket/cda/manifest.json
s3://bucket/other-tool`` runs it once with the AWS_* variables of this shell and prints the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

S3_VARIABLES = ("AWS_ENDPOINT_URL", "AWS_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
MARKER = "OTHER_TOOL_RESULT "

# Runs in the tool's venv. Ray is started first, with the tool's own arguments plus address="local"
# (a new local Ray, never one found on the machine), only to time its start apart; the tool's own
# ray.init in Processor.run is then a no-op, and Processor.run shuts Ray down at its end.
RUNNER = r"""
import json, time
started = time.perf_counter()
import ray
from guidewire.processor import Processor
imported = time.perf_counter()
processor = Processor(target_cloud="aws", table_names=None, parallel=True)  # reads the manifest
read = time.perf_counter()
ray.init(address="local", ignore_reinit_error=True, log_to_driver=True)
ray_ready = time.perf_counter()
processor.run()
finished = time.perf_counter()
results = [r for r in processor.results if r is not None]
errors = [e for r in results for e in (r.errors or [])]
print("OTHER_TOOL_RESULT " + json.dumps({
    "import_s": imported - started, "run_s": finished - imported, "manifest_s": read - imported,
    "ray_start_s": ray_ready - read,
    "tables": len(processor.table_names), "tables_without_result": len(processor.results) - len(results),
    "statuses": {"ok": sum(not r.errors for r in results), "error": sum(bool(r.errors) for r in results)},
    "folders": sum(len(r.watermarks) for r in results),
    "folders_above_watermark": sum(w > int(r.manifest_watermark) for r in results for w in r.watermarks),
    "manifest_records": sum(int(r.manifest_records or 0) for r in results),
    "errors": errors[:3], "error_count": len(errors),
    "warning_count": sum(len(r.warnings or []) for r in results),
}), flush=True)
"""


def tool_environment(manifest_uri: str, target_uri: str, env: dict[str, str]) -> dict[str, str]:
    """The tool's settings for our ``s3://bucket/prefix/manifest.json`` and ``s3://bucket/prefix``."""
    if not (manifest_uri.startswith("s3://") and target_uri.startswith("s3://")):
        raise ValueError("the other tool reads and writes S3 only: give s3:// URIs")
    manifest_folder = manifest_uri.removeprefix("s3://").removesuffix("/manifest.json")
    bucket, _, prefix = target_uri.removeprefix("s3://").strip("/").partition("/")
    return {**env, "AWS_MANIFEST_LOCATION": manifest_folder, "AWS_TARGET_S3_BUCKET": bucket,
            "AWS_TARGET_S3_PREFIX": prefix, "DELTA_TARGET_CLOUD": "aws", "SHOW_TABLE_PROGRESS": "0"}


def run_other_tool(checkout: Path, python: Path, manifest_uri: str, target_uri: str,
                   env: dict[str, str]) -> dict[str, Any]:
    """One full run of the tool in a fresh process; ``process_s`` is its wall time from outside,
    ``run_s`` from the manifest read to the last commit (Ray's start included, ``ray_start_s``)."""
    child_env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "RAY_ADDRESS")}
    child_env.update(tool_environment(manifest_uri, target_uri, env), PYTHONPATH=str(checkout))
    started = time.perf_counter()
    completed = subprocess.run([str(python), "-c", RUNNER], cwd=checkout, env=child_env,
                               capture_output=True, text=True, timeout=3600)
    process_s = time.perf_counter() - started
    lines = [line for line in completed.stdout.splitlines() if line.startswith(MARKER)]
    if completed.returncode != 0 or not lines:
        raise RuntimeError(f"the other tool failed ({completed.returncode}):\n{completed.stderr[-3000:]}")
    return {"process_s": process_s, **json.loads(lines[-1].removeprefix(MARKER))}


def inspect_target(manifest_uri: str, target_uri: str, threads: int = 16) -> dict[str, Any]:
    """Files and rows in the tool's Delta tables (rows from the parquet footers: delta-rs does not
    read its absolute ``s3://`` add paths), and those from folders above the manifest watermark."""
    import pyarrow as pa
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    from guidewire_pipeline.cda.manifest import read_manifest
    from guidewire_pipeline.cda.shallow_actions import read_parquet_footer
    from guidewire_pipeline.cda.storage import Location

    target = Location.parse(target_uri)
    files: list[tuple[str, int, bool]] = []  # (uri, size, from a folder above the watermark)
    for entry in read_manifest(manifest_uri).entries.values():
        location = target.join(entry.table)
        try:
            table = DeltaTable(location.delta_uri, storage_options=location.delta_storage_options())
        except TableNotFoundError:
            continue
        actions = pa.table(table.get_add_actions(flatten=True)).to_pydict()
        for path, size in zip(actions["path"], actions["size_bytes"], strict=True):
            folder = path.rsplit("/", 2)[-2]
            files.append((path, size, folder.isdigit() and int(folder) > entry.manifest_watermark))

    def rows(file: tuple[str, int, bool]) -> int:
        return read_parquet_footer(Location.parse(file[0]), file[1])[1].num_rows if file[1] else 0

    with ThreadPoolExecutor(threads) as pool:
        counts = list(pool.map(rows, files))
    return {"files": len(files), "rows": sum(counts), "empty_files": sum(1 for f in files if not f[1]),
            "in_flight_files": sum(1 for f in files if f[2]),
            "in_flight_rows": sum(n for f, n in zip(files, counts, strict=True) if f[2])}


def setup_from_env() -> tuple[tuple[Path, Path] | None, str]:
    """(checkout, python) from GW_OTHER_TOOL_CHECKOUT and GW_OTHER_TOOL_PYTHON when they point at a
    setup that imports the tool, else None; and why, in words."""
    checkout, python = os.environ.get("GW_OTHER_TOOL_CHECKOUT"), os.environ.get("GW_OTHER_TOOL_PYTHON")
    if not (checkout and python):
        return None, "GW_OTHER_TOOL_CHECKOUT and GW_OTHER_TOOL_PYTHON are not both set"
    if not (Path(checkout) / "guidewire" / "processor.py").is_file():
        return None, f"{checkout} has no guidewire/processor.py"
    probe = subprocess.run([python, "-c", "import guidewire.processor"], cwd=checkout, capture_output=True,
                           text=True, timeout=300, env={**os.environ, "PYTHONPATH": checkout})
    if probe.returncode != 0:
        return None, f"{python} cannot import the tool: {probe.stderr.strip().splitlines()[-1:]}"
    return (Path(checkout), Path(python)), f"the other tool from {checkout} with {python}"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.other_tool", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkout", type=Path, required=True, help="the tool's checkout (has guidewire/)")
    parser.add_argument("--python", type=Path, required=True, help="the python of the tool's venv")
    parser.add_argument("manifest", help="s3://bucket/prefix/manifest.json")
    parser.add_argument("target", help="s3://bucket/prefix for the tool's Delta tables")
    args = parser.parse_args()
    env = {k: os.environ[k] for k in S3_VARIABLES if k in os.environ}
    result = run_other_tool(args.checkout, args.python, args.manifest, args.target, env)
    print(json.dumps({**result, **inspect_target(args.manifest, args.target)}, indent=2))


if __name__ == "__main__":
    main()
