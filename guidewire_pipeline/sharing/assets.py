"""Dagster side of Delta Sharing: the resource, the ``delta_shares`` asset, its plan check and
``provision_shares``.

- ``DeltaSharingResource`` hands out a backend: Unity Catalog when a workspace is configured (PAT or
  OAuth M2M service principal through ``databricks_auth``, secrets bound with ``EnvVar`` so the UI
  never shows them), else the project's own Delta Sharing server (its state database). It carries
  the lakehouse (Delta root and catalog) it was bound with: the audit table and the tables the
  server serves live there.
- ``provision_shares(context, resource, apply)``: load the pack, read, plan, apply (if
  asked), audit. The pack is read here, when a sharing step runs, never when the Definitions load.
- ``build_delta_shares_asset(...)`` and ``build_sharepack_plan_check(...)``: the asset (downstream of
  every gold mart) and the check that shows the plan red when the pack is invalid or refused.
"""

from datetime import timedelta
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from guidewire_pipeline.cda.storage import Location
from guidewire_pipeline.databricks_auth import DatabricksAuth
from guidewire_pipeline.lakehouse import GOLD, Lakehouse
from guidewire_pipeline.medallion.marts import load_marts
from guidewire_pipeline.resources import LakehouseResource
from guidewire_pipeline.sharing.audit import audit_table_uri, record_changes
from guidewire_pipeline.sharing.backends import SharingBackend, SharingServerBackend, UnityCatalogBackend
from guidewire_pipeline.sharing.plan import LiveState
from guidewire_pipeline.sharing.reconciler import ActivationLinkStore, SharingResult, reconcile
from guidewire_pipeline.sharing.server import DEFAULT_SHARING_ENDPOINT
from guidewire_pipeline.sharing.server.state import SharingState
from guidewire_pipeline.sharing.sharepack import (
    DEFAULT_SHAREPACK,
    LoadedPack,
    SharePackInvalid,
    load_sharepack,
)

DELTA_SHARES_KEY = dg.AssetKey("delta_shares")
SHAREPACK_PLAN_CHECK = "sharepack_plan"
DEFAULT_ACTIVATION_LINK_DIR = "~/.guidewire_pipeline/activation-links"
DEFAULT_TOKEN_LIFETIME_DAYS = 365


class DeltaSharingResource(dg.ConfigurableResource):
    """Where shares are provisioned: Unity Catalog when ``host`` has credentials, else the local
    Delta Sharing server's state (``state_url``), which ``guidewire-pipeline share-server`` serves."""

    host: str | None = Field(default=None, description="Workspace URL (bind dg.EnvVar('DATABRICKS_HOST')).")
    token: str | None = Field(
        default=None, description="Personal access token (bind dg.EnvVar('DATABRICKS_TOKEN'))."
    )
    client_id: str | None = Field(
        default=None, description="OAuth M2M service principal id (bind dg.EnvVar('DATABRICKS_CLIENT_ID'))."
    )
    client_secret: str | None = Field(
        default=None, description="OAuth M2M secret (bind dg.EnvVar('DATABRICKS_CLIENT_SECRET'))."
    )
    activation_link_dir: str = Field(
        default=DEFAULT_ACTIVATION_LINK_DIR,
        description="Folder (0700) where token recipients' credentials are written, one 0600 file each: "
        "<recipient>.activation-link (Unity Catalog) or <recipient>.share (profile file, local server).",
    )
    lakehouse: LakehouseResource = Field(description="The lakehouse: tables served and the audit table.")
    sharepack: str | None = Field(default=None, description="GW_SHAREPACK: the share pack, YAML or .xlsx "
                                  "(unset: the shipped sharepacks/gold_marts.yaml). Read when a sharing step runs.")
    state_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the local sharing server's state (GW_SHARING_STATE_URL; default "
        "SQLite at ~/.guidewire_pipeline/sharing/state.db). Bind with EnvVar if it holds a password.",
    )
    endpoint: str = Field(
        default=DEFAULT_SHARING_ENDPOINT,
        description="The local server's public URL, written into profile files (GW_SHARING_ENDPOINT).",
    )
    token_lifetime_days: int = Field(
        default=DEFAULT_TOKEN_LIFETIME_DAYS, description="Lifetime of a new bearer token (GW_SHARING_TOKEN_DAYS)."
    )

    @property
    def configured(self) -> bool:
        """True when a Databricks workspace is configured (then Unity Catalog is the backend)."""
        return bool(self.host and (self.token or (self.client_id and self.client_secret)))

    def layout(self) -> Lakehouse:
        return self.lakehouse.layout()

    def sharepack_path(self) -> Path:
        """``GW_SHAREPACK`` or the shipped sample pack."""
        return Path(self.sharepack) if self.sharepack else DEFAULT_SHAREPACK

    def produced_tables(self) -> frozenset[str]:
        """The tables this pipeline produces that a share may name before they exist: the gold marts."""
        return frozenset(self.layout().table_name(GOLD, mart) for mart in load_marts())

    def backend(self) -> SharingBackend:
        if self.configured:
            auth = DatabricksAuth(host=self.host or "", token=self.token, client_id=self.client_id,
                                  client_secret=self.client_secret)
            return UnityCatalogBackend(auth.workspace_client(), self.produced_tables())
        return SharingServerBackend(SharingState(self.state_url), self.layout(), self.endpoint,
                                    timedelta(days=self.token_lifetime_days), self.produced_tables())

    @property
    def server_url(self) -> str:
        """Where shares live: the workspace, or the local server's endpoint (what profile files name)."""
        return (self.host or "") if self.configured else self.endpoint

    def link_store(self, backend: SharingBackend | None = None) -> ActivationLinkStore:
        kind = backend.credential_kind if backend is not None else "activation link"
        return ActivationLinkStore(self.activation_link_dir, kind)


def provision_shares(
    context: dg.OpExecutionContext | dg.AssetExecutionContext,
    resource: DeltaSharingResource,
    apply: bool,
    rotate: tuple[str, ...] = (),
) -> SharingResult:
    """Load the resource's pack, plan it against the live state and, if ``apply`` and
    nothing is refused, apply it and append the applied changes to the audit table
    ``<delta_root>/audit/delta_sharing``. ``rotate`` renews token recipients' credentials.

    Raises ``SharePackInvalid`` (one error naming the file and GW_SHAREPACK when it cannot be read;
    every problem with its location when it is invalid) before touching any backend.
    Returns the result even when actions failed; the caller decides whether that fails the step.
    The log carries the plan and outcomes, never a credential.
    """
    loaded = load_sharepack(resource.sharepack_path())
    backend = resource.backend()
    result = reconcile(loaded.pack, backend, resource.link_store(backend), apply=apply, rotate=rotate,
                       locate=loaded.locate)
    if not result.dry_run:
        location = Location.parse(audit_table_uri(resource.layout().delta_root))
        result.audit_rows = record_changes(
            location.delta_uri, location.delta_storage_options(), result.results, loaded.pack, context.run_id
        )
    for warning in result.plan.warnings:
        context.log.warning(warning)
    context.log.info(f"Share pack {loaded.source}: {result.summary()}")
    for refusal in result.plan.refusals:
        context.log.error(f"Refused {refusal.resource_type} {refusal.name}: {refusal.message}")
    for r in result.failed:
        context.log.error(f"{r.action.describe()}: {r.message}")
    for name, path in result.activation_links.items():
        context.log.info(f"Credential of recipient {name} written to {path} (readable by you only)")
    return result


def shares_markdown(pack_live: LiveState) -> str:
    """The shares as recipients see them: name, tables, recipients."""
    if not pack_live.shares:
        return "No shares yet."
    lines = ["| share | tables | recipients |", "|---|---|---|"]
    for name, share in sorted(pack_live.shares.items()):
        tables = "<br>".join(
            f"`{o.name}`" + (f" as `{o.shared_as}`" if o.shared_as else "") for o in share.objects.values()
        ) or "—"
        lines.append(f"| `{name}` | {tables} | {', '.join(sorted(share.grants)) or '—'} |")
    return "\n".join(lines)


def sharing_metadata(
    result: SharingResult, loaded: LoadedPack, server_url: str = "", live: LiveState | None = None
) -> dict[str, Any]:
    """Asset metadata: where recipients connect, the shares, the plan as markdown, counts per action,
    outcomes and the pack's metadata. Credentials appear only as the paths of the files holding them."""
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
    if server_url:
        metadata["sharing_server"] = dg.MetadataValue.url(server_url)
    if live is not None:
        metadata["shares"] = dg.MetadataValue.md(shares_markdown(live))
    metadata.update({f"count_{kind}": n for kind, n in result.plan.counts().items()})
    return metadata


class DeltaSharesConfig(dg.Config):
    dry_run: bool = Field(default=False, description="Plan only: read the live state, write nothing.")
    rotate: list[str] = Field(
        default_factory=list,
        description="Token recipients whose bearer token (or activation link) is renewed; '*' for all. "
        "Their old token stops working; the new credential file replaces the old one.",
    )


def _failure_for_pack(exc: SharePackInvalid) -> dg.Failure:
    return dg.Failure(description=str(exc), metadata={"problems": len(exc.problems), "sharepack": exc.source})


def build_delta_shares_asset(gold_deps: list[dg.AssetKey]) -> dg.AssetsDefinition:
    """The ``delta_shares`` asset, downstream of ``gold_deps`` (every gold mart: which ones the pack
    shares is known only when the pack is read, at run time)."""

    @dg.asset(
        key=DELTA_SHARES_KEY,
        deps=gold_deps,
        group_name="sharing",
        kinds={"deltasharing"},
        description="Delta Sharing recipients, shares and grants provisioned from the share pack "
        "(GW_SHAREPACK): in Unity Catalog when a workspace is configured, else in the local Delta "
        "Sharing server (guidewire-pipeline share-server). Metadata holds the server URL, the shares "
        "and the plan; a dry run writes nothing.",
    )
    def delta_shares(
        context: dg.AssetExecutionContext, config: DeltaSharesConfig, delta_sharing: DeltaSharingResource
    ) -> dg.MaterializeResult:
        try:
            loaded = load_sharepack(delta_sharing.sharepack_path())
            result = provision_shares(context, delta_sharing, apply=not config.dry_run,
                                      rotate=tuple(config.rotate))
        except SharePackInvalid as exc:
            raise _failure_for_pack(exc) from None
        live = delta_sharing.backend().read_state(loaded.pack)
        metadata = sharing_metadata(result, loaded, delta_sharing.server_url, live)
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


def build_sharepack_plan_check() -> dg.AssetChecksDefinition:
    """``sharepack_plan`` on ``delta_shares``: reads the pack and the live state, plans, writes
    nothing. Fails (red in the UI) when the pack cannot be read, is invalid, or its plan is refused;
    it blocks nothing, so a bad pack never stops data."""

    @dg.asset_check(
        asset=DELTA_SHARES_KEY,
        name=SHAREPACK_PLAN_CHECK,
        description="The share pack (GW_SHAREPACK) reads, validates, names only known tables, and its plan "
        "against the live state is not refused. Writes nothing.",
    )
    def sharepack_plan(delta_sharing: DeltaSharingResource) -> dg.AssetCheckResult:
        try:
            loaded = load_sharepack(delta_sharing.sharepack_path())
        except SharePackInvalid as exc:
            return dg.AssetCheckResult(
                passed=False,
                severity=dg.AssetCheckSeverity.ERROR,
                description=str(exc),
                metadata={"sharepack": exc.source, "problems": dg.MetadataValue.md(
                    "\n".join(f"- {p}" for p in exc.problems))},
            )
        backend = delta_sharing.backend()
        result = reconcile(loaded.pack, backend, delta_sharing.link_store(backend), apply=False,
                           locate=loaded.locate)
        plan = result.plan
        return dg.AssetCheckResult(
            passed=not plan.blocked,
            severity=dg.AssetCheckSeverity.ERROR,
            description=(f"{len(plan.refusals)} refusal(s): " + "; ".join(r.message for r in plan.refusals))
            if plan.blocked else f"{len(plan.actions)} action(s) pending, none refused",
            metadata={"sharepack": loaded.source, "plan": dg.MetadataValue.md(plan.to_markdown()),
                      "actions": len(plan.actions), "refused": len(plan.refusals)},
        )

    return sharepack_plan
