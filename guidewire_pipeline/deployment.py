"""The Definitions of one deployment: every domain's assets, jobs, sensors and checks, and each
resource bound ONCE from the settings (``resources.py``: ``dg.EnvVar`` where the environment provides a
value). ``definitions.py`` calls ``build_definitions(load_settings())``; tests call it with their own
``Settings``.
"""

from __future__ import annotations

import dagster as dg

from guidewire_pipeline.maintenance_defs import defs as maintenance_defs
from guidewire_pipeline.medallion.defs import build_defs as build_medallion_defs
from guidewire_pipeline.medallion.defs import build_notebook_runner
from guidewire_pipeline.pipeline import guidewire_job
from guidewire_pipeline.raw.assets import RAW_IO_MANAGER_KEY
from guidewire_pipeline.raw.defs import build_defs as build_raw_defs
from guidewire_pipeline.raw.io_manager import RayDeltaIOManager
from guidewire_pipeline.raw.resources import CdaSource
from guidewire_pipeline.resources import bind_databricks_workspace, bind_lakehouse, from_env
from guidewire_pipeline.settings import Settings
from guidewire_pipeline.sharing.defs import build_defs as build_sharing_defs
from guidewire_pipeline.sharing.defs import build_sharing_resource


def build_resources(settings: Settings) -> dict[str, object]:
    """Every resource of the Definitions, bound once; the lakehouse is the same object everywhere."""
    lakehouse = bind_lakehouse(settings)
    workspace = bind_databricks_workspace()
    return {
        "lakehouse": lakehouse,
        "databricks_workspace": workspace,
        "cda_source": CdaSource(
            manifest_uri=from_env("GW_MANIFEST_URI", settings.manifest_uri),
            include_tables=list(settings.include_tables), exclude_tables=list(settings.exclude_tables),
            largest_tables_first=settings.largest_tables_first, tables_per_run=settings.tables_per_run,
            max_lag_minutes=settings.max_lag_minutes),
        RAW_IO_MANAGER_KEY: RayDeltaIOManager(lakehouse=lakehouse, workspace=workspace,
                                              ray_address=from_env("RAY_ADDRESS")),
        "notebook_runner": build_notebook_runner(settings),
        "delta_sharing": build_sharing_resource(settings, lakehouse),
    }


def build_definitions(settings: Settings) -> dg.Definitions:
    return dg.Definitions.merge(
        build_raw_defs(settings),
        build_medallion_defs(settings),
        build_sharing_defs(settings),
        maintenance_defs,
        dg.Definitions(jobs=[guidewire_job], resources=build_resources(settings),
                       # Steps of one run share one process: a UI materialization of one table and its
                       # checks starts one process, not four (19-34 s on this machine before).
                       executor=dg.in_process_executor),
    )
