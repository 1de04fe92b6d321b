"""Maintenance and readers of raw tables: small-file compaction, VACUUM, and a pyarrow reader that
works for deep and shallow tables alike.

- Compaction: each sync adds files, and delta-rs' cost to open a table and to commit follows the
  number of files. Once ``COMPACT_MIN_SMALL_FILES`` files under ``SMALL_FILE_BYTES`` pile up, a deep
  table is compacted (OPTIMIZE). It changes no data (``dataChange: false``), so the change data feed
  is unaffected, and it never fails a load. Shallow tables are never compacted: their files are CDA's.
- VACUUM of a shallow table is refused: its data files are Guidewire's CDA files in place.
"""

from __future__ import annotations

from urllib.parse import unquote

import pyarrow as pa
import pyarrow.dataset as ds
from deltalake import CommitProperties, DeltaTable

from guidewire_pipeline.cda.raw_table import (
    Progress,
    ShallowTableError,
    add_paths,
    arrow_schema,
    commit_hooks,
    is_shallow,
    open_table,
)
from guidewire_pipeline.cda.savepoint import (
    BATCH_TS_COLUMN,
    FINGERPRINT_COLUMN,
    META_MAINTENANCE,
    META_ROWS_WATERMARK,
    META_WATERMARK,
    Savepoint,
)
from guidewire_pipeline.cda.storage import Location

COMPACT_MIN_SMALL_FILES = 100
SMALL_FILE_BYTES = 16 * 2**20


def compact_small_files(
    table_name: str, location: Location, table: DeltaTable, savepoint: Savepoint, min_small_files: int,
    warnings: list[str], progress: Progress | None = None,
) -> tuple[DeltaTable, int]:
    """OPTIMIZE a deep table's small files once there are ``min_small_files`` of them; returns the
    handle and how many files were merged. Made with no retries right after a checked commit, so
    its metadata can carry the savepoint for the log peek (OPTIMIZE takes no app transactions): a
    concurrent writer wins and a later sync compacts. A failure leaves the load successful, with a
    warning."""
    sizes = pa.table(table.get_add_actions(flatten=True))["size_bytes"].to_pylist()
    small = sum(1 for size in sizes if size < SMALL_FILE_BYTES)
    if small < min_small_files:
        return table, 0
    metadata = {META_MAINTENANCE: "compact", "gw_table": table_name,
                META_WATERMARK: str(savepoint.watermark), META_ROWS_WATERMARK: str(savepoint.rows_watermark)}
    try:
        metrics = table.optimize.compact(
            target_size=SMALL_FILE_BYTES,
            commit_properties=CommitProperties(custom_metadata=metadata, max_commit_retries=0),
            post_commithook_properties=commit_hooks(table),
        )
    except Exception as exc:  # maintenance must never fail a load that committed
        warnings.append(f"{table_name}: compacting {small} small files did not happen this time ({exc}); "
                        "a later sync tries again.")
        reopened = open_table(location, without_files=False)
        return (reopened if reopened is not None else table), 0
    if progress:
        progress(f"{table_name}: compacted {metrics['numFilesRemoved']} small files into {metrics['numFilesAdded']}")
    return table, int(metrics["numFilesRemoved"])


def vacuum_table(location: Location, *, retention_hours: int | None = None, dry_run: bool = True,
                 enforce_retention_duration: bool = True) -> list[str]:
    """VACUUM a raw table through this tool. Refuses shallow tables with ``ShallowTableError``:
    their data files are Guidewire's CDA files, which a VACUUM must never delete.
    ``enforce_retention_duration=False`` allows a retention below the table's (a week by default)."""
    table = open_table(location, without_files=False)
    if table is None:
        raise ValueError(f"There is no Delta table at {location.uri} to vacuum.")
    if is_shallow(table) or any("://" in path for path in add_paths(table)):
        raise ShallowTableError(
            f"Refusing to VACUUM {location.uri}: it is a shallow clone whose data files are Guidewire's "
            "CDA parquet files in place, and a VACUUM could delete them. Do not VACUUM it with any tool; "
            "to reclaim space, drop the table and reload it."
        )
    return table.vacuum(retention_hours=retention_hours, dry_run=dry_run,
                        enforce_retention_duration=enforce_retention_duration)


def raw_dataset(location: Location) -> ds.Dataset:
    """A pyarrow dataset over a raw table's current files, deep or shallow, with the table's schema
    (columns a file lacks read as null; a shallow table's lineage columns from its partition values).
    ``DeltaTable.to_pyarrow_dataset`` cannot read a shallow table: it joins the absolute add-action
    paths onto the table root."""
    table = open_table(location, without_files=False)
    if table is None:
        raise ValueError(f"There is no Delta table at {location.uri}.")
    schema = arrow_schema(table)
    actions = pa.table(table.get_add_actions(flatten=True)).to_pylist()
    if not actions:
        return ds.dataset([], schema=schema, format="parquet")
    parquet = ds.ParquetFileFormat()
    files = [_data_file_location(location, str(action["path"])) for action in actions]
    filesystem = files[0].filesystem()
    fragments = [
        parquet.make_fragment(file.fs_path, filesystem, file_size=action["size_bytes"],
                              partition_expression=_partition_expression(action))
        for file, action in zip(files, actions, strict=True)
    ]
    return ds.FileSystemDataset(fragments, schema, parquet, filesystem)


def _partition_expression(action: dict) -> ds.Expression:
    """The lineage a shallow file's add action carries as partition values (deep files hold it)."""
    batch = action.get(f"partition.{BATCH_TS_COLUMN}")
    if batch is None:
        return ds.scalar(True)
    return ((ds.field(BATCH_TS_COLUMN) == pa.scalar(int(batch), pa.int64()))
            & (ds.field(FINGERPRINT_COLUMN) == pa.scalar(action.get(f"partition.{FINGERPRINT_COLUMN}"))))


def _data_file_location(table_location: Location, path: str) -> Location:
    """Where an add action's file is: an absolute URI as written in shallow mode, else relative to the
    table root."""
    if "://" in path:
        return Location.parse(unquote(path))
    return table_location.join(unquote(path))
