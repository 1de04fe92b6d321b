"""The CDA source as a Dagster resource: where the manifest is and which tables to take."""

from __future__ import annotations

from typing import Literal

import dagster as dg
from pydantic import Field

from guidewire_pipeline.cda.manifest import Manifest, read_manifest


class CdaSource(dg.ConfigurableResource):
    """Where the CDA manifest is, which tables to load, and how the sensor batches its runs.

    The include and exclude lists and ``largest_tables_first_count`` match the options of the CDA
    processor users run today (``tableNames``, ``exceptions``, ``largestTablesFirstCount``).
    """

    manifest_uri: str = Field(description="GW_MANIFEST_URI: local path, file:// or s3:// URI of manifest.json")
    table_names: list[str] = Field(default_factory=list, description="Only these tables (empty: all).")
    exceptions: list[str] = Field(default_factory=list, description="Never these tables.")
    largest_tables_first_count: int = Field(
        default=0, description="The sensor puts the N largest tables (by totalProcessedRecordsCount) first, "
        "in their own runs with a higher priority.")
    tables_per_run: int = Field(default=100, description="At most this many tables in one sensor-launched run.")
    sensor_scope: Literal["raw", "full"] = Field(
        default="raw", description="What a sensor-launched run covers: raw only (cda_sync_job) or raw, "
        "bronze, silver and gold (guidewire_e2e_job).")

    def read_manifest(self) -> Manifest:
        return read_manifest(self.manifest_uri)

    def select(self, manifest: Manifest, include_broken: bool = False) -> list[str]:
        """Valid tables (and with ``include_broken``, those with a bad entry) after the include and
        exclude lists, sorted."""
        return manifest.select(include=self.table_names or None, exclude=self.exceptions, include_broken=include_broken)
