"""The medallion's checks and the gold marts' column lineage, both read from what the engine reports.

Checks (evaluated from the figures each engine result carries; a check whose figures the engine did
not report is not evaluated, rather than guessed):
- bronze ``reconciles_with_raw``: a run that appended to bronze left it holding exactly what it held
  plus the raw rows of the folders it consumed (no row lost or doubled by the append);
- silver ``one_row_per_id`` (blocking): the live rows are the distinct ids; a silver that fails it must
  not feed gold;
- gold ``not_empty``: a mart whose inputs hold rows is not empty.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import dagster as dg

from guidewire_pipeline.lakehouse import SILVER
from guidewire_pipeline.medallion.marts import Mart
from guidewire_pipeline.raw.partitions import SILVER_ASSET_KEY
from guidewire_pipeline.recording import CheckRecord

BRONZE_RECONCILES = "reconciles_with_raw"
SILVER_UNIQUE = "one_row_per_id"
GOLD_NOT_EMPTY = "not_empty"
CHECKS: dict[str, list[tuple[str, str, bool]]] = {  # layer -> (name, description, blocking)
    "bronze": [(BRONZE_RECONCILES, "Bronze grew by exactly the raw rows of the folders it consumed.", False)],
    SILVER: [(SILVER_UNIQUE, "One live row per id: the live rows equal the distinct ids (blocks gold).", True)],
    "gold": [(GOLD_NOT_EMPTY, "The mart is not empty when its inputs hold rows.", False)],
}


def evaluate(layer: str, metadata: Mapping[str, Any]) -> list[CheckRecord]:
    """The layer's checks from one engine result's metadata (none when its figures are absent)."""
    if layer == "bronze" and {"bronze_rows", "raw_rows_consumed"} <= metadata.keys():
        held, expected = int(metadata["bronze_rows"]), int(metadata["raw_rows_consumed"])
        return [CheckRecord(BRONZE_RECONCILES, held == expected,
                            f"Bronze holds {held:,} change rows; expected {expected:,} (its rows before this run plus "
                            "the raw folders it consumed).",
                            {"bronze_rows": held, "raw_rows_consumed": expected})]
    if layer == SILVER and {"live_rows", "distinct_live_ids"} <= metadata.keys():
        rows, ids = int(metadata["live_rows"]), int(metadata["distinct_live_ids"])
        return [CheckRecord(SILVER_UNIQUE, rows == ids, f"{rows:,} live rows for {ids:,} distinct ids.",
                            {"live_rows": rows, "distinct_live_ids": ids}, dg.AssetCheckSeverity.ERROR)]
    if layer == "gold" and "row_count" in metadata:
        rows = int(metadata["row_count"])
        if rows > 0:  # the engine counts the inputs only for an empty mart
            return [CheckRecord(GOLD_NOT_EMPTY, True, f"{rows:,} rows.", {"row_count": rows})]
        if "input_rows" in metadata:
            inputs = int(metadata["input_rows"])
            return [CheckRecord(GOLD_NOT_EMPTY, inputs == 0, f"No rows, from inputs holding {inputs:,} live rows.",
                                {"row_count": rows, "input_rows": inputs})]
    return []


def column_lineage(mart: Mart, input_columns: Mapping[str, Sequence[str]]) -> dg.TableColumnLineage | None:
    """Each output column of ``mart`` and the silver columns it is computed from, by parsing its SQL
    (sqlglot, Spark dialect) against the inputs' columns. None when the SQL cannot be resolved."""
    import sqlglot
    from sqlglot import exp
    from sqlglot.errors import SqlglotError
    from sqlglot.lineage import lineage

    schema = {table: {column: "string" for column in columns} for table, columns in input_columns.items()}
    try:
        tree = sqlglot.parse_one(mart.sql, read="spark")
        deps: dict[str, list[dg.TableColumnDep]] = {}
        for output in (select.alias_or_name for select in tree.selects):
            sources = {
                (node.source.name, node.name.split(".")[-1])
                for node in lineage(output, tree, schema=schema or None, dialect="spark").walk()
                if isinstance(node.source, exp.Table) and not node.downstream
            }
            # One silver asset holds every table (as partitions): the column is named with its table.
            deps[output] = [dg.TableColumnDep(asset_key=SILVER_ASSET_KEY, column_name=f"{table}.{column}")
                            for table, column in sorted(sources) if table in mart.inputs]
    except (SqlglotError, KeyError, ValueError):
        return None
    return dg.TableColumnLineage(deps_by_column=deps)
