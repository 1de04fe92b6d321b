"""Bad input as a new user makes it, run the way CI runs the pipeline (``dagster job execute ...
cda_sync_job``): every case exits non-zero, names the bad table, file or field in the output, and
the other tables of the same manifest load exactly. Secrets in the environment never appear."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from guidewire_pipeline.sample.generator import generate
from tests.raw.helpers import assert_exactly_once
from tests.test_newcomer import DAGSTER, clean_env

GOOD = ("cc_claim", "cc_exposure", "cc_contact")
SECRETS = {"AWS_SECRET_ACCESS_KEY": "secret-marker-aws-0123456789", "DATABRICKS_CLIENT_SECRET": "secret-marker-dbx-9876"}


def sync(cwd: Path) -> subprocess.CompletedProcess:
    command = [DAGSTER, "job", "execute", "-m", "guidewire_pipeline.definitions", "-j", "cda_sync_job"]
    env = clean_env(GW_MANIFEST_URI=str(cwd / "cda" / "manifest.json"), GW_DELTA_ROOT=str(cwd / "delta"),
                    GW_SHAREPACK=str(cwd / "no-such-pack.yaml"), **SECRETS)
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    output = result.stdout + result.stderr
    for marker in SECRETS.values():
        assert marker not in output
    return result


@pytest.fixture
def bad_cda(tmp_path: Path) -> Path:
    """A CDA tree whose manifest mixes good tables with one of each bad case."""
    cda = tmp_path / "cda"
    generate(str(cda), tables=6, batches=3, rows=30, seed=6)
    manifest = json.loads((cda / "manifest.json").read_text())
    good_entry = manifest["pc_policyline"]

    # A table whose files lack the change columns and id.
    shutil.copytree(cda / "pc_policyline", cda / "cc_nocdc")
    for path in (cda / "cc_nocdc").rglob("*.parquet"):
        if path.stat().st_size:
            rows = pq.read_table(path)
            pq.write_table(rows.drop_columns([c for c in rows.column_names if c.startswith("gwcbi___")]), path)
    manifest["cc_nocdc"] = {**good_entry, "dataFilesPath": str(cda / "cc_nocdc")}
    # A dataFilesPath that points nowhere, for a table the manifest counts records of.
    manifest["cc_nowhere"] = {**good_entry, "dataFilesPath": str(cda / "cc_typo")}
    # Watermarks far in the future and negative.
    manifest["cc_future"] = {**good_entry, "lastSuccessfulWriteTimestamp": "99999999999999"}
    manifest["cc_negative"] = {**good_entry, "lastSuccessfulWriteTimestamp": "-1"}
    # Skipped files and folders must be named in the run's log.
    first = sorted((cda / "cc_exposure").glob("*/*"))[0]
    (first / "part-zero.snappy.parquet").write_bytes(b"")
    (first.parent / "not-a-timestamp").mkdir()
    (first.parent / "not-a-timestamp" / "x.parquet").write_bytes(b"PAR1")
    text = json.dumps(manifest, indent=2)
    # A duplicate key whose two entries differ (json.dumps cannot write one: splice it in).
    duplicate = json.dumps({**good_entry, "lastSuccessfulWriteTimestamp": "1700000000000"})
    text = text[:-2] + f',\n  "pc_policyline": {duplicate}\n}}'
    (cda / "manifest.json").write_text(text)
    return cda


def test_every_bad_case_is_named_the_run_fails_and_the_good_tables_load_exactly(bad_cda: Path):
    cwd = bad_cda.parent
    result = sync(cwd)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    for table, what in [
        ("cc_nocdc", "gwcbi___seqval_hex"),  # the file and the missing columns
        ("cc_nowhere", "has no CDA folders"),
        ("cc_future", "later than now plus a day"),
        ("cc_negative", "negative"),
        ("pc_policyline", "appears 2 times"),
    ]:
        assert table in output and what in output, (table, what, output[-3000:])
    assert str(bad_cda / "cc_nocdc") in output  # the file is named
    assert "part-zero.snappy.parquet" in output and "not-a-timestamp" in output  # skipped, in the log
    assert "5 of 11 tables failed" in output
    for table in GOOD:
        assert_exactly_once(bad_cda, table, cwd / "delta" / "raw" / table)
    assert not (cwd / "delta" / "raw" / "cc_nocdc").exists()  # not one row of it


def test_a_watermark_that_moves_backwards_fails_that_table(tmp_path: Path):
    cda = tmp_path / "cda"
    generate(str(cda), tables=3, batches=3, rows=30, seed=6)
    assert sync(tmp_path).returncode == 0
    manifest = json.loads((cda / "manifest.json").read_text())
    manifest["cc_claim"]["lastSuccessfulWriteTimestamp"] = "1700000000000"
    (cda / "manifest.json").write_text(json.dumps(manifest))
    result = sync(tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "cc_claim" in output and "behind the batch already loaded" in output
    assert_exactly_once(cda, "pc_policyline", tmp_path / "delta" / "raw" / "pc_policyline")


def test_an_empty_manifest_fails_the_run_naming_it(tmp_path: Path):
    (tmp_path / "cda").mkdir()
    (tmp_path / "cda" / "manifest.json").write_text("{}")
    result = sync(tmp_path)
    assert result.returncode != 0
    assert "lists no tables" in result.stdout + result.stderr and "GW_MANIFEST_URI" in result.stdout + result.stderr
