"""Properties of resource access: the outcome is the one contracts/matrix.yaml gives.

Tokens are minted straight from each environment's token service, so any
level and scope set can be tried; the requests go over real HTTP.
"""

from __future__ import annotations

import re

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mockflock.config import load_oauth_contract
from mockflock.contracts import Operation, load_matrix
from mockflock.server import MockServer

MATRIX = load_matrix()
OPERATIONS = sorted(MATRIX.operations, key=lambda op: op.id)
SCOPES = sorted(MATRIX.scopes)
WRONG_LEVEL = load_oauth_contract()["resource_apis"]["wrong_token_level"]
B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
SUBJECTS = {"machine": "demo-machine", "user": "demo-admin"}
CLIENTS = {"machine": "demo-machine", "user": "demo-user-app"}
PROPERTY_SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def mint(server: MockServer, environment: str, level: str, scopes: set[str] | frozenset[str]) -> str:
    env = server.environments[environment]
    return env.tokens.mint(
        subject=SUBJECTS[level],
        client_id=CLIENTS[level],
        organization="demo-org",
        level=level,
        scopes=scopes,
        lifetime=600,
    ).token


def call(server: MockServer, environment: str, operation: Operation, token: str) -> httpx.Response:
    path = re.sub(r"\{[^}]+\}", "missing-id", operation.path)
    url = f"{server.url(environment)}/api/v3{path}"
    return httpx.request(operation.method, url, headers={"Authorization": f"Bearer {token}"}, json={})


@PROPERTY_SETTINGS
@given(
    operation=st.sampled_from(OPERATIONS),
    level=st.sampled_from(["machine", "user"]),
    scopes=st.sets(st.sampled_from(SCOPES)),
)
def test_outcome_follows_matrix(server: MockServer, operation: Operation, level: str, scopes: set[str]) -> None:
    api = MATRIX.apis[operation.api]
    response = call(server, "production", operation, mint(server, "production", level, scopes))
    body = response.json()
    if not api.accepts(level):
        assert response.status_code == WRONG_LEVEL["status"]
        assert body["error"] == WRONG_LEVEL["error"]
        assert body["api"] == api.name
        assert body["token_level"] == level
        assert body["token_level_availability"] == api.levels[level]
    elif operation.scope not in scopes:
        assert response.status_code == 403
        assert body["error"] == "insufficient_scope"
        assert f'scope="{operation.scope}"' in response.headers["www-authenticate"]
    else:
        assert response.status_code not in (401, 403), body


def test_planned_level_is_named_planned(server: MockServer) -> None:
    devices = MATRIX.apis["devices"]
    assert devices.levels["user"] == "planned"
    response = call(server, "production", devices.operations[0], mint(server, "production", "user", set(SCOPES)))
    assert response.status_code == 403
    assert "planned" in response.json()["error_description"]


def test_wrong_level_names_api_and_levels(server: MockServer) -> None:
    search = MATRIX.apis["lpr-search"]
    response = call(server, "production", search.operations[0], mint(server, "production", "machine", set(SCOPES)))
    description = response.json()["error_description"]
    assert response.status_code == 403
    assert search.name in description
    assert "machine" in description
    assert response.json()["required_token_levels"] == ["user"]


@PROPERTY_SETTINGS
@given(data=st.data())
def test_any_change_to_token_is_401(server: MockServer, data: st.DataObject) -> None:
    token = mint(server, "production", "machine", set(SCOPES))
    index = data.draw(st.integers(0, len(token) - 1), label="index")
    replacement = data.draw(st.sampled_from([c for c in B64URL + "." if c != token[index]]), label="replacement")
    tampered = token[:index] + replacement + token[index + 1 :]
    response = call(server, "production", MATRIX.operation("listDevices"), tampered)
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_token"
    assert 'error="invalid_token"' in response.headers["www-authenticate"]


@pytest.mark.parametrize("suffix", ["=", "==", "A"])
def test_appended_characters_are_401(server: MockServer, suffix: str) -> None:
    token = mint(server, "production", "machine", set(SCOPES)) + suffix
    response = call(server, "production", MATRIX.operation("listDevices"), token)
    assert response.status_code == 401


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    source=st.sampled_from(["production", "development"]),
    operation=st.sampled_from([op for op in OPERATIONS if MATRIX.apis[op.api].accepts("machine")]),
)
def test_tokens_never_cross_environments(server: MockServer, source: str, operation: Operation) -> None:
    target = "development" if source == "production" else "production"
    response = call(server, target, operation, mint(server, source, "machine", set(SCOPES)))
    description = response.json()["error_description"]
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_token"
    assert source in description
    assert target in description


def test_expired_token_is_401(server: MockServer) -> None:
    env = server.environments["production"]
    token = env.tokens.mint(subject="demo-machine", client_id="demo-machine", organization="demo-org",
                            level="machine", scopes=set(SCOPES), lifetime=1).token
    server.clock.advance(5)
    try:
        response = call(server, "production", MATRIX.operation("listDevices"), token)
    finally:
        server.clock.reset()
    assert response.status_code == 401
    assert "expired" in response.json()["error_description"]
