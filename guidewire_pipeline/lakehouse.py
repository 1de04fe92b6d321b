"""Where every table of the lakehouse lives, and what it is called: the one layout all layers share.

A table is ``(layer, name)``:
- its storage location is ``<GW_DELTA_ROOT>/<layer>/<name>`` (local path, ``file://`` or ``s3://``);
- its Unity Catalog name is ``<GW_UC_CATALOG>.<layer>.<name>``: one schema per layer, named after
  the layer (``main.raw.cc_claim``, ``main.silver.cc_claim``, ``main.gold.claims_by_state_month``).

The same names are used locally (the local Spark engine registers them over the storage
locations) and on Databricks (Unity Catalog tables at those locations), so code and share packs
address tables the same way everywhere. No Dagster here: the Dagster resource that carries this
layout is bound once in the Definitions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from guidewire_pipeline.cda.storage import Location

RAW, BRONZE, SILVER, GOLD, AUDIT = "raw", "bronze", "silver", "gold", "audit"
LAYERS = (RAW, BRONZE, SILVER, GOLD)
DEFAULT_CATALOG = "main"
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class Lakehouse:
    """The layout: the Delta root every layer lives under and the Unity Catalog catalog naming it."""

    delta_root: str
    catalog: str = DEFAULT_CATALOG

    def location(self, layer: str, name: str) -> Location:
        """``<delta_root>/<layer>/<name>``."""
        return Location.parse(self.delta_root).join(layer, name)

    def uri(self, layer: str, name: str) -> str:
        return self.location(layer, name).uri

    def table_name(self, layer: str, name: str) -> str:
        """The three-part name: ``<catalog>.<layer>.<name>``."""
        return f"{self.catalog}.{layer}.{name}"

    def parse_table_name(self, full_name: str) -> tuple[str, str] | None:
        """``(layer, name)`` of a three-part name in this catalog, or None when it is not one of
        this lakehouse's tables (another catalog, an unknown layer, not three identifiers)."""
        parts = full_name.split(".")
        if len(parts) != 3 or not all(_IDENTIFIER.match(p) for p in parts):
            return None
        catalog, layer, name = parts
        if catalog != self.catalog or layer not in (*LAYERS, AUDIT):
            return None
        return layer, name

    @property
    def is_local(self) -> bool:
        return not Location.parse(self.delta_root).is_s3
