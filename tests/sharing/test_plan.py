"""The plan on its own (no server): rules for replace, adoption, prune, and server-set fields."""

from __future__ import annotations

from guidewire_pipeline.sharing.plan import (
    ActionKind,
    LiveObject,
    LiveRecipient,
    LiveShare,
    LiveState,
    compute_plan,
    with_marker,
)
from guidewire_pipeline.sharing.sharepack import SharePack

PACK_ID = "claims-analytics"


def _live_matching(pack: SharePack) -> LiveState:
    """The live state a successful apply of ``pack`` leaves behind."""
    live = LiveState()
    for r in pack.recipient:
        live.recipients[r.name] = LiveRecipient(
            r.name,
            r.authentication_type,
            with_marker(r.comment, PACK_ID),
            r.metastore_id,
            tuple(r.allowed_ips),
            {"contact_email": r.email} if r.email else {},
        )
    for s in pack.share:
        objects = {
            o.name: LiveObject(o.name, cdf_enabled=False, history_sharing=False) for o in s.data_objects
        }
        live.shares[s.name] = LiveShare(
            s.name, with_marker(s.comment, PACK_ID), objects, frozenset(s.recipients)
        )
    return live


def test_empty_live_state_creates_everything_in_dependency_order(sample_pack: SharePack):
    plan = compute_plan(sample_pack, LiveState())
    kinds = [a.kind for a in plan.actions]
    assert (
        kinds
        == [ActionKind.CREATE_RECIPIENT] * 2
        + [ActionKind.CREATE_SHARE] * 2
        + [ActionKind.ADD_OBJECT] * 2
        + [ActionKind.GRANT] * 3
    )
    assert plan.counts()["grant"] == 3 and plan.counts()["revoke"] == 0
    assert "| create_share | share | `claims_gold` |" in plan.to_markdown()


def test_matching_live_state_plans_nothing_and_ignores_server_fields(sample_pack: SharePack):
    # cdf_enabled / history_sharing are server defaults the pack does not declare: not a diff.
    plan = compute_plan(sample_pack, _live_matching(sample_pack))
    assert plan.is_empty and not plan.refusals and not plan.orphans


def test_objects_and_grants_are_keyed_by_name_not_position(sample_pack: SharePack):
    live = _live_matching(sample_pack)
    share = live.shares["claims_gold"]
    reordered = dict(reversed(list(share.objects.items())))
    live.shares["claims_gold"] = LiveShare(share.name, share.comment, reordered, share.grants)
    reversed_pack = sample_pack.model_copy(
        update={
            "recipient": list(reversed(sample_pack.recipient)),
            "share": list(reversed(sample_pack.share)),
        }
    )
    assert compute_plan(reversed_pack, live).is_empty


def test_changing_authentication_type_is_refused_unless_allow_replace(sample_pack: SharePack):
    live = _live_matching(sample_pack)
    acme = live.recipients["partner-acme"]
    live.recipients["partner-acme"] = LiveRecipient(
        acme.name, "DATABRICKS", acme.comment, "aws:us-west-2:19a85dee-54bc-43a2-87ab-023d0ec16013"
    )
    plan = compute_plan(sample_pack, live)
    assert plan.blocked
    (refusal,) = plan.refusals
    assert refusal.name == "partner-acme"
    assert "authentication_type: 'DATABRICKS' → 'TOKEN'" in refusal.message
    assert "allow_replace: true" in refusal.message

    allowed = sample_pack.model_copy(
        update={
            "recipient": [
                sample_pack.recipient[0].model_copy(update={"allow_replace": True}),
                sample_pack.recipient[1],
            ]
        }
    )
    plan = compute_plan(allowed, live)
    assert not plan.blocked
    assert [a.kind for a in plan.actions] == [ActionKind.REPLACE_RECIPIENT, ActionKind.GRANT]
    assert plan.actions[1].resource_name == "claims_gold/partner-acme"  # its grant is lost with it


def test_unmanaged_resource_is_adopted_only_with_adopt(sample_pack: SharePack):
    live = _live_matching(sample_pack)
    share = live.shares["claims_gold"]
    live.shares["claims_gold"] = LiveShare(share.name, "made by hand", share.objects, share.grants)
    plan = compute_plan(sample_pack, live)
    assert plan.blocked and "set `adopt: true`" in plan.refusals[0].message

    adopting = sample_pack.model_copy(
        update={"options": sample_pack.options.model_copy(update={"adopt": True})}
    )
    plan = compute_plan(adopting, live)
    (action,) = plan.actions
    assert action.kind == ActionKind.UPDATE_SHARE and action.reason.startswith("adopt")


def test_resource_of_another_pack_is_refused(sample_pack: SharePack):
    live = _live_matching(sample_pack)
    acme = live.recipients["partner-acme"]
    live.recipients["partner-acme"] = LiveRecipient(
        acme.name, acme.authentication_type, with_marker(None, "other")
    )
    plan = compute_plan(sample_pack, live)
    assert plan.blocked and "managed by share pack 'other'" in plan.refusals[0].message


def test_share_dropped_from_pack_is_orphaned_or_pruned(sample_pack: SharePack):
    live = _live_matching(sample_pack)
    smaller = sample_pack.model_copy(update={"share": sample_pack.share[:1]})
    plan = compute_plan(smaller, live)
    assert plan.is_empty
    assert [(o.resource_type, o.name) for o in plan.orphans] == [("share", "policies_gold")]
    assert "options.prune: true" in plan.orphans[0].message

    pruning = smaller.model_copy(update={"options": smaller.options.model_copy(update={"prune": True})})
    plan = compute_plan(pruning, live)
    assert [(a.kind, a.name) for a in plan.actions] == [(ActionKind.DELETE_SHARE, "policies_gold")]


def test_strategy_mismatch_is_only_a_warning(sample_pack: SharePack):
    plan = compute_plan(sample_pack, _live_matching(sample_pack))  # strategy NEW, all exists
    assert plan.is_empty and not plan.blocked
    assert "strategy is NEW" in plan.warnings[0]
