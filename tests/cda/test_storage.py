from __future__ import annotations

import pytest

from guidewire_pipeline.cda.storage import Location, StorageError


def test_local_path_file_uri_and_s3_uri(tmp_path):
    local = Location.parse(str(tmp_path / "x"))
    assert (local.scheme, local.uri, local.delta_storage_options()) == ("local", str(tmp_path / "x"), {})
    assert Location.parse(f"file://{tmp_path}/x") == local
    s3 = Location.parse("s3://bucket/prefix/table/")
    assert (s3.scheme, s3.bucket, s3.key, s3.uri) == ("s3", "bucket", "prefix/table", "s3://bucket/prefix/table")
    assert s3.join("fp", "123").uri == "s3://bucket/prefix/table/fp/123"


def test_s3_options_follow_the_standard_variables(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9999")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    options = Location.parse("s3://b/k").delta_storage_options()
    assert options["AWS_ENDPOINT_URL"] == "http://127.0.0.1:9999"
    assert options["AWS_ALLOW_HTTP"] == "true"
    assert options["AWS_REGION"] == "eu-west-1"
    assert options["aws_conditional_put"] == "etag"  # safe concurrent commits without DynamoDB
    monkeypatch.setenv("AWS_ENDPOINT_URL", "https://s3.example.com")
    assert "AWS_ALLOW_HTTP" not in Location.parse("s3://b/k").delta_storage_options()


def test_secrets_never_in_repr(monkeypatch):
    from guidewire_pipeline.cda.storage import S3Settings

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "super-secret-value")
    assert "super-secret-value" not in repr(S3Settings.from_env())
    assert "super-secret-value" not in repr(Location.parse("s3://b/k"))


@pytest.mark.parametrize("bad", ["", "gs://bucket/x", "s3://"])
def test_unsupported_locations_are_clear(bad):
    with pytest.raises(StorageError):
        Location.parse(bad)


def test_listing_local_and_s3_alike(tmp_path, s3_bucket):
    for root in (Location.parse(str(tmp_path)), Location.parse(f"s3://{s3_bucket}/cda")):
        for name in ("1700000000000/a.parquet", "1700000900000/b.parquet", "1700000900000/.cda/m.json",
                     "1700001800000/c.parquet"):
            root.join("t", name).write_bytes(b"x")
        table = root.join("t")
        assert [c.name for c in table.list_children()] == ["1700000000000", "1700000900000", "1700001800000"]
        assert [c.name for c in table.list_children(start_after="1700000000000")] == ["1700000900000", "1700001800000"]
        walked = list(table.walk_batches("1700000000000", "1700000900000"))
        assert walked == [("1700000900000", "b.parquet", 1)]
        assert root.join("nope").list_children() == []
        assert root.join("t", "1700000000000", "a.parquet").stat() is not None
        assert root.join("t", "missing.json").stat() is None
