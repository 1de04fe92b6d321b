"""A raw Delta table as the rest of the project sees it: its handle, its state, its clone mode.

Read-only helpers shared by the writer, the maintenance jobs, status and checks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable, PostCommitHookProperties
from deltalake.exceptions import TableNotFoundError

from guidewire_pipeline.cda.savepoint import read_savepoint
from guidewire_pipeline.cda.storage import Location

Progress = Callable[[str], None]  # receives one human-readable line per step of long work

# Delta has no free-form table property (delta-rs rejects unknown keys), so the description marks a
# shallow table; vacuum_table and the clone-mode check read it from the log's metadata.
SHALLOW_DESCRIPTION = (
    "Guidewire CDA shallow clone: data files are CDA's parquet files in place. "
    "Never VACUUM this table: it could delete Guidewire's source files."
)


class ShallowTableError(Exception):
    """An operation that is unsafe or inconsistent for a shallow (zero-copy) table."""


@dataclass(frozen=True)
class DeltaTableState:
    """The Delta side of one raw table, read from its log (no data files)."""

    exists: bool
    version: int | None = None
    loaded_watermark: int | None = None
    total_rows: int | None = None
    columns: tuple[tuple[str, str], ...] = ()


def open_table(location: Location, *, without_files: bool = True) -> DeltaTable | None:
    """The Delta table at ``location``, or None when there is none yet."""
    try:
        return DeltaTable(location.delta_uri, storage_options=location.delta_storage_options(),
                          without_files=without_files)
    except TableNotFoundError:
        return None


def read_table_state(location: Location, table_name: str | None = None) -> DeltaTableState:
    """Version, loaded watermark (checked against the live rows, see ``savepoint.read_savepoint``),
    row count (from file statistics) and schema of a raw table. Raises the savepoint's errors for a
    table this pipeline cannot vouch for."""
    table = open_table(location, without_files=False)
    if table is None:
        return DeltaTableState(exists=False)
    savepoint = read_savepoint(table_name or location.name, location, table)
    return DeltaTableState(
        exists=True,
        version=table.version(),
        loaded_watermark=savepoint.watermark,
        total_rows=row_count(table),
        columns=tuple(columns(arrow_schema(table))),
    )


def is_shallow(table: DeltaTable) -> bool:
    """True when the table was written in shallow mode (its description says so)."""
    return (table.metadata().description or "") == SHALLOW_DESCRIPTION


def arrow_schema(table: DeltaTable) -> pa.Schema:
    return pa.schema(table.schema().to_arrow())


def columns(schema: pa.Schema) -> Iterator[tuple[str, str]]:
    for f in schema:
        yield f.name, str(f.type)


def row_count(table: DeltaTable) -> int:
    """Rows in the table's live files, from their statistics (no data read)."""
    actions = pa.table(table.get_add_actions(flatten=True))
    if "num_records" not in actions.column_names or actions.num_rows == 0:
        return 0
    return int(pc.sum(actions["num_records"]).as_py() or 0)


def add_paths(table: DeltaTable) -> list[str]:
    return [str(p) for p in pa.table(table.get_add_actions(flatten=True))["path"].to_pylist()]


def commit_hooks(table: DeltaTable | None) -> PostCommitHookProperties:
    """Checkpoints as configured; expired-log cleanup only on checkpoint commits, since it lists the
    whole ``_delta_log`` (a cost that grows with the table's age) every time it runs."""
    if table is None:
        return PostCommitHookProperties(create_checkpoint=True, cleanup_expired_logs=False)
    interval = int(table.metadata().configuration.get("delta.checkpointInterval") or 100)
    return PostCommitHookProperties(create_checkpoint=True,
                                    cleanup_expired_logs=(table.version() + 1) % interval == 0)
