"""Shallow (zero-copy) clone: Delta add actions that point at CDA's parquet files in place.

Each file becomes one add action with its absolute URI (``s3://bucket/key`` or ``file:///path``,
percent-encoded as the Delta protocol asks), its size from the listing, and ``numRecords``,
``nullCount`` and exact ``minValues``/``maxValues`` from its parquet footer: one ranged read per file,
no data pages. The batch's timestamp and fingerprint are the file's partition values
(``gw_batch_ts_ms``, ``gw_fingerprint``): the file cannot carry them, the log can.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import quote

import pyarrow as pa
import pyarrow.parquet as pq
from deltalake.transaction import AddAction

from guidewire_pipeline.cda.load_plan import CommitGroup, DataFile
from guidewire_pipeline.cda.savepoint import BATCH_TS_COLUMN, FINGERPRINT_COLUMN, LINEAGE_FIELDS
from guidewire_pipeline.cda.storage import Location

FOOTER_READ_THREADS = 16  # footer reads wait on storage, not CPU
FOOTER_GUESS = 64 * 1024  # one ranged read covers the footer of a typical CDA file
STATS_STRING_MAX = 32  # longer strings get no min/max (Delta truncates there too)
PARTITION_COLUMNS = [f.name for f in LINEAGE_FIELDS]

Footer = tuple[pa.Schema, pq.FileMetaData]


def read_footers(table_name: str, files: tuple[DataFile, ...]) -> list[Footer]:
    """Each file's schema and footer metadata: one ranged GET per file on S3 (the listing's size
    spares the HEAD), on threads, since each read waits on storage. A file that is not parquet
    fails with a message naming it and its CDA folder."""

    def footer(data_file: DataFile) -> Footer:
        try:
            return read_parquet_footer(data_file.location, data_file.size)
        except (OSError, ValueError, pa.ArrowInvalid) as exc:
            raise ValueError(
                f"Table {table_name!r}: cannot read the parquet footer of {data_file.location.uri} ({exc}). "
                f"Check that file in CDA folder {data_file.fingerprint}/{data_file.timestamp}."
            ) from exc

    if len(files) == 1:
        return [footer(files[0])]
    with ThreadPoolExecutor(max_workers=min(FOOTER_READ_THREADS, len(files))) as pool:
        return list(pool.map(footer, files))


def read_parquet_footer(location: Location, size: int) -> Footer:
    """A parquet file's schema and metadata from its tail: one read of ``FOOTER_GUESS`` bytes, and
    a second only when the footer is larger than that."""
    tail = location.read_tail(size, FOOTER_GUESS)
    if len(tail) < 12 or tail[-4:] != b"PAR1":
        raise ValueError("not a parquet file (no PAR1 footer)")
    footer_length = int.from_bytes(tail[-8:-4], "little")
    if footer_length + 8 > len(tail):
        tail = location.read_tail(size, footer_length + 8)
    # Only the footer is parsed; the data pages before it are never needed.
    parquet = pq.ParquetFile(pa.BufferReader(b"PAR1" + tail[-(footer_length + 8):]))
    return parquet.schema_arrow, parquet.metadata


def add_actions(group: CommitGroup, footers: list[Footer], table_schema: pa.Schema,
                stats_columns: tuple[str, ...]) -> list[AddAction]:
    """One add action per file of ``group``, in place, with its partition values and statistics."""
    now = int(time.time() * 1000)
    return [
        AddAction(absolute_uri(data_file.location), data_file.size,
                  {BATCH_TS_COLUMN: str(data_file.timestamp), FINGERPRINT_COLUMN: data_file.fingerprint},
                  now, True, file_stats(table_schema, schema, metadata, stats_columns))
        for data_file, (schema, metadata) in zip(group.files, footers, strict=True)
    ]


def absolute_uri(location: Location) -> str:
    """The URI an add action stores for a file in place: ``s3://bucket/key`` or ``file:///path``."""
    if location.is_s3:
        return f"s3://{location.bucket}/{quote(location.key)}"
    return f"file://{quote(location.path)}"


def file_stats(table_schema: pa.Schema, file_schema: pa.Schema, metadata: pq.FileMetaData,
               stats_columns: tuple[str, ...]) -> str:
    """Delta file statistics from a parquet footer: numRecords, and for ``stats_columns`` nullCount
    and minValues/maxValues for the types whose footer values are exact bounds (integers, dates,
    short strings, timestamps widened to milliseconds). A column the file lacks (added by a later
    schema) is all null. Partition columns get none: their values live in the add action."""
    rows = metadata.num_rows
    wanted = {c.lower() for c in stats_columns} - {c.lower() for c in PARTITION_COLUMNS}
    null_count: dict[str, int] = {f.name: rows for f in table_schema
                                  if f.name not in file_schema.names and f.name.lower() in wanted}
    minimum: dict[str, Any] = {}
    maximum: dict[str, Any] = {}
    for index, arrow_field in enumerate(file_schema):
        if arrow_field.type.num_fields != 0 or arrow_field.name.lower() not in wanted:
            continue  # nested columns, and columns without statistics
        nulls, low, high, exact = 0, None, None, True
        for group in range(metadata.num_row_groups):
            column = metadata.row_group(group).column(index)
            stats = column.statistics
            if stats is None or column.path_in_schema != arrow_field.name:
                exact = False
                break
            if stats.has_null_count:
                nulls += stats.null_count
            else:
                exact = False
            if stats.has_min_max:
                low = stats.min if low is None else min(low, stats.min)
                high = stats.max if high is None else max(high, stats.max)
            elif stats.num_values:
                exact = False
        if not exact:
            continue
        null_count[arrow_field.name] = nulls
        bounds = _stat_bounds(arrow_field.type, low, high)
        if bounds is not None:
            minimum[arrow_field.name], maximum[arrow_field.name] = bounds
    return json.dumps({"numRecords": rows, "minValues": minimum, "maxValues": maximum, "nullCount": null_count},
                      separators=(",", ":"))


def _stat_bounds(data_type: pa.DataType, low: Any, high: Any) -> tuple[Any, Any] | None:
    if low is None or high is None:
        return None
    if pa.types.is_integer(data_type) and isinstance(low, int):
        return low, high
    if pa.types.is_date32(data_type) and isinstance(low, dt.date):
        return low.isoformat(), high.isoformat()
    if (pa.types.is_string(data_type) or pa.types.is_large_string(data_type)) and isinstance(low, str):
        if len(low) > STATS_STRING_MAX or len(high) > STATS_STRING_MAX:
            return None
        return low, high
    if pa.types.is_timestamp(data_type) and isinstance(low, dt.datetime):
        # Delta keeps milliseconds: widen outwards so that the bounds still hold.
        suffix = "Z" if data_type.tz else ""
        low_ms = low.replace(microsecond=low.microsecond // 1000 * 1000)
        high_ms = high.replace(microsecond=high.microsecond // 1000 * 1000)
        if high_ms != high:
            high_ms += dt.timedelta(milliseconds=1)
        if data_type.tz:
            low_ms, high_ms = low_ms.astimezone(dt.UTC), high_ms.astimezone(dt.UTC)
        return (low_ms.strftime("%Y-%m-%dT%H:%M:%S.") + f"{low_ms.microsecond // 1000:03d}{suffix}",
                high_ms.strftime("%Y-%m-%dT%H:%M:%S.") + f"{high_ms.microsecond // 1000:03d}{suffix}")
    return None
