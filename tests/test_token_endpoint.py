"""The client credentials token endpoint, as Flock documents it and RFC 6749 fills in."""

from __future__ import annotations

import base64
import json

import httpx
import jwt
import pytest

from mockflock.server import MockServer
from tests.conftest import AUDIENCES

PRODUCTION = AUDIENCES["production"]
DEVELOPMENT = AUDIENCES["development"]


def form(**overrides: str | None) -> dict[str, str]:
    fields = {
        "grant_type": "client_credentials",
        "client_id": "demo-machine",
        "client_secret": "demo-machine-secret",
        "audience": PRODUCTION,
    }
    fields.update(overrides)
    return {name: value for name, value in fields.items() if value is not None}


@pytest.fixture
def token_url(server: MockServer) -> str:
    return server.url("production") + "/oauth/token"


def test_documented_request_returns_documented_body(token_url: str) -> None:
    response = httpx.post(token_url, data=form())
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"access_token", "token_type", "expires_in"}
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 86400


def test_token_response_is_not_cacheable(token_url: str) -> None:
    response = httpx.post(token_url, data=form())
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["pragma"] == "no-cache"


def test_token_without_scope_carries_every_registered_scope(server: MockServer, token_url: str) -> None:
    token = httpx.post(token_url, data=form()).json()["access_token"]
    claims = jwt.decode(token, options={"verify_signature": False})
    assert set(claims["scope"].split()) == set(server.config.apps["demo-machine"].scopes)


def test_empty_scope_means_every_registered_scope(server: MockServer, token_url: str) -> None:
    body = httpx.post(token_url, data=form(scope="")).json()
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert set(claims["scope"].split()) == set(server.config.apps["demo-machine"].scopes)
    assert "scope" not in body


def test_requested_scope_is_granted_exactly(token_url: str) -> None:
    body = httpx.post(token_url, data=form(scope="devices:read  custom-hotlists:read")).json()
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["scope"] == "custom-hotlists:read devices:read"
    assert "scope" not in body


def test_unregistered_scope_is_invalid_scope(token_url: str) -> None:
    response = httpx.post(token_url, data=form(client_id="demo-hotlists", client_secret="demo-hotlists-secret", scope="devices:read"))
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_scope"
    assert "devices:read" in response.json()["error_description"]


def test_no_refresh_token_is_issued(token_url: str) -> None:
    assert "refresh_token" not in httpx.post(token_url, data=form()).json()


def test_claims_identify_app_environment_and_level(server: MockServer, token_url: str) -> None:
    token = httpx.post(token_url, data=form()).json()["access_token"]
    header = jwt.get_unverified_header(token)
    claims = jwt.decode(token, options={"verify_signature": False})
    assert header["alg"] == "RS256"
    assert header["kid"] == server.environments["production"].keys.active.kid
    assert claims["iss"] == server.url("production")
    assert claims["aud"] == PRODUCTION
    assert claims["sub"] == "demo-machine"
    assert claims["azp"] == claims["client_id"] == "demo-machine"
    assert claims["token_level"] == "machine"
    assert claims["org_id"] == "demo-org"
    assert claims["exp"] - claims["iat"] == 86400
    assert claims["nbf"] == claims["iat"]
    assert len(claims["jti"]) >= 16


def test_every_token_has_its_own_jti(token_url: str) -> None:
    tokens = [httpx.post(token_url, data=form()).json()["access_token"] for _ in range(3)]
    jtis = {jwt.decode(t, options={"verify_signature": False})["jti"] for t in tokens}
    assert len(jtis) == 3


def test_basic_authentication_is_accepted(token_url: str) -> None:
    response = httpx.post(token_url, data=form(client_id=None, client_secret=None), auth=("demo-machine", "demo-machine-secret"))
    assert response.status_code == 200


def test_basic_credentials_are_form_decoded(server: MockServer, token_url: str) -> None:
    # RFC 6749 2.3.1: client id and secret are form-encoded before base64.
    credentials = base64.b64encode(b"demo-machine:demo-machine-secret").decode()
    response = httpx.post(token_url, data=form(client_id=None, client_secret=None), headers={"Authorization": f"Basic {credentials}"})
    assert response.status_code == 200


def test_wrong_secret_with_basic_gets_basic_challenge(token_url: str) -> None:
    response = httpx.post(token_url, data=form(client_id=None, client_secret=None), auth=("demo-machine", "wrong"))
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    assert response.headers["www-authenticate"].startswith("Basic")


def test_wrong_secret_in_body_is_invalid_client(token_url: str) -> None:
    response = httpx.post(token_url, data=form(client_secret="s3cr3t-guess"))
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    assert "demo-machine" in response.json()["error_description"]
    assert "s3cr3t-guess" not in response.json()["error_description"]


def test_unknown_client_is_invalid_client(token_url: str) -> None:
    response = httpx.post(token_url, data=form(client_id="nobody"))
    assert response.status_code == 401
    assert "'nobody'" in response.json()["error_description"]


def test_missing_secret_is_invalid_client(token_url: str) -> None:
    response = httpx.post(token_url, data=form(client_secret=None))
    assert response.status_code == 401


def test_secret_in_header_and_body_is_rejected(token_url: str) -> None:
    response = httpx.post(token_url, data=form(), auth=("demo-machine", "demo-machine-secret"))
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
    assert "client_secret_basic" in response.json()["error_description"]


def test_missing_audience_is_403_naming_expected_audience(token_url: str) -> None:
    response = httpx.post(token_url, data=form(audience=None))
    assert response.status_code == 403
    assert PRODUCTION in response.json()["error_description"]


def test_other_environment_audience_is_403_naming_both(token_url: str) -> None:
    response = httpx.post(token_url, data=form(audience=DEVELOPMENT))
    description = response.json()["error_description"]
    assert response.status_code == 403
    assert "development" in description
    assert f"audience={PRODUCTION}" in description


def test_unknown_audience_is_403(token_url: str) -> None:
    response = httpx.post(token_url, data=form(audience="search"))
    assert response.status_code == 403
    assert response.json()["error"] == "access_denied"


def test_development_issues_development_audience(server: MockServer) -> None:
    response = httpx.post(server.url("development") + "/oauth/token", data=form(audience=DEVELOPMENT))
    claims = jwt.decode(response.json()["access_token"], options={"verify_signature": False})
    assert claims["aud"] == DEVELOPMENT
    assert claims["iss"] == server.url("development")


def test_missing_grant_type_is_invalid_request(token_url: str) -> None:
    response = httpx.post(token_url, data=form(grant_type=None))
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


def test_unknown_grant_type_is_unsupported(token_url: str) -> None:
    response = httpx.post(token_url, data=form(grant_type="password"))
    assert response.status_code == 400
    assert response.json()["error"] == "unsupported_grant_type"
    assert "'password'" in response.json()["error_description"]


def test_content_type_charset_parameter_is_accepted(token_url: str) -> None:
    body = httpx.QueryParams(form()).__str__()
    response = httpx.post(token_url, content=body, headers={"Content-Type": "application/x-www-form-urlencoded; charset=UTF-8"})
    assert response.status_code == 200


def test_foreign_charset_is_rejected(token_url: str) -> None:
    body = httpx.QueryParams(form()).__str__()
    response = httpx.post(token_url, content=body, headers={"Content-Type": "application/x-www-form-urlencoded; charset=latin-1"})
    assert response.status_code == 400


def test_json_body_is_accepted(token_url: str) -> None:
    response = httpx.post(token_url, json=form())
    assert response.status_code == 200


def test_json_body_with_non_string_value_is_rejected(token_url: str) -> None:
    response = httpx.post(token_url, content=json.dumps({**form(), "scope": ["devices:read"]}), headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert "'scope'" in response.json()["error_description"]


def test_repeated_parameter_is_rejected(token_url: str) -> None:
    body = httpx.QueryParams(form()).__str__() + "&audience=" + PRODUCTION
    response = httpx.post(token_url, content=body, headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 400
    assert "'audience'" in response.json()["error_description"]


def test_percent_encoded_values_are_decoded(server: MockServer) -> None:
    # '+' and %2B must stay distinct; the demo secret has neither, so encode the dashes.
    body = "grant_type=client_credentials&client_id=demo%2Dmachine&client_secret=demo%2Dmachine%2Dsecret&audience=" + PRODUCTION
    response = httpx.post(server.url("production") + "/oauth/token", content=body, headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 200


@pytest.mark.parametrize(
    "body",
    [b"\xff\xfe\x00", b"grant_type=%FF", b"=&=&", b"a=b&&&c", b"grant_type=client_credentials&\x00=1"],
)
def test_malformed_bodies_are_400(token_url: str, body: bytes) -> None:
    response = httpx.post(token_url, content=body, headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


def test_other_content_type_is_rejected(token_url: str) -> None:
    response = httpx.post(token_url, content=b"<xml/>", headers={"Content-Type": "text/xml"})
    assert response.status_code == 400
    assert "text/xml" in response.json()["error_description"]


def test_body_over_64_kib_is_413(token_url: str) -> None:
    response = httpx.post(token_url, content=b"a" * (64 * 1024 + 1), headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 413


def test_chunked_body_over_64_kib_is_413(token_url: str) -> None:
    def chunks():
        for _ in range(100):
            yield b"a" * 1024

    response = httpx.post(token_url, content=chunks(), headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 413


def test_secret_in_url_is_rejected(token_url: str) -> None:
    response = httpx.post(token_url, params={"client_secret": "demo-machine-secret"}, data=form(client_secret=None))
    assert response.status_code == 400
    assert "client_secret" in response.json()["error_description"]


def test_get_on_token_endpoint_is_405(token_url: str) -> None:
    assert httpx.get(token_url).status_code == 405


def test_machine_app_cannot_use_other_grant(token_url: str) -> None:
    response = httpx.post(token_url, data=form(grant_type="authorization_code", code="x", redirect_uri="http://127.0.0.1:8400/callback"))
    assert response.status_code == 400
    assert response.json()["error"] in ("unauthorized_client", "unsupported_grant_type")
