"""End to end through Dagster with the local runner: raw tables shaped like the sample data ->
``medallion_job`` (bronze -> silver -> gold) -> gold marts checked against figures worked out by hand."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow as pa
from deltalake import DeltaTable

from guidewire_pipeline.medallion.defs import medallion_job
from guidewire_pipeline.raw.partitions import GUIDEWIRE_TABLES, gold_asset_key
from guidewire_pipeline.settings import Settings
from tests.medallion.raw_tables import CDC_FIELDS, DELETE, INSERT, UPDATE, append_raw_batch
from tests.medallion.steps import medallion_resources

TS = pa.timestamp("us", tz="UTC")
MONEY = pa.decimal128(18, 2)
TABLES = ["cc_claim", "cc_exposure", "cc_transaction", "pc_policyperiod"]


def day(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def cdc_table(business: list[pa.Field], rows: list[dict[str, Any]]) -> pa.Table:
    """Rows with ``seq`` and ``op`` keys -> a raw CDA table with every CDC column."""
    schema = pa.schema([pa.field("id", pa.int64()), *business, *CDC_FIELDS])
    filled = []
    for row in rows:
        seq = int(row["seq"], 16)
        filled.append(
            {
                **row,
                "gwcbi___seqval_hex": row["seq"],
                "gwcbi___operation": row["op"],
                "gwcbi___connector_ts_ms": 1_700_000_000_000 + seq,
                "gwcbi___payload_ts_ms": 1_700_000_000_000 + seq,
                "gwcbi___lsn": seq,
                "gwcbi___seqval": seq,
                "gwcbi___tx_id": seq,
            }
        )
    return pa.Table.from_pylist(filled, schema=schema)


CLAIM = [
    pa.field("publicid", pa.string()),
    pa.field("claimnumber", pa.string()),
    pa.field("policyid", pa.int64()),
    pa.field("lossdate", TS),
    pa.field("reporteddate", TS),
    pa.field("closedate", TS),
    pa.field("status", pa.string()),
    pa.field("lossstate", pa.string()),
    pa.field("lobcode", pa.string()),
    pa.field("description", pa.string()),
]
EXPOSURE = [
    pa.field("publicid", pa.string()),
    pa.field("claimid", pa.int64()),
    pa.field("exposuretype", pa.string()),
    pa.field("coveragecode", pa.string()),
    pa.field("status", pa.string()),
    pa.field("reserveamount", MONEY),
]
TRANSACTION = [
    pa.field("publicid", pa.string()),
    pa.field("claimid", pa.int64()),
    pa.field("exposureid", pa.int64()),
    pa.field("transactiontype", pa.string()),
    pa.field("amount", MONEY),
    pa.field("transactiondate", TS),
    pa.field("status", pa.string()),
]
POLICY = [
    pa.field("publicid", pa.string()),
    pa.field("policynumber", pa.string()),
    pa.field("productcode", pa.string()),
    pa.field("periodstart", TS),
    pa.field("periodend", TS),
    pa.field("status", pa.string()),
    pa.field("totalpremium", MONEY),
    pa.field("basestate", pa.string()),
]


def claim(id_: int, seq: str, op: int, state: str, loss: str, status: str) -> dict[str, Any]:
    return {
        "id": id_,
        "seq": seq,
        "op": op,
        "publicid": f"cc:{id_}",
        "claimnumber": f"C-{id_}",
        "policyid": 1,
        "lossdate": day(loss),
        "reporteddate": day(loss),
        "status": status,
        "lossstate": state,
        "lobcode": "auto",
    }


def exposure(id_: int, claim_id: int) -> dict[str, Any]:
    return {
        "id": id_,
        "seq": f"{id_:02x}",
        "op": INSERT,
        "claimid": claim_id,
        "status": "open",
        "reserveamount": Decimal("1.00"),
    }


def transaction(id_: int, claim_id: int, kind: str, amount: str) -> dict[str, Any]:
    return {
        "id": id_,
        "seq": f"{id_:02x}",
        "op": INSERT,
        "claimid": claim_id,
        "exposureid": 1,
        "transactiontype": kind,
        "amount": Decimal(amount),
        "transactiondate": day("2024-03-01"),
        "status": "submitted",
    }


def policy(id_: int, product: str, start: str, end: str, status: str, premium: str) -> dict[str, Any]:
    return {
        "id": id_,
        "seq": f"{id_:02x}",
        "op": INSERT,
        "policynumber": f"P-{id_}",
        "productcode": product,
        "periodstart": day(start),
        "periodend": day(end),
        "status": status,
        "totalpremium": Decimal(premium),
    }


def run_medallion_job(settings: Settings, instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    """medallion_job for TABLES, as the sensor would ask for them."""
    return medallion_job.execute_in_process(
        instance=instance, resources=medallion_resources(settings),
        run_config={"ops": {"run_medallion": {"config": {"tables": TABLES}}}})


def latest_gold(instance: dg.DagsterInstance, mart: str) -> dict[str, Any]:
    """The mart's newest event: a materialization (data changed) or an observation (unchanged, skipped)."""
    key = gold_asset_key(mart)
    found = [*instance.fetch_materializations(key, limit=1).records, *instance.fetch_observations(key, limit=1).records]
    newest = max(found, key=lambda r: r.storage_id)
    event = newest.asset_materialization or newest.asset_observation
    return {k: v.value for k, v in event.metadata.items()} | {"kind": "materialization" if newest.asset_materialization
                                                             else "observation"}


def gold_rows(delta_root: Path, mart: str) -> list[dict[str, Any]]:
    return DeltaTable(str(delta_root / "gold" / mart)).to_pyarrow_table().to_pylist()


def assert_bronze_lineage_and_silver_audit_columns(delta_root: Path) -> None:
    bronze = DeltaTable(str(delta_root / "bronze" / "cc_claim")).to_pyarrow_table()
    assert bronze.schema.field("gwcbi___payload_ts").type == pa.timestamp("us", tz="UTC")
    assert "gwcbi___payload_ts_ms" not in bronze.column_names
    # Each row names its own CDA folder: batch 1 rows folder ...001, batch 2 rows folder ...002.
    lineage = {
        (r["id"], r["gwcbi___seqval_hex"], r["gw_fingerprint"], r["gw_batch_ts"])
        for r in bronze.select(["id", "gwcbi___seqval_hex", "gw_fingerprint", "gw_batch_ts"]).to_pylist()
    }
    first, second = datetime.fromtimestamp(1_700_000_001, UTC), datetime.fromtimestamp(1_700_000_002, UTC)
    assert lineage == {(1, "01", "100", first), (2, "02", "100", first), (3, "03", "100", first),
                       (4, "04", "100", first), (3, "0a", "200", second), (4, "0b", "200", second)}
    assert {len(k) for k in bronze["gw_seq_key"].to_pylist()} == {32}
    silver = DeltaTable(str(delta_root / "silver" / "cc_claim")).to_pyarrow_table()
    assert {r["id"]: r["gw_deleted"] for r in silver.to_pylist() if r["id"] > 0} == {
        1: False, 2: False, 3: False, 4: True}  # claim 4 stays as a tombstone
    closed = next(r for r in silver.to_pylist() if r["id"] == 3)
    assert (closed["gwcbi___seqval_hex"], closed["gwcbi___operation"]) == ("0a", UPDATE)
    assert closed["gwcbi___payload_ts"] == datetime.fromtimestamp(1_700_000_000.010, UTC)


def test_medallion_job_bronze_silver_gold(
    delta_root: Path, medallion_settings: Settings, instance: dg.DagsterInstance
):
    instance.add_dynamic_partitions(GUIDEWIRE_TABLES, TABLES)
    # Batch 1: claims, exposures and transactions; no policy periods delivered yet.
    append_raw_batch(
        delta_root,
        "cc_claim",
        cdc_table(
            CLAIM,
            [
                claim(1, "01", INSERT, "CA", "2024-01-10", "open"),
                claim(2, "02", INSERT, "CA", "2024-01-20", "closed"),
                claim(3, "03", INSERT, "NY", "2024-02-05", "open"),
                claim(4, "04", INSERT, "NY", "2024-02-06", "open"),
            ],
        ),
        1_700_000_001_000,
    )
    append_raw_batch(
        delta_root,
        "cc_exposure",
        cdc_table(EXPOSURE, [exposure(1, 1), exposure(2, 1), exposure(3, 3)]),
        1_700_000_001_000,
    )
    append_raw_batch(
        delta_root,
        "cc_transaction",
        cdc_table(
            TRANSACTION,
            [
                transaction(1, 1, "reserve", "100.00"),
                transaction(2, 1, "payment", "40.00"),
                transaction(3, 2, "payment", "10.50"),
                transaction(4, 3, "recovery", "5.00"),
                transaction(5, 4, "payment", "99.00"),
            ],
        ),
        1_700_000_001_000,
    )

    assert run_medallion_job(medallion_settings, instance).success
    skipped = latest_gold(instance, "policies_in_force_by_month")
    assert (skipped["status"], skipped["kind"]) == ("skipped", "observation")
    assert "pc_policyperiod" in skipped["reason"]
    assert not (delta_root / "gold" / "policies_in_force_by_month").exists()
    assert latest_gold(instance, "claims_by_state_month")["status"] == "changed"
    assert latest_gold(instance, "claims_by_state_month")["dagster/table_name"] == "main.gold.claims_by_state_month"

    # Batch 2: claim 3 closes, claim 4 is deleted (a later fingerprint adds a column); policies arrive.
    later_claims = cdc_table(
        CLAIM,
        [
            claim(3, "0a", UPDATE, "NY", "2024-02-05", "closed"),
            claim(4, "0b", DELETE, "NY", "2024-02-06", "open"),
        ],
    )
    later_claims = later_claims.append_column("severity", pa.array(["high", None]))
    append_raw_batch(delta_root, "cc_claim", later_claims, 1_700_000_002_000, fingerprint="200")
    append_raw_batch(
        delta_root,
        "pc_policyperiod",
        cdc_table(
            POLICY,
            [
                policy(1, "PersonalAuto", "2024-01-15", "2024-04-15", "in_force", "100.00"),
                policy(2, "PersonalAuto", "2024-03-01", "2024-04-01", "bound", "50.00"),
                policy(3, "Homeowners", "2024-02-01", "2025-02-01", "cancelled", "70.00"),
            ],
        ),
        1_700_000_002_000,
    )

    second = run_medallion_job(medallion_settings, instance)
    assert second.success
    # Every table and mart that changed was checked, from the engine's own figures, and passed.
    checked = {(e.asset_key.path[-1], e.partition, e.check_name): (e.passed, e.metadata)
               for e in second.get_asset_check_evaluations()}
    assert {k: passed for k, (passed, _) in checked.items()} == {
        ("cda_bronze", "cc_claim", "reconciles_with_raw"): True,
        ("cda_bronze", "pc_policyperiod", "reconciles_with_raw"): True,
        ("cda_silver", "cc_claim", "one_row_per_id"): True,
        ("cda_silver", "pc_policyperiod", "one_row_per_id"): True,
        ("claims_by_state_month", None, "not_empty"): True,
        ("policies_in_force_by_month", None, "not_empty"): True,
    }
    # Claims: 4 rows of batch 1 and 2 of batch 2; 3 live of 4 ids (claim 4 deleted).
    assert checked[("cda_bronze", "cc_claim", "reconciles_with_raw")][1]["bronze_rows"].value == 6
    assert checked[("cda_silver", "cc_claim", "one_row_per_id")][1]["live_rows"].value == 3
    claims = sorted(gold_rows(delta_root, "claims_by_state_month"), key=lambda r: r["loss_state"])
    assert [(r["loss_state"], str(r["loss_month"])) for r in claims] == [
        ("CA", "2024-01-01"),
        ("NY", "2024-02-01"),
    ]
    ca, ny = claims
    assert (ca["claim_count"], ca["open_claim_count"], ca["closed_claim_count"], ca["exposure_count"]) == (
        2,
        1,
        1,
        2,
    )
    assert (ca["incurred_amount"], ca["paid_amount"]) == (Decimal("150.50"), Decimal("50.50"))
    assert (ny["claim_count"], ny["open_claim_count"], ny["closed_claim_count"], ny["exposure_count"]) == (
        1,
        0,
        1,
        1,
    )
    assert (ny["incurred_amount"], ny["paid_amount"], ny["recovery_amount"]) == (
        Decimal("-5.00"),
        Decimal("0.00"),
        Decimal("5.00"),
    )
    assert "severity" in DeltaTable(str(delta_root / "silver" / "cc_claim")).schema().to_arrow().names
    assert_bronze_lineage_and_silver_audit_columns(delta_root)

    policies = {
        (r["product_code"], str(r["month"])): r["policies_in_force"]
        for r in gold_rows(delta_root, "policies_in_force_by_month")
    }
    assert policies == {
        ("PersonalAuto", "2024-01-01"): 1,
        ("PersonalAuto", "2024-02-01"): 1,
        ("PersonalAuto", "2024-03-01"): 2,
        ("PersonalAuto", "2024-04-01"): 1,
    }

    # Nothing new anywhere: no layer writes a new Delta version.
    versions = {
        layer_table: DeltaTable(str(delta_root / layer_table)).version()
        for layer_table in [
            *(f"{layer}/{t}" for layer in ("bronze", "silver") for t in TABLES),
            "gold/claims_by_state_month",
            "gold/policies_in_force_by_month",
        ]
    }
    assert run_medallion_job(medallion_settings, instance).success
    assert versions == {name: DeltaTable(str(delta_root / name)).version() for name in versions}
    unchanged = latest_gold(instance, "claims_by_state_month")
    assert (unchanged["reason"], unchanged["kind"]) == ("inputs and SQL unchanged", "observation")
