"""Dagster side of Delta Sharing: the resource, the ``delta_shares`` asset and ``provision_shares``.

- ``DeltaSharingResource`` holds the workspace host and token (bound through ``EnvVar`` so the UI never
  shows them) and hands out a backend: Unity Catalog when both are set, else the local dry run.
- ``provision_shares(context, resource, settings, apply)`` is the plain function behind the asset and
  the end of ``guidewire_e2e_job``: load the pack, read, plan, apply (if asked), audit.
- ``build_delta_shares_asset(...)`` builds the asset downstream of the gold marts the pack shares.
"""

from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from guidewire_pipeline.cda.storage import Location
from guidewire_pipeline.settings import Settings
from guidewire_pipeline.sharing.audit import audit_table_uri, record_changes
from guidewire_pipeline.sharing.backends import LocalBackend, SharingBackend, UnityCatalogBackend
from guidewire_pipeline.sharing.reconciler import ActivationLinkStore, SharingResult, reconcile
from guidewire_pipeline.sharing.sharepack import (
    DEFAULT_SHAREPACK,
    LoadedPack,
    SharePackInvalid,
    load_sharepack,
)

DELTA_SHARES_KEY = dg.AssetKey("delta_shares")
DEFAULT_ACTIVATION_LINK_DIR = "~/.guidewire_pipeline/activation-links"


class DeltaSharingResource(dg.ConfigurableResource):
    """Where shares are provisioned. Without ``host`` and ``token`` it is the local dry run."""

    host: str | None = Field(default=None, description="Workspace URL (bind dg.EnvVar('DATABRICKS_HOST')).")
    token: str | None = Field(
        default=None, description="Personal access token (bind dg.EnvVar('DATABRICKS_TOKEN'))."
    )
    activation_link_dir: str = Field(
        default=DEFAULT_ACTIVATION_LINK_DIR,
        description="Folder (0700) where TOKEN recipients' activation links are written, one 0600 file each.",
    )

    @property
    def configured(self) -> bool:
        return bool(self.host and self.token)

    def backend(self) -> SharingBackend:
        if not self.configured:
            return LocalBackend()
        from databricks.sdk import WorkspaceClient

        return UnityCatalogBackend(WorkspaceClient(host=self.host, token=self.token, auth_type="pat"))

    def link_store(self) -> ActivationLinkStore:
        return ActivationLinkStore(self.activation_link_dir)


def sharepack_path(settings: Settings) -> Path:
    """``GW_SHAREPACK`` or the shipped sample pack."""
    return Path(settings.sharepack) if settings.sharepack else DEFAULT_SHAREPACK


def provision_shares(
    context: dg.OpExecutionContext | dg.AssetExecutionContext,
    resource: DeltaSharingResource,
    settings: Settings,
    apply: bool,
) -> SharingResult:
    """Load the pack named by ``settings``, plan it against the live state and, if ``apply`` and a
    workspace is configured and nothing is refused, apply it and append the applied changes to the
    audit table ``<GW_DELTA_ROOT>/audit/delta_sharing``.

    Raises ``SharePackInvalid`` (every problem, with locations) before touching the workspace.
    Returns the result even when actions failed; the caller decides whether that fails the step.
    The log carries the plan and outcomes, never an activation link.
    """
    loaded = load_sharepack(sharepack_path(settings))
    result = reconcile(loaded.pack, resource.backend(), resource.link_store(), apply=apply)
    if not result.dry_run:
        location = Location.parse(audit_table_uri(settings.delta_root))
        result.audit_rows = record_changes(
            location.delta_uri, location.delta_storage_options(), result.results, loaded.pack, context.run_id
        )
    for warning in result.plan.warnings:
        context.log.warning(warning)
    context.log.info(f"Share pack {loaded.source}: {result.summary()}")
    for r in result.failed:
        context.log.error(f"{r.action.describe()}: {r.message}")
    for name, path in result.activation_links.items():
        context.log.info(f"Activation link of recipient {name} written to {path} (readable by you only)")
    return result


def sharing_metadata(result: SharingResult, loaded: LoadedPack) -> dict[str, Any]:
    """Asset metadata: the plan as markdown, counts per action, outcomes and the pack's metadata.
    Activation links appear only as the paths of the files that hold them."""
    meta = loaded.pack.metadata
    metadata: dict[str, Any] = {
        "mode": result.mode,
        "sharepack": loaded.source,
        "pack_id": loaded.pack.pack_id,
        "requestor": meta.requestor,
        "project_name": meta.project_name,
        "business_line": meta.business_line or "",
        "plan": dg.MetadataValue.md(result.plan.to_markdown()),
        "results": dg.MetadataValue.md(result.results_markdown()),
        "actions": len(result.plan.actions),
        "refused": len(result.plan.refusals),
        "orphaned": len(result.plan.orphans),
        "applied": len(result.applied),
        "failed": len(result.failed),
        "audit_rows": result.audit_rows,
        "activation_link_files": dg.MetadataValue.json(
            {k: str(v) for k, v in result.activation_links.items()}
        ),
    }
    metadata.update({f"count_{kind}": n for kind, n in result.plan.counts().items()})
    return metadata


class DeltaSharesConfig(dg.Config):
    dry_run: bool = Field(default=False, description="Plan only: read the workspace, write nothing.")


def build_delta_shares_asset(settings: Settings, gold_deps: list[dg.AssetKey]) -> dg.AssetsDefinition:
    """The ``delta_shares`` asset, downstream of ``gold_deps`` (the gold marts the pack shares)."""

    @dg.asset(
        key=DELTA_SHARES_KEY,
        deps=gold_deps,
        group_name="sharing",
        kinds={"databricks", "deltasharing"},
        description="Delta Sharing recipients, shares and grants provisioned from the share pack "
        "(GW_SHAREPACK). Metadata holds the plan; a dry run writes nothing.",
    )
    def delta_shares(
        context: dg.AssetExecutionContext, config: DeltaSharesConfig, delta_sharing: DeltaSharingResource
    ) -> dg.MaterializeResult:
        try:
            loaded = load_sharepack(sharepack_path(settings))
        except SharePackInvalid as exc:
            raise dg.Failure(description=str(exc), metadata={"problems": len(exc.problems)}) from None
        result = provision_shares(context, delta_sharing, settings, apply=not config.dry_run)
        metadata = sharing_metadata(result, loaded)
        if result.plan.blocked and not result.dry_run:
            refusals = "\n".join(f"- {r.resource_type} {r.name}: {r.message}" for r in result.plan.refusals)
            raise dg.Failure(
                description=f"The plan for {loaded.source} was refused; nothing was applied:\n{refusals}",
                metadata=metadata,
            )
        if result.failed:
            failures = "\n".join(f"- {r.action.describe()}: {r.message}" for r in result.failed)
            raise dg.Failure(
                description=f"{len(result.failed)} sharing action(s) failed; what was applied is "
                f"in the results metadata and the audit table. Rerun to converge:\n{failures}",
                metadata=metadata,
            )
        return dg.MaterializeResult(metadata=metadata)

    return delta_shares
