"""The local Delta Sharing server against the OFFICIAL ``delta-sharing`` client, over real HTTP on
loopback, on real Delta tables: gold marts written with deltalake, a raw table loaded by the
project's writer (change data feed on). The share pack is applied through the same reconciler as
for Unity Catalog; the server is a uvicorn process of its own."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import delta_sharing
import pandas as pd
import pyarrow as pa
import pytest
import requests
from deltalake import DeltaTable, write_deltalake

from guidewire_pipeline.cda.delta_writer import sync_table
from guidewire_pipeline.cda.manifest import read_manifest
from guidewire_pipeline.cda.storage import Location
from guidewire_pipeline.lakehouse import Lakehouse
from guidewire_pipeline.sample.generator import advance, generate
from guidewire_pipeline.sharing.backends import SharingServerBackend
from guidewire_pipeline.sharing.reconciler import ActivationLinkStore, reconcile
from guidewire_pipeline.sharing.server.signing import FileUrlSigner
from guidewire_pipeline.sharing.server.state import SharingState
from guidewire_pipeline.sharing.sharepack import load_sharepack
from tests.sharing.server_fixture import RunningServer, running_server

PACK = """\
metadata: {requestor: data-team@example.com, project_name: Server tests}
recipient:
  - {name: acme, type: D2O}
  - {name: globex, type: D2O}
  - {name: fenced, type: D2O, allowed_ips: [203.0.113.0/24]}
  - {name: loopback, type: D2O, allowed_ips: [127.0.0.1/32]}
  - {name: workspace, type: D2D, metastore_id: aws:us-west-2:19a85dee-54bc-43a2-87ab-023d0ec16013}
share:
  - name: gold_marts
    recipients: [acme, fenced, loopback, workspace]
    data_objects:
      - {name: main.gold.claims_by_state_month, history_sharing: true}
      - main.gold.policies_in_force_by_month
  - name: raw_changes
    recipients: [acme]
    data_objects:
      - {name: main.raw.cc_claim, history_sharing: true, cdf_enabled: true}
  - name: globex_only
    recipients: [globex]
    data_objects:
      - {name: main.gold.policies_in_force_by_month, shared_as: partner.policies}
"""


@dataclass(frozen=True)
class Lake:
    root: Path
    delta_root: Path
    state_url: str
    profiles: Path
    server: RunningServer

    def profile(self, recipient: str) -> str:
        return str(self.profiles / f"{recipient}.share")

    def token(self, recipient: str) -> str:
        return json.loads(Path(self.profile(recipient)).read_text())["bearerToken"]

    def table(self, layer: str, name: str, version: int | None = None) -> DeltaTable:
        return DeltaTable(str(self.delta_root / layer / name), version=version)

    def get(self, path: str, recipient: str | None = "acme", **headers: str) -> requests.Response:
        if recipient:
            headers["Authorization"] = f"Bearer {self.token(recipient)}"
        return requests.get(f"{self.server.endpoint}{path}", headers=headers, timeout=30)

    def query(self, path: str, body: object, recipient: str = "acme") -> requests.Response:
        return requests.post(f"{self.server.endpoint}{path}", json=body, timeout=30,
                             headers={"Authorization": f"Bearer {self.token(recipient)}"})


def _claims(states: list[str], month: dt.date) -> pa.Table:
    return pa.table({
        "loss_state": pa.array(states),
        "loss_month": pa.array([month] * len(states), pa.date32()),
        "claim_count": pa.array(range(1, len(states) + 1), pa.int64()),
        "incurred_amount": pa.array([decimal.Decimal(f"{i}.25") for i in range(len(states))], pa.decimal128(18, 2)),
    })


def build_lake(root: Path) -> Path:
    """Gold marts (two versions of one, a partitioned other) and one deep raw table with a change feed."""
    delta = root / "delta"
    claims = str(delta / "gold" / "claims_by_state_month")
    write_deltalake(claims, _claims(["CA", "NY", "TX"], dt.date(2024, 1, 1)))
    write_deltalake(claims, _claims(["WA", "FL"], dt.date(2024, 2, 1)), mode="append")
    policies = pa.table({
        "product_code": ["PersonalAuto", "PersonalAuto", "Homeowners", "WorkersComp"],
        "month": pa.array([dt.date(2024, 1, 1)] * 4, pa.date32()),
        "policies_in_force": pa.array([10, 12, 7, 3], pa.int64()),
        "total_premium_in_force": pa.array([decimal.Decimal("100.50")] * 4, pa.decimal128(18, 2)),
    })
    write_deltalake(str(delta / "gold" / "policies_in_force_by_month"), policies, partition_by=["product_code"])
    generate(str(root / "cda"), tables=3, batches=3, rows=40, seed=5)
    raw = Location.parse(str(delta / "raw" / "cc_claim"))
    for more in (0, 1):  # two syncs: the change feed spans several commits whatever one sync commits
        if more:
            advance(str(root / "cda"), batches=1)
        result = sync_table(read_manifest(str(root / "cda" / "manifest.json")).entries["cc_claim"], raw)
        assert result.status == "loaded", result
    assert DeltaTable(raw.uri).version() >= 1
    return delta


def apply_pack(root: Path, delta: Path, state_url: str, endpoint: str, rotate: tuple[str, ...] = ()) -> None:
    (root / "pack.yaml").write_text(PACK)
    loaded = load_sharepack(root / "pack.yaml")
    backend = SharingServerBackend(SharingState(state_url), Lakehouse(str(delta)), endpoint, timedelta(days=1))
    result = reconcile(loaded.pack, backend, ActivationLinkStore(root / "profiles", "profile file"), apply=True,
                       rotate=rotate, locate=loaded.locate)
    assert result.ok, result.plan.to_markdown() + result.results_markdown()


@pytest.fixture(scope="module")
def lake(tmp_path_factory) -> Lake:
    root = tmp_path_factory.mktemp("sharing-lake")
    delta = build_lake(root)
    state_url = f"sqlite:///{root / 'state.db'}"
    with running_server(state_url, str(delta), root / "server.log") as server:
        apply_pack(root, delta, state_url, server.endpoint)
        yield Lake(root, delta, state_url, root / "profiles", server)


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(list(frame.columns)).reset_index(drop=True)


def _same_rows(shared: pd.DataFrame, direct: pd.DataFrame) -> None:
    assert list(shared.columns) == list(direct.columns)
    pd.testing.assert_frame_equal(_sorted(shared.astype(object)), _sorted(direct.astype(object)), check_dtype=False)


# -- the official client -------------------------------------------------------------------------
def test_client_lists_the_shares_and_tables_granted(lake: Lake):
    client = delta_sharing.SharingClient(lake.profile("acme"))
    assert sorted(s.name for s in client.list_shares()) == ["gold_marts", "raw_changes"]
    assert sorted((t.share, t.schema, t.name) for t in client.list_all_tables()) == [
        ("gold_marts", "gold", "claims_by_state_month"),
        ("gold_marts", "gold", "policies_in_force_by_month"),
        ("raw_changes", "raw", "cc_claim"),
    ]
    globex = delta_sharing.SharingClient(lake.profile("globex"))
    assert [(t.share, t.schema, t.name) for t in globex.list_all_tables()] == [("globex_only", "partner", "policies")]


@pytest.mark.parametrize("share,schema,layer,table", [
    ("gold_marts", "gold", "gold", "claims_by_state_month"),
    ("gold_marts", "gold", "gold", "policies_in_force_by_month"),
    ("raw_changes", "raw", "raw", "cc_claim"),
])
def test_client_reads_exactly_the_rows_deltalake_reads(lake: Lake, share: str, schema: str, layer: str, table: str):
    shared = delta_sharing.load_as_pandas(f"{lake.profile('acme')}#{share}.{schema}.{table}")
    direct = lake.table(layer, table).to_pandas()
    assert len(direct) > 0
    _same_rows(shared, direct[list(shared.columns)])
    assert set(shared.columns) == set(direct.columns)


def test_client_reads_the_change_feed_exactly(lake: Lake):
    url = f"{lake.profile('acme')}#raw_changes.raw.cc_claim"
    shared = delta_sharing.load_table_changes_as_pandas(url, starting_version=0)
    direct = pa.table(lake.table("raw", "cc_claim").load_cdf(starting_version=0).read_all()).to_pandas()
    latest = lake.table("raw", "cc_claim").version()
    assert len(direct) > 0 and set(direct["_commit_version"]) <= set(range(latest + 1))
    direct["_commit_timestamp"] = direct["_commit_timestamp"].map(lambda t: int(t.timestamp() * 1000))
    _same_rows(shared, direct[list(shared.columns)])
    # a window of versions, by the client's own parameters
    window = delta_sharing.load_table_changes_as_pandas(url, starting_version=latest, ending_version=latest)
    assert set(window["_commit_version"]) == {latest} and len(window) == (direct["_commit_version"] == latest).sum()


def test_time_travel_by_version_and_timestamp(lake: Lake):
    url = f"{lake.profile('acme')}#gold_marts.gold.claims_by_state_month"
    _same_rows(delta_sharing.load_as_pandas(url, version=0), lake.table("gold", "claims_by_state_month", 0).to_pandas())
    first_commit = lake.table("gold", "claims_by_state_month").history()[-1]["timestamp"]
    at = dt.datetime.fromtimestamp(first_commit / 1000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert len(delta_sharing.load_as_pandas(url, timestamp=at)) == 3
    # history is not shared for the other mart: the protocol's 400, naming the pack field
    response = lake.query("/shares/gold_marts/schemas/gold/tables/policies_in_force_by_month/query", {"version": 0})
    assert response.status_code == 400 and "history_sharing: true" in response.json()["message"]


def test_limit_hint_and_predicates_skip_files(lake: Lake):
    path = "/shares/gold_marts/schemas/gold/tables/policies_in_force_by_month/query"
    everything = lake.query(path, {}).text.splitlines()
    assert len(everything) == 2 + 3  # protocol, metaData, one file per product_code
    assert len(lake.query(path, {"limitHint": 1}).text.splitlines()) == 2 + 1
    on_partition = {"op": "equal", "children": [{"op": "column", "name": "product_code", "valueType": "string"},
                                                 {"op": "literal", "value": "Homeowners", "valueType": "string"}]}
    lines = lake.query(path, {"jsonPredicateHints": json.dumps(on_partition)}).text.splitlines()
    files = [json.loads(line)["file"] for line in lines[2:]]
    assert [f["partitionValues"] for f in files] == [{"product_code": "Homeowners"}]
    on_stats = {"op": "greaterThan", "children": [{"op": "column", "name": "claim_count", "valueType": "long"},
                                                   {"op": "literal", "value": "2", "valueType": "long"}]}
    claims = lake.query("/shares/gold_marts/schemas/gold/tables/claims_by_state_month/query",
                        {"jsonPredicateHints": json.dumps(on_stats)}).text.splitlines()
    assert len(claims) == 2 + 1  # only the first commit's file has claim_count 3
    # the client applies the same hint, through the server
    frame = delta_sharing.load_as_pandas(f"{lake.profile('acme')}#gold_marts.gold.policies_in_force_by_month",
                                         jsonPredicateHints=json.dumps(on_partition))
    assert set(frame["product_code"]) == {"Homeowners"}
    # a predicate the server cannot evaluate is ignored, as the protocol says: every file
    assert len(lake.query(path, {"jsonPredicateHints": "{not json"}).text.splitlines()) == 2 + 3


def test_protocol_headers_and_lines(lake: Lake):
    response = lake.get("/shares/raw_changes/schemas/raw/tables/cc_claim/metadata")
    assert response.headers["content-type"] == "application/x-ndjson; charset=utf-8"
    assert response.headers["delta-table-version"] == str(lake.table("raw", "cc_claim").version())
    protocol, metadata = (json.loads(line) for line in response.text.splitlines())
    assert protocol == {"protocol": {"minReaderVersion": 1}}
    assert metadata["metaData"]["configuration"] == {"enableChangeDataFeed": "true"}
    assert json.loads(metadata["metaData"]["schemaString"]) == json.loads(lake.table("raw", "cc_claim").schema().to_json())
    version = lake.get("/shares/raw_changes/schemas/raw/tables/cc_claim/version")
    assert version.status_code == 200 and version.text == ""
    assert version.headers["delta-table-version"] == str(lake.table("raw", "cc_claim").version())
    ended = requests.post(f"{lake.server.endpoint}/shares/gold_marts/schemas/gold/tables/claims_by_state_month/query",
                          json={}, timeout=30, headers={"Authorization": f"Bearer {lake.token('acme')}",
                                                        "delta-sharing-capabilities": "includeEndStreamAction=true"})
    assert "includeendstreamaction=true" in ended.headers["delta-sharing-capabilities"]
    assert "minUrlExpirationTimestamp" in json.loads(ended.text.splitlines()[-1])["endStreamAction"]
    delta = requests.post(f"{lake.server.endpoint}/shares/gold_marts/schemas/gold/tables/claims_by_state_month/query",
                          json={}, timeout=30, headers={"Authorization": f"Bearer {lake.token('acme')}",
                                                        "delta-sharing-capabilities": "responseformat=delta"})
    assert delta.headers["delta-sharing-capabilities"] == "responseformat=delta"
    lines = [json.loads(line) for line in delta.text.splitlines()]
    assert lines[0]["protocol"]["deltaProtocol"]["minReaderVersion"] == 1
    assert lines[1]["metaData"]["deltaMetadata"]["id"] == lake.table("gold", "claims_by_state_month").metadata().id
    assert all(line["file"]["deltaSingleAction"]["add"]["path"].startswith(lake.server.endpoint) for line in lines[2:])


def test_lists_are_paginated_with_page_tokens(lake: Lake):
    seen, token = [], None
    while True:
        query = "?maxResults=1" + (f"&pageToken={token}" if token else "")
        page = lake.get(f"/shares/gold_marts/all-tables{query}").json()
        seen += [item["name"] for item in page["items"]]
        token = page.get("nextPageToken")
        if not token:
            break
    assert seen == ["claims_by_state_month", "policies_in_force_by_month"]
    assert lake.get("/shares?maxResults=0").json() == {"items": [], "nextPageToken": lake.get(
        "/shares?maxResults=0").json()["nextPageToken"]}
    for bad in ("?maxResults=-1", "?maxResults=ten", "?pageToken=forged"):
        response = lake.get(f"/shares{bad}")
        assert response.status_code == 400 and response.json()["errorCode"] == "INVALID_PARAMETER_VALUE", bad


# -- bad input: the protocol's error, naming what was wrong, and nothing changes ----------------------
def test_bad_requests_get_the_protocols_errors(lake: Lake):
    state_before = Path(lake.state_url.removeprefix("sqlite:///")).read_bytes()
    cases = [
        (lake.get("/shares/nope"), 404, "RESOURCE_DOES_NOT_EXIST", "share 'nope'"),
        (lake.get("/shares/gold_marts/schemas/nope/tables"), 404, "RESOURCE_DOES_NOT_EXIST", "schema 'nope'"),
        (lake.get("/shares/gold_marts/schemas/gold/tables/nope/metadata"), 404, "RESOURCE_DOES_NOT_EXIST", "table 'nope'"),
        (lake.get("/no/such/endpoint"), 404, "RESOURCE_DOES_NOT_EXIST", "no such endpoint"),
        (lake.query("/shares/gold_marts/schemas/gold/tables/claims_by_state_month/query", {"limitHint": "ten"}),
         400, "INVALID_PARAMETER_VALUE", "limitHint"),
        (lake.query("/shares/gold_marts/schemas/gold/tables/claims_by_state_month/query", {"version": 99}),
         400, "INVALID_PARAMETER_VALUE", "version 99"),
        (lake.get("/shares/raw_changes/schemas/raw/tables/cc_claim/changes"), 400, "INVALID_PARAMETER_VALUE",
         "startingVersion"),
        (lake.get("/shares/gold_marts/schemas/gold/tables/policies_in_force_by_month/changes?startingVersion=0"),
         400, "INVALID_PARAMETER_VALUE", "cdf_enabled: true"),
        (lake.get("/shares/gold_marts/schemas/gold/tables/claims_by_state_month/changes?startingVersion=0"),
         400, "INVALID_PARAMETER_VALUE", "delta.enableChangeDataFeed"),
        (lake.get("/shares/gold_marts/schemas/gold/tables/claims_by_state_month/metadata?timestamp=yesterday"),
         400, "INVALID_PARAMETER_VALUE", "timestamp 'yesterday'"),
        (lake.get("/shares", recipient=None), 401, "UNAUTHENTICATED", "no bearer token"),
        (lake.get("/shares", recipient=None, Authorization="Bearer not-a-token"), 401, "UNAUTHENTICATED", "not valid"),
        (lake.get("/shares", recipient="fenced"), 403, "PERMISSION_DENIED", "127.0.0.1"),
        # a client cannot claim an allowed address: X-Forwarded-For is not trusted by default
        (lake.get("/shares", recipient="fenced", **{"X-Forwarded-For": "203.0.113.7"}), 403, "PERMISSION_DENIED",
         "127.0.0.1"),
    ]
    raw = requests.post(f"{lake.server.endpoint}/shares/gold_marts/schemas/gold/tables/claims_by_state_month/query",
                        data=b"{not json", timeout=30, headers={"Authorization": f"Bearer {lake.token('acme')}"})
    cases.append((raw, 400, "MALFORMED_REQUEST", "not JSON"))
    for response, status, code, named in cases:
        assert response.status_code == status, (response.request.url, response.text)
        assert response.headers["content-type"].startswith("application/json")
        assert response.json()["errorCode"] == code and named in response.json()["message"], response.text
    assert lake.get("/shares", recipient="loopback").status_code == 200  # its allowed_ips holds 127.0.0.1
    assert Path(lake.state_url.removeprefix("sqlite:///")).read_bytes() == state_before


def test_a_recipient_cannot_read_another_recipients_share(lake: Lake):
    for path in ("/shares/gold_marts", "/shares/gold_marts/schemas", "/shares/GOLD_MARTS/all-tables",
                 "/shares/gold_marts/schemas/gold/tables/claims_by_state_month/version"):
        response = lake.get(path, recipient="globex")
        assert response.status_code == 404, path
        assert response.json() == {"errorCode": "RESOURCE_DOES_NOT_EXIST",
                                   "message": "share 'gold_marts' does not exist or is not shared with you"
                                   .replace("gold_marts", path.split("/")[2])}
    with pytest.raises(requests.HTTPError, match="404"):
        delta_sharing.load_as_pandas(f"{lake.profile('globex')}#gold_marts.gold.claims_by_state_month")
    # the same table, shared to globex under its own name, is readable there
    frame = delta_sharing.load_as_pandas(f"{lake.profile('globex')}#globex_only.partner.policies")
    assert len(frame) == 4


def _file_urls(lake: Lake) -> list[str]:
    lines = lake.query("/shares/gold_marts/schemas/gold/tables/claims_by_state_month/query", {}).text.splitlines()
    return [json.loads(line)["file"]["url"] for line in lines[2:]]


def test_a_signed_url_fails_after_its_expiry_and_when_any_byte_changes(lake: Lake):
    url = _file_urls(lake)[0]
    assert requests.get(url, timeout=30).content[:4] == b"PAR1"
    endpoint_length = len(lake.server.endpoint)
    for i in range(endpoint_length, len(url)):  # every byte after the server's address
        changed = url[:i] + ("A" if url[i] != "A" else "B") + url[i + 1:]
        response = requests.get(changed, timeout=30)
        assert response.status_code in (403, 404), (i, changed, response.status_code)
    # issued with the server's own key, but an hour ago: expired, named as such
    signer = FileUrlSigner(SharingState(lake.state_url).signing_key(), lake.server.endpoint, ttl_seconds=60)
    path = str(next((lake.delta_root / "gold" / "claims_by_state_month").glob("*.parquet")))
    stale = signer.sign(path, now_ms=int((dt.datetime.now(dt.UTC) - timedelta(hours=1)).timestamp() * 1000))
    response = requests.get(stale.url, timeout=30)
    assert response.status_code == 403 and "expired" in response.json()["message"]
    fresh = signer.sign(path)
    assert requests.get(fresh.url, timeout=30).status_code == 200


def test_rotation_stops_the_old_token_and_the_new_profile_reads(lake: Lake):
    old = lake.token("loopback")
    apply_pack(lake.root, lake.delta_root, lake.state_url, lake.server.endpoint, rotate=("loopback",))
    new = lake.token("loopback")
    assert new != old
    assert lake.get("/shares", recipient=None, Authorization=f"Bearer {old}").status_code == 401
    assert len(delta_sharing.load_as_pandas(f"{lake.profile('loopback')}#gold_marts.gold.claims_by_state_month")) == 5
    # the other recipients keep their tokens
    assert lake.get("/shares", recipient="acme").status_code == 200


def test_tokens_and_signed_urls_never_reach_the_server_log(lake: Lake):
    _file_urls(lake)
    requests.get(_file_urls(lake)[0], timeout=30)
    server_log = lake.server.log()
    assert "POST /delta-sharing/shares/gold_marts/schemas/gold/tables/claims_by_state_month/query 200" in server_log
    assert "/files/<signed>" in server_log
    for recipient in ("acme", "globex", "fenced", "loopback"):
        assert lake.token(recipient) not in server_log
    assert all(url.split("/files/")[1] not in server_log for url in _file_urls(lake))
    # the state keeps hashes only
    assert lake.token("acme").encode() not in Path(lake.state_url.removeprefix("sqlite:///")).read_bytes()


def test_tables_on_s3_are_read_through_presigned_urls(s3_bucket: str, tmp_path: Path):
    delta_root = f"s3://{s3_bucket}/lake"
    uri = f"{delta_root}/gold/claims_by_state_month"
    write_deltalake(uri, _claims(["CA", "OR"], dt.date(2024, 3, 1)), storage_options=Location.parse(uri).delta_storage_options())
    pack = PACK.split("share:")[0] + "share:\n  - {name: s3_share, recipients: [acme], data_objects: [main.gold.claims_by_state_month]}\n"
    (tmp_path / "pack.yaml").write_text(pack)
    state_url = f"sqlite:///{tmp_path / 'state.db'}"
    with running_server(state_url, delta_root, tmp_path / "server.log") as server:
        loaded = load_sharepack(tmp_path / "pack.yaml")
        backend = SharingServerBackend(SharingState(state_url), Lakehouse(delta_root), server.endpoint, timedelta(days=1))
        assert reconcile(loaded.pack, backend, ActivationLinkStore(tmp_path / "p", "profile file"), apply=True).ok
        profile = str(tmp_path / "p" / "acme.share")
        token = json.loads(Path(profile).read_text())["bearerToken"]
        lines = requests.post(f"{server.endpoint}/shares/s3_share/schemas/gold/tables/claims_by_state_month/query",
                              json={}, headers={"Authorization": f"Bearer {token}"}, timeout=30).text.splitlines()
        url = json.loads(lines[2])["file"]["url"]
        assert url.startswith("http://127.0.0.1:") and s3_bucket in url and "X-Amz-Signature=" in url
        frame = delta_sharing.load_as_pandas(f"{profile}#s3_share.gold.claims_by_state_month")
    direct = DeltaTable(uri, storage_options=Location.parse(uri).delta_storage_options()).to_pandas()
    _same_rows(frame, direct)


def test_server_rejects_urls_it_did_not_sign(lake: Lake):
    try:
        urllib.request.urlopen(f"{lake.server.endpoint}/files/eyJ1IjoiL2V0Yy9wYXNzd2QiLCJlIjo5OTk5OTk5OTk5OTk5fQ.00", timeout=5)
        raise AssertionError("a forged URL was served")
    except urllib.error.HTTPError as exc:
        assert exc.code == 403 and b"signature does not match" in exc.read()
