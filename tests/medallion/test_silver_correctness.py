"""Silver against an independent plain-Python reference, through the bronze and silver assets, and the
contract between silver's two apply steps (the SQL MERGE of Databricks, delta-rs under Sail).

Each case is a table of its own, so one bronze run and one silver run per tick handle every case at
once (the batching the assets promise). After every tick, each silver table must equal the reference
computed from all raw change rows delivered so far. The contract test runs the same cases through both
apply steps on the local Spark engine and compares the two silver tables row by row."""

from __future__ import annotations

import random
import sys
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow as pa
from deltalake import DeltaTable

from guidewire_pipeline.medallion.runners.base import NOTEBOOKS_DIR
from guidewire_pipeline.raw.partitions import BRONZE_ASSET_KEY, GUIDEWIRE_TABLES, SILVER_ASSET_KEY
from guidewire_pipeline.settings import Settings
from tests.medallion.raw_tables import (
    DELETE,
    INSERT,
    INSERT_2,
    UPDATE,
    append_raw_batch,
    change_rows,
    reference_current_state,
)
from tests.medallion.steps import materialize_bronze_silver

BUSINESS = [pa.field("name", pa.string()), pa.field("amount", pa.decimal128(18, 2))]
VALUE_COLUMNS = ["name", "amount"]


def c(id_: int, seq: str, op: int, name: str | None = None) -> dict[str, Any]:
    from decimal import Decimal

    return {"id": id_, "seq": seq, "op": op, "name": name, "amount": Decimal(int(seq, 16) % 100_000) / 100}


def random_stream(seed: int, ids: int, changes: int) -> list[dict[str, Any]]:
    """A plausible CDC stream (insert, updates, delete, re-insert) with hex sequences of mixed widths."""
    rng = random.Random(seed)
    stream, alive, seq = [], set(), 1
    for _ in range(changes):
        id_ = rng.randrange(ids)
        seq += rng.randrange(1, 5000)
        width = rng.choice([0, 8, 16, 20, 24])  # 0: no padding at all
        seq_hex = format(seq, "x").rjust(width, "0")
        seq_hex = seq_hex.upper() if rng.random() < 0.2 else seq_hex
        if id_ not in alive:
            op = rng.choice([INSERT, INSERT_2])
            alive.add(id_)
        elif rng.random() < 0.25:
            op = DELETE
            alive.discard(id_)
        else:
            op = UPDATE
        stream.append(c(id_, seq_hex, op, f"v{seq}"))
    return stream


# Cases: table -> batches (each batch one raw commit; several batches may land before one tick).
CASES: dict[str, list[list[dict[str, Any]]]] = {
    "t_delete": [[c(1, "01", INSERT, "a"), c(2, "02", INSERT, "b")], [c(1, "03", DELETE)], []],
    "t_reinsert": [[c(1, "01", INSERT, "first")], [c(1, "05", DELETE)], [c(1, "09", INSERT_2, "again")]],
    "t_updates_in_one_batch": [
        # Several updates of one id in one batch, out of order in the file, plus an exact duplicate row.
        [
            c(1, "0c", UPDATE, "third"),
            c(1, "01", INSERT, "first"),
            c(1, "0a", UPDATE, "second"),
            c(1, "0c", UPDATE, "third"),
        ],
        [],
        [],
    ],
    "t_out_of_order": [
        # id 1: the newest change arrives first; older ones arrive in later batches and must not win.
        # id 3: deleted in batch 1; an older update arriving later must not bring it back.
        [
            c(1, "07", UPDATE, "newest"),
            c(2, "03", INSERT, "two"),
            c(3, "01", INSERT, "x"),
            c(3, "10", DELETE),
        ],
        [c(1, "02", INSERT, "oldest"), c(3, "06", UPDATE, "late")],
        [c(1, "05", UPDATE, "middle"), c(2, "04", UPDATE, "two-b")],
    ],
    "t_hex_widths": [
        # "ff" < "100" as numbers but not as strings; upper case and long, zero-padded values mixed in.
        [c(1, "ff", INSERT, "ff"), c(2, "00000000000000000000a1", INSERT, "a1")],
        [c(1, "100", UPDATE, "0x100"), c(2, "9f", UPDATE, "older"), c(3, "1A0", INSERT, "upper")],
        [
            c(3, "0000000000000000019f", UPDATE, "older-padded"),
            c(1, "00000000000000000000000101", UPDATE, "0x101"),
        ],
    ],
    "t_delete_then_older": [
        # Deleted, then older changes arrive in later batches (an insert among them): it stays deleted
        # until a newer insert brings it back.
        [c(5, "20", INSERT, "a"), c(5, "30", DELETE), c(6, "21", INSERT, "six")],
        [c(5, "25", UPDATE, "late"), c(5, "10", INSERT, "older"), c(6, "22", DELETE)],
        [c(5, "40", INSERT_2, "back"), c(6, "15", UPDATE, "older-than-delete")],
    ],
    "t_replay": [
        [c(1, "01", INSERT, "one"), c(2, "02", INSERT, "two")],
        [c(1, "03", UPDATE, "one-b"), c(2, "04", DELETE)],
        # Batch 1 delivered again (same rows, new batch folder): nothing may change.
        [c(1, "01", INSERT, "one"), c(2, "02", INSERT, "two")],
    ],
    "t_replay_latest": [
        # The current change of id 1 delivered again: the same sequence is not newer, the row stays as it
        # was (its gw_batch_ts too), on both apply steps.
        [c(1, "01", INSERT, "one"), c(2, "02", INSERT, "two")],
        [c(1, "01", INSERT, "one")],
        [c(2, "02", INSERT, "two"), c(1, "01", INSERT, "one")],
    ],
}
# An operation code silver must not apply (3: a before-image): its higher sequence must not win.
CASES["t_unknown_operation"] = [
    [c(1, "01", INSERT, "a")],
    [c(1, "05", 3, "before-image"), c(1, "04", UPDATE, "b")],
    [],
]
RANDOM = random_stream(seed=7, ids=40, changes=400)
CASES["t_random"] = [RANDOM[:150], RANDOM[250:], RANDOM[150:250]]  # batches out of order
for table in CASES.values():
    random.Random(3).shuffle(table[0])


def materialize_layers(
    settings: Settings, instance: dg.DagsterInstance, tables: list[str]
) -> dg.ExecuteInProcessResult:
    return materialize_bronze_silver(settings, instance, tags={
        "dagster/asset_partition_range_start": tables[0], "dagster/asset_partition_range_end": tables[-1]})


def latest_metadata(instance: dg.DagsterInstance, asset_key: dg.AssetKey) -> dict[str, dict[str, Any]]:
    """partition -> metadata values of its newest event: a materialization (data changed) or an
    observation (unchanged, or skipped with its reason)."""
    records = [*instance.fetch_materializations(asset_key, limit=1000).records,
               *instance.fetch_observations(asset_key, limit=1000).records]
    latest: dict[str, dict[str, Any]] = {}
    for record in sorted(records, key=lambda r: -r.storage_id):  # newest first
        event = record.asset_materialization or record.asset_observation
        if event is not None and event.partition not in latest:
            latest[event.partition] = {k: v.value for k, v in event.metadata.items()}
    return latest


def silver_state(delta_root: Path, table: str) -> dict[int, dict[str, Any]]:
    """Silver's current state as a reader sees it: tombstones (deleted records) left out; one row per id."""
    rows = [r for r in DeltaTable(str(delta_root / "silver" / table)).to_pyarrow_table().to_pylist()
            if not r["gw_deleted"]]
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids)), f"silver {table} has duplicate ids"
    return {r["id"]: {col: r[col] for col in VALUE_COLUMNS} for r in rows}


def test_silver_matches_reference_after_every_tick(
    delta_root: Path, medallion_settings: Settings, instance: dg.DagsterInstance
):
    tables = [*CASES, "t_no_change_columns", "t_never_delivered"]
    instance.add_dynamic_partitions(GUIDEWIRE_TABLES, tables)
    append_raw_batch(
        delta_root,
        "t_no_change_columns",
        pa.table({"code": ["a", "b"], "label": ["A", "B"]}),
        1_700_000_000_000,
    )
    delivered: dict[str, list[dict[str, Any]]] = {t: [] for t in CASES}
    watermark = 1_700_000_000_000
    for tick in range(3):
        for table, batches in CASES.items():
            if batches[tick]:
                watermark += 1000
                rows = change_rows(batches[tick], BUSINESS)
                append_raw_batch(delta_root, table, rows, watermark)
                delivered[table].extend(rows.to_pylist())
        result = materialize_layers(medallion_settings, instance, tables)
        assert result.success
        for table in CASES:
            assert silver_state(delta_root, table) == reference_current_state(
                delivered[table], VALUE_COLUMNS
            ), (table, tick)
        if tick == 0:
            first_bronze = latest_metadata(instance, BRONZE_ASSET_KEY)
            assert "no change columns" in first_bronze["t_no_change_columns"]["warnings"]
            # Bronze appends every raw row (the exact duplicate too); silver resolves it.
            assert first_bronze["t_updates_in_one_batch"]["rows_out"] == 4
        if tick == 1:
            second_silver = latest_metadata(instance, SILVER_ASSET_KEY)
            assert second_silver["t_unknown_operation"]["unknown_operations_ignored"] == 1
            assert "operation codes [3]" in second_silver["t_unknown_operation"]["warnings"]

    # Per-partition metadata: each partition carries its own figures, not a copy of one table's.
    silver_events = latest_metadata(instance, SILVER_ASSET_KEY)
    bronze_events = latest_metadata(instance, BRONZE_ASSET_KEY)
    assert silver_events["t_no_change_columns"]["status"] == "skipped"
    assert bronze_events["t_updates_in_one_batch"]["status"] == "unchanged"  # tick 2 brought nothing
    assert "change columns" in silver_events["t_no_change_columns"]["reason"]
    assert silver_events["t_never_delivered"]["status"] == "skipped"
    assert bronze_events["t_never_delivered"]["status"] == "skipped"
    assert "no raw table main.raw.t_never_delivered" in bronze_events["t_never_delivered"]["reason"]
    # The replayed batch is a new CDA folder: bronze appends its 2 rows, silver's merge leaves state as it was.
    assert (bronze_events["t_replay"]["rows_in"], bronze_events["t_replay"]["rows_out"]) == (2, 2)
    assert silver_events["t_replay"]["rows_in"] == 2
    # Savepoints are the layers' own data: the last folder each layer holds.
    assert bronze_events["t_random"]["savepoint_after"] == silver_events["t_random"]["savepoint_after"]
    assert silver_events["t_random"]["dagster/table_name"] == "main.silver.t_random"

    # Nothing new: neither bronze nor silver commits a new version.
    versions = {t: DeltaTable(str(delta_root / "silver" / t)).version() for t in CASES}
    bronze_versions = {t: DeltaTable(str(delta_root / "bronze" / t)).version() for t in CASES}
    assert materialize_layers(medallion_settings, instance, tables).success
    assert versions == {t: DeltaTable(str(delta_root / "silver" / t)).version() for t in CASES}
    assert bronze_versions == {t: DeltaTable(str(delta_root / "bronze" / t)).version() for t in CASES}


sys.path.insert(0, str(NOTEBOOKS_DIR))
import gw_medallion_engine as engine  # noqa: E402

APPLIES = {"sql": engine.SPARK_SQL, "rs": engine.DELTA_RS}  # table suffix -> silver apply step



def silver_rows(delta_root: Path, table: str) -> list[dict[str, Any]]:
    """Every row of a silver table, tombstones included, every column, in id order."""
    return sorted(DeltaTable(str(delta_root / "silver" / table)).to_pyarrow_table().to_pylist(), key=lambda r: r["id"])


def test_both_silver_apply_steps_leave_the_same_silver_row_by_row(spark, tmp_path: Path):
    """The same cases through the SQL ``MERGE INTO`` (what Databricks runs) and delta-rs' merge (what Sail
    runs): after every run both silver tables are equal row by row and equal the reference. Runs: tick 0;
    ticks 1 and 2 together (two chunks in one run: late, replayed, deleted-then-older changes); nothing new.
    Savepoints: delta-rs' is exactly the last chunk's end (Delta app transaction), the SQL path's never
    above it, below it only when the last chunk changed no row (t_replay: a replayed batch)."""
    root = tmp_path / "delta"
    engines = {key: engine.Engine.for_session(spark, "main", str(root), silver_apply=apply, chunk_rows=1)
               for key, apply in APPLIES.items()}  # chunk_rows=1: every folder is a chunk of its own
    delivered: dict[str, list[dict[str, Any]]] = {t: [] for t in CASES}
    watermark = 1_700_000_000_000
    for run, ticks in enumerate([[0], [1, 2], []]):
        for tick in ticks:
            for table, batches in CASES.items():
                if batches[tick]:
                    watermark += 1000
                    rows = change_rows(batches[tick], BUSINESS)
                    for key in APPLIES:
                        append_raw_batch(root, f"{table}__{key}", rows, watermark)
                    delivered[table].extend(rows.to_pylist())
        results: dict[str, dict[str, dict[str, Any]]] = {}
        for key, eng in engines.items():
            names = [f"{t}__{key}" for t in CASES]
            eng.register_local_tables(names)
            assert {r["status"] for r in eng.bronze(names)} <= {"changed", "unchanged"}
            results[key] = {r["name"].rsplit("__", 1)[0]: r for r in eng.silver(names)}
            assert {r["metadata"]["silver_apply"] for r in results[key].values()} == {APPLIES[key]}
        for table in CASES:
            assert silver_rows(root, f"{table}__sql") == silver_rows(root, f"{table}__rs"), (table, run)
            assert silver_state(root, f"{table}__rs") == reference_current_state(delivered[table], VALUE_COLUMNS)
            exact = engines["rs"].silver_savepoint(f"{table}__rs")
            lower = engines["sql"].silver_savepoint(f"{table}__sql")
            assert exact == results["rs"][table]["metadata"]["savepoint_after"], (table, run)
            assert lower is not None and lower <= exact, (table, run)
        if run == 1:
            assert engines["sql"].silver_savepoint("t_replay__sql") < engines["rs"].silver_savepoint("t_replay__rs")
            assert engines["sql"].silver_savepoint("t_delete__sql") == engines["rs"].silver_savepoint("t_delete__rs")
        if run == 2:  # nothing new: delta-rs' exact savepoint makes every table unchanged
            assert {r["status"] for r in results["rs"].values()} == {"unchanged"}
            assert results["sql"]["t_delete"]["status"] == "unchanged"
            assert results["sql"]["t_replay"]["metadata"]["rows_out"] == 0  # re-read, nothing applied


def test_a_chunk_whose_every_change_loses_still_records_its_end(spark, tmp_path: Path):
    """delta-rs commits nothing when a merge changes no row; the savepoint must still reach the chunk's
    end (an empty commit carries the app transaction), or every later run would read the chunk again."""
    root = tmp_path / "delta"
    eng = engine.Engine.for_session(spark, "main", str(root), silver_apply=engine.DELTA_RS)
    append_raw_batch(root, "t_all_lose", change_rows([c(1, "05", INSERT, "new")], BUSINESS), 1_700_000_000_000)
    append_raw_batch(root, "t_all_lose", change_rows([c(1, "03", UPDATE, "old")], BUSINESS), 1_700_000_001_000)
    eng.register_local_tables(["t_all_lose"])
    eng.bronze(["t_all_lose"])
    eng.chunk_rows = 1
    [first] = eng.silver(["t_all_lose"])
    assert first["metadata"]["chunks"] == 2 and first["metadata"]["rows_out"] == 1
    table = DeltaTable(str(root / "silver" / "t_all_lose"))
    assert table.transaction_version(engine.SILVER_TXN_APP) == 1_700_000_001_000
    assert table.history(1)[0]["operation"] == "WRITE"  # the empty commit, after the merge that changed nothing
    [again] = eng.silver(["t_all_lose"])
    assert again["status"] == "unchanged" and DeltaTable(str(root / "silver" / "t_all_lose")).version() == table.version()
    assert silver_state(root, "t_all_lose") == {1: {"name": "new", "amount": c(1, "05", INSERT)["amount"]}}
