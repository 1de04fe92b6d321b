from __future__ import annotations

import dataclasses
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from guidewire_pipeline.cda.load_plan import CdaSourceError, CommitBudget, count_rows, plan_table
from guidewire_pipeline.cda.manifest import Fingerprint, ManifestEntry

FP_OLD, FP_NEW = "aaaa", "bbbb"


def parquet(path: Path, rows: int = 3) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"id": list(range(rows))}), path)


def tree(tmp_path: Path) -> Path:
    """Old schema: 100, 200; new schema from 300: 300, 400 (= watermark), 500 (in flight)."""
    table = tmp_path / "cc_claim"
    for fp, ts in [(FP_OLD, 100), (FP_OLD, 200), (FP_NEW, 300), (FP_NEW, 400), (FP_NEW, 500)]:
        parquet(table / fp / f"{ts:013d}" / "part-0.parquet")
    return table


def entry(table: Path, watermark: int = 400) -> ManifestEntry:
    return ManifestEntry(
        table="cc_claim", manifest_watermark=watermark, total_processed_records=12,
        data_files_path=str(table),
        fingerprints=(Fingerprint(FP_OLD, 50, 300), Fingerprint(FP_NEW, 300, None)),
    )


def test_range_is_loaded_exclusive_manifest_inclusive(tmp_path):
    plan = plan_table(entry(tree(tmp_path)), loaded_watermark=None)
    assert [(b.fingerprints, b.timestamp) for b in plan.batches] == [
        ((FP_OLD,), 100), ((FP_OLD,), 200), ((FP_NEW,), 300), ((FP_NEW,), 400)]
    assert plan.target_watermark == 400  # the folder AT the watermark is complete and included
    later = plan_table(entry(tree(tmp_path)), loaded_watermark=200)
    assert [b.timestamp for b in later.batches] == [300, 400]  # 200 itself is not reloaded


def test_in_flight_folders_are_never_returned(tmp_path):
    plan = plan_table(entry(tree(tmp_path), watermark=450), loaded_watermark=None)
    assert 500 not in [b.timestamp for b in plan.batches]
    assert plan_table(entry(tree(tmp_path)), loaded_watermark=400).batches == []


def test_drained_fingerprints_cost_one_listing_from_the_loaded_watermark(tmp_path):
    table = tree(tmp_path)
    plan = plan_table(entry(table), loaded_watermark=300)
    assert [b.timestamp for b in plan.batches] == [400]
    # One listing per schema folder, each starting after the loaded watermark: the drained old
    # schema (it ended at 300 <= 300) costs one request that finds nothing, not its history.
    assert plan.listed == [str(table), str(table / FP_OLD), str(table / FP_NEW)]
    assert plan.warnings == []


def test_a_folder_that_breaks_the_drained_fingerprint_rule_is_loaded_and_reported(tmp_path):
    table = tree(tmp_path)
    parquet(table / FP_OLD / f"{350:013d}" / "part-0.parquet")  # the old schema, after the new one started
    plan = plan_table(entry(table), loaded_watermark=300)
    assert [(b.fingerprints, b.timestamp) for b in plan.batches] == [((FP_OLD,), 350), ((FP_NEW,), 400)]
    assert any(f"{FP_OLD}/0000000000350" in w and "schemaHistory" in w for w in plan.warnings), plan.warnings


def test_folders_of_one_timestamp_in_two_fingerprints_are_one_batch(tmp_path):
    table = tree(tmp_path)
    parquet(table / FP_OLD / f"{400:013d}" / "part-0.parquet", rows=5)  # CDA wrote batch 400 under both
    plan = plan_table(entry(table), loaded_watermark=300)
    [batch] = plan.batches
    assert (batch.timestamp, batch.fingerprints, len(batch.files)) == (400, (FP_OLD, FP_NEW), 2)
    assert batch.folders == [f"{FP_OLD}/400", f"{FP_NEW}/400"]
    assert count_rows(plan.batches) == 8


def test_commit_groups_follow_the_budget_and_never_split_a_batch(tmp_path):
    table = tree(tmp_path)
    parquet(table / FP_OLD / f"{300:013d}" / "part-0.parquet")  # batch 300: two folders, two files
    plan = plan_table(entry(table), loaded_watermark=None)
    sizes = [b.size for b in plan.batches]
    assert [[b.timestamp for b in g.batches] for g in plan.commit_groups(CommitBudget())] == [[100, 200, 300, 400]]
    by_bytes = plan.commit_groups(CommitBudget(max_bytes=sizes[0] + sizes[1]))
    assert [[b.timestamp for b in g.batches] for g in by_bytes] == [[100, 200], [300], [400]]
    by_files = plan.commit_groups(CommitBudget(max_files=2), clone_mode="shallow")
    assert [[b.timestamp for b in g.batches] for g in by_files] == [[100, 200], [300], [400]]
    tiny = plan.commit_groups(CommitBudget(max_bytes=1))  # a batch larger than the budget: a commit of its own
    assert [g.watermark for g in tiny] == [100, 200, 300, 400]
    capped = plan.commit_groups(CommitBudget(max_batches=3))
    assert [(g.first_timestamp, g.watermark, len(g.batches)) for g in capped] == [(100, 300, 3), (400, 400, 1)]
    assert capped[0].fingerprints == (FP_OLD, FP_NEW)


def test_caught_up_table_lists_nothing(tmp_path):
    plan = plan_table(entry(tree(tmp_path)), loaded_watermark=400)
    assert plan.listed == [] and plan.is_empty


def test_junk_and_empty_files_are_ignored(tmp_path):
    table = tree(tmp_path)
    batch = table / FP_NEW / f"{400:013d}"
    (batch / ".cda").mkdir()
    (batch / ".cda" / "batch-metrics.json").write_text("{}")
    (batch / "cda").mkdir()
    parquet(batch / "cda" / "nested.parquet")
    (batch / "_SUCCESS").write_text("")
    (batch / "part-9.parquet").write_bytes(b"")
    parquet(table / FP_NEW / "0000000000350-copy" / "part-0.parquet")  # sorts inside the range
    plan = plan_table(entry(table), loaded_watermark=300)
    assert [f.location.name for f in plan.batches[0].files] == ["part-0.parquet"]
    assert any("part-9.parquet" in w for w in plan.warnings)
    assert any("0000000000350-copy" in w for w in plan.warnings)
    assert count_rows(plan.batches) == 3


def test_a_table_without_folder_and_without_records_has_nothing_pending(tmp_path):
    empty = dataclasses.replace(entry(tmp_path / "not_there_yet"), total_processed_records=0)
    plan = plan_table(empty, loaded_watermark=None)
    assert plan.batches == [] and plan.warnings == []


def test_a_data_files_path_that_points_nowhere_fails_the_table(tmp_path):
    with pytest.raises(CdaSourceError, match=r"cc_claim.*has no CDA folders.*12 records.*dataFilesPath"):
        plan_table(entry(tmp_path / "typo_in_path"), loaded_watermark=None)


def test_a_watermark_that_moves_backwards_fails_the_table(tmp_path):
    with pytest.raises(CdaSourceError, match=r"cc_claim.*400 is behind the batch already loaded \(500\).*reset"):
        plan_table(entry(tree(tmp_path)), loaded_watermark=500)


def test_a_watermark_ahead_with_no_folder_found_is_a_warning(tmp_path):
    plan = plan_table(entry(tree(tmp_path), watermark=450), loaded_watermark=400)
    assert plan.batches == []
    assert any("450" in w and "no CDA folder was found" in w for w in plan.warnings), plan.warnings


def test_unknown_fingerprint_folder_is_read_with_a_warning(tmp_path):
    table = tree(tmp_path)
    parquet(table / "cccc" / f"{350:013d}" / "part-0.parquet")
    plan = plan_table(entry(table), loaded_watermark=300)
    assert [b.timestamp for b in plan.batches] == [350, 400]
    assert any("cccc" in w and "schemaHistory" in w for w in plan.warnings)


def test_same_plan_on_s3(tmp_path, s3_bucket):
    from guidewire_pipeline.cda.storage import Location

    local = tree(tmp_path)
    s3_table = Location.parse(f"s3://{s3_bucket}/cda/cc_claim")
    for path in local.rglob("*.parquet"):
        s3_table.join(str(path.relative_to(local))).write_bytes(path.read_bytes())
    s3_entry = ManifestEntry("cc_claim", 400, 12, s3_table.uri, entry(local).fingerprints)
    plan = plan_table(s3_entry, loaded_watermark=200)
    assert [(b.fingerprints, b.timestamp) for b in plan.batches] == [((FP_NEW,), 300), ((FP_NEW,), 400)]
    assert plan.batches[0].files[0].location.uri.startswith(f"s3://{s3_bucket}/cda/cc_claim/{FP_NEW}/")
    assert count_rows(plan.batches) == 6
