"""Authorization header parsing on the v3 APIs (RFC 6750)."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from mockflock.server import MockServer


@pytest.fixture
def devices_url(server: MockServer) -> str:
    return server.url("production") + "/api/v3/devices"


def test_no_token_is_401_with_bare_challenge(devices_url: str) -> None:
    response = httpx.get(devices_url)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="flock"'
    assert "Authorization: Bearer" in response.json()["error_description"]


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "bEaReR"])
def test_scheme_is_case_insensitive(devices_url: str, machine_token: Callable[..., str], scheme: str) -> None:
    response = httpx.get(devices_url, headers={"Authorization": f"{scheme} {machine_token()}"})
    assert response.status_code == 200


def test_basic_scheme_is_401(devices_url: str) -> None:
    response = httpx.get(devices_url, auth=("demo-machine", "demo-machine-secret"))
    assert response.status_code == 401
    assert "'Basic'" in response.json()["error_description"]


@pytest.mark.parametrize("value", ["Bearer", "Bearer a b", "Bearer ä", "Bearer ...."])
def test_malformed_bearer_value_is_401(devices_url: str, value: str) -> None:
    response = httpx.get(devices_url, headers={"Authorization": value.encode("utf-8")})
    assert response.status_code == 401
    assert response.json()["error"] in ("invalid_token", "invalid_request")


def test_not_a_jwt_is_401(devices_url: str) -> None:
    response = httpx.get(devices_url, headers={"Authorization": "Bearer abc.def.ghi"})
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_token"


def test_token_in_query_is_rejected(devices_url: str, machine_token: Callable[..., str]) -> None:
    response = httpx.get(devices_url, params={"access_token": machine_token()})
    assert response.status_code == 400
    assert "URL" in response.json()["error_description"]


def test_two_authorization_headers_are_400(devices_url: str, machine_token: Callable[..., str]) -> None:
    token = machine_token()
    headers = [("Authorization", f"Bearer {token}"), ("Authorization", f"Bearer {token}")]
    response = httpx.get(devices_url, headers=headers)
    assert response.status_code == 400


def test_revoked_token_is_401(server: MockServer, devices_url: str, machine_token: Callable[..., str]) -> None:
    token = machine_token()
    jti = server.environments["production"].tokens.verify(token).claims["jti"]
    server.environments["production"].revoked.add(jti)
    try:
        response = httpx.get(devices_url, headers={"Authorization": f"Bearer {token}"})
    finally:
        server.environments["production"].revoked.discard(jti)
    assert response.status_code == 401
    assert "revoked" in response.json()["error_description"]


def test_token_signed_by_unknown_key_is_401(server: MockServer, devices_url: str) -> None:
    from mockflock.oauth.keys import KeySet, generate_key
    from mockflock.oauth.tokens import TokenService

    env = server.environments["production"]
    stranger = TokenService(environment="production", issuer=env.issuer, audience=env.audience,
                            keys=KeySet(generate_key()), clock=server.clock)
    token = stranger.mint(subject="demo-machine", client_id="demo-machine", organization="demo-org",
                          level="machine", scopes={"devices:read"}, lifetime=60).token
    response = httpx.get(devices_url, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401
    assert "key id" in response.json()["error_description"]


def test_unknown_path_is_json_404(server: MockServer) -> None:
    response = httpx.get(server.url("production") + "/api/v3/nope")
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


def test_wrong_method_is_json_405(devices_url: str) -> None:
    response = httpx.delete(devices_url)
    assert response.status_code == 405
    assert "GET" in response.headers["allow"]
    assert response.json()["error"] == "method_not_allowed"
