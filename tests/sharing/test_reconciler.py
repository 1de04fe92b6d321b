"""The reconciler against the fake workspace, through the real databricks-sdk client."""

from __future__ import annotations

import logging
import stat

from databricks.sdk.service.sharing import (
    AuthenticationType,
    PermissionsChange,
    SharedDataObject,
    SharedDataObjectDataObjectType,
    SharedDataObjectUpdate,
    SharedDataObjectUpdateAction,
)

from guidewire_pipeline.sharing.backends import UnityCatalogBackend
from guidewire_pipeline.sharing.plan import ActionKind, compute_plan, with_marker
from guidewire_pipeline.sharing.reconciler import ActivationLinkStore, Outcome, apply_plan, reconcile
from guidewire_pipeline.sharing.sharepack import SharePack
from tests.fakes import unity_catalog

UC = "/api/2.1/unity-catalog"


def _table(name: str, action: str = "ADD") -> SharedDataObjectUpdate:
    return SharedDataObjectUpdate(
        action=SharedDataObjectUpdateAction(action),
        data_object=SharedDataObject(name=name, data_object_type=SharedDataObjectDataObjectType.TABLE),
    )


def test_create_everything_from_empty_then_second_apply_writes_nothing(
    uc_workspace, backend, links, sample_pack
):
    first = reconcile(sample_pack, backend, links, apply=True)
    assert first.ok and len(first.with_outcome(Outcome.APPLIED)) == 9
    # one request per recipient and share, then one atomic PATCH per share for objects and for grants
    assert len(uc_workspace.writes()) == 8
    uc = uc_workspace.uc
    assert set(uc.shares) == {"claims_gold", "policies_gold"}
    assert set(uc.shares["claims_gold"]["objects"]) == {"main.gold.claims_by_state_month"}
    assert uc.grants["claims_gold"] == {"partner-acme", "analytics-workspace"}
    assert uc.shares["claims_gold"]["comment"].endswith("[managed by share pack 'claims-analytics']")
    assert uc.recipients["partner-acme"]["ip_access_list"] == {"allowed_ip_addresses": ["203.0.113.0/24"]}

    writes = len(uc_workspace.writes())
    second = reconcile(sample_pack, backend, links, apply=True)
    assert second.plan.is_empty and second.results == []
    assert len(uc_workspace.writes()) == writes


def test_drift_by_hand_shows_in_the_plan_and_is_repaired(uc_workspace, backend, links, sample_pack):
    reconcile(sample_pack, backend, links, apply=True)
    unity_catalog.register_table(uc_workspace, "main.gold.hand_made")  # made by hand, then shared by hand
    w = uc_workspace.client()
    w.shares.update("claims_gold", updates=[_table("main.gold.claims_by_state_month", "REMOVE")])
    w.shares.update("policies_gold", updates=[_table("main.gold.hand_made")])
    w.recipients.create(
        "intruder",
        AuthenticationType.DATABRICKS,
        data_recipient_global_metastore_id="aws:us-east-1:19a85dee-54bc-43a2-87ab-023d0ec16013",
    )
    w.shares.update_permissions(
        "policies_gold", changes=[PermissionsChange(principal="intruder", add=["SELECT"])]
    )

    plan = compute_plan(sample_pack, backend.read_state(sample_pack))
    assert [(a.kind, a.resource_name, a.reason) for a in plan.actions] == [
        (
            ActionKind.REMOVE_OBJECT,
            "policies_gold/main.gold.hand_made",
            "in the share, not in the pack (added by hand?)",
        ),
        (
            ActionKind.ADD_OBJECT,
            "claims_gold/main.gold.claims_by_state_month",
            "not in the share (removed by hand?)",
        ),
        (
            ActionKind.REVOKE,
            "policies_gold/intruder",
            "granted in the workspace, not in the pack (granted by hand?)",
        ),
    ]
    assert "intruder" not in {o.name for o in plan.orphans}  # not managed by the pack: left alone

    result = apply_plan(plan, backend, links)
    assert result.ok
    assert compute_plan(sample_pack, backend.read_state(sample_pack)).is_empty
    assert "intruder" in uc_workspace.uc.recipients


def test_replace_is_refused_and_writes_nothing(uc_workspace, backend, links, sample_pack):
    reconcile(sample_pack, backend, links, apply=True)
    writes = len(uc_workspace.writes())
    as_d2d = sample_pack.recipient[0].model_copy(
        update={
            "type": "D2D",
            "allowed_ips": [],
            "metastore_id": "aws:us-west-2:29a85dee-54bc-43a2-87ab-023d0ec16013",
        }
    )
    changed = sample_pack.model_copy(update={"recipient": [as_d2d, sample_pack.recipient[1]]})
    result = reconcile(changed, backend, links, apply=True)
    assert result.plan.blocked and not result.ok
    assert "needs a replace (authentication_type: 'TOKEN' → 'DATABRICKS'" in result.plan.refusals[0].message
    assert {r.outcome for r in result.results} <= {Outcome.SKIPPED}
    assert len(uc_workspace.writes()) == writes

    allowed = changed.model_copy(
        update={"options": changed.options.model_copy(update={"allow_replace": True})}
    )
    result = reconcile(allowed, backend, links, apply=True)
    assert result.ok
    assert uc_workspace.uc.recipients["partner-acme"]["authentication_type"] == "DATABRICKS"
    assert "partner-acme" in uc_workspace.uc.grants["claims_gold"]  # re-granted after the replace
    assert compute_plan(allowed, backend.read_state(allowed)).is_empty


def test_prune_deletes_only_what_the_pack_managed(uc_workspace, backend, links, sample_pack):
    reconcile(sample_pack, backend, links, apply=True)
    uc_workspace.client().shares.create("someone_elses", comment="not managed")
    smaller = sample_pack.model_copy(update={"share": sample_pack.share[:1]})

    kept = reconcile(smaller, backend, links, apply=True)
    assert kept.plan.is_empty and [o.name for o in kept.plan.orphans] == ["policies_gold"]
    assert "policies_gold" in uc_workspace.uc.shares

    pruning = smaller.model_copy(update={"options": smaller.options.model_copy(update={"prune": True})})
    pruned = reconcile(pruning, backend, links, apply=True)
    assert pruned.ok and [r.action.describe() for r in pruned.applied] == ["delete_share share policies_gold"]
    assert set(uc_workspace.uc.shares) == {"claims_gold", "someone_elses"}
    assert reconcile(pruning, backend, links, apply=True).plan.is_empty


def test_partial_failure_reports_what_was_applied_and_a_rerun_converges(
    uc_workspace, backend, links, sample_pack
):
    uc = uc_workspace.uc
    uc.fail_next(
        "POST",
        f"{UC}/shares",
        403,
        "PERMISSION_DENIED",
        "User does not have CREATE SHARE on Metastore 'main'.",
    )
    uc.fail_next(
        "PATCH",
        f"{UC}/shares/policies_gold/permissions",
        404,
        "RECIPIENT_DOES_NOT_EXIST",
        "Recipient 'analytics-workspace' does not exist.",
    )
    first = reconcile(sample_pack, backend, links, apply=True)
    outcomes = {r.action.describe(): r.outcome for r in first.results}
    assert outcomes == {
        "create_recipient recipient partner-acme": Outcome.APPLIED,
        "create_recipient recipient analytics-workspace": Outcome.APPLIED,
        "create_share share claims_gold": Outcome.FAILED,
        "create_share share policies_gold": Outcome.APPLIED,
        "add_object data_object claims_gold/main.gold.claims_by_state_month": Outcome.SKIPPED,
        "add_object data_object policies_gold/main.gold.policies_in_force_by_month": Outcome.APPLIED,
        "grant SELECT on share claims_gold to partner-acme": Outcome.SKIPPED,
        "grant SELECT on share claims_gold to analytics-workspace": Outcome.SKIPPED,
        "grant SELECT on share policies_gold to analytics-workspace": Outcome.FAILED,
    }
    messages = {r.action.describe(): r.message for r in first.failed}
    assert messages["create_share share claims_gold"].startswith(
        "PERMISSION_DENIED (403): User does not have"
    )
    assert (
        "RECIPIENT_DOES_NOT_EXIST (404)"
        in messages["grant SELECT on share policies_gold to analytics-workspace"]
    )
    assert not first.ok

    rerun = reconcile(sample_pack, backend, links, apply=True)
    assert rerun.ok
    assert sorted(a.describe() for a in rerun.plan.actions) == sorted(
        d for d, o in outcomes.items() if o != Outcome.APPLIED
    )
    assert reconcile(sample_pack, backend, links, apply=True).plan.is_empty


def test_already_exists_and_does_not_exist_answers_are_handled(uc_workspace, backend, links, sample_pack):
    plan = compute_plan(sample_pack, backend.read_state(sample_pack))
    w = uc_workspace.client()
    # Between plan and apply: our own earlier apply created one share (its response was lost),
    # and someone else created a recipient of the same name.
    w.shares.create("claims_gold", comment=with_marker("Claim KPIs by state and month", "claims-analytics"))
    w.recipients.create("partner-acme", AuthenticationType.TOKEN, comment="made by hand")
    result = apply_plan(plan, backend, links)
    by_action = {r.action.describe(): r for r in result.results}
    share = by_action["create_share share claims_gold"]
    assert share.outcome == Outcome.CONVERGED and "SHARE_ALREADY_EXISTS" in share.message
    recipient = by_action["create_recipient recipient partner-acme"]
    assert recipient.outcome == Outcome.FAILED
    assert (
        recipient.message.startswith("RESOURCE_ALREADY_EXISTS (409)") and "adopt: true" in recipient.message
    )
    assert by_action["grant SELECT on share claims_gold to partner-acme"].outcome == Outcome.SKIPPED

    # A rerun after the hand-made recipient is gone converges.
    w.recipients.delete("partner-acme")
    assert reconcile(sample_pack, backend, links, apply=True).ok

    # Deleting something already gone converges.
    smaller = sample_pack.model_copy(
        update={
            "share": sample_pack.share[:1],
            "options": sample_pack.options.model_copy(update={"prune": True}),
        }
    )
    live = backend.read_state(smaller)
    prune_plan = compute_plan(smaller, live)
    w.shares.delete("policies_gold")
    pruned = apply_plan(prune_plan, backend, links)
    deleted = next(r for r in pruned.results if r.action.kind == ActionKind.DELETE_SHARE)
    assert deleted.outcome == Outcome.CONVERGED and deleted.message == "already deleted"


def test_activation_link_goes_to_a_private_file_only(
    uc_workspace, backend, links, sample_pack: SharePack, caplog
):
    caplog.set_level(logging.DEBUG)  # the SDK logs response bodies at DEBUG
    result = reconcile(sample_pack, backend, links, apply=True)
    (link,) = uc_workspace.uc.activation_links
    path = result.activation_links["partner-acme"]
    assert path.read_text().strip() == link
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    everything = (
        repr(result)
        + result.plan.to_markdown()
        + result.results_markdown()
        + result.summary()
        + repr(backend.read_state(sample_pack))
    )
    leaked = [where for where, text in (("results", everything), ("logging", caplog.text)) if link in text]
    assert leaked == []  # a failure names where, never the link


def test_unwritable_link_folder_keeps_the_recipient_and_says_how_to_recover(
    uc_workspace, backend, tmp_path, sample_pack
):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    result = reconcile(sample_pack, backend, ActivationLinkStore(blocker / "links"), apply=True)
    acme = next(r for r in result.results if r.action.describe() == "create_recipient recipient partner-acme")
    assert acme.outcome == Outcome.APPLIED
    assert "could not be written" in acme.message and "rotate the recipient's token" in acme.message
    assert uc_workspace.uc.activation_links[0] not in acme.message
    assert result.activation_links == {}


class _NetworkDropsOnShares(UnityCatalogBackend):
    """The Unity Catalog backend, with the connection lost when the first share is created."""

    def create_share(self, name: str, comment: str) -> None:
        raise ConnectionError("connection reset by peer")


def test_unexpected_error_stops_the_apply_and_reports_the_rest_as_not_attempted(
    uc_workspace, links, sample_pack
):
    backend = _NetworkDropsOnShares(uc_workspace.client())
    result = reconcile(sample_pack, backend, links, apply=True)
    outcomes = [(r.action.kind, r.outcome) for r in result.results]
    assert outcomes[:3] == [
        (ActionKind.CREATE_RECIPIENT, Outcome.APPLIED),
        (ActionKind.CREATE_RECIPIENT, Outcome.APPLIED),
        (ActionKind.CREATE_SHARE, Outcome.FAILED),
    ]
    assert {o for _, o in outcomes[3:]} == {Outcome.SKIPPED}
    assert len(result.results) == len(result.plan.actions) == 9
    assert "ConnectionError: connection reset by peer" in result.failed[0].message


def test_changed_attributes_are_updated_in_place(uc_workspace, backend, links, sample_pack):
    reconcile(sample_pack, backend, links, apply=True)
    acme, workspace = sample_pack.recipient
    claims, policies = sample_pack.share
    obj = claims.data_objects[0].model_copy(update={"comment": "monthly KPIs", "history_sharing": True})
    changed = sample_pack.model_copy(
        update={
            "recipient": [
                acme.model_copy(update={"allowed_ips": ["203.0.113.0/24", "198.51.100.7"]}),
                workspace,
            ],
            "share": [claims.model_copy(update={"comment": "Claim KPIs", "data_objects": [obj]}), policies],
        }
    )
    plan = compute_plan(changed, backend.read_state(changed))
    assert [(a.kind, a.resource_name, [str(c) for c in a.changes]) for a in plan.actions] == [
        (
            ActionKind.UPDATE_RECIPIENT,
            "partner-acme",
            ["allowed_ips: [203.0.113.0/24] → [198.51.100.7, 203.0.113.0/24]"],
        ),
        (
            ActionKind.UPDATE_SHARE,
            "claims_gold",
            [
                "comment: \"Claim KPIs by state and month [managed by share pack 'claims-analytics']\" → "
                "\"Claim KPIs [managed by share pack 'claims-analytics']\""
            ],
        ),
        (
            ActionKind.UPDATE_OBJECT,
            "claims_gold/main.gold.claims_by_state_month",
            ["comment: ∅ → 'monthly KPIs'", "history_sharing: False → True"],
        ),
    ]
    writes = len(uc_workspace.writes())
    assert apply_plan(plan, backend, links).ok
    assert len(uc_workspace.writes()) == writes + 3
    shared = uc_workspace.uc.shares["claims_gold"]["objects"]["main.gold.claims_by_state_month"]
    assert shared["history_data_sharing_status"] == "ENABLED" and shared["comment"] == "monthly KPIs"
    assert compute_plan(changed, backend.read_state(changed)).is_empty


def test_a_share_of_an_unknown_table_is_refused_with_its_line_and_uc_answers_table_does_not_exist(
    uc_workspace, backend, links, tmp_path
):
    from guidewire_pipeline.sharing.sharepack import DEFAULT_SHAREPACK, load_sharepack

    pack_file = tmp_path / "pack.yaml"
    pack_file.write_text(DEFAULT_SHAREPACK.read_text().replace("main.gold.policies_in_force_by_month",
                                                               "main.silver.not_registered"))
    loaded = load_sharepack(pack_file)
    result = reconcile(loaded.pack, backend, links, apply=True, locate=loaded.locate)
    assert result.plan.blocked and uc_workspace.writes() == []
    (refusal,) = result.plan.refusals
    assert refusal.name == "policies_gold/main.silver.not_registered"
    assert refusal.message.startswith(f"{pack_file} line 27: share[1].data_objects[0]: table 'main.silver.not_registered'")
    # registered in Unity Catalog (by the UC tables endpoints), the same pack plans and applies
    unity_catalog.register_table(uc_workspace, "main.silver.not_registered")
    assert reconcile(loaded.pack, backend, links, apply=True, locate=loaded.locate).ok
    # and the fake answers an unknown table as Databricks does
    plan = compute_plan(loaded.pack, backend.read_state(loaded.pack))
    del uc_workspace.uc_tables["main.gold.claims_by_state_month"]
    uc_workspace.client().shares.update("claims_gold", updates=[_table("main.gold.claims_by_state_month", "REMOVE")])
    redo = apply_plan(compute_plan(loaded.pack, backend.read_state(loaded.pack)), backend, links)
    (failed,) = redo.failed
    assert plan.is_empty and failed.message.startswith("TABLE_DOES_NOT_EXIST (404)")


def test_rotation_renews_the_activation_link_of_a_token_recipient(uc_workspace, backend, links, sample_pack):
    reconcile(sample_pack, backend, links, apply=True)
    first = links.directory.joinpath("partner-acme.activation-link").read_text()
    rotated = reconcile(sample_pack, backend, links, apply=True, rotate=("partner-acme",))
    assert [(a.kind, a.name) for a in rotated.plan.actions] == [(ActionKind.ROTATE_TOKEN, "partner-acme")]
    assert rotated.ok and links.directory.joinpath("partner-acme.activation-link").read_text() != first
    assert uc_workspace.uc.activation_links[-1] not in repr(rotated.results)
    refused = reconcile(sample_pack, backend, links, apply=True, rotate=("analytics-workspace", "ghost"))
    assert refused.plan.blocked and {r.name for r in refused.plan.refusals} == {"analytics-workspace", "ghost"}
