"""The sharing audit: every applied change as a row of an SCD type-2 Delta table (no Dagster here).

Table ``<GW_DELTA_ROOT>/audit/delta_sharing``, one row per version of a resource:

- ``resource_type`` (recipient, share, data_object, grant) and ``resource_name`` (``share/object`` and
  ``share/recipient`` for objects and grants): the key;
- ``attributes``: the resource's attributes after the change, as JSON (never a token or activation link);
- ``change`` (the action, e.g. ``add_object``) and ``change_detail`` (its human description);
- ``share_pack``, ``requestor``, ``project_name``, ``run_id`` (the Dagster run);
- ``effective_from``, ``effective_to`` (null while current) and ``is_current``.

``record_changes`` runs one ``merge()``: it closes the current row of every changed key
(``effective_to`` = now, ``is_current`` = false) and inserts the new versions. A deletion (delete,
remove, revoke) inserts a closed row, so the current view lists only what exists; deleting a share or
recipient also closes the current rows of its objects and grants.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from guidewire_pipeline.sharing.plan import ActionKind
from guidewire_pipeline.sharing.reconciler import ActionResult, Outcome
from guidewire_pipeline.sharing.sharepack import SharePack

AUDIT_SCHEMA = pa.schema(
    [
        pa.field("resource_type", pa.string(), nullable=False),
        pa.field("resource_name", pa.string(), nullable=False),
        pa.field("attributes", pa.string()),
        pa.field("change", pa.string(), nullable=False),
        pa.field("change_detail", pa.string()),
        pa.field("share_pack", pa.string()),
        pa.field("requestor", pa.string()),
        pa.field("project_name", pa.string()),
        pa.field("run_id", pa.string()),
        pa.field("effective_from", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("effective_to", pa.timestamp("us", tz="UTC")),
        pa.field("is_current", pa.bool_(), nullable=False),
    ]
)

_ENDS_RESOURCE = {
    ActionKind.DELETE_SHARE,
    ActionKind.DELETE_RECIPIENT,
    ActionKind.REMOVE_OBJECT,
    ActionKind.REVOKE,
}


def audit_table_uri(delta_root: str) -> str:
    return f"{delta_root.rstrip('/')}/audit/delta_sharing"


def record_changes(
    table_uri: str,
    storage_options: dict[str, str],
    results: list[ActionResult],
    pack: SharePack,
    run_id: str,
    now: datetime | None = None,
) -> int:
    """Append the applied (and converged) results as new SCD2 versions. Return the rows inserted.

    Creates the table on first use. Failed and skipped results are not recorded: they changed nothing.
    """
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    applied = [r for r in results if r.outcome in (Outcome.APPLIED, Outcome.CONVERGED)]
    if not applied:
        return 0
    at = now or datetime.now(UTC)
    inserts: list[dict[str, Any]] = []
    for r in applied:
        a = r.action
        ends = a.kind in _ENDS_RESOURCE
        inserts.append(
            {
                "resource_type": a.resource_type,
                "resource_name": a.resource_name,
                "attributes": None if ends else json.dumps(a.attributes, sort_keys=True, default=str),
                "change": a.kind.value,
                "change_detail": a.describe() + (f" [{r.message}]" if r.message else ""),
                "share_pack": pack.pack_id,
                "requestor": pack.metadata.requestor,
                "project_name": pack.metadata.project_name,
                "run_id": run_id,
                "effective_from": at,
                "effective_to": at if ends else None,
                "is_current": not ends,
            }
        )

    try:
        table = DeltaTable(table_uri, storage_options=storage_options)
    except TableNotFoundError:
        table = DeltaTable.create(table_uri, AUDIT_SCHEMA, storage_options=storage_options)

    close_keys = {(row["resource_type"], row["resource_name"]) for row in inserts}
    close_keys |= _cascaded_keys(table, applied)
    staged = [{**row, "merge_key": None} for row in inserts]
    staged += [
        {
            **{f.name: None for f in AUDIT_SCHEMA},
            "resource_type": t,
            "resource_name": n,
            "change": "close",
            "effective_from": at,
            "is_current": False,
            "merge_key": f"{t}|{n}",
        }
        for t, n in sorted(close_keys)
    ]
    source = pa.Table.from_pylist(staged, schema=AUDIT_SCHEMA.append(pa.field("merge_key", pa.string())))
    (
        table.merge(
            source,
            predicate="s.merge_key IS NOT NULL AND t.is_current AND "
            "t.resource_type = s.resource_type AND t.resource_name = s.resource_name",
            source_alias="s",
            target_alias="t",
        )
        .when_matched_update(updates={"effective_to": "s.effective_from", "is_current": "false"})
        .when_not_matched_insert_all(predicate="s.merge_key IS NULL", except_cols=["merge_key"])
        .execute()
    )
    return len(inserts)


def _cascaded_keys(table: Any, applied: list[ActionResult]) -> set[tuple[str, str]]:
    """Current object and grant rows that a share or recipient deletion (or replacement) ended."""
    shares = {r.action.name for r in applied if r.action.kind == ActionKind.DELETE_SHARE}
    recipients = {
        r.action.name
        for r in applied
        if r.action.kind in (ActionKind.DELETE_RECIPIENT, ActionKind.REPLACE_RECIPIENT)
    }
    if not shares and not recipients:
        return set()
    current = table.to_pyarrow_table(columns=["resource_type", "resource_name", "is_current"]).to_pylist()
    keys = set()
    for row in current:
        if not row["is_current"] or row["resource_type"] not in ("data_object", "grant"):
            continue
        share, _, member = row["resource_name"].partition("/")
        if share in shares or (row["resource_type"] == "grant" and member in recipients):
            keys.add((row["resource_type"], row["resource_name"]))
    return keys
