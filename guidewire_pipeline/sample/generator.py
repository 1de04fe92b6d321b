"""A synthetic Guidewire CDA tree: ``manifest.json`` plus ``<table>/<fingerprint>/<ts>/*.parquet``.

It looks like what CDA writes for ClaimCenter and PolicyCenter, including the parts loaders get
wrong: an in-flight folder above each table's watermark, ``.cda/batch-metrics.json`` side files, a
zero-byte parquet file, a second fingerprint that adds a column, hex sequence values of growing
length, and a manifest entry whose table has no data yet. Output is deterministic for a seed.

``generate`` writes a fresh tree; ``advance`` commits each table's in-flight folder, adds new batches
and a new in-flight folder, and moves the watermarks, so sensors can be demonstrated.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from guidewire_pipeline.cda.storage import Location

BASE_TIMESTAMP = 1_700_000_000_000  # 2023-11-14, epoch ms
BATCH_INTERVAL_MS = 15 * 60 * 1000  # CDA writes a batch every few minutes; 15 min keeps dates readable
STATE_FILE = ".sample-state.json"
EMPTY_TABLE = "cc_catastrophe"  # listed in the manifest, no folder yet

MONEY = pa.decimal128(18, 2)
TS = pa.timestamp("us", tz="UTC")
STATES = np.array(["CA", "TX", "NY", "FL", "IL", "WA", "OH", "GA", "PA", "AZ"])
LOBS = np.array(["auto", "property", "workers_comp", "general_liability"])
PRODUCTS = np.array(["PersonalAuto", "Homeowners", "CommercialProperty", "WorkersComp"])
LINE_BY_PRODUCT = {
    "PersonalAuto": "PersonalAutoLine",
    "Homeowners": "HomeownersLine",
    "CommercialProperty": "CPLine",
    "WorkersComp": "WCLine",
}
FIRST_NAMES = np.array(["Ana", "Ben", "Chloe", "Dev", "Emma", "Femi", "Grace", "Hugo", "Iris", "Jon"])
LAST_NAMES = np.array(["Garcia", "Smith", "Nguyen", "Patel", "Okafor", "Kim", "Rossi", "Muller", "Silva", "Brown"])

CDC_SCHEMA = [
    pa.field("gwcbi___seqval_hex", pa.string()),
    pa.field("gwcbi___operation", pa.int32()),
    pa.field("gwcbi___connector_ts_ms", pa.int64()),
    pa.field("gwcbi___payload_ts_ms", pa.int64()),
    pa.field("gwcbi___lsn", pa.int64()),
    pa.field("gwcbi___seqval", pa.int64()),
    pa.field("gwcbi___tx_id", pa.int64()),
]
OP_INSERT, OP_INSERT_ALT, OP_UPDATE, OP_DELETE = 2, 0, 4, 1


@dataclass
class TableState:
    """What ``advance`` needs to continue a table where ``generate`` left it."""

    name: str
    fingerprints: list[list[Any]]  # [[fingerprint, starts_at], ...]
    committed: list[int] = field(default_factory=list)  # committed batch timestamps
    in_flight: int | None = None  # timestamp of the folder above the watermark
    next_id: int = 1
    live_ids: list[int] = field(default_factory=list)
    next_seqval: int = 0xF0  # small start: hex strings grow from 2 to 3+ characters
    records: int = 0  # rows in committed folders


@dataclass
class SampleState:
    seed: int
    rows: int
    files_per_batch: int
    tables: dict[str, TableState]


# -- column builders: (rng, ids, batch_ts, context) -> {column: pa.Array} -------------------------
Context = dict[str, Any]


def _pick(rng: np.random.Generator, values: np.ndarray, n: int) -> np.ndarray:
    return values[rng.integers(0, len(values), n)]


def _money(rng: np.random.Generator, n: int, low: float, high: float) -> pa.Array:
    cents = rng.integers(int(low * 100), int(high * 100), n)
    return pa.array(cents / 100.0).cast(MONEY)  # exact: every value has two decimals


def _timestamps(rng: np.random.Generator, n: int, end_ms: int, span_days: int) -> pa.Array:
    offsets = rng.integers(0, span_days * 86_400_000, n)
    return pa.array((end_ms - offsets) * 1000, pa.int64()).cast(TS)


def _shift(timestamps: pa.Array, days: int) -> pa.Array:
    micros = timestamps.cast(pa.int64()).to_numpy() + days * 86_400_000_000
    return pa.array(micros, pa.int64()).cast(TS)


def _refs(rng: np.random.Generator, pool: list[int], n: int) -> pa.Array:
    if not pool:
        return pa.array([None] * n, pa.int64())
    return pa.array(np.asarray(pool)[rng.integers(0, len(pool), n)], pa.int64())


def _public_ids(prefix: str, ids: np.ndarray) -> pa.Array:
    return pa.array([f"{prefix}:{i}" for i in ids], pa.string())


def cc_claim(rng: np.random.Generator, ids: np.ndarray, ts: int, ctx: Context) -> dict[str, pa.Array]:
    n = len(ids)
    status = _pick(rng, np.array(["open", "open", "closed"]), n)
    loss = _timestamps(rng, n, ts, 400)
    closed_micros = loss.cast(pa.int64()).to_numpy() + rng.integers(1, 90, n) * 86_400_000_000
    columns = {
        "id": pa.array(ids, pa.int64()),
        "publicid": _public_ids("cc", ids),
        "claimnumber": pa.array([f"CLM-{i:08d}" for i in ids], pa.string()),
        "policyid": _refs(rng, ctx["pc_policyperiod"], n),
        "lossdate": loss,
        "reporteddate": _shift(loss, days=1),
        "closedate": pa.array(closed_micros, pa.int64(), mask=status == "open").cast(TS),
        "status": pa.array(status, pa.string()),
        "lossstate": pa.array(_pick(rng, STATES, n), pa.string()),
        "lobcode": pa.array(_pick(rng, LOBS, n), pa.string()),
        "description": pa.array(_pick(rng, np.array(["Rear-end collision", "Water damage", "Slip and fall",
                                                     "Hail damage", "Back injury", "Theft"]), n), pa.string()),
    }
    if ctx["fingerprint_index"] >= 1:
        columns["severity"] = pa.array(_pick(rng, np.array(["minor", "moderate", "major"]), n), pa.string())
    return columns


def cc_exposure(rng: np.random.Generator, ids: np.ndarray, ts: int, ctx: Context) -> dict[str, pa.Array]:
    n = len(ids)
    return {
        "id": pa.array(ids, pa.int64()),
        "publicid": _public_ids("cc", ids),
        "claimid": _refs(rng, ctx["cc_claim"], n),
        "exposuretype": pa.array(_pick(rng, np.array(["VehicleDamage", "BodilyInjury", "PropertyDamage"]), n)),
        "coveragecode": pa.array(_pick(rng, np.array(["COLL", "COMP", "BI", "PD", "DWELL"]), n)),
        "status": pa.array(_pick(rng, np.array(["open", "open", "closed"]), n)),
        "reserveamount": _money(rng, n, 500, 50_000),
    }


def cc_transaction(rng: np.random.Generator, ids: np.ndarray, ts: int, ctx: Context) -> dict[str, pa.Array]:
    n = len(ids)
    return {
        "id": pa.array(ids, pa.int64()),
        "publicid": _public_ids("cc", ids),
        "claimid": _refs(rng, ctx["cc_claim"], n),
        "exposureid": _refs(rng, ctx["cc_exposure"], n),
        "transactiontype": pa.array(_pick(rng, np.array(["reserve", "payment", "payment", "recovery"]), n)),
        "amount": _money(rng, n, 100, 20_000),
        "transactiondate": _timestamps(rng, n, ts, 120),
        "status": pa.array(_pick(rng, np.array(["submitted", "approved", "approved"]), n)),
    }


def cc_contact(rng: np.random.Generator, ids: np.ndarray, ts: int, ctx: Context) -> dict[str, pa.Array]:
    n = len(ids)
    first = _pick(rng, FIRST_NAMES, n)
    last = _pick(rng, LAST_NAMES, n)
    return {
        "id": pa.array(ids, pa.int64()),
        "publicid": _public_ids("ab", ids),
        "firstname": pa.array(first),
        "lastname": pa.array(last),
        "email": pa.array([f"{f}.{la}{i}@example.com".lower() for f, la, i in zip(first, last, ids, strict=True)]),
        "addressstate": pa.array(_pick(rng, STATES, n)),
        "contacttype": pa.array(_pick(rng, np.array(["Person", "Company"]), n)),
    }


def pc_policyperiod(rng: np.random.Generator, ids: np.ndarray, ts: int, ctx: Context) -> dict[str, pa.Array]:
    n = len(ids)
    start = _timestamps(rng, n, ts, 500)
    columns = {
        "id": pa.array(ids, pa.int64()),
        "publicid": _public_ids("pc", ids),
        "policynumber": pa.array([f"POL-{i:08d}" for i in ids]),
        "productcode": pa.array(_pick(rng, PRODUCTS, n)),
        "periodstart": start,
        "periodend": _shift(start, days=365),
        "status": pa.array(_pick(rng, np.array(["bound", "in_force", "in_force", "cancelled", "expired"]), n)),
        "totalpremium": _money(rng, n, 300, 25_000),
        "basestate": pa.array(_pick(rng, STATES, n)),
    }
    if ctx["fingerprint_index"] >= 1:
        columns["uwcompany"] = pa.array(_pick(rng, np.array(["GW Mutual", "GW Specialty"]), n))
    return columns


def pc_policyline(rng: np.random.Generator, ids: np.ndarray, ts: int, ctx: Context) -> dict[str, pa.Array]:
    n = len(ids)
    return {
        "id": pa.array(ids, pa.int64()),
        "publicid": _public_ids("pc", ids),
        "policyperiodid": _refs(rng, ctx["pc_policyperiod"], n),
        "linecode": pa.array([LINE_BY_PRODUCT[p] for p in _pick(rng, PRODUCTS, n)]),
        "premium": _money(rng, n, 100, 10_000),
    }


def generic_table(rng: np.random.Generator, ids: np.ndarray, ts: int, ctx: Context) -> dict[str, pa.Array]:
    n = len(ids)
    return {
        "id": pa.array(ids, pa.int64()),
        "publicid": _public_ids("gw", ids),
        "name": pa.array([f"Item {i}" for i in ids]),
        "typecode": pa.array(_pick(rng, np.array(["A", "B", "C", "D"]), n)),
        "amount": _money(rng, n, 1, 1_000),
        "quantity": pa.array(rng.integers(0, 1000, n), pa.int64()),
        "notes": pa.array(_pick(rng, np.array(["", "reviewed", "pending review", "escalated"]), n)),
        "updatetime": _timestamps(rng, n, ts, 30),
    }


# Order matters: referenced tables come first so foreign keys point at ids that exist.
CORE_TABLES: dict[str, Callable[..., dict[str, pa.Array]]] = {
    "pc_policyperiod": pc_policyperiod,
    "pc_policyline": pc_policyline,
    "cc_claim": cc_claim,
    "cc_exposure": cc_exposure,
    "cc_transaction": cc_transaction,
    "cc_contact": cc_contact,
}
# Tables that gain a column (a second fingerprint) half-way through their batches.
EVOLVING_TABLES = {"cc_claim", "pc_policyperiod"}


def _builder(table: str) -> Callable[..., dict[str, pa.Array]]:
    return CORE_TABLES.get(table, generic_table)


def _fingerprint(seed: int, table: str, index: int) -> str:
    return hashlib.md5(f"{seed}:{table}:{index}".encode()).hexdigest()


def table_names(count: int) -> list[str]:
    names = list(CORE_TABLES)[: max(count, 1)]
    names += [f"cc_table_{i:03d}" for i in range(len(names) + 1, count + 1)]
    return names


def generate(out: str, tables: int = 6, batches: int = 4, rows: int = 200, seed: int = 7,
             files_per_batch: int = 2, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Write a fresh CDA tree at ``out`` (local path or s3://). Returns the summary ``manifest`` dict."""
    if batches < 1 or rows < 1 or tables < 1:
        raise ValueError("--tables, --batches and --rows must be at least 1.")
    root = Location.parse(out)
    state = SampleState(seed=seed, rows=rows, files_per_batch=files_per_batch, tables={})
    for name in table_names(tables):
        fingerprints = [[_fingerprint(seed, name, 0), BASE_TIMESTAMP - 60_000]]
        if name in EVOLVING_TABLES and batches >= 2:
            # The second schema starts with the second half of the batches.
            fingerprints.append([_fingerprint(seed, name, 1), _batch_ts((batches + 1) // 2)])
        state.tables[name] = TableState(name=name, fingerprints=fingerprints)
    _write_batches(root, state, new_batches=batches, progress=progress)
    return _write_manifest(root, state)


def advance(out: str, batches: int = 1, rows: int | None = None,
            progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Commit each table's in-flight folder, add ``batches`` new ones and a new in-flight folder."""
    root = Location.parse(out)
    state = _load_state(root)
    if rows is not None:
        state.rows = rows
    _write_batches(root, state, new_batches=batches, progress=progress)
    return _write_manifest(root, state)


def _batch_ts(index: int) -> int:
    return BASE_TIMESTAMP + index * BATCH_INTERVAL_MS


def _write_batches(root: Location, state: SampleState, new_batches: int,
                   progress: Callable[[str], None] | None) -> None:
    ids_by_table: dict[str, list[int]] = {t: list(s.live_ids) for t, s in state.tables.items()}
    names = list(state.tables)
    for position, name in enumerate(names):
        table = state.tables[name]
        if table.in_flight is not None:
            # The folder that was in flight is complete now: it becomes the next committed batch.
            table.committed.append(table.in_flight)
            table.records += _rows_in_folder(root, table, table.in_flight)
            table.in_flight = None
        start = len(table.committed)
        for index in range(start, start + new_batches + 1):
            is_in_flight = index == start + new_batches
            ts = _batch_ts(index)
            rows = _write_batch(root, state, table, index, ts, ids_by_table)
            if is_in_flight:
                table.in_flight = ts
            else:
                table.committed.append(ts)
                table.records += rows
        if progress:
            progress(f"[{position + 1}/{len(names)}] {name}: {len(table.committed)} committed batches")


def _write_batch(root: Location, state: SampleState, table: TableState, index: int, ts: int,
                 ids_by_table: dict[str, list[int]]) -> int:
    rng = np.random.default_rng([state.seed, _stable_int(table.name), index])
    fingerprint_index = sum(1 for _, starts in table.fingerprints if starts <= ts) - 1
    fingerprint = table.fingerprints[fingerprint_index][0]
    n = state.rows
    live = ids_by_table[table.name]
    n_update = min(len(live), n // 5)
    n_delete = min(max(len(live) - n_update, 0), n // 10)
    n_insert = n - n_update - n_delete
    new_ids = np.arange(table.next_id, table.next_id + n_insert, dtype=np.int64)
    table.next_id += n_insert
    live_arr = np.asarray(live, dtype=np.int64)
    deleted = rng.choice(live_arr, n_delete, replace=False) if n_delete else np.array([], np.int64)
    remaining = np.setdiff1d(live_arr, deleted)
    updated = rng.choice(remaining, n_update, replace=True) if n_update and len(remaining) else np.array([], np.int64)
    ids = np.concatenate([new_ids, updated, deleted])
    ops = np.concatenate([
        np.where(rng.random(n_insert) < 0.9, OP_INSERT, OP_INSERT_ALT),
        np.full(len(updated), OP_UPDATE),
        np.full(len(deleted), OP_DELETE),
    ]).astype(np.int32)
    order = rng.permutation(len(ids))  # CDA files are not sorted by id or operation
    ids, ops = ids[order], ops[order]

    ctx: Context = {t: ids_by_table[t] or list(new_ids) for t in ids_by_table}
    ctx["fingerprint_index"] = fingerprint_index
    business = _builder(table.name)(rng, ids, ts, ctx)
    seqvals = np.arange(table.next_seqval, table.next_seqval + len(ids), dtype=np.int64)
    table.next_seqval += len(ids) * 7  # gaps, like a real change stream shared by many tables
    columns: dict[str, pa.Array] = {
        "gwcbi___seqval_hex": pa.array([format(int(s), "x") for s in seqvals], pa.string()),
        "gwcbi___operation": pa.array(ops, pa.int32()),
        "gwcbi___connector_ts_ms": pa.array(ts - rng.integers(1_000, 60_000, len(ids)), pa.int64()),
        "gwcbi___payload_ts_ms": pa.array(ts - rng.integers(60_000, 120_000, len(ids)), pa.int64()),
        "gwcbi___lsn": pa.array(seqvals * 16, pa.int64()),
        "gwcbi___seqval": pa.array(seqvals, pa.int64()),
        "gwcbi___tx_id": pa.array(seqvals // 3, pa.int64()),
    }
    columns.update(business)
    batch = pa.table(columns)

    folder = root.join(table.name, fingerprint, str(ts))
    filesystem = folder.filesystem()
    if not folder.is_s3:
        filesystem.create_dir(folder.fs_path, recursive=True)
    parts = max(1, min(state.files_per_batch, len(ids)))
    bounds = np.linspace(0, len(ids), parts + 1, dtype=int)
    for part in range(parts):
        chunk = batch.slice(bounds[part], bounds[part + 1] - bounds[part])
        name = f"part-{part:05d}-{hashlib.md5(f'{table.name}{ts}{part}'.encode()).hexdigest()[:12]}.c000.snappy.parquet"
        pq.write_table(chunk, folder.join(name).fs_path, filesystem=filesystem)
    folder.join(".cda", "batch-metrics.json").write_bytes(
        json.dumps({"rowCount": len(ids), "fileCount": parts, "fingerprint": fingerprint}).encode()
    )
    if table.name == "cc_claim" and index == 0:
        folder.join("part-99999-empty.c000.snappy.parquet").write_bytes(b"")  # CDA leaves these behind

    # Ids are live once inserted (deleted ids are gone); in-flight rows also count: next batch continues.
    live_set = (set(live) - set(deleted.tolist())) | set(new_ids.tolist())
    ids_by_table[table.name] = sorted(live_set)
    table.live_ids = ids_by_table[table.name]
    return len(ids)


def _rows_in_folder(root: Location, table: TableState, ts: int) -> int:
    fingerprint_index = sum(1 for _, starts in table.fingerprints if starts <= ts) - 1
    folder = root.join(table.name, table.fingerprints[fingerprint_index][0], str(ts))
    total = 0
    for child in folder.list_children():
        if not child.is_dir and child.name.endswith(".parquet") and child.size:
            with folder.filesystem().open_input_file(folder.join(child.name).fs_path) as handle:
                total += pq.ParquetFile(handle).metadata.num_rows
    return total


def _write_manifest(root: Location, state: SampleState) -> dict[str, Any]:
    manifest: dict[str, Any] = {}
    for name, table in state.tables.items():
        manifest[name] = {
            "lastSuccessfulWriteTimestamp": str(table.committed[-1]),
            "totalProcessedRecordsCount": table.records,
            "dataFilesPath": root.join(name).uri + "/",
            "schemaHistory": {fp: str(starts) for fp, starts in table.fingerprints},
        }
    manifest[EMPTY_TABLE] = {
        "lastSuccessfulWriteTimestamp": str(BASE_TIMESTAMP),
        "totalProcessedRecordsCount": 0,
        "dataFilesPath": root.join(EMPTY_TABLE).uri,
        "schemaHistory": {_fingerprint(state.seed, EMPTY_TABLE, 0): str(BASE_TIMESTAMP - 60_000)},
    }
    root.join(STATE_FILE).write_bytes(json.dumps(asdict(state)).encode())
    # Pretty-printed, like CDA's own manifest: readers must not depend on one line per entry.
    root.join("manifest.json").write_bytes(json.dumps(manifest, indent=2).encode())
    return manifest


def _load_state(root: Location) -> SampleState:
    raw = json.loads(root.join(STATE_FILE).read_bytes())
    tables = {name: TableState(**t) for name, t in raw.pop("tables").items()}
    return SampleState(tables=tables, **raw)


def _stable_int(text: str) -> int:
    return int(hashlib.md5(text.encode()).hexdigest()[:8], 16)
