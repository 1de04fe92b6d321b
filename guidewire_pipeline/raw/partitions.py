"""The one partitions definition shared by the raw, bronze and silver assets: one key per CDA table."""

from __future__ import annotations

import dagster as dg

GUIDEWIRE_TABLES = "guidewire_tables"

guidewire_tables = dg.DynamicPartitionsDefinition(name=GUIDEWIRE_TABLES)

# Asset keys, named once so that every layer and entry point agrees on them.
RAW_ASSET_KEY = dg.AssetKey("cda_raw")
BRONZE_ASSET_KEY = dg.AssetKey("cda_bronze")
SILVER_ASSET_KEY = dg.AssetKey("cda_silver")


def gold_asset_key(mart: str) -> dg.AssetKey:
    return dg.AssetKey(["gold", mart])
