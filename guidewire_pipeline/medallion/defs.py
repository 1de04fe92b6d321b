"""Dagster definitions of the medallion domain, merged by guidewire_pipeline/definitions.py.

- ``medallion``: one multi-asset holding ``cda_bronze`` and ``cda_silver`` (partitioned like ``cda_raw``,
  identity mapping) and one ``gold/<mart>`` per SQL file, each mart depending on the silver tables it
  reads. Any subset runs as ONE step, one runner call: one local process, or one multi-task Databricks
  run (bronze -> silver -> gold). The checks of each layer (``checks.py``) are declared on it.
- ``medallion_job``: the medallion for any set of tables (run config ``tables``; empty: every table
  behind its input), the marts reading them following in the same step. Dagster cannot put an
  arbitrary set of dynamic partitions into one asset run, so this op job records each result on its
  partition, exactly as the asset does (``layers.run_medallion_step``).
- ``medallion_sensor``: on raw materializations: asks ``medallion_job`` for the tables whose bronze or
  silver is behind, ``tables_per_run`` at a time, and again for failed tables after a back-off.
- ``databricks_job_run_now``: the bundle's job (``databricks.yml``), when ``DATABRICKS_JOB_ID`` is set.
"""

# No "from __future__ import annotations": Dagster inspects the context type hints at runtime.

import json
import os

import dagster as dg
from pydantic import Field

from guidewire_pipeline.automation import RunTracker, raise_for_failures, run_key
from guidewire_pipeline.medallion.checks import CHECKS
from guidewire_pipeline.medallion.layers import (
    MedallionOutcome,
    describe_failures,
    failure_metadata,
    marts_reading,
    medallion_backlog,
    run_medallion_step,
)
from guidewire_pipeline.medallion.marts import load_marts
from guidewire_pipeline.medallion.runners.base import NotebookRunner
from guidewire_pipeline.raw.partitions import (
    BRONZE_ASSET_KEY,
    RAW_ASSET_KEY,
    SILVER_ASSET_KEY,
    gold_asset_key,
    guidewire_tables,
)
from guidewire_pipeline.raw.resources import CdaSource
from guidewire_pipeline.resources import LakehouseResource
from guidewire_pipeline.settings import Settings

MEDALLION_GROUP = "medallion"
MEDALLION_POOL = "guidewire_medallion"
MEDALLION_JOB = "medallion_job"
MEDALLION_OP = "run_medallion"
OWNERS = ["team:data-engineering"]
SENSOR_INTERVAL_SECONDS = 60


class MedallionConfigError(ValueError):
    """The medallion's settings contradict each other; the message names the variable to set."""


def _specs() -> list[dg.AssetSpec]:
    specs = [
        dg.AssetSpec(BRONZE_ASSET_KEY, partitions_def=guidewire_tables, skippable=True, group_name=MEDALLION_GROUP,
                     deps=[dg.AssetDep(RAW_ASSET_KEY, partition_mapping=dg.IdentityPartitionMapping())],
                     kinds={"deltalake", "spark"}, owners=OWNERS,
                     description="Raw CDA change rows, typed, with a sortable sequence key and each row's CDA "
                     "folder (<GW_UC_CATALOG>.bronze.<table>)."),
        dg.AssetSpec(SILVER_ASSET_KEY, partitions_def=guidewire_tables, skippable=True, group_name=MEDALLION_GROUP,
                     deps=[dg.AssetDep(BRONZE_ASSET_KEY, partition_mapping=dg.IdentityPartitionMapping())],
                     kinds={"deltalake", "spark"}, owners=OWNERS,
                     description="Current state of every Guidewire record (Guidewire's MERGED output), "
                     "deletes kept as tombstones (gw_deleted) (<GW_UC_CATALOG>.silver.<table>)."),
    ]
    marts = load_marts().values()
    # One multi-asset takes one partition mapping per upstream key, so every mart depends on the silver
    # tables any mart reads; each mart's own inputs (which the backlog and the sensor use) are in its
    # description and its column lineage.
    inputs = dg.SpecificPartitionsPartitionMapping(sorted({t for mart in marts for t in mart.inputs}))
    for mart in marts:
        specs.append(dg.AssetSpec(
            gold_asset_key(mart.name), skippable=True, group_name=MEDALLION_GROUP, kinds={"deltalake", "sql"},
            owners=OWNERS, deps=[dg.AssetDep(SILVER_ASSET_KEY, partition_mapping=inputs)],
            description=f"{mart.description} (gold/{mart.path.name}, inputs: {', '.join(mart.inputs)})."))
    return specs


def _check_specs() -> list[dg.AssetCheckSpec]:
    keys = {"bronze": [BRONZE_ASSET_KEY], "silver": [SILVER_ASSET_KEY],
            "gold": [gold_asset_key(m) for m in load_marts()]}
    return [
        dg.AssetCheckSpec(name, asset=key, description=description, blocking=blocking,
                          partitions_def=None if layer == "gold" else guidewire_tables)
        for layer, names in CHECKS.items() for key in keys[layer] for name, description, blocking in names
    ]


def build_medallion_asset() -> dg.AssetsDefinition:
    @dg.multi_asset(specs=_specs(), check_specs=_check_specs(), can_subset=True, name="medallion",
                    pool=MEDALLION_POOL)
    def medallion(context: dg.AssetExecutionContext, notebook_runner: NotebookRunner,
                  lakehouse: LakehouseResource):
        """Bronze and silver for the run's partitions and the selected gold marts, in one runner call."""
        selected = context.selected_asset_keys
        layers = tuple(layer for layer, key in (("bronze", BRONZE_ASSET_KEY), ("silver", SILVER_ASSET_KEY))
                       if key in selected)
        marts = [m for m in load_marts().values() if gold_asset_key(m.name) in selected]
        tables = list(context.partition_keys) if layers else []
        outcome = run_medallion_step(context, notebook_runner, lakehouse.layout(), tables, marts,
                                     (*layers, *(("gold",) if marts else ())))
        raise_for_failures(describe_failures(outcome), outcome.failures, len(tables) + len(marts),
                           failure_metadata(outcome))
        yield from ()

    return medallion


class MedallionConfig(dg.Config):
    tables: list[str] = Field(default_factory=list, description="Tables for bronze and silver. Empty: every "
                              "table whose bronze or silver is behind its input (from the event log).")


def medallion_for(context: dg.OpExecutionContext, tables: list[str], notebook_runner: NotebookRunner,
                  lakehouse: LakehouseResource) -> tuple[MedallionOutcome, int]:
    """Bronze and silver for ``tables`` (empty: the backlog), and the marts reading them or behind
    their silver, everything recorded; returns the outcome and how many tables and marts ran."""
    backlog, behind_marts = medallion_backlog(context.instance, tables or None)
    tables = tables or backlog
    marts = {m.name: m for m in [*marts_reading(tables), *behind_marts]}
    outcome = run_medallion_step(context, notebook_runner, lakehouse.layout(), tables, list(marts.values()))
    return outcome, len(tables) + len(marts)


@dg.op(name=MEDALLION_OP, pool=MEDALLION_POOL)
def run_medallion(context: dg.OpExecutionContext, config: MedallionConfig, notebook_runner: NotebookRunner,
                  lakehouse: LakehouseResource) -> None:
    """The medallion for the configured tables (default: the backlog); fails naming what failed."""
    outcome, total = medallion_for(context, config.tables, notebook_runner, lakehouse)
    raise_for_failures(describe_failures(outcome), outcome.failures, total, failure_metadata(outcome))


@dg.job(name=MEDALLION_JOB, executor_def=dg.in_process_executor,
        description="Bronze and silver for a set of tables (run config `tables`; default: every table behind "
        "raw), then the gold marts that read them, in one runner call. The medallion sensor's target.")
def medallion_job() -> None:
    run_medallion()


def medallion_run_config(tables: list[str]) -> dict:
    return {"ops": {MEDALLION_OP: {"config": {"tables": tables}}}}


def build_medallion_sensor(automation: bool) -> dg.SensorDefinition:
    @dg.sensor(
        name="medallion_sensor", job=medallion_job, minimum_interval_seconds=SENSOR_INTERVAL_SECONDS,
        default_status=dg.DefaultSensorStatus.RUNNING if automation else dg.DefaultSensorStatus.STOPPED,
        description="Follows raw: asks medallion_job for the tables whose bronze or silver is behind their "
        "input (after new raw materializations), tables_per_run at a time; failed tables again after a back-off.",
    )
    def medallion_sensor(context: dg.SensorEvaluationContext, cda_source: CdaSource) -> dg.SensorResult:
        cursor = json.loads(context.cursor) if context.cursor else {}
        tracker = RunTracker.from_json(cursor)
        tracker.settle(context.instance)
        latest_raw = context.instance.get_latest_storage_id_by_partition(
            RAW_ASSET_KEY, dg.DagsterEventType.ASSET_MATERIALIZATION)
        newest = max(latest_raw.values(), default=0)
        due = tracker.due()
        if newest <= cursor.get("raw_storage_id", -1) and not due:
            return dg.SensorResult(skip_reason=dg.SkipReason("No new raw materialization; no retry due."),
                                   cursor=json.dumps({**cursor, **tracker.to_json()}))
        backlog, marts = medallion_backlog(context.instance)
        busy = tracker.in_flight() | tracker.waiting()
        tables = [t for t in backlog if t not in busy]
        size = max(cda_source.tables_per_run, 1)
        requests = []
        for start in range(0, len(tables), size):
            chunk = tables[start:start + size]
            key = ",".join(f"{t}@{latest_raw.get(t, 0)}#{int(tracker.retry.get(t, [0])[0])}" for t in chunk)
            requests.append(dg.RunRequest(run_key=run_key(MEDALLION_JOB, key),
                                          run_config=medallion_run_config(chunk),
                                          tags={"guidewire/tables": str(len(chunk))}))
        if not requests and marts and not tracker.runs:  # marts behind with every table caught up
            requests.append(dg.RunRequest(run_key=f"{MEDALLION_JOB}:marts:{newest}",
                                          run_config=medallion_run_config([])))
        tracker.launched(requests, lambda r: r.run_config["ops"][MEDALLION_OP]["config"]["tables"])
        new_cursor = json.dumps({"raw_storage_id": newest, **tracker.to_json()})
        if not requests:
            return dg.SensorResult(skip_reason=dg.SkipReason("Raw changed, but no table is behind."), cursor=new_cursor)
        context.log.info(f"{len(tables)} tables behind raw, {len(requests)} runs")
        return dg.SensorResult(run_requests=requests, cursor=new_cursor)

    return medallion_sensor


def build_notebook_runner(settings: Settings) -> NotebookRunner:
    """The Databricks runner when a workspace is configured (``DATABRICKS_HOST`` with a token or a service
    principal, see ``databricks_auth.py``); else the local one.

    On Databricks: ``DATABRICKS_CLUSTER_ID`` (the SDK's own variable) runs every task on that cluster;
    without it the tasks are serverless. Raises ``MedallionConfigError`` (at Definitions load) when the
    Delta root is a local path: a cluster cannot see it, and the run would be green with nothing written."""
    from guidewire_pipeline.medallion.runners.local import LocalNotebookRunner

    if not settings.databricks_configured:
        return LocalNotebookRunner()
    # Only now: databricks-sdk alone is 0.9 s of every process's start (the CLI, each run, each sensor tick).
    from guidewire_pipeline.medallion.runners.databricks import DatabricksNotebookRunner

    if settings.lakehouse.is_local:
        raise MedallionConfigError(
            f"DATABRICKS_HOST is set, so the medallion runs on Databricks, but GW_DELTA_ROOT is the local path "
            f"{settings.delta_root!r}, which no cluster can read. Set GW_DELTA_ROOT to the s3:// root of the "
            "lakehouse (covered by a Unity Catalog external location), or unset DATABRICKS_HOST to run locally."
        )
    overrides = {"existing_cluster_id": os.environ.get("DATABRICKS_CLUSTER_ID") or None}
    # Host and credentials come from the environment as EnvVars: never shown in the UI.
    return DatabricksNotebookRunner.from_env(**{k: v for k, v in overrides.items() if v})


def build_defs(settings: Settings) -> dg.Definitions:
    from guidewire_pipeline.medallion.databricks_job import build_databricks_run_now_job

    run_now = build_databricks_run_now_job()
    return dg.Definitions(
        assets=[build_medallion_asset()],
        jobs=[medallion_job, *([run_now] if run_now is not None else [])],
        sensors=[build_medallion_sensor(settings.automation)],
    )
