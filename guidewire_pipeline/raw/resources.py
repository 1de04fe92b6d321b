"""The CDA source as a Dagster resource: where the manifest is, which tables to take, how the sensor
batches its runs."""

from __future__ import annotations

import dagster as dg
from pydantic import Field

from guidewire_pipeline.cda.manifest import Manifest, read_manifest


class CdaSource(dg.ConfigurableResource):
    """Where the CDA manifest is, which tables to load, and how the manifest sensor batches its runs.

    The lists and the largest-first count match the options of the CDA processor users run today
    (``tableNames``, ``exceptions``, ``largestTablesFirstCount``).
    """

    manifest_uri: str = Field(description="GW_MANIFEST_URI: local path, file:// or s3:// URI of manifest.json")
    include_tables: list[str] = Field(default_factory=list, description="GW_INCLUDE_TABLES: only these (empty: all).")
    exclude_tables: list[str] = Field(default_factory=list, description="GW_EXCLUDE_TABLES: never these.")
    largest_tables_first: int = Field(
        default=0, description="GW_LARGEST_TABLES_FIRST: the sensor puts the N largest tables (by "
        "totalProcessedRecordsCount) first, in their own runs with a higher priority.")
    tables_per_run: int = Field(default=100, description="GW_TABLES_PER_RUN: at most this many tables in one "
                                "sensor-launched run.")
    max_lag_minutes: int = Field(default=60, description="GW_MAX_LAG_MINUTES: the lag_within_limit check and the "
                                 "raw asset's freshness policy allow raw to be this far behind CDA.")

    def read_manifest(self) -> Manifest:
        return read_manifest(self.manifest_uri)

    def select(self, manifest: Manifest, include_broken: bool = False) -> list[str]:
        """Valid tables (and with ``include_broken``, those with a bad entry) after the include and
        exclude lists, sorted."""
        return manifest.select(include=self.include_tables or None, exclude=self.exclude_tables,
                               include_broken=include_broken)
