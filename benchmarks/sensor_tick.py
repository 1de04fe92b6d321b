"""3. Sensor tick on a 2,500-table manifest, on S3 (moto behind the counting proxy) and local disk.

Ticks of ``evaluate_manifest`` (the sensor's logic) on a Dagster instance holding the 2,500 table
partitions: the first tick (every table new), an unchanged manifest, and a manifest with 10% of the
tables advanced. Requests are counted at the S3 server. Goals: unchanged < 50 ms with no listing;
10% advanced < 1 s. (The sensor lists nothing by design: a changed manifest costs one HEAD and one
GET, whatever the number of tables.)
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

from benchmarks.common import S3TestServer, print_table, save_results, temp_dir

TICKS = 5


def manifest_document(tables: int, bump: set[int] | None = None) -> bytes:
    base = 1_700_000_000_000
    document = {}
    for i in range(tables):
        watermark = base + (900_000 if bump and i in bump else 0)
        document[f"cc_table_{i:04d}"] = {
            "lastSuccessfulWriteTimestamp": str(watermark),
            "totalProcessedRecordsCount": 1000 + i,
            "dataFilesPath": f"s3://cda-bucket/cda/cc_table_{i:04d}/",
            "schemaHistory": {f"{i:032x}": str(base - 60_000)},
        }
    return json.dumps(document, indent=2).encode()


def _tick(instance: Any, source: Any, cursor: str | None) -> tuple[float, Any]:
    import dagster as dg

    from guidewire_pipeline.raw.sensors import evaluate_manifest

    context = dg.build_sensor_context(instance=instance, cursor=cursor)
    started = time.perf_counter()
    result = evaluate_manifest(context, source)
    return time.perf_counter() - started, result


def _scenario(storage: str, manifest_uri: str, write: Any, tables: int, s3: S3TestServer | None) -> list[dict[str, Any]]:
    import dagster as dg

    from guidewire_pipeline.raw.partitions import GUIDEWIRE_TABLES
    from guidewire_pipeline.raw.resources import CdaSource

    rows = []
    source = CdaSource(manifest_uri=manifest_uri)
    with dg.instance_for_test() as instance:
        write(manifest_document(tables))
        if s3:
            s3.reset()
        seconds, first = _tick(instance, source, None)
        counts = s3.counts() if s3 else {}
        instance.add_dynamic_partitions(GUIDEWIRE_TABLES, [f"cc_table_{i:04d}" for i in range(tables)])
        rows.append({"storage": storage, "tick": "first (all tables new)", "ms": seconds * 1000,
                     "runs": len(first.run_requests or []), **_counts(counts)})
        cursor = first.cursor
        times = []
        if s3:
            s3.reset()
        for _ in range(TICKS):
            seconds, unchanged = _tick(instance, source, cursor)
            times.append(seconds)
        counts = s3.counts() if s3 else {}
        rows.append({"storage": storage, "tick": f"unchanged (median of {TICKS})", "ms": statistics.median(times) * 1000,
                     "runs": 0, **_counts(counts, per=TICKS)})
        times = []
        for repeat in range(TICKS):
            write(manifest_document(tables, bump=set(range(repeat, tables, 10))))
            if s3:
                s3.reset()
            seconds, advanced = _tick(instance, source, cursor)
            times.append(seconds)
            counts = s3.counts() if s3 else {}
        rows.append({"storage": storage, "tick": f"10% advanced (median of {TICKS})", "ms": statistics.median(times) * 1000,
                     "runs": len(advanced.run_requests or []), **_counts(counts)})
    return rows


def _counts(counts: dict[str, int], per: int = 1) -> dict[str, Any]:
    return {k: (counts.get(k, 0) / per if per > 1 else counts.get(k, 0)) for k in ("LIST", "GET", "HEAD")}


def run(quick: bool = False, tables: int = 2500) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    with temp_dir("sensor") as tmp:
        local = Path(tmp) / "manifest.json"
        rows += _scenario("local", str(local), local.write_bytes, tables, None)
        with S3TestServer() as s3:
            import boto3

            bucket = s3.bucket()
            client = boto3.client("s3", endpoint_url=s3.direct_endpoint)
            rows += _scenario("S3 (moto)", f"s3://{bucket}/cda/manifest.json",
                              lambda body: client.put_object(Bucket=bucket, Key="cda/manifest.json", Body=body),
                              tables, s3)
    size_mb = len(manifest_document(tables)) / 1e6
    print_table(f"Sensor tick, {tables}-table manifest ({size_mb:.1f} MB, pretty-printed)", rows,
                ["storage", "tick", "ms", "runs", "LIST", "GET", "HEAD"])
    payload = {"tables": tables, "manifest_mb": size_mb, "figures": rows}
    save_results("sensor_tick", payload)
    return payload


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--tables", type=int, default=2500)
    args = parser.parse_args()
    run(quick=args.quick, tables=args.tables)
