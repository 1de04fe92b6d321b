"""``guidewire-pipeline plan-shares``: prints the plan, writes nothing, and its exit code tells CI."""

from __future__ import annotations

from pathlib import Path

import pytest

from guidewire_pipeline.cli import main
from guidewire_pipeline.sharing.sharepack import DEFAULT_SHAREPACK


@pytest.fixture
def no_workspace(monkeypatch, tmp_path: Path) -> Path:
    for name in ("DATABRICKS_HOST", "DATABRICKS_TOKEN", "DATABRICKS_CLIENT_ID", "DATABRICKS_CLIENT_SECRET"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GW_DELTA_ROOT", str(tmp_path / "delta"))
    return tmp_path


def test_plan_shares_of_the_shipped_pack_exits_zero_and_writes_nothing(no_workspace: Path, capsys, sharing_state_url):
    assert main(["plan-shares"]) == 0
    out = capsys.readouterr().out
    assert "**Share pack `claims-analytics`: 9 action(s)**" in out and "| create_share | share | `claims_gold` |" in out
    assert main(["plan-shares"]) == 0  # still 9: nothing was applied
    assert "9 action(s)" in capsys.readouterr().out


def test_plan_shares_exit_codes_for_a_refused_plan_and_an_unreadable_pack(no_workspace: Path, capsys):
    unknown = no_workspace / "unknown.yaml"
    unknown.write_text(DEFAULT_SHAREPACK.read_text().replace("main.gold.claims_by_state_month", "main.gold.nope"))
    assert main(["plan-shares", "--sharepack", str(unknown)]) == 1
    assert "unknown.yaml line 22: share[0].data_objects[0]: table 'main.gold.nope'" in capsys.readouterr().out
    binary = no_workspace / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00")
    assert main(["plan-shares", "--sharepack", str(binary)]) == 2
    err = capsys.readouterr().err
    assert str(binary) in err and "GW_SHAREPACK" in err
