"""Bronze and silver with the Delta root on S3 (moto's server): the notebooks take the S3 options from
the AWS_* variables they inherit, never from parameters, so no secret reaches Pipes or the event log."""

from __future__ import annotations

import os
from typing import Any

import dagster as dg
import pyarrow as pa
from deltalake import DeltaTable

from guidewire_pipeline.cda.storage import Location
from guidewire_pipeline.raw.partitions import GUIDEWIRE_TABLES
from guidewire_pipeline.settings import Settings
from tests.medallion.raw_tables import DELETE, INSERT, UPDATE, append_raw_batch, change_rows
from tests.medallion.steps import materialize_bronze_silver

BUSINESS = [pa.field("name", pa.string())]


def change(id_: int, seq: str, op: int, name: str | None = None) -> dict[str, Any]:
    return {"id": id_, "seq": seq, "op": op, "name": name}


def test_bronze_and_silver_on_s3(s3_bucket: str):
    root = f"s3://{s3_bucket}/delta"
    settings = Settings(
        manifest_uri="unused", delta_root=root, sharepack=None, ray_address=None, databricks_host=None
    )
    batches = [
        [change(1, "01", INSERT, "a"), change(2, "02", INSERT, "b")],
        [change(1, "03", UPDATE, "a2"), change(2, "04", DELETE), change(3, "05", INSERT, "c")],
    ]
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(GUIDEWIRE_TABLES, ["s3_table"])
        for tick, batch in enumerate(batches):
            append_raw_batch(root, "s3_table", change_rows(batch, BUSINESS), 1_700_000_000_000 + tick)
            result = materialize_bronze_silver(settings, instance, partition_key="s3_table")
            assert result.success
        events = [str(e) for e in instance.all_logs(result.run_id)]
    silver_uri = f"{root}/silver/s3_table"
    silver = DeltaTable(silver_uri, storage_options=Location.parse(silver_uri).delta_storage_options())
    current = [r for r in silver.to_pyarrow_table().to_pylist() if not r["gw_deleted"]]  # tombstones hidden
    assert sorted((r["id"], r["name"]) for r in current) == [
        (1, "a2"),
        (3, "c"),
    ]
    secret = os.environ["AWS_SECRET_ACCESS_KEY"]
    assert not any(secret in event for event in events)
