"""Build raw CDA Delta tables the way the raw layer's v2 contract says (deep tables): every row carries
its CDA folder in ``gw_batch_ts_ms`` and ``gw_fingerprint``, one commit per batch, custom metadata
``gw_watermark``, app transaction ``guidewire-cda`` = watermark, change data feed on, append-only.
Plus the change-row helpers the silver tests share."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
from deltalake import CommitProperties, Transaction, write_deltalake

from guidewire_pipeline.cda.storage import Location
from guidewire_pipeline.sample.generator import CDC_SCHEMA

CDC_FIELDS = CDC_SCHEMA  # the change columns exactly as the sample generator writes them

INSERT, DELETE, UPDATE, INSERT_2 = 0, 1, 4, 2


def append_raw_batch(
    delta_root: Path | str, table: str, rows: pa.Table, watermark: int, fingerprint: str = "100"
) -> None:
    """Append one CDA batch to ``<delta_root>/raw/<table>`` as one commit (new nullable columns merge in).
    ``delta_root`` may be an s3:// URI (AWS_* variables)."""
    uri = f"{str(delta_root).rstrip('/')}/raw/{table}"
    rows = rows.append_column("gw_batch_ts_ms", pa.array([watermark] * rows.num_rows, pa.int64()))
    rows = rows.append_column("gw_fingerprint", pa.array([fingerprint] * rows.num_rows, pa.string()))
    write_deltalake(
        uri,
        rows,
        mode="append",
        schema_mode="merge",
        storage_options=Location.parse(uri).delta_storage_options(),
        configuration={"delta.enableChangeDataFeed": "true", "delta.appendOnly": "true"},
        commit_properties=CommitProperties(
            custom_metadata={"gw_watermark": str(watermark), "gw_fingerprint": fingerprint},
            app_transactions=[Transaction("guidewire-cda", watermark)],
        ),
    )


def change_rows(changes: list[dict[str, Any]], business: list[pa.Field]) -> pa.Table:
    """Change rows from dicts with ``id``, ``seq`` (hex string), ``op`` and business values."""
    schema = pa.schema([pa.field("id", pa.int64()), *business, *CDC_FIELDS])
    columns: dict[str, list[Any]] = {name: [] for name in schema.names}
    for change in changes:
        seq_hex = change["seq"]
        columns["id"].append(change["id"])
        for f in business:
            columns[f.name].append(change.get(f.name))
        columns["gwcbi___seqval_hex"].append(seq_hex)
        columns["gwcbi___operation"].append(change["op"])
        columns["gwcbi___connector_ts_ms"].append(1_700_000_000_000 + int(seq_hex, 16) % 10_000)
        columns["gwcbi___payload_ts_ms"].append(1_700_000_000_000 + int(seq_hex, 16) % 10_000)
        columns["gwcbi___lsn"].append(int(seq_hex, 16) % 2**62)
        columns["gwcbi___seqval"].append(int(seq_hex, 16) % 2**62)
        columns["gwcbi___tx_id"].append(int(seq_hex, 16) % 1000)
    return pa.table(columns, schema=schema)


def reference_current_state(
    all_raw_rows: list[dict[str, Any]], value_columns: list[str]
) -> dict[int, dict[str, Any]]:
    """Independent plain-Python MERGED output: per id the change with the largest hex sequence (as a
    number; on a tie the later batch) among operations 0, 1, 2 and 4, present unless it is a delete."""
    latest: dict[int, tuple[int, int, dict[str, Any]]] = {}
    for order, row in enumerate(all_raw_rows):
        if row["gwcbi___operation"] not in (INSERT, INSERT_2, UPDATE, DELETE):
            continue  # not a change Guidewire's MERGED output applies (e.g. 3, a before-image)
        rank = (int(row["gwcbi___seqval_hex"], 16), order)
        if row["id"] not in latest or rank > latest[row["id"]][:2]:
            latest[row["id"]] = (*rank, row)
    return {
        id_: {c: row.get(c) for c in value_columns}
        for id_, (_, _, row) in latest.items()
        if row["gwcbi___operation"] != DELETE
    }
