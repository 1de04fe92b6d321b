"""The Dagster side: jobs through the deployment's Definitions, metadata, the audit table, and secrets staying secret."""

from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pytest
from deltalake import DeltaTable, QueryBuilder

from guidewire_pipeline.resources import LakehouseResource
from guidewire_pipeline.settings import Settings
from guidewire_pipeline.sharing.assets import DELTA_SHARES_KEY, DeltaSharingResource, provision_shares
from guidewire_pipeline.sharing.audit import audit_table_uri
from guidewire_pipeline.sharing.defs import build_defs as build_sharing_defs
from guidewire_pipeline.sharing.defs import build_sharing_resource
from guidewire_pipeline.sharing.sharepack import DEFAULT_SHAREPACK

REPO_ROOT = Path(__file__).resolve().parents[2]


def _settings(tmp_path: Path, host: str | None, sharepack: Path = DEFAULT_SHAREPACK) -> Settings:
    return Settings(
        manifest_uri=str(tmp_path / "manifest.json"),
        delta_root=str(tmp_path / "delta"),
        sharepack=str(sharepack),
        ray_address=None,
        databricks_host=host,
    )


def build_defs(settings: Settings) -> dg.Definitions:
    """The sharing domain's definitions with its resource bound as the deployment binds it."""
    resource = build_sharing_resource(settings, LakehouseResource(delta_root=settings.delta_root))
    return dg.Definitions.merge(build_sharing_defs(settings), dg.Definitions(resources={"delta_sharing": resource}))


def _run(settings: Settings, job: str, instance: dg.DagsterInstance, raise_on_error: bool = True):
    defs = build_defs(settings)
    return defs.resolve_job_def(job).execute_in_process(instance=instance, raise_on_error=raise_on_error)


def _metadata(result) -> dict:
    (materialization,) = result.asset_materializations_for_node("delta_shares")
    return {k: v.value for k, v in materialization.metadata.items()}


def _audit_rows(settings: Settings, where: str = "true") -> list[dict]:
    table = DeltaTable(audit_table_uri(settings.delta_root))
    sql = f"select * from audit where {where} order by resource_type, resource_name, effective_from"
    return pa.table(QueryBuilder().register("audit", table).execute(sql).read_all()).to_pylist()


@pytest.fixture
def link_dir(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setenv("GW_ACTIVATION_LINK_DIR", str(tmp_path / "links"))
    return tmp_path / "links"


def test_asset_depends_on_the_gold_marts_the_pack_shares(tmp_path: Path):
    defs = build_defs(_settings(tmp_path, None))
    parents = defs.resolve_asset_graph().get(DELTA_SHARES_KEY).parent_keys
    assert parents == {
        dg.AssetKey(["gold", "claims_by_state_month"]),
        dg.AssetKey(["gold", "policies_in_force_by_month"]),
    }


def test_without_a_workspace_the_pack_is_applied_to_the_local_server(tmp_path: Path, monkeypatch, link_dir):
    monkeypatch.delenv("DATABRICKS_HOST", raising=False)
    monkeypatch.delenv("DATABRICKS_TOKEN", raising=False)
    settings = _settings(tmp_path, None)
    with dg.instance_for_test() as instance:
        first = _run(settings, "delta_sharing_job", instance)
        again = _run(settings, "delta_sharing_job", instance)
    metadata = _metadata(first)
    assert metadata["mode"].startswith("applied to Delta Sharing server http://127.0.0.1:8080/delta-sharing")
    assert metadata["count_create_share"] == 2 and metadata["count_grant"] == 3 and metadata["applied"] == 9
    assert metadata["requestor"] == "data-team@example.com" and metadata["project_name"] == "Claims analytics"
    assert "| create_recipient | recipient | `partner-acme` |" in metadata["plan"]
    assert metadata["sharing_server"] == "http://127.0.0.1:8080/delta-sharing"
    assert "| `claims_gold` | `main.gold.claims_by_state_month` | analytics-workspace, partner-acme |" in metadata["shares"]
    profile_path = link_dir / "partner-acme.share"
    assert metadata["activation_link_files"] == {"partner-acme": str(profile_path)}
    assert stat.S_IMODE(profile_path.stat().st_mode) == 0o600
    profile = json.loads(profile_path.read_text())
    assert set(profile) == {"shareCredentialsVersion", "endpoint", "bearerToken", "expirationTime"}
    assert profile["bearerToken"] not in repr(metadata)
    assert _metadata(again)["actions"] == 0 and _metadata(again)["audit_rows"] == 0  # idempotent
    assert len(_audit_rows(settings, "is_current")) == 9


def test_plan_job_writes_nothing_and_apply_job_applies_once(uc_workspace, tmp_path: Path, link_dir):
    settings = _settings(tmp_path, uc_workspace.host)
    with dg.instance_for_test() as instance:
        planned = _run(settings, "delta_sharing_plan_job", instance)
        assert _metadata(planned)["mode"] == "dry run: plan only" and _metadata(planned)["actions"] == 9
        assert uc_workspace.writes() == []

        applied = _run(settings, "delta_sharing_job", instance)
        metadata = _metadata(applied)
        assert metadata["applied"] == 9 and metadata["failed"] == 0 and metadata["audit_rows"] == 9
        writes = len(uc_workspace.writes())

        again = _run(settings, "delta_sharing_job", instance)
        assert _metadata(again)["actions"] == 0 and _metadata(again)["audit_rows"] == 0
        assert len(uc_workspace.writes()) == writes

    current = _audit_rows(settings, "is_current")
    assert len(current) == 9
    assert {r["run_id"] for r in current} == {applied.run_id}
    assert {r["requestor"] for r in current} == {"data-team@example.com"}
    share = next(r for r in current if r["resource_name"] == "claims_gold")
    assert share["change"] == "create_share" and share["effective_to"] is None
    assert "Claim KPIs by state and month" in share["attributes"]


def test_audit_keeps_history_as_scd2(uc_workspace, tmp_path: Path, link_dir):
    pack = tmp_path / "pack.yaml"
    pack.write_text(DEFAULT_SHAREPACK.read_text())
    settings = _settings(tmp_path, uc_workspace.host, pack)
    with dg.instance_for_test() as instance:
        first = _run(settings, "delta_sharing_job", instance)
        pack.write_text(
            DEFAULT_SHAREPACK.read_text()
            .replace("Claim KPIs by state and month", "Claim KPIs, monthly")
            .replace("recipients: [analytics-workspace]", "recipients: []")
        )
        second = _run(settings, "delta_sharing_job", instance)
    assert _metadata(second)["count_update_share"] == 1 and _metadata(second)["count_revoke"] == 1

    history = _audit_rows(settings, "resource_name = 'claims_gold'")
    assert [(r["change"], r["is_current"], r["run_id"]) for r in history] == [
        ("create_share", False, first.run_id),
        ("update_share", True, second.run_id),
    ]
    assert history[0]["effective_to"] == history[1]["effective_from"]
    (revoked,) = _audit_rows(
        settings, "resource_name = 'policies_gold/analytics-workspace' and change = 'revoke'"
    )
    assert revoked["is_current"] is False
    assert _audit_rows(settings, "is_current and resource_name = 'policies_gold/analytics-workspace'") == []


def test_refused_plan_fails_the_apply_job_with_what_to_do(uc_workspace, tmp_path: Path, link_dir):
    uc_workspace.client().shares.create("claims_gold", comment="made by hand")
    settings = _settings(tmp_path, uc_workspace.host)
    with dg.instance_for_test() as instance:
        result = _run(settings, "delta_sharing_job", instance, raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    message = failure.step_failure_data.error.message
    assert "was refused; nothing was applied" in message and "adopt: true" in message
    assert uc_workspace.writes() == [("POST", "/api/2.1/unity-catalog/shares")]  # only the hand-made share


def test_invalid_pack_fails_before_touching_the_workspace(uc_workspace, tmp_path: Path, link_dir):
    pack = tmp_path / "bad.yaml"
    pack.write_text(DEFAULT_SHAREPACK.read_text().replace("203.0.113.0/24", "203.0.113.0/33"))
    with dg.instance_for_test() as instance:
        result = _run(
            _settings(tmp_path, uc_workspace.host, pack), "delta_sharing_job", instance, raise_on_error=False
        )
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "bad.yaml line 13: recipient[0].allowed_ips" in failure.step_failure_data.error.message
    assert uc_workspace.requests == []


def test_activation_link_never_in_logs_metadata_or_audit(
    uc_workspace, tmp_path: Path, link_dir, caplog, capfd
):
    caplog.set_level(logging.DEBUG)  # everything any logger emits, not only warnings
    settings = _settings(tmp_path, uc_workspace.host)
    with dg.instance_for_test() as instance:
        result = _run(settings, "delta_sharing_job", instance)
        event_log = "\n".join(repr(record) for record in instance.all_logs(result.run_id))
    (link,) = uc_workspace.uc.activation_links
    metadata = _metadata(result)
    assert (link_dir / "partner-acme.activation-link").read_text().strip() == link
    assert metadata["activation_link_files"] == {
        "partner-acme": str(link_dir / "partner-acme.activation-link")
    }
    captured = capfd.readouterr()
    haystacks = {
        "stdout": captured.out,
        "stderr": captured.err,
        "logging": caplog.text,
        "event log": event_log,
        "metadata": repr(metadata),
        "audit": repr(_audit_rows(settings)),
    }
    assert "activation-link" in event_log  # the file is reported ...
    secret = link.rsplit("?", 1)[1]
    leaks = [where for where, text in haystacks.items() if secret in text]  # never print the secret itself
    assert leaks == [], f"activation link leaked into {leaks}"  # ... the link is not


def test_newcomer_runs_the_plan_job_without_a_workspace(tmp_path: Path, sharing_state_url: str):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABRICKS_", "DAGSTER_HOME", "GW_"))}
    env.update(GW_DELTA_ROOT=str(tmp_path / "delta"), PYTHONPATH=str(REPO_ROOT), GW_SHARING_STATE_URL=sharing_state_url)
    dagster = Path(sys.executable).parent / "dagster"
    completed = subprocess.run(
        [
            str(dagster),
            "job",
            "execute",
            "-m",
            "guidewire_pipeline.definitions",
            "-j",
            "delta_sharing_plan_job",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output[-3000:]
    assert "dry run: plan only" in output and "9 planned" in output
    assert "RUN_SUCCESS" in output


def test_provision_shares_is_callable_from_an_op(uc_workspace, tmp_path: Path, link_dir):
    """Any op may call provision_shares (the asset does, and a user's own job can)."""
    settings = _settings(tmp_path, uc_workspace.host)

    @dg.op
    def share_gold(context, delta_sharing: DeltaSharingResource) -> int:
        result = provision_shares(context, delta_sharing, apply=True)
        assert result.ok
        return len(result.applied)

    @dg.job
    def e2e_tail():
        share_gold()

    resource = DeltaSharingResource(
        host=uc_workspace.host, token=uc_workspace.token, activation_link_dir=str(link_dir),
        lakehouse=LakehouseResource(delta_root=settings.delta_root), sharepack=settings.sharepack,
    )
    result = e2e_tail.execute_in_process(resources={"delta_sharing": resource})
    assert result.output_for_node("share_gold") == 9
    assert len(_audit_rows(settings, "is_current")) == 9


def test_a_binary_sharepack_never_stops_the_definitions_or_a_raw_sync(tmp_path: Path, sharing_state_url: str):
    """Issue 14: the pack is read when a sharing step runs; raw loads exactly as without it."""
    from guidewire_pipeline.sample.generator import generate
    from tests.raw.helpers import assert_exactly_once

    generate(str(tmp_path / "cda"), tables=3, batches=2, rows=30, seed=4)
    broken = tmp_path / "partners.yaml"
    broken.write_bytes(b"\xfe\xff\x00\x81 not a share pack \x00")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABRICKS_", "DAGSTER_HOME", "GW_"))}
    env.update(GW_MANIFEST_URI=str(tmp_path / "cda" / "manifest.json"), GW_DELTA_ROOT=str(tmp_path / "delta"),
               GW_SHAREPACK=str(broken), GW_SHARING_STATE_URL=sharing_state_url, PYTHONPATH=str(REPO_ROOT))
    dagster = str(Path(sys.executable).parent / "dagster")
    sync = subprocess.run([dagster, "job", "execute", "-m", "guidewire_pipeline.definitions", "-j", "cda_sync_job"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert sync.returncode == 0, (sync.stdout + sync.stderr)[-3000:]
    for table in ("pc_policyperiod", "pc_policyline", "cc_claim"):
        assert_exactly_once(tmp_path / "cda", table, tmp_path / "delta" / "raw" / table)
    share = subprocess.run([dagster, "job", "execute", "-m", "guidewire_pipeline.definitions", "-j", "delta_sharing_job"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    output = share.stdout + share.stderr
    assert share.returncode != 0
    assert f"Share pack {broken} has 1 problem(s)" in output and "GW_SHAREPACK" in output and "not a text file" in output
    assert "UnicodeDecodeError" not in output


def test_sharepack_plan_check_is_red_for_a_bad_pack_and_green_for_a_good_one(tmp_path: Path, link_dir):
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text(DEFAULT_SHAREPACK.read_text().replace("main.gold.policies_in_force_by_month", "main.gold.nope"))
    renamed = tmp_path / "renamed.xlsx"
    renamed.write_text("metadata: {}")
    for pack, passed, named in ((DEFAULT_SHAREPACK, True, "9 action(s) pending"),
                                (unknown, False, "unknown.yaml line 27: share[1].data_objects[0]: table 'main.gold.nope'"),
                                (renamed, False, "not an Excel workbook")):
        defs = build_defs(_settings(tmp_path, None, pack))
        job = defs.resolve_implicit_global_asset_job_def()
        with dg.instance_for_test() as instance:
            result = job.get_subset(asset_check_selection={dg.AssetCheckKey(DELTA_SHARES_KEY, "sharepack_plan")},
                                    asset_selection=set()).execute_in_process(instance=instance, raise_on_error=False)
        (evaluation,) = result.get_asset_check_evaluations()
        assert evaluation.passed is passed and named in (evaluation.description or ""), evaluation.description
    assert not Path(audit_table_uri(str(tmp_path / "delta"))).exists()  # a check writes nothing


def test_secrets_are_bound_as_env_vars_pat_or_service_principal(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("DATABRICKS_HOST", "https://adb-1.example.net")
    monkeypatch.delenv("DATABRICKS_TOKEN", raising=False)
    monkeypatch.setenv("DATABRICKS_CLIENT_ID", "sp-id")
    monkeypatch.setenv("DATABRICKS_CLIENT_SECRET", "sp-secret-value")
    settings = _settings(tmp_path, "https://adb-1.example.net")
    resource = build_sharing_resource(settings, LakehouseResource(delta_root=settings.delta_root))
    assert isinstance(resource.client_secret, dg.EnvVar) and isinstance(resource.client_id, dg.EnvVar)
    assert resource.token is None and "sp-secret-value" not in repr(resource)
    with dg.instance_for_test(), resource.process_config_and_initialize_cm() as bound:
        assert bound.configured and bound.client_secret == "sp-secret-value"
