"""The Ray-backed Delta I/O manager: it owns writing CDA batches into raw Delta tables.

The raw asset's body decides *what* to load (a ``RawLoadRequest``: the manifest entries of the run's
partitions); this I/O manager does the loading through the sync engine, tables in parallel on Ray.

Dagster facts this is designed around:
- ``add_output_metadata`` would copy one dict onto every partition of a multi-partition output, so
  per-table figures go through ``step_context.add_asset_metadata(..., partition_key=table)``.
- When some tables fail, the step must fail, and Dagster then records no materialization for the
  output. The tables that succeeded are committed in Delta, so their materializations are logged
  explicitly (and flushed by a ``yield``) before the failure is raised.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import dagster as dg
from pydantic import Field

from guidewire_pipeline.cda.delta_writer import TableSyncResult
from guidewire_pipeline.cda.load_plan import CommitBudget
from guidewire_pipeline.cda.maintenance import raw_dataset, vacuum_table
from guidewire_pipeline.cda.manifest import ManifestEntry
from guidewire_pipeline.cda.raw_table import is_shallow, open_table
from guidewire_pipeline.cda.storage import Location, check_writable
from guidewire_pipeline.cda.sync import DRIVER_MAX_BYTES, RaySettings, raw_table_location, sync_tables
from guidewire_pipeline.lakehouse import RAW
from guidewire_pipeline.raw.observability import sync_metadata
from guidewire_pipeline.resources import DatabricksWorkspaceResource, LakehouseResource


@dataclass
class RawLoadRequest:
    """What the raw asset asks the I/O manager to load: entries by table, and the tables that cannot
    be loaded (not in the manifest, or a bad entry) with the reason."""

    entries: dict[str, ManifestEntry]
    problems: dict[str, str] = field(default_factory=dict)


class RayDeltaIOManager(dg.ConfigurableIOManager):
    """Writes raw CDA tables to ``<delta_root>/raw/<table>`` on Ray; reads them back lazily. With a
    Databricks workspace, each table it loads is registered in Unity Catalog as ``<catalog>.raw.<table>``."""

    lakehouse: LakehouseResource = Field(description="Where the raw tables live (the Definitions' one lakehouse).")
    workspace: DatabricksWorkspaceResource = Field(
        default_factory=DatabricksWorkspaceResource,
        description="Databricks workspace for Unity Catalog registration (unset host: none).")
    ray_address: str | None = Field(default=None, description="RAY_ADDRESS of a cluster; unset: local Ray")
    num_cpus: int | None = Field(default=None, description="CPUs for a local Ray (unset: all)")
    clone_mode: Literal["deep", "shallow"] = Field(
        default="deep", description="deep: rows are copied into Delta data files under delta_root. "
        "shallow: zero copy, the Delta log points at the CDA parquet files in place (read it with "
        "deltalake's QueryBuilder or raw_dataset(); never VACUUM it, see vacuum()).")
    driver_max_bytes: int = Field(
        default=DRIVER_MAX_BYTES, description="Without ray_address, a run with at most this much pending "
        "parquet loads on threads in the run's process instead of starting a local Ray (0: always Ray).")
    commit_max_bytes: int = Field(
        default=CommitBudget.max_bytes, description="Deep clone: one Delta commit covers consecutive CDA "
        "batches up to this much parquet (a batch larger than it is a commit of its own).")
    commit_max_files: int = Field(
        default=CommitBudget.max_files, description="Shallow clone: one Delta commit covers consecutive CDA "
        "batches up to this many files (one add action each).")
    commit_max_batches: int = Field(
        default=CommitBudget.max_batches, description="At most this many CDA batches (timestamps) in one commit.")

    @property
    def delta_root(self) -> str:
        return self.lakehouse.layout().delta_root

    # -- the engine, shared with cda_sync_job ----------------------------------------------------
    def sync(self, entries: list[ManifestEntry], log: Any = None) -> list[TableSyncResult]:
        """Sync the tables on Ray; one result per entry, failures included (never raises per table).
        Every table's warnings (skipped files and folders, with their paths) go to ``log`` as warnings.

        Raises ``StorageError`` naming GW_DELTA_ROOT, before any table, when the root cannot be written."""
        check_writable(Location.parse(self.delta_root).join("raw"), "GW_DELTA_ROOT")
        results = sync_tables(
            entries, self.delta_root,
            ray=RaySettings(address=self.ray_address, num_cpus=self.num_cpus, driver_max_bytes=self.driver_max_bytes),
            clone_mode=self.clone_mode,
            budget=self.commit_budget,
            progress=log.info if log is not None else None,
        )
        for result in results if log is not None else []:
            for warning in result.warnings:
                log.warning(warning)
        if self.workspace.configured:
            self._register(results, log)
        return results

    def _register(self, results: list[TableSyncResult], log: Any) -> None:
        """Register the tables this sync loaded as external tables in Unity Catalog. A refusal fails
        that table (its data stays committed; the next sync registers it again)."""
        from guidewire_pipeline.unity_catalog import UnityCatalogError, register_tables

        client = self.workspace.workspace_client()
        for result in results:
            if result.status != "loaded":
                continue
            try:
                [registered] = register_tables(client, self.lakehouse.layout(), [(RAW, result.table, result.columns)],
                                               warehouse_id=self.workspace.warehouse_id)
            except UnityCatalogError as exc:
                result.status, result.error = "failed", f"Table {result.table!r}: loaded, but {exc}"
                continue
            result.table_name = registered.full_name
            if log is not None and registered.action == "created":
                log.info(f"Registered {registered.full_name} in Unity Catalog at {registered.storage_location}")

    @property
    def commit_budget(self) -> CommitBudget:
        return CommitBudget(max_bytes=self.commit_max_bytes, max_files=self.commit_max_files,
                            max_batches=self.commit_max_batches)

    def vacuum(self, table: str, *, retention_hours: int | None = None, dry_run: bool = True) -> list[str]:
        """VACUUM one raw table. Refuses a shallow table (``ShallowTableError``): its data files are
        Guidewire's CDA files, and a VACUUM could delete them."""
        return vacuum_table(raw_table_location(self.delta_root, table), retention_hours=retention_hours,
                            dry_run=dry_run)

    # -- Dagster I/O manager --------------------------------------------------------------------
    def handle_output(self, context: dg.OutputContext, obj: RawLoadRequest) -> Iterator[Any]:
        if not isinstance(obj, RawLoadRequest):
            raise dg.Failure(f"The raw asset must return a RawLoadRequest, got {type(obj).__name__}.")
        results = self.sync(list(obj.entries.values()), log=context.log)
        failures = {r.table: r.error or "failed" for r in results if not r.ok}
        failures.update(obj.problems)
        succeeded = [r for r in results if r.ok]
        if not failures:
            for result in succeeded:
                _add_partition_metadata(context, result.table, sync_metadata(result))
            return
        for result in succeeded:
            context.log_event(dg.AssetMaterialization(
                asset_key=context.asset_key, partition=result.table, metadata=sync_metadata(result)))
        yield {}  # flushes the events logged above before the step fails
        raise dg.Failure(
            description=f"{len(failures)} of {len(failures) + len(succeeded)} tables failed: "
            + "; ".join(f"{t}: {reason}" for t, reason in sorted(failures.items())),
            metadata={"failed_tables": dg.MetadataValue.json(sorted(failures)),
                      "succeeded_tables": dg.MetadataValue.json(sorted(r.table for r in succeeded))},
        )

    def load_input(self, context: dg.InputContext) -> Any:
        """A lazy handle on the raw table(s): a ``deltalake.DeltaTable`` by default, or a Ray Dataset
        when the input asks with ``AssetIn(metadata={"read_as": "ray"})``. Several partitions give a
        dict keyed by table."""
        read_as = (context.definition_metadata or {}).get("read_as", "delta")
        tables = sorted(context.asset_partition_keys) if context.has_asset_partitions else []
        if not tables:
            raise dg.Failure("The raw asset is partitioned by table: load it for one or more partitions.")
        handles = {table: self._handle(table, read_as) for table in tables}
        return handles[tables[0]] if len(tables) == 1 else handles

    def _handle(self, table: str, read_as: str) -> Any:
        location = raw_table_location(self.delta_root, table)
        if read_as == "ray":
            import ray.data

            from guidewire_pipeline.cda.sync import ensure_ray

            ensure_ray(RaySettings(address=self.ray_address, num_cpus=self.num_cpus))
            table = open_table(location)
            if table is not None and is_shallow(table):
                # read_delta joins absolute add-action paths onto the table root: read the files in place.
                dataset = raw_dataset(location)
                return ray.data.read_parquet(dataset.files, filesystem=dataset.filesystem, schema=dataset.schema)
            return ray.data.read_delta(location.delta_uri, storage_options=location.delta_storage_options() or None)
        handle = open_table(location, without_files=False)
        if handle is None:
            raise dg.Failure(f"Raw table {table!r} does not exist yet at {location.uri}: materialize it first.")
        return handle


def _add_partition_metadata(context: dg.OutputContext, partition: str, metadata: dict[str, Any]) -> None:
    if context.has_asset_partitions and len(context.asset_partition_keys) > 1:
        context.step_context.add_asset_metadata(metadata, asset_key=context.asset_key, partition_key=partition)
    else:
        context.add_output_metadata(metadata)
