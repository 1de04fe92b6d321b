"""The sharing plan: what must change in the workspace so that it matches a share pack (no Dagster, no SDK).

``compute_plan(pack, live)`` diffs the desired state (the pack) against the live state (read by a
backend), keyed by name, never by position. Only fields the pack manages are compared; server-set
fields (``added_at``, ``added_by``, ``status``, tokens, timestamps ...) are never part of ``LiveState``.

Rules, in the spirit of Terraform's ``databricks_share`` / ``databricks_recipient``, but stated in the plan:

- *Replace*: a recipient's authentication type and metastore id cannot be updated in place; the
  recipient would be deleted and recreated (its grants and credentials are lost). The plan refuses
  that unless ``allow_replace`` is set, and names the change. Same for a data object's ``shared_as``.
- *Managed resources only*: resources this pack creates carry a marker in their comment
  (``[managed by share pack '<pack_id>']``). An existing resource without the marker is adopted only
  with ``adopt: true``; one managed by another pack is refused.
- *Prune*: a resource marked for this pack that is no longer in the pack is deleted only with
  ``prune: true``; otherwise it is listed as orphaned.

- *Rotate*: a token recipient named in ``rotate`` (``*``: every token recipient of the pack) gets a
  new credential; its old token stops working. Nothing in the pack changes for that.
- *Known tables*: a data object must name a table the pipeline produces or one that exists
  (``known_tables``, read by the backend); an unknown one is refused with its YAML line or Excel cell.

A plan with refusals is *blocked*: nothing of it may be applied.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from guidewire_pipeline.sharing.sharepack import DataObjectSpec, RecipientSpec, SharePack, ShareSpec

Locate = Callable[[tuple[str | int, ...]], str]
ROTATE_ALL = "*"

# -- managed-by marker --------------------------------------------------------------------------------
_MARKER = re.compile(r"\s*\[managed by share pack '([^']+)'\]\s*$")


def with_marker(comment: str | None, pack_id: str) -> str:
    """The comment written to the workspace: the pack's comment plus the managed-by marker."""
    marker = f"[managed by share pack '{pack_id}']"
    return f"{comment} {marker}" if comment else marker


def managing_pack(comment: str | None) -> str | None:
    """The pack id in a live comment's marker, or None when no pack manages the resource."""
    match = _MARKER.search(comment or "")
    return match.group(1) if match else None


# -- live state ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LiveObject:
    name: str
    data_object_type: str = "TABLE"
    shared_as: str | None = None
    comment: str | None = None
    cdf_enabled: bool | None = None
    history_sharing: bool | None = None


@dataclass(frozen=True)
class LiveShare:
    name: str
    comment: str | None
    objects: dict[str, LiveObject] = field(default_factory=dict)
    grants: frozenset[str] = frozenset()
    """Recipients holding SELECT on the share."""


@dataclass(frozen=True)
class LiveRecipient:
    name: str
    authentication_type: str
    comment: str | None = None
    metastore_id: str | None = None
    allowed_ips: tuple[str, ...] = ()
    properties: dict[str, str] = field(default_factory=dict)


@dataclass
class LiveState:
    """What a backend read: the pack's shares and recipients that exist, plus every resource that
    carries this pack's marker (to find orphans)."""

    shares: dict[str, LiveShare] = field(default_factory=dict)
    recipients: dict[str, LiveRecipient] = field(default_factory=dict)


# -- actions --------------------------------------------------------------------------------------------
class ActionKind(StrEnum):
    CREATE_RECIPIENT = "create_recipient"
    UPDATE_RECIPIENT = "update_recipient"
    REPLACE_RECIPIENT = "replace_recipient"
    DELETE_RECIPIENT = "delete_recipient"
    ROTATE_TOKEN = "rotate_token"
    CREATE_SHARE = "create_share"
    UPDATE_SHARE = "update_share"
    DELETE_SHARE = "delete_share"
    ADD_OBJECT = "add_object"
    UPDATE_OBJECT = "update_object"
    REMOVE_OBJECT = "remove_object"
    GRANT = "grant"
    REVOKE = "revoke"


@dataclass(frozen=True)
class Change:
    field: str
    before: Any
    after: Any

    def __str__(self) -> str:
        return f"{self.field}: {_show(self.before)} → {_show(self.after)}"


def _show(value: Any) -> str:
    if value is None or value == () or value == []:
        return "∅"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(map(str, value)) + "]"
    return repr(value) if isinstance(value, str) else str(value)


@dataclass(frozen=True)
class Action:
    """One change to one resource. ``attributes`` is what the resource looks like after the action
    (recorded in the audit table); ``changes`` shows field by field what moves."""

    kind: ActionKind
    share: str | None
    name: str
    reason: str
    changes: tuple[Change, ...] = ()
    attributes: dict[str, Any] = field(default_factory=dict)

    @property
    def resource_type(self) -> str:
        if self.kind in (ActionKind.ADD_OBJECT, ActionKind.UPDATE_OBJECT, ActionKind.REMOVE_OBJECT):
            return "data_object"
        if self.kind in (ActionKind.GRANT, ActionKind.REVOKE):
            return "grant"
        if self.kind == ActionKind.ROTATE_TOKEN:
            return "recipient"
        return "recipient" if "recipient" in self.kind.value else "share"

    @property
    def resource_name(self) -> str:
        """Unique per resource: ``share/object`` for objects, ``share/recipient`` for grants."""
        return f"{self.share}/{self.name}" if self.resource_type in ("data_object", "grant") else self.name

    def describe(self) -> str:
        changes = "; ".join(map(str, self.changes))
        if self.resource_type == "grant":
            what = f"SELECT on share {self.share} {'to' if self.kind == ActionKind.GRANT else 'from'} {self.name}"
        else:
            what = f"{self.resource_type} {self.resource_name}"
        return f"{self.kind.value} {what}" + (f" ({changes})" if changes else "")


@dataclass(frozen=True)
class Refusal:
    """A change the rules forbid; it blocks the whole plan. ``message`` says what to do."""

    resource_type: str
    name: str
    message: str


@dataclass(frozen=True)
class Orphan:
    resource_type: str
    name: str
    message: str


@dataclass
class Plan:
    pack_id: str
    actions: list[Action] = field(default_factory=list)
    refusals: list[Refusal] = field(default_factory=list)
    orphans: list[Orphan] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def is_empty(self) -> bool:
        return not self.actions

    @property
    def blocked(self) -> bool:
        return bool(self.refusals)

    def counts(self) -> dict[str, int]:
        """Number of actions per kind, every kind present (zeros included) for stable metadata."""
        counted = Counter(a.kind.value for a in self.actions)
        return {kind.value: counted.get(kind.value, 0) for kind in ActionKind}

    def to_markdown(self) -> str:
        """The plan as markdown: a table of actions, then refusals, orphans and warnings."""
        lines = [f"**Share pack `{self.pack_id}`: {len(self.actions)} action(s)**", ""]
        if self.actions:
            lines += ["| # | action | resource | name | changes | why |", "|---|---|---|---|---|---|"]
            for i, a in enumerate(self.actions, 1):
                changes = "<br>".join(_md(str(c)) for c in a.changes) or _md(_attribute_summary(a)) or "—"
                lines.append(
                    f"| {i} | {a.kind.value} | {a.resource_type} | `{a.resource_name}` | {changes} | {_md(a.reason)} |"
                )
        else:
            lines.append("No changes: the workspace matches the pack.")
        for title, items in (
            ("Refused (nothing will be applied)", self.refusals),
            ("Orphaned", self.orphans),
        ):
            if items:
                lines += ["", f"**{title}**", ""]
                lines += [f"- {i.resource_type} `{i.name}`: {_md(i.message)}" for i in items]
        if self.warnings:
            lines += ["", "**Warnings**", ""] + [f"- {_md(w)}" for w in self.warnings]
        return "\n".join(lines)


def _attribute_summary(action: Action) -> str:
    """For creations and additions: the attributes that will be set, Terraform's ``+ key = value``."""
    if action.kind not in (
        ActionKind.CREATE_RECIPIENT,
        ActionKind.CREATE_SHARE,
        ActionKind.ADD_OBJECT,
        ActionKind.GRANT,
    ):
        return ""
    shown = {k: v for k, v in action.attributes.items() if v not in (None, [], {}, "") and k != "name"}
    return "<br>".join(f"+ {k} = {_show(v)}" for k, v in shown.items())


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


# -- diff -------------------------------------------------------------------------------------------------
def recipient_attributes(spec: RecipientSpec, pack_id: str) -> dict[str, Any]:
    """The attributes a recipient should have in the workspace (no secrets: tokens are server-side)."""
    return {
        "authentication_type": spec.authentication_type,
        "comment": with_marker(spec.comment, pack_id),
        "metastore_id": spec.metastore_id,
        "allowed_ips": sorted(spec.allowed_ips),
        "properties": {"contact_email": spec.email} if spec.email else {},
    }


def object_attributes(spec: DataObjectSpec) -> dict[str, Any]:
    return {
        "name": spec.name,
        "data_object_type": "TABLE",
        "shared_as": spec.shared_as,
        "comment": spec.comment,
        "cdf_enabled": spec.cdf_enabled,
        "history_sharing": spec.history_sharing,
    }


def _ownership(
    pack: SharePack, spec: RecipientSpec | ShareSpec, kind: str, live_comment: str | None
) -> tuple[Refusal | None, bool]:
    """(refusal, adopting) for an existing resource with the same name as ``spec``."""
    owner = managing_pack(live_comment)
    if owner == pack.pack_id:
        return None, False
    if owner is not None:
        return Refusal(
            kind,
            spec.name,
            f"{kind} {spec.name!r} is managed by share pack {owner!r}: remove it from "
            "one of the two packs (or release it there first)",
        ), False
    if pack.adopts(spec):
        return None, True
    return Refusal(
        kind,
        spec.name,
        f"{kind} {spec.name!r} already exists in the workspace and no share pack "
        f"manages it: set `adopt: true` on this {kind} (or `options.adopt: true`) to take it over, "
        "or rename it in the pack",
    ), False


def compute_plan(
    pack: SharePack,
    live: LiveState,
    *,
    rotate: Collection[str] = (),
    known_tables: Collection[str] | None = None,
    locate: Locate | None = None,
) -> Plan:
    """Diff ``pack`` against ``live``. Pure: reads nothing, writes nothing.

    ``rotate`` names token recipients whose credential is renewed (``*``: all of them); a name not in
    the pack, or a D2D recipient, is refused. ``known_tables`` (None: not checked) lists the data
    objects that exist or are produced; every other one is refused, located with ``locate``.
    """
    plan = Plan(pack.pack_id)
    pid = pack.pack_id
    replaced: set[str] = set()
    refused: set[str] = set()

    # recipients
    for spec in pack.recipient:
        want = recipient_attributes(spec, pid)
        have = live.recipients.get(spec.name)
        if have is None:
            plan.actions.append(
                Action(ActionKind.CREATE_RECIPIENT, None, spec.name, "not in the workspace", attributes=want)
            )
            continue
        refusal, adopting = _ownership(pack, spec, "recipient", have.comment)
        if refusal:
            plan.refusals.append(refusal)
            refused.add(spec.name)
            continue
        replace_changes = [
            Change(f, b, a)
            for f, b, a in (
                ("authentication_type", have.authentication_type, want["authentication_type"]),
                ("metastore_id", have.metastore_id, want["metastore_id"]),
            )
            if b != a
        ]
        if replace_changes:
            if not pack.allows_replace(spec):
                what = "; ".join(map(str, replace_changes))
                plan.refusals.append(
                    Refusal(
                        "recipient",
                        spec.name,
                        (
                            f"needs a replace ({what}): the recipient would be deleted and recreated, which drops its "
                            "grants and invalidates its credentials. Set `allow_replace: true` on recipient "
                            f"{spec.name!r} (or `options.allow_replace: true`) to accept, or keep the old value"
                        ),
                    )
                )
                refused.add(spec.name)
                continue
            replaced.add(spec.name)
            plan.actions.append(
                Action(
                    ActionKind.REPLACE_RECIPIENT,
                    None,
                    spec.name,
                    "forces replacement (allow_replace is set)",
                    tuple(replace_changes),
                    want,
                )
            )
            continue
        changes = [
            Change(f, b, a)
            for f, b, a in (
                ("comment", have.comment, want["comment"]),
                ("allowed_ips", sorted(have.allowed_ips), want["allowed_ips"]),
            )
            if b != a
        ]
        if (
            want["properties"]
            and {k: have.properties.get(k) for k in want["properties"]} != want["properties"]
        ):
            changes.append(
                Change(
                    "properties", {k: have.properties.get(k) for k in want["properties"]}, want["properties"]
                )
            )
        if changes:
            reason = "adopt: mark as managed by this pack" if adopting else "differs from the pack"
            plan.actions.append(
                Action(ActionKind.UPDATE_RECIPIENT, None, spec.name, reason, tuple(changes), want)
            )

    _plan_rotations(pack, live, rotate, refused | replaced, plan)
    if known_tables is not None:
        plan.refusals.extend(unknown_object_refusals(pack, known_tables, locate))

    # shares, their objects and grants
    for spec in pack.share:
        have_share = live.shares.get(spec.name)
        comment = with_marker(spec.comment, pid)
        grants_wanted = [r for r in spec.recipients if r not in refused]
        if have_share is None:
            plan.actions.append(
                Action(
                    ActionKind.CREATE_SHARE,
                    None,
                    spec.name,
                    "not in the workspace",
                    attributes={"comment": comment},
                )
            )
            for obj in spec.data_objects:
                plan.actions.append(
                    Action(
                        ActionKind.ADD_OBJECT,
                        spec.name,
                        obj.name,
                        "new share",
                        attributes=object_attributes(obj),
                    )
                )
            for recipient in grants_wanted:
                plan.actions.append(
                    Action(
                        ActionKind.GRANT,
                        spec.name,
                        recipient,
                        "new share",
                        attributes={"privilege": "SELECT"},
                    )
                )
            continue
        refusal, adopting = _ownership(pack, spec, "share", have_share.comment)
        if refusal:
            plan.refusals.append(refusal)
            continue
        if have_share.comment != comment:
            reason = "adopt: mark as managed by this pack" if adopting else "comment differs from the pack"
            plan.actions.append(
                Action(
                    ActionKind.UPDATE_SHARE,
                    None,
                    spec.name,
                    reason,
                    (Change("comment", have_share.comment, comment),),
                    {"comment": comment},
                )
            )
        _diff_objects(pack, spec, have_share, plan)
        holders = {r for r in have_share.grants if r not in replaced}
        for recipient in grants_wanted:
            if recipient not in holders:
                why = "recipient is replaced" if recipient in replaced else "not granted in the workspace"
                plan.actions.append(
                    Action(ActionKind.GRANT, spec.name, recipient, why, attributes={"privilege": "SELECT"})
                )
        for recipient in sorted(holders - set(spec.recipients)):
            plan.actions.append(
                Action(
                    ActionKind.REVOKE,
                    spec.name,
                    recipient,
                    "granted in the workspace, not in the pack (granted by hand?)",
                )
            )

    # orphans: resources marked for this pack that the pack no longer lists
    for kind, live_resources, listed, delete in (
        ("share", live.shares, {s.name for s in pack.share}, ActionKind.DELETE_SHARE),
        ("recipient", live.recipients, {r.name for r in pack.recipient}, ActionKind.DELETE_RECIPIENT),
    ):
        for name, resource in sorted(live_resources.items()):
            if name in listed or managing_pack(resource.comment) != pid:
                continue
            if pack.options.prune:
                plan.actions.append(Action(delete, None, name, "not in the pack (prune is set)"))
            else:
                plan.orphans.append(Orphan(kind, name, "managed by this pack but no longer in it: set "
                                                       "`options.prune: true` to delete it, or add it back"))

    plan.warnings.extend(_strategy_warnings(pack, live))
    plan.actions.sort(key=lambda a: _ORDER.index(a.kind))
    return plan


# Apply order: recipients before the grants that name them; revokes before deletes.
_ORDER = [
    ActionKind.REPLACE_RECIPIENT,
    ActionKind.CREATE_RECIPIENT,
    ActionKind.UPDATE_RECIPIENT,
    ActionKind.ROTATE_TOKEN,
    ActionKind.CREATE_SHARE,
    ActionKind.UPDATE_SHARE,
    ActionKind.REMOVE_OBJECT,
    ActionKind.ADD_OBJECT,
    ActionKind.UPDATE_OBJECT,
    ActionKind.GRANT,
    ActionKind.REVOKE,
    ActionKind.DELETE_SHARE,
    ActionKind.DELETE_RECIPIENT,
]


def _plan_rotations(
    pack: SharePack, live: LiveState, rotate: Collection[str], skip: set[str], plan: Plan
) -> None:
    """ROTATE_TOKEN for the named token recipients that exist and are not replaced anyway."""
    names = set(rotate)
    for name in sorted(names - {ROTATE_ALL} - {r.name for r in pack.recipient}):
        plan.refusals.append(Refusal("recipient", name, f"cannot rotate the token of {name!r}: it is not a "
                                     "recipient of this pack (check the name, or use '*' for all)"))
    for spec in pack.recipient:
        if spec.name not in names and ROTATE_ALL not in names:
            continue
        if spec.type != "D2O":
            if spec.name in names:
                plan.refusals.append(Refusal("recipient", spec.name, f"cannot rotate the token of {spec.name!r}: "
                                             "it is a D2D recipient, which has no token"))
            continue
        if spec.name in skip or spec.name not in live.recipients:
            continue  # refused, replaced, or created: it gets a new credential or none anyway
        plan.actions.append(Action(ActionKind.ROTATE_TOKEN, None, spec.name, "token rotation requested",
                                   attributes=recipient_attributes(spec, pack.pack_id)))


def unknown_object_refusals(
    pack: SharePack, known_tables: Collection[str], locate: Locate | None = None
) -> list[Refusal]:
    """One refusal per data object that names no known table, with its YAML line or Excel cell."""
    refusals = []
    known = set(known_tables)
    for i, share in enumerate(pack.share):
        for j, obj in enumerate(share.data_objects):
            if obj.name in known:
                continue
            where = f"{locate(('share', i, 'data_objects', j))}: " if locate else ""
            refusals.append(Refusal(
                "data_object", f"{share.name}/{obj.name}",
                f"{where}share[{i}].data_objects[{j}]: table {obj.name!r} does not exist and this pipeline "
                "does not produce it: name a gold mart (<catalog>.gold.<mart>, one per SQL file in "
                "medallion/gold/) or a table that exists (in Unity Catalog, or under GW_DELTA_ROOT for "
                "the local sharing server)",
            ))
    return refusals


def _diff_objects(pack: SharePack, spec: ShareSpec, have: LiveShare, plan: Plan) -> None:
    wanted = {obj.name: obj for obj in spec.data_objects}
    for name, obj in wanted.items():
        live_obj = have.objects.get(name)
        if live_obj is None:
            plan.actions.append(
                Action(
                    ActionKind.ADD_OBJECT,
                    spec.name,
                    name,
                    "not in the share (removed by hand?)",
                    attributes=object_attributes(obj),
                )
            )
            continue
        if obj.shared_as is not None and obj.shared_as != live_obj.shared_as:
            change = Change("shared_as", live_obj.shared_as, obj.shared_as)
            if not pack.allows_replace(spec):
                plan.refusals.append(
                    Refusal(
                        "data_object",
                        f"{spec.name}/{name}",
                        (
                            f"needs a replace ({change}): the object would be removed and added again under the new "
                            f"name, breaking recipients' queries. Set `allow_replace: true` on share {spec.name!r} to "
                            "accept, or keep the old shared_as"
                        ),
                    )
                )
                continue
            plan.actions.append(
                Action(
                    ActionKind.REMOVE_OBJECT, spec.name, name, "forces replacement of shared_as", (change,)
                )
            )
            plan.actions.append(
                Action(
                    ActionKind.ADD_OBJECT,
                    spec.name,
                    name,
                    "forces replacement of shared_as",
                    (change,),
                    object_attributes(obj),
                )
            )
            continue
        # Only fields the pack declares are compared; the server fills in the others.
        changes = tuple(
            Change(f, getattr(live_obj, f), getattr(obj, f))
            for f in ("comment", "cdf_enabled", "history_sharing")
            if getattr(obj, f) is not None and getattr(obj, f) != getattr(live_obj, f)
        )
        if changes:
            plan.actions.append(
                Action(
                    ActionKind.UPDATE_OBJECT,
                    spec.name,
                    name,
                    "differs from the pack",
                    changes,
                    object_attributes(obj),
                )
            )
    for name in sorted(set(have.objects) - set(wanted)):
        plan.actions.append(
            Action(
                ActionKind.REMOVE_OBJECT,
                spec.name,
                name,
                "in the share, not in the pack (added by hand?)",
                attributes={"data_object_type": have.objects[name].data_object_type},
            )
        )


def _strategy_warnings(pack: SharePack, live: LiveState) -> list[str]:
    strategy = pack.metadata.strategy
    existing = [s.name for s in pack.share if s.name in live.shares]
    existing += [r.name for r in pack.recipient if r.name in live.recipients]
    if strategy == "NEW" and existing:
        return [
            f"metadata.strategy is NEW but {', '.join(sorted(existing))} already exist(s): the plan "
            "treats the pack as an update; set strategy: UPDATE (or remove it) to silence this warning"
        ]
    if strategy == "UPDATE" and not existing and (pack.share or pack.recipient):
        return [
            "metadata.strategy is UPDATE but nothing in the pack exists yet: the plan creates everything; "
            "set strategy: NEW (or remove it) to silence this warning"
        ]
    return []
