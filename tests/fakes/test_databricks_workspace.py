"""Smoke tests of the fake workspace core, through the real databricks-sdk."""

from __future__ import annotations

import re

import pytest
from databricks.sdk import WorkspaceClient
from databricks.sdk.errors import NotFound, PermissionDenied, Unauthenticated

from tests.fakes.databricks_workspace import FakeApiError, FakeDatabricksWorkspace


def test_token_is_not_shaped_like_a_real_pat(databricks_workspace):
    assert not re.fullmatch(r"dapi[0-9a-f]{32}", databricks_workspace.token)


def test_route_handler_answers_the_real_client(databricks_workspace: FakeDatabricksWorkspace):
    ws = databricks_workspace

    @ws.route("GET", r"/api/2.0/preview/scim/v2/Me")
    def me(ws, match, query, body):
        return {"id": "1", "userName": "fake@example.com"}

    assert ws.client().current_user.me().user_name == "fake@example.com"
    assert ("GET", "/api/2.0/preview/scim/v2/Me") in ws.requests
    assert ws.writes() == []


def test_fake_api_error_becomes_the_sdk_error_class(databricks_workspace):
    ws = databricks_workspace

    @ws.route("POST", r"/api/2.0/workspace/mkdirs")
    def mkdirs(ws, match, query, body):
        raise FakeApiError(403, "PERMISSION_DENIED", f"no access to {body['path']}")

    with pytest.raises(PermissionDenied, match="no access to /x"):
        ws.client().workspace.mkdirs("/x")
    assert ws.writes("/api/2.0/workspace") == [("POST", "/api/2.0/workspace/mkdirs")]


def test_unknown_route_is_endpoint_not_found(databricks_workspace):
    with pytest.raises(NotFound) as e:
        databricks_workspace.client().current_user.me()
    assert e.value.error_code == "ENDPOINT_NOT_FOUND"


def test_wrong_token_is_401(databricks_workspace):
    ws = databricks_workspace
    client = WorkspaceClient(host=ws.host, token="wrong-token", auth_type="pat")
    with pytest.raises(Unauthenticated, match="Invalid access token"):
        client.current_user.me()


def test_default_client_from_env_reaches_the_fake(databricks_workspace):
    ws = databricks_workspace

    @ws.route("GET", r"/api/2.0/preview/scim/v2/Me")
    def me(ws, match, query, body):
        return {"id": "1", "userName": "env@example.com"}

    assert WorkspaceClient().current_user.me().user_name == "env@example.com"


def test_handler_bug_is_kept_in_errors(databricks_workspace):
    ws = databricks_workspace

    @ws.route("GET", r"/api/2.0/preview/scim/v2/Me")
    def me(ws, match, query, body):
        raise KeyError("oops")

    with pytest.raises(Exception, match="fake workspace bug"):
        ws.client().current_user.me()
    assert "KeyError" in ws.errors[0]


def test_service_principal_oauth_m2m_through_databricks_auth(databricks_workspace, monkeypatch):
    """The SDK discovers the token endpoint, gets a token with the client credentials, and calls the API."""
    from guidewire_pipeline.databricks_auth import auth_from_env

    ws = databricks_workspace

    @ws.route("GET", r"/api/2.0/preview/scim/v2/Me")
    def me(ws, match, query, body):
        return {"id": "1", "userName": "sp@example.com"}

    client_id, secret = ws.add_service_principal()
    monkeypatch.delenv("DATABRICKS_TOKEN")
    monkeypatch.setenv("DATABRICKS_CLIENT_ID", client_id)
    monkeypatch.setenv("DATABRICKS_CLIENT_SECRET", secret)
    auth = auth_from_env()
    assert auth.auth_type == "oauth-m2m" and secret not in repr(auth)
    assert auth.workspace_client().current_user.me().user_name == "sp@example.com"
    assert ws.oauth_tokens  # a token was issued and used
    monkeypatch.setenv("DATABRICKS_CLIENT_SECRET", "wrong-secret")
    with pytest.raises(Exception, match="invalid_client|Client authentication failed|401"):
        auth_from_env().workspace_client().current_user.me()
