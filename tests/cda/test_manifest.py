from __future__ import annotations

import json
from pathlib import Path

import pytest

from guidewire_pipeline.cda.manifest import ManifestError, read_manifest

GOOD_ENTRY = {
    "lastSuccessfulWriteTimestamp": "1562112543749",
    "totalProcessedRecordsCount": 240000,
    "dataFilesPath": "s3://bucket/prefix/cc_claim/",
    "schemaHistory": {"123456789": "1562112543719", "987654321": "1562112543748"},
}


def write(tmp_path: Path, document: object, indent: int | None = None) -> str:
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(document, indent=indent))
    return str(path)


def test_good_manifest_is_typed(tmp_path):
    manifest = read_manifest(write(tmp_path, {"cc_claim": GOOD_ENTRY}))
    entry = manifest.entries["cc_claim"]
    assert manifest.problems == []
    assert entry.manifest_watermark == 1562112543749
    assert entry.total_processed_records == 240000
    assert entry.data_files_path == "s3://bucket/prefix/cc_claim"  # trailing slash removed
    assert [(f.fingerprint, f.starts_at, f.ends_at) for f in entry.fingerprints] == [
        ("123456789", 1562112543719, 1562112543748),
        ("987654321", 1562112543748, None),
    ]


def test_path_without_trailing_slash_and_relative_local_paths(tmp_path):
    doc = {
        "a": {**GOOD_ENTRY, "dataFilesPath": "s3://bucket/prefix/a"},
        "b": {**GOOD_ENTRY, "dataFilesPath": "b/"},
        "c": {**GOOD_ENTRY, "dataFilesPath": f"file://{tmp_path}/c"},
    }
    manifest = read_manifest(write(tmp_path, doc))
    assert manifest.entries["a"].data_files_path == "s3://bucket/prefix/a"
    assert manifest.entries["b"].data_files_path == str(tmp_path / "b")
    assert manifest.entries["c"].data_files_path == str(tmp_path / "c")


def test_pretty_printed_manifest_with_5000_tables(tmp_path):
    doc = {f"cc_table_{i:05d}": {**GOOD_ENTRY, "dataFilesPath": f"s3://b/p/cc_table_{i:05d}"} for i in range(5000)}
    manifest = read_manifest(write(tmp_path, doc, indent=4))
    assert len(manifest.entries) == 5000
    assert manifest.problems == []
    assert manifest.entries["cc_table_04999"].data_files_path == "s3://b/p/cc_table_04999"


def test_bad_entries_name_table_and_field_and_others_survive(tmp_path):
    doc = {
        "cc_good": GOOD_ENTRY,
        "cc_bad_ts": {**GOOD_ENTRY, "lastSuccessfulWriteTimestamp": "yesterday"},
        "cc_no_path": {k: v for k, v in GOOD_ENTRY.items() if k != "dataFilesPath"},
        "cc_bad_history": {**GOOD_ENTRY, "schemaHistory": {}},
        "cc_bad_count": {**GOOD_ENTRY, "totalProcessedRecordsCount": -3},
        "cc_not_object": [1, 2],
    }
    manifest = read_manifest(write(tmp_path, doc))
    assert list(manifest.entries) == ["cc_good"]
    problems = {(p.table, p.field) for p in manifest.problems}
    assert problems == {
        ("cc_bad_ts", "lastSuccessfulWriteTimestamp"),
        ("cc_no_path", "dataFilesPath"),
        ("cc_bad_history", "schemaHistory"),
        ("cc_bad_count", "totalProcessedRecordsCount"),
        ("cc_not_object", "<entry>"),
    }
    message = str(next(p for p in manifest.problems if p.table == "cc_bad_ts"))
    assert "cc_bad_ts" in message and "lastSuccessfulWriteTimestamp" in message and "yesterday" in message
    assert manifest.tables == sorted(doc)


def test_not_json_fails_once_naming_the_uri(tmp_path):
    path = tmp_path / "manifest.json"
    path.write_text("{not json")
    with pytest.raises(ManifestError, match=str(path)):
        read_manifest(str(path))


def test_not_an_object_fails(tmp_path):
    with pytest.raises(ManifestError, match="JSON object keyed by table name"):
        read_manifest(write(tmp_path, ["cc_claim"]))


def test_missing_manifest_says_what_to_check(tmp_path):
    with pytest.raises(ManifestError, match="GW_MANIFEST_URI"):
        read_manifest(str(tmp_path / "nope.json"))


def test_select_include_exclude(tmp_path):
    manifest = read_manifest(write(tmp_path, {t: GOOD_ENTRY for t in ("a", "b", "c")}))
    assert manifest.select() == ["a", "b", "c"]
    assert manifest.select(include=["a", "b"], exclude=["b"]) == ["a"]


def test_a_duplicate_table_key_with_different_entries_fails_that_table_only(tmp_path):
    stale = json.dumps({**GOOD_ENTRY, "lastSuccessfulWriteTimestamp": "1562112543000"})
    text = f'{{"cc_claim": {json.dumps(GOOD_ENTRY)}, "cc_contact": {json.dumps(GOOD_ENTRY)}, "cc_claim": {stale}}}'
    path = tmp_path / "manifest.json"
    path.write_text(text)
    manifest = read_manifest(str(path))
    assert "cc_claim" not in manifest.entries and "cc_contact" in manifest.entries
    [problem] = manifest.problems_for("cc_claim")
    assert "appears 2 times" in str(problem) and "different entries" in str(problem)


def test_an_identical_duplicate_is_a_warning(tmp_path):
    path = tmp_path / "manifest.json"
    path.write_text(f'{{"cc_claim": {json.dumps(GOOD_ENTRY)}, "cc_claim": {json.dumps(GOOD_ENTRY)}}}')
    manifest = read_manifest(str(path))
    assert "cc_claim" in manifest.entries and manifest.problems == []
    assert any("cc_claim" in w and "2 times" in w for w in manifest.warnings)


@pytest.mark.parametrize(("watermark", "reason"), [
    ("99999999999999", "later than now plus a day"),
    ("-5", "negative"),
    (-5, "negative"),
])
def test_implausible_watermarks_fail_the_table_naming_the_field(tmp_path, watermark, reason):
    doc = {"cc_claim": {**GOOD_ENTRY, "lastSuccessfulWriteTimestamp": watermark}, "cc_contact": GOOD_ENTRY}
    manifest = read_manifest(write(tmp_path, doc))
    assert "cc_claim" not in manifest.entries and "cc_contact" in manifest.entries
    [problem] = manifest.problems_for("cc_claim")
    assert problem.field == "lastSuccessfulWriteTimestamp" and reason in problem.message


def test_a_watermark_within_a_day_of_now_is_accepted(tmp_path):
    import time

    soon = str(int(time.time() * 1000) + 3_600_000)  # an hour ahead: clock skew, not an error
    manifest = read_manifest(write(tmp_path, {"cc_claim": {**GOOD_ENTRY, "lastSuccessfulWriteTimestamp": soon}}))
    assert manifest.entries["cc_claim"].manifest_watermark == int(soon)


def test_an_empty_manifest_is_an_error_naming_it(tmp_path):
    with pytest.raises(ManifestError, match=r"manifest\.json lists no tables.*GW_MANIFEST_URI"):
        read_manifest(write(tmp_path, {}))
