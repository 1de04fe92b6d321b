"""``databricks_job_run_now``: trigger an existing Databricks job (``DATABRICKS_JOB_ID``) and wait for it.

The job is the medallion's multi-task job deployed with the Asset Bundle (``databricks.yml`` at the
repository root: bronze -> silver -> gold over every raw table), as opposed to the one-time runs
``DatabricksNotebookRunner`` submits. Built with dagster-databricks' ``create_databricks_run_now_op`` and
``DatabricksClientResource``; host and token (or the service principal's id and secret) are ``dg.EnvVar``s.
"""

from __future__ import annotations

import os
from typing import Any

import dagster as dg

JOB_NAME = "databricks_job_run_now"


def _client_resource() -> Any:
    """PAT when ``DATABRICKS_TOKEN`` is set, else the OAuth M2M service principal; secrets as EnvVars."""
    from dagster_databricks import DatabricksClientResource
    from dagster_databricks.resources import OauthCredentials

    if os.environ.get("DATABRICKS_TOKEN"):
        return DatabricksClientResource(host=dg.EnvVar("DATABRICKS_HOST"), token=dg.EnvVar("DATABRICKS_TOKEN"))
    return DatabricksClientResource(
        host=dg.EnvVar("DATABRICKS_HOST"),
        oauth_credentials=OauthCredentials(client_id=dg.EnvVar("DATABRICKS_CLIENT_ID"),
                                           client_secret=dg.EnvVar("DATABRICKS_CLIENT_SECRET")),
    )


def build_databricks_run_now_job(poll_interval_seconds: float = 10.0) -> dg.JobDefinition | None:
    """The run-now job for ``DATABRICKS_JOB_ID``, or None when that variable is unset or empty.

    Raises ``ValueError`` when ``DATABRICKS_JOB_ID`` is not a number. The op fails when the
    Databricks run ends in any state but SUCCESS (the message carries Databricks' state message);
    ``poll_interval_seconds`` is also op config (``ops.databricks_run_now.config``).
    """
    raw_job_id = os.environ.get("DATABRICKS_JOB_ID", "").strip()
    if not raw_job_id:
        return None
    try:
        job_id = int(raw_job_id)
    except ValueError:
        raise ValueError(
            f"DATABRICKS_JOB_ID must be the numeric id of a Databricks job (see the job's URL), got {raw_job_id!r}."
        ) from None
    from dagster_databricks import (
        create_databricks_run_now_op,  # 1 s of imports: only when the job is defined
    )

    run_now = create_databricks_run_now_op(
        databricks_job_id=job_id,
        poll_interval_seconds=poll_interval_seconds,
        name="databricks_run_now",
    )

    @dg.job(
        name=JOB_NAME,
        description=f"Runs the existing Databricks job {job_id} (DATABRICKS_JOB_ID) and waits for it to succeed.",
        resource_defs={"databricks": _client_resource()},
        tags={"databricks_job_id": str(job_id)},
    )
    def databricks_job_run_now() -> None:
        run_now()

    return databricks_job_run_now
