"""Share pack loading and validation: every problem at once, each with its location."""

from __future__ import annotations

from pathlib import Path

import openpyxl
import pytest

from guidewire_pipeline.sharing.excel_twin import write_excel
from guidewire_pipeline.sharing.plan import LiveState, compute_plan
from guidewire_pipeline.sharing.sharepack import (
    DEFAULT_SHAREPACK,
    SharePackInvalid,
    load_sharepack,
)

SAMPLE_XLSX = DEFAULT_SHAREPACK.with_suffix(".xlsx")

BAD_YAML = """\
metadata:
  requestor: data-team@example.com
  project_name: Claims analytics
  colour: blue
recipient:
  - name: partner-acme
    type: D2O
    emial: sharing@acme.example
    allowed_ips: [203.0.113.0/24, 10.0.0.1/8, nonsense]
  - name: partner-acme
    type: D2D
    metastore_id: aws:us-west-2:not-a-uuid
    allowed_ips: [198.51.100.0/24]
  - name: many-ips
    type: D2O
    allowed_ips: [{many}]
share:
  - name: claims_gold
    recipients: [partner-acme, ghost]
    data_objects:
      - main.gold.claims_by_state_month
      - gold.no_catalog
  - name: claims_gold
    data_objects: [main.gold.policies_in_force_by_month]
"""


def _problems(exc: pytest.ExceptionInfo[SharePackInvalid]) -> dict[str, str]:
    """field path → "location: message" (the tests look up each expected problem by its field)."""
    return {p.field: f"{p.location}: {p.message}" for p in exc.value.problems}


def test_sample_pack_is_valid_and_names_both_gold_marts():
    pack = load_sharepack().pack
    tables = {o.table_name for s in pack.share for o in s.data_objects}
    assert tables == {"claims_by_state_month", "policies_in_force_by_month"}
    assert pack.metadata.requestor == "data-team@example.com"
    assert pack.pack_id == "claims-analytics"


def test_excel_twin_plans_exactly_like_its_yaml(tmp_path: Path):
    yaml_pack = load_sharepack(DEFAULT_SHAREPACK).pack
    shipped = load_sharepack(SAMPLE_XLSX).pack
    regenerated = load_sharepack(write_excel(yaml_pack, tmp_path / "twin.xlsx")).pack
    assert shipped == yaml_pack == regenerated
    plans = [compute_plan(p, LiveState()) for p in (yaml_pack, shipped)]
    assert plans[0].to_markdown() == plans[1].to_markdown()
    assert [a.describe() for a in plans[0].actions] == [a.describe() for a in plans[1].actions]


def test_invalid_yaml_reports_every_problem_with_its_line(tmp_path: Path):
    many = ", ".join(f"10.0.{i}.0/24" for i in range(101))
    path = tmp_path / "bad.yaml"
    path.write_text(BAD_YAML.format(many=many))
    with pytest.raises(SharePackInvalid) as exc:
        load_sharepack(path)
    found = _problems(exc)
    expected = {
        "metadata.colour": ("line 4", "unknown key 'colour'"),
        "recipient[0].emial": ("line 8", "Did you mean 'email'"),
        "recipient[0].allowed_ips": ("line 9", "'10.0.0.1/8', 'nonsense'"),
        "recipient[1].name": ("line 10", "duplicate recipient 'partner-acme'"),
        "recipient[1].metastore_id": ("line 12", "is not a metastore id"),
        "recipient[1].allowed_ips": (
            "line 13",
            "D2D (Databricks-to-Databricks) recipient cannot have allowed_ips",
        ),
        "recipient[2].allowed_ips": ("line 16", "101 entries, at most 100"),
        "share[0].recipients[1]": ("line 19", "unknown recipient 'ghost'"),
        "share[0].data_objects[1].name": ("line 22", "not a table name: write catalog.schema.table"),
        "share[1].name": ("line 23", "duplicate share 'claims_gold'"),
    }
    for field, (line, message) in expected.items():
        assert field in found, f"missing problem for {field}; got {sorted(found)}"
        assert f"bad.yaml {line}:" in found[field] and message in found[field], found[field]
    assert len(exc.value.problems) == len(expected)
    assert str(path) in str(exc.value) and "nothing was applied" in str(exc.value)


def test_invalid_excel_reports_sheet_row_and_column(tmp_path: Path):
    workbook = openpyxl.load_workbook(SAMPLE_XLSX)
    workbook["recipient"]["D2"] = "203.0.113.0/24, 300.1.1.1"  # allowed_ips of partner-acme
    workbook["recipient"]["E3"] = "aws:us-west-2:nope"  # metastore_id of analytics-workspace
    workbook["share"]["C3"] = "analytics-workspace, ghost"  # recipients of policies_gold
    workbook["data_objects"].append(["claims_gold", "not_a_table"])
    workbook["data_objects"].append(["missing_share", "main.gold.x"])
    workbook["recipient"]["F1"] = "colour"
    workbook["recipient"]["F2"] = "blue"
    workbook.create_sheet("notes")
    path = tmp_path / "bad.xlsx"
    workbook.save(path)
    with pytest.raises(SharePackInvalid) as exc:
        load_sharepack(path)
    text = "\n".join(map(str, exc.value.problems))
    for expected in (
        "sheet 'recipient' row 2 column 'allowed_ips' (cell D2): recipient[0].allowed_ips: not an IPv4 address",
        "sheet 'recipient' row 3 column 'metastore_id' (cell E3): recipient[1].metastore_id:",
        "sheet 'share' row 3 column 'recipients' (cell C3): share[1].recipients[1]: unknown recipient 'ghost'",
        "sheet 'data_objects' row 4 column 'name' (cell B4): share[0].data_objects[1].name: 'not_a_table'",
        "sheet 'data_objects' row 5: share: data object row names share 'missing_share'",
        "sheet 'recipient' row 2 column 'colour' (cell F2): recipient[0].colour: unknown key 'colour'",
        "sheet 'notes': notes: unknown sheet",
    ):
        assert expected in text, f"{expected!r} not in:\n{text}"
    assert len(exc.value.problems) == 7


@pytest.mark.parametrize(
    ("name", "message"),
    [("missing.yaml", "file not found: set GW_SHAREPACK"), ("pack.json", "unsupported extension '.json'")],
)
def test_unusable_pack_path_says_what_to_do(tmp_path: Path, name: str, message: str):
    if name.endswith(".json"):
        (tmp_path / name).write_text("{}")
    with pytest.raises(SharePackInvalid, match=message):
        load_sharepack(tmp_path / name)


# -- a pack that cannot be read at all: one error naming the file and GW_SHAREPACK (issue 14) -------
def _one_unreadable(path: Path, expected: str) -> str:
    with pytest.raises(SharePackInvalid) as caught:
        load_sharepack(path)
    (problem,) = caught.value.problems
    message = str(caught.value)
    assert problem.field == "GW_SHAREPACK" and str(path) in message and expected in message, message
    assert "Traceback" not in message
    return message


def test_binary_yaml_is_one_error_naming_the_file(tmp_path: Path):
    pack = tmp_path / "partners.yaml"
    pack.write_bytes(b"\xfe\xff\x00binary\x00\x81junk")
    _one_unreadable(pack, "not a text file")


def test_text_renamed_xlsx_is_one_error_naming_the_file(tmp_path: Path):
    pack = tmp_path / "partners.xlsx"
    pack.write_text(DEFAULT_SHAREPACK.read_text())
    _one_unreadable(pack, "not an Excel workbook")


def test_workbook_without_its_recipient_sheet_names_the_sheet(tmp_path: Path):
    pack = tmp_path / "partners.xlsx"
    workbook = openpyxl.load_workbook(SAMPLE_XLSX)
    del workbook["recipient"]
    workbook.save(pack)
    message = _one_unreadable(pack, "no sheet 'recipient'")
    assert "unknown recipient" not in message


def test_missing_file_names_gw_sharepack(tmp_path: Path):
    _one_unreadable(tmp_path / "gone.yaml", "set GW_SHAREPACK")


def test_loaded_packs_keep_their_locations():
    loaded = load_sharepack(DEFAULT_SHAREPACK)
    assert loaded.locate is not None
    assert loaded.locate(("share", 1, "data_objects", 0)).endswith("gold_marts.yaml line 27")
