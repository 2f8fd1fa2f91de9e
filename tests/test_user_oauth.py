"""User-level OAuth over HTTP: /authorize, the code exchange, refresh, revocation and introspection."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
import pytest
import requests
from authlib.integrations.httpx_client import OAuth2Client
from oauthlib.oauth2 import WebApplicationClient
from requests.auth import HTTPBasicAuth
from requests_oauthlib import OAuth2Session

from mockflock.config import load_config, parse_config
from mockflock.server import MockServer, ServerOptions
from mockflock.userflow import authorization_url, pkce_pair, refresh, sign_in

APP = "demo-user-app"
SECRET = "demo-user-secret"
REDIRECT = "http://127.0.0.1:8400/callback"
USER_SCOPES = {"custom-hotlists:read", "custom-hotlists:write", "plate-reads:search"}


@pytest.fixture(autouse=True)
def reset_mock(server: MockServer) -> Iterator[None]:
    """Start each test from the state at start, and leave no change behind for other modules."""
    server.reset()
    yield
    server.reset()


def query_of(location: str) -> dict[str, str]:
    return {name: values[0] for name, values in parse_qs(urlsplit(location).query).items()}


def authorize(
    server: MockServer, environment: str = "production", **params: str | None
) -> httpx.Response:
    """GET /authorize without following the redirect; a parameter set to None is left out."""
    query = {
        "response_type": "code",
        "client_id": APP,
        "redirect_uri": REDIRECT,
        "state": "s-123",
        **params,
    }
    sent = {name: value for name, value in query.items() if value is not None}
    return httpx.get(server.url(environment) + "/authorize", params=sent, follow_redirects=False)


def exchange(
    server: MockServer, code: str, environment: str = "production", **fields: str
) -> httpx.Response:
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT,
        "client_id": APP,
        "client_secret": SECRET,
    }
    form.update(fields)
    return httpx.post(server.url(environment) + "/oauth/token", data=form)


def code_for(server: MockServer, user: str = "demo-investigator", **params: str) -> tuple[str, str]:
    """Return (code, verifier) from the headless path."""
    verifier, challenge = pkce_pair()
    response = authorize(
        server, login_hint=user, code_challenge=challenge, code_challenge_method="S256", **params
    )
    assert response.status_code == 302, response.text
    return query_of(response.headers["location"])["code"], verifier


def tokens_for(
    server: MockServer, user: str = "demo-investigator", **params: str
) -> dict[str, Any]:
    code, verifier = code_for(server, user, **params)
    response = exchange(server, code, code_verifier=verifier)
    assert response.status_code == 200, response.text
    return response.json()


def post_token(server: MockServer, **form: str) -> httpx.Response:
    return httpx.post(
        server.url("production") + "/oauth/token",
        data={"client_id": APP, "client_secret": SECRET, **form},
    )


def hotlists(server: MockServer, access_token: str) -> httpx.Response:
    return httpx.get(
        server.url("production") + "/api/v3/hotlists",
        headers={"Authorization": f"Bearer {access_token}"},
    )


def client_post(server: MockServer, path: str, **form: str) -> httpx.Response:
    return httpx.post(server.url("production") + path, data=form, auth=(APP, SECRET))


# Discovery


def test_discovery_names_user_endpoints(server: MockServer) -> None:
    base = server.url("production")
    metadata = httpx.get(base + "/.well-known/oauth-authorization-server").json()
    assert metadata["authorization_endpoint"] == base + "/authorize"
    assert metadata["flock_authorization_endpoint"] == "https://login.flocksafety.com/authorize"
    assert metadata["revocation_endpoint"] == base + "/oauth/revoke"
    assert metadata["introspection_endpoint"] == base + "/oauth/introspect"
    assert metadata["code_challenge_methods_supported"] == ["S256"]
    assert metadata["response_types_supported"] == ["code"]
    assert {"authorization_code", "refresh_token"} <= set(metadata["grant_types_supported"])


# Real clients


def test_authlib_code_flow_with_pkce(fresh_server: MockServer) -> None:
    base = fresh_server.url("production")
    verifier, _ = pkce_pair()
    with OAuth2Client(
        APP,
        SECRET,
        scope="custom-hotlists:read plate-reads:search",
        redirect_uri=REDIRECT,
        code_challenge_method="S256",
    ) as client:
        url, state = client.create_authorization_url(
            base + "/authorize", code_verifier=verifier, login_hint="demo-investigator"
        )
        redirect = httpx.get(url, follow_redirects=False)
        token = client.fetch_token(
            base + "/oauth/token",
            authorization_response=redirect.headers["location"],
            code_verifier=verifier,
        )
        listed = client.get(base + "/api/v3/hotlists")
        refreshed = client.refresh_token(base + "/oauth/token")

    assert query_of(redirect.headers["location"])["state"] == state
    assert token["expires_in"] == 1800
    assert token["scope"] == "custom-hotlists:read plate-reads:search"
    assert listed.status_code == 200
    assert refreshed["refresh_token"] != token["refresh_token"]


def test_requests_oauthlib_web_application_client(
    fresh_server: MockServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # oauthlib rejects plain HTTP unless OAUTHLIB_INSECURE_TRANSPORT marks a local test.
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")
    base = fresh_server.url("production")
    session = OAuth2Session(
        client=WebApplicationClient(APP),
        redirect_uri=REDIRECT,
        scope=["custom-hotlists:read"],
        pkce="S256",
    )
    url, state = session.authorization_url(base + "/authorize", login_hint="demo-viewer")
    redirect = requests.get(url, allow_redirects=False, timeout=10)
    token = session.fetch_token(
        base + "/oauth/token",
        authorization_response=redirect.headers["Location"],
        auth=HTTPBasicAuth(APP, SECRET),
        include_client_id=False,
    )
    listed = session.get(base + "/api/v3/hotlists", timeout=10)
    refreshed = session.refresh_token(base + "/oauth/token", auth=HTTPBasicAuth(APP, SECRET))

    assert query_of(redirect.headers["Location"])["state"] == state
    assert token["token_type"] == "Bearer"
    assert listed.status_code == 200
    assert refreshed["refresh_token"] != token["refresh_token"]


def test_headless_flow_with_curl(fresh_server: MockServer) -> None:
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed")
    base = fresh_server.url("production")
    url = authorization_url(base, APP, REDIRECT, state="abc", login_hint="demo-investigator")
    location = subprocess.run(
        [curl, "-sS", "-o", "/dev/null", "-w", "%{redirect_url}", url],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    code = query_of(location)["code"]
    output = subprocess.run(
        [
            curl,
            "-sS",
            "--request",
            "POST",
            "--url",
            f"{base}/oauth/token",
            "--user",
            f"{APP}:{SECRET}",
            "--data",
            "grant_type=authorization_code",
            "--data",
            f"code={code}",
            "--data-urlencode",
            f"redirect_uri={REDIRECT}",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    assert '"refresh_token"' in output


def test_userflow_helper_signs_in(fresh_server: MockServer) -> None:
    tokens = sign_in(
        fresh_server.url("production"), client_id=APP, client_secret=SECRET, user="demo-admin"
    )
    renewed = refresh(
        fresh_server.url("production"),
        client_id=APP,
        client_secret=SECRET,
        refresh_token=tokens["refresh_token"],
    )
    assert hotlists(fresh_server, tokens["access_token"]).status_code == 200
    assert hotlists(fresh_server, renewed["access_token"]).status_code == 200


def test_userflow_helper_uses_login_form(fresh_server: MockServer) -> None:
    env = fresh_server.environments["production"]
    env.clients.update(APP, auto_consent=False)
    tokens = sign_in(
        fresh_server.url("production"),
        client_id=APP,
        client_secret=SECRET,
        user="demo-viewer",
        password="demo-viewer-password",
    )
    claims = jwt.decode(tokens["access_token"], options={"verify_signature": False})
    assert claims["sub"] == "demo-viewer"


# Token contents


def test_user_token_claims(fresh_server: MockServer) -> None:
    tokens = tokens_for(fresh_server, "demo-investigator")
    claims = jwt.decode(tokens["access_token"], options={"verify_signature": False})
    assert tokens["expires_in"] == 1800
    assert claims["exp"] - claims["iat"] == 1800
    assert claims["sub"] == "demo-investigator"
    assert claims["token_level"] == "user"
    assert claims["client_id"] == APP
    assert claims["org_id"] == "demo-org"
    assert claims["roles"] == ["investigator"]
    assert claims["networks"] == ["net-downtown"]
    assert set(claims["scope"].split()) == USER_SCOPES
    assert claims["grant_id"].startswith("fam-")


def test_refresh_token_lives_twelve_hours(fresh_server: MockServer) -> None:
    tokens = tokens_for(fresh_server)
    fresh_server.clock.advance(43_200 - 60)
    assert (
        post_token(
            fresh_server, grant_type="refresh_token", refresh_token=tokens["refresh_token"]
        ).status_code
        == 200
    )


def test_refresh_token_expires_after_twelve_hours(fresh_server: MockServer) -> None:
    tokens = tokens_for(fresh_server)
    fresh_server.clock.advance(43_200)
    response = post_token(
        fresh_server, grant_type="refresh_token", refresh_token=tokens["refresh_token"]
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"
    assert "expired" in response.json()["error_description"]


def test_access_token_expires_after_thirty_minutes(fresh_server: MockServer) -> None:
    tokens = tokens_for(fresh_server)
    fresh_server.clock.advance(1800)
    assert hotlists(fresh_server, tokens["access_token"]).status_code == 401


# /authorize: requests that must not redirect


def test_redirect_uri_mismatch_shows_error_page(server: MockServer) -> None:
    response = authorize(server, redirect_uri="http://127.0.0.1:8400/other")
    assert response.status_code == 400
    assert "location" not in response.headers
    assert "Redirect URI mismatch" in response.text
    assert "http://127.0.0.1:8400/callback" in response.text


def test_redirect_uri_differing_only_in_port(server: MockServer) -> None:
    response = authorize(server, redirect_uri="http://127.0.0.1:8401/callback")
    assert response.status_code == 400
    assert "location" not in response.headers


def test_unknown_client_shows_error_page(server: MockServer) -> None:
    response = authorize(server, client_id="nobody")
    assert response.status_code == 400
    assert "location" not in response.headers
    assert "not registered in the production environment" in response.text


def test_machine_app_shows_error_page(server: MockServer) -> None:
    response = authorize(server, client_id="demo-machine")
    assert response.status_code == 400
    assert "no redirect URIs" in response.text


def test_missing_redirect_uri_with_two_registered(server: MockServer) -> None:
    response = authorize(server, redirect_uri=None)
    assert response.status_code == 400
    assert "location" not in response.headers


def test_login_page_is_escaped(server: MockServer) -> None:
    response = authorize(server, login_hint="<script>alert(1)</script>")
    assert response.status_code == 200
    assert "<script>" not in response.text
    assert "&lt;script&gt;" in response.text
    assert "default-src 'none'" in response.headers["content-security-policy"]


# /authorize: error redirects carry the state


@pytest.mark.parametrize(
    ("params", "error"),
    [
        ({"response_type": "token"}, "unsupported_response_type"),
        ({"response_type": None}, "invalid_request"),
        ({"scope": "devices:read"}, "invalid_scope"),
        ({"scope": "no-such-scope"}, "invalid_scope"),
        ({"code_challenge": "x" * 43, "code_challenge_method": "plain"}, "invalid_request"),
        ({"code_challenge": "x" * 43}, "invalid_request"),
        ({"code_challenge": "short", "code_challenge_method": "S256"}, "invalid_request"),
        ({"audience": "com.flocksafety.integrations.dev"}, "invalid_request"),
        ({"prompt": "select_account"}, "invalid_request"),
        ({"prompt": "none"}, "login_required"),
    ],
)
def test_error_redirect_echoes_state(
    server: MockServer, params: dict[str, str | None], error: str
) -> None:
    state = "opaque state/with spaces & symbols=="
    response = authorize(server, state=state, **params)
    assert response.status_code == 302
    query = query_of(response.headers["location"])
    assert response.headers["location"].startswith(REDIRECT + "?")
    assert query["error"] == error
    assert query["state"] == state
    assert query["iss"] == server.url("production")
    assert query["error_description"]


def test_repeated_parameter_is_invalid_request(server: MockServer) -> None:
    url = authorization_url(server.url("production"), APP, REDIRECT, state="s") + "&scope=a&scope=b"
    response = httpx.get(url, follow_redirects=False)
    assert query_of(response.headers["location"])["error"] == "invalid_request"


def test_app_requiring_pkce_rejects_plain_request(fresh_server: MockServer) -> None:
    fresh_server.environments["production"].clients.update(APP, require_pkce=True)
    response = authorize(fresh_server, login_hint="demo-investigator")
    query = query_of(response.headers["location"])
    assert query["error"] == "invalid_request"
    assert "requires PKCE" in query["error_description"]
    assert code_for(fresh_server)[0]


def test_state_echoed_with_code(server: MockServer) -> None:
    response = authorize(server, login_hint="demo-admin", state="é ✓ &x=1")
    query = query_of(response.headers["location"])
    assert query["state"] == "é ✓ &x=1"
    assert "code" in query


def test_registered_uri_query_is_kept(fresh_server: MockServer) -> None:
    env = fresh_server.environments["production"]
    env.clients.update(APP, redirect_uris=("http://127.0.0.1:8400/callback?tenant=7",))
    response = authorize(
        fresh_server,
        redirect_uri="http://127.0.0.1:8400/callback?tenant=7",
        login_hint="demo-admin",
    )
    query = query_of(response.headers["location"])
    assert query["tenant"] == "7"
    assert "code" in query


def test_login_hint_without_auto_consent_shows_page(fresh_server: MockServer) -> None:
    fresh_server.environments["production"].clients.update(APP, auto_consent=False)
    response = authorize(fresh_server, login_hint="demo-viewer")
    assert response.status_code == 200
    assert '<option value="demo-viewer" selected>' in response.text


def test_prompt_login_shows_page_despite_auto_consent(server: MockServer) -> None:
    response = authorize(server, login_hint="demo-viewer", prompt="login")
    assert response.status_code == 200


def test_prompt_none_without_consent_is_consent_required(fresh_server: MockServer) -> None:
    fresh_server.environments["production"].clients.update(APP, auto_consent=False)
    response = authorize(fresh_server, login_hint="demo-viewer", prompt="none")
    assert query_of(response.headers["location"])["error"] == "consent_required"


def test_default_scope_is_every_user_scope(fresh_server: MockServer) -> None:
    tokens = tokens_for(fresh_server)
    assert set(tokens["scope"].split()) == USER_SCOPES


def test_scope_subset_is_granted(fresh_server: MockServer) -> None:
    tokens = tokens_for(fresh_server, scope="custom-hotlists:read")
    assert tokens["scope"] == "custom-hotlists:read"


# The login form without a browser


def login_form(server: MockServer) -> str:
    response = authorize(server, state="form-state")
    assert response.status_code == 200
    marker = 'name="authorization_id" value="'
    start = response.text.index(marker) + len(marker)
    return response.text[start : response.text.index('"', start)]


def answer(server: MockServer, **form: str) -> httpx.Response:
    return httpx.post(server.url("production") + "/authorize", data=form, follow_redirects=False)


def test_login_form_approve(fresh_server: MockServer) -> None:
    authorization_id = login_form(fresh_server)
    response = answer(
        fresh_server,
        authorization_id=authorization_id,
        username="demo-viewer",
        password="demo-viewer-password",
        decision="approve",
    )
    assert response.status_code == 303
    query = query_of(response.headers["location"])
    assert query["state"] == "form-state"
    assert exchange(fresh_server, query["code"]).status_code == 200


def test_login_form_deny(fresh_server: MockServer) -> None:
    authorization_id = login_form(fresh_server)
    response = answer(fresh_server, authorization_id=authorization_id, decision="deny")
    query = query_of(response.headers["location"])
    assert query["error"] == "access_denied"
    assert query["state"] == "form-state"


def test_login_form_wrong_password(fresh_server: MockServer) -> None:
    authorization_id = login_form(fresh_server)
    response = answer(
        fresh_server,
        authorization_id=authorization_id,
        username="demo-viewer",
        password="wrong",
        decision="approve",
    )
    again = answer(
        fresh_server,
        authorization_id=authorization_id,
        username="demo-viewer",
        password="demo-viewer-password",
        decision="approve",
    )
    assert response.status_code == 401
    assert "Wrong user or password" in response.text
    assert again.status_code == 303


def test_login_form_answered_once(fresh_server: MockServer) -> None:
    authorization_id = login_form(fresh_server)
    answer(fresh_server, authorization_id=authorization_id, decision="deny")
    response = answer(fresh_server, authorization_id=authorization_id, decision="deny")
    assert response.status_code == 400
    assert "location" not in response.headers


def test_login_form_expires(fresh_server: MockServer) -> None:
    authorization_id = login_form(fresh_server)
    fresh_server.clock.advance(600)
    response = answer(
        fresh_server,
        authorization_id=authorization_id,
        username="demo-viewer",
        password="demo-viewer-password",
        decision="approve",
    )
    query = query_of(response.headers["location"])
    assert query["error"] == "access_denied"
    assert "expired" in query["error_description"]
    assert query["state"] == "form-state"


def test_login_form_rejects_json(server: MockServer) -> None:
    response = httpx.post(server.url("production") + "/authorize", json={"authorization_id": "x"})
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


# Code exchange


def test_code_is_single_use(fresh_server: MockServer) -> None:
    code, verifier = code_for(fresh_server)
    first = exchange(fresh_server, code, code_verifier=verifier)
    second = exchange(fresh_server, code, code_verifier=verifier)
    assert first.status_code == 200
    assert second.status_code == 400
    assert second.json()["error"] == "invalid_grant"
    assert "already used" in second.json()["error_description"]


def test_code_reuse_revokes_issued_tokens(fresh_server: MockServer) -> None:
    code, verifier = code_for(fresh_server)
    tokens = exchange(fresh_server, code, code_verifier=verifier).json()
    exchange(fresh_server, code, code_verifier=verifier)
    refreshed = post_token(
        fresh_server, grant_type="refresh_token", refresh_token=tokens["refresh_token"]
    )
    assert hotlists(fresh_server, tokens["access_token"]).status_code == 401
    assert refreshed.json()["error"] == "invalid_grant"


def test_code_expires_after_sixty_seconds(fresh_server: MockServer) -> None:
    code, verifier = code_for(fresh_server)
    fresh_server.clock.advance(60)
    response = exchange(fresh_server, code, code_verifier=verifier)
    assert response.json()["error"] == "invalid_grant"
    assert "expired" in response.json()["error_description"]


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"code_verifier": "A" * 43}, "invalid_grant"),
        ({"code_verifier": "too-short"}, "invalid_request"),
        ({}, "invalid_request"),
        (
            {"code_verifier": None, "redirect_uri": "http://localhost:8400/callback"},
            "invalid_grant",
        ),
    ],
)
def test_exchange_checks_verifier_and_redirect(
    fresh_server: MockServer, fields: dict[str, str | None], error: str
) -> None:
    code, verifier = code_for(fresh_server)
    form = {name: value if value is not None else verifier for name, value in fields.items()}
    response = exchange(fresh_server, code, **form)
    retry = exchange(fresh_server, code, code_verifier=verifier)
    assert response.status_code == 400
    assert response.json()["error"] == error
    assert retry.status_code == 200


def test_exchange_missing_redirect_uri(fresh_server: MockServer) -> None:
    code, verifier = code_for(fresh_server)
    form = {"grant_type": "authorization_code", "code": code, "code_verifier": verifier}
    response = httpx.post(
        fresh_server.url("production") + "/oauth/token", data=form, auth=(APP, SECRET)
    )
    assert response.json()["error"] == "invalid_request"
    assert "redirect_uri is missing" in response.json()["error_description"]


def test_verifier_without_challenge_is_rejected(fresh_server: MockServer) -> None:
    response = authorize(fresh_server, login_hint="demo-admin")
    code = query_of(response.headers["location"])["code"]
    verifier, _ = pkce_pair()
    rejected = exchange(fresh_server, code, code_verifier=verifier)
    assert rejected.json()["error"] == "invalid_grant"
    assert exchange(fresh_server, code).status_code == 200


def test_code_of_other_app_is_rejected(fresh_server: MockServer) -> None:
    env = fresh_server.environments["production"]
    other = replace(env.clients.get(APP), client_id="other-user-app", secret="other-secret")
    env.clients.register(other)
    code, verifier = code_for(fresh_server)
    response = exchange(
        fresh_server,
        code,
        code_verifier=verifier,
        client_id="other-user-app",
        client_secret="other-secret",
    )
    assert response.json()["error"] == "invalid_grant"
    assert exchange(fresh_server, code, code_verifier=verifier).status_code == 200


def test_code_of_other_environment_is_named(fresh_server: MockServer) -> None:
    code, verifier = code_for(fresh_server)
    response = exchange(fresh_server, code, "development", code_verifier=verifier)
    assert response.json()["error"] == "invalid_grant"
    assert "production environment" in response.json()["error_description"]


def test_exchange_with_wrong_secret(fresh_server: MockServer) -> None:
    code, verifier = code_for(fresh_server)
    response = exchange(fresh_server, code, code_verifier=verifier, client_secret="wrong")
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"


def test_exchange_with_wrong_audience(fresh_server: MockServer) -> None:
    code, verifier = code_for(fresh_server)
    response = exchange(
        fresh_server, code, code_verifier=verifier, audience="com.flocksafety.integrations.dev"
    )
    assert response.status_code == 403
    assert response.json()["error"] == "access_denied"


def test_code_in_url_is_rejected(fresh_server: MockServer) -> None:
    code, _ = code_for(fresh_server)
    response = httpx.post(
        fresh_server.url("production") + f"/oauth/token?code={code}",
        data={"grant_type": "authorization_code"},
        auth=(APP, SECRET),
    )
    assert response.status_code == 400
    assert "POST body" in response.json()["error_description"]


# Refresh


def test_refresh_rotates(fresh_server: MockServer) -> None:
    tokens = tokens_for(fresh_server)
    first = post_token(
        fresh_server, grant_type="refresh_token", refresh_token=tokens["refresh_token"]
    ).json()
    second = post_token(
        fresh_server, grant_type="refresh_token", refresh_token=first["refresh_token"]
    ).json()
    assert first["refresh_token"] != tokens["refresh_token"]
    assert second["refresh_token"] != first["refresh_token"]
    assert hotlists(fresh_server, second["access_token"]).status_code == 200


def test_refresh_reuse_revokes_family(fresh_server: MockServer) -> None:
    tokens = tokens_for(fresh_server)
    rotated = post_token(
        fresh_server, grant_type="refresh_token", refresh_token=tokens["refresh_token"]
    ).json()
    reused = post_token(
        fresh_server, grant_type="refresh_token", refresh_token=tokens["refresh_token"]
    )
    newest = post_token(
        fresh_server, grant_type="refresh_token", refresh_token=rotated["refresh_token"]
    )
    assert reused.json()["error"] == "invalid_grant"
    assert "already used" in reused.json()["error_description"]
    assert newest.json()["error"] == "invalid_grant"
    assert "revoked" in newest.json()["error_description"]
    assert hotlists(fresh_server, rotated["access_token"]).status_code == 401
    assert hotlists(fresh_server, tokens["access_token"]).status_code == 401


def test_refresh_narrows_scope(fresh_server: MockServer) -> None:
    tokens = tokens_for(fresh_server)
    narrowed = post_token(
        fresh_server,
        grant_type="refresh_token",
        refresh_token=tokens["refresh_token"],
        scope="plate-reads:search",
    ).json()
    full = post_token(
        fresh_server, grant_type="refresh_token", refresh_token=narrowed["refresh_token"]
    ).json()
    assert narrowed["scope"] == "plate-reads:search"
    assert hotlists(fresh_server, narrowed["access_token"]).status_code == 403
    assert set(full["scope"].split()) == USER_SCOPES


def test_refresh_cannot_widen_scope(fresh_server: MockServer) -> None:
    tokens = tokens_for(fresh_server, scope="custom-hotlists:read")
    widened = post_token(
        fresh_server,
        grant_type="refresh_token",
        refresh_token=tokens["refresh_token"],
        scope="custom-hotlists:read custom-hotlists:write",
    )
    still_valid = post_token(
        fresh_server, grant_type="refresh_token", refresh_token=tokens["refresh_token"]
    )
    assert widened.status_code == 400
    assert widened.json()["error"] == "invalid_scope"
    assert still_valid.status_code == 200


def test_refresh_by_other_app_is_rejected(fresh_server: MockServer) -> None:
    env = fresh_server.environments["production"]
    env.clients.register(
        replace(env.clients.get(APP), client_id="other-user-app", secret="other-secret")
    )
    tokens = tokens_for(fresh_server)
    response = httpx.post(
        fresh_server.url("production") + "/oauth/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": tokens["refresh_token"],
            "client_id": "other-user-app",
            "client_secret": "other-secret",
        },
    )
    assert response.json()["error"] == "invalid_grant"


def test_refresh_by_machine_app_is_unauthorized_client(fresh_server: MockServer) -> None:
    tokens = tokens_for(fresh_server)
    response = httpx.post(
        fresh_server.url("production") + "/oauth/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": tokens["refresh_token"],
            "client_id": "demo-machine",
            "client_secret": "demo-machine-secret",
        },
    )
    assert response.json()["error"] == "unauthorized_client"


def test_refresh_of_removed_user_is_rejected(fresh_server: MockServer) -> None:
    tokens = tokens_for(fresh_server)
    fresh_server.environments["production"].users.remove("demo-investigator")
    response = post_token(
        fresh_server, grant_type="refresh_token", refresh_token=tokens["refresh_token"]
    )
    assert response.json()["error"] == "invalid_grant"
    assert hotlists(fresh_server, tokens["access_token"]).status_code == 401


def test_concurrent_refreshes_strict(fresh_server: MockServer) -> None:
    tokens = tokens_for(fresh_server)
    with ThreadPoolExecutor(max_workers=8) as pool:
        responses = list(
            pool.map(
                lambda _: post_token(
                    fresh_server, grant_type="refresh_token", refresh_token=tokens["refresh_token"]
                ),
                range(8),
            )
        )
    statuses = sorted(response.status_code for response in responses)
    winner = next(response.json() for response in responses if response.status_code == 200)
    assert statuses == [200] + [400] * 7
    # The losers' reuse revoked the whole family, the winner's new tokens included.
    assert hotlists(fresh_server, winner["access_token"]).status_code == 401


def grace_server() -> MockServer:
    raw = load_config().raw | {"refresh": {"concurrency": "grace", "grace_seconds": 10}}
    config = parse_config(raw)
    return MockServer(
        config=config, options=ServerOptions(ports={"production": 0, "development": 0})
    ).start()


def test_concurrent_refreshes_grace() -> None:
    mock = grace_server()
    try:
        tokens = tokens_for(mock)
        with ThreadPoolExecutor(max_workers=8) as pool:
            responses = list(
                pool.map(
                    lambda _: post_token(
                        mock, grant_type="refresh_token", refresh_token=tokens["refresh_token"]
                    ),
                    range(8),
                )
            )
        successors = {response.json()["refresh_token"] for response in responses}
        assert [response.status_code for response in responses] == [200] * 8
        assert len(successors) == 1
        assert (
            post_token(mock, grant_type="refresh_token", refresh_token=successors.pop()).status_code
            == 200
        )
    finally:
        mock.stop()


def test_grace_period_ends() -> None:
    mock = grace_server()
    try:
        tokens = tokens_for(mock)
        post_token(mock, grant_type="refresh_token", refresh_token=tokens["refresh_token"])
        mock.clock.advance(11)
        late = post_token(mock, grant_type="refresh_token", refresh_token=tokens["refresh_token"])
        assert late.json()["error"] == "invalid_grant"
        assert "within 10 s" in late.json()["error_description"]
    finally:
        mock.stop()


# Revocation (RFC 7009)


def test_revoke_refresh_token_revokes_family(fresh_server: MockServer) -> None:
    tokens = tokens_for(fresh_server)
    response = client_post(
        fresh_server,
        "/oauth/revoke",
        token=tokens["refresh_token"],
        token_type_hint="refresh_token",
    )
    refreshed = post_token(
        fresh_server, grant_type="refresh_token", refresh_token=tokens["refresh_token"]
    )
    assert response.status_code == 200
    assert response.content == b""
    assert hotlists(fresh_server, tokens["access_token"]).status_code == 401
    assert refreshed.json()["error"] == "invalid_grant"
    assert "/oauth/revoke" in refreshed.json()["error_description"]


def test_revoke_access_token_only(fresh_server: MockServer) -> None:
    tokens = tokens_for(fresh_server)
    client_post(fresh_server, "/oauth/revoke", token=tokens["access_token"])
    refreshed = post_token(
        fresh_server, grant_type="refresh_token", refresh_token=tokens["refresh_token"]
    )
    assert hotlists(fresh_server, tokens["access_token"]).status_code == 401
    assert refreshed.status_code == 200


def test_revoke_with_wrong_hint_still_revokes(fresh_server: MockServer) -> None:
    tokens = tokens_for(fresh_server)
    client_post(
        fresh_server, "/oauth/revoke", token=tokens["refresh_token"], token_type_hint="access_token"
    )
    refreshed = post_token(
        fresh_server, grant_type="refresh_token", refresh_token=tokens["refresh_token"]
    )
    assert refreshed.json()["error"] == "invalid_grant"


def test_revoke_machine_token(fresh_server: MockServer, machine_token: Any) -> None:
    token = machine_token("production")
    response = httpx.post(
        fresh_server.url("production") + "/oauth/revoke",
        data={"token": token},
        auth=("demo-machine", "demo-machine-secret"),
    )
    listed = httpx.get(
        fresh_server.url("production") + "/api/v3/devices",
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 200
    assert listed.status_code == 401


def test_revoke_unknown_token_is_200(server: MockServer) -> None:
    assert client_post(server, "/oauth/revoke", token="not-a-token").status_code == 200


def test_revoke_other_apps_token_is_refused(fresh_server: MockServer, machine_token: Any) -> None:
    token = machine_token("production")
    response = client_post(fresh_server, "/oauth/revoke", token=token)
    listed = httpx.get(
        fresh_server.url("production") + "/api/v3/devices",
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 400
    assert response.json()["error"] == "unauthorized_client"
    assert listed.status_code == 200


def test_revoke_needs_client_authentication(server: MockServer) -> None:
    response = httpx.post(server.url("production") + "/oauth/revoke", data={"token": "x"})
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"


def test_revoke_without_token_is_invalid_request(server: MockServer) -> None:
    response = client_post(server, "/oauth/revoke")
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


# Introspection (RFC 7662)


def test_introspect_access_token(fresh_server: MockServer) -> None:
    tokens = tokens_for(fresh_server, "demo-admin")
    body = client_post(fresh_server, "/oauth/introspect", token=tokens["access_token"]).json()
    assert body["active"] is True
    assert body["username"] == "demo-admin"
    assert body["token_level"] == "user"
    assert body["client_id"] == APP
    assert body["roles"] == ["administrator"]
    assert body["networks"] == ["*"]


def test_introspect_refresh_token(fresh_server: MockServer) -> None:
    tokens = tokens_for(fresh_server)
    body = client_post(fresh_server, "/oauth/introspect", token=tokens["refresh_token"]).json()
    assert body["active"] is True
    assert body["token_type"] == "refresh_token"
    assert body["sub"] == "demo-investigator"
    assert body["exp"] - body["iat"] == 43_200


def test_introspect_rotated_refresh_token_inactive(fresh_server: MockServer) -> None:
    tokens = tokens_for(fresh_server)
    post_token(fresh_server, grant_type="refresh_token", refresh_token=tokens["refresh_token"])
    body = client_post(fresh_server, "/oauth/introspect", token=tokens["refresh_token"]).json()
    assert body == {"active": False}


def test_introspect_revoked_and_expired_tokens(fresh_server: MockServer) -> None:
    revoked = tokens_for(fresh_server)
    client_post(fresh_server, "/oauth/revoke", token=revoked["access_token"])
    expiring = tokens_for(fresh_server)
    fresh_server.clock.advance(1800)
    assert client_post(fresh_server, "/oauth/introspect", token=revoked["access_token"]).json() == {
        "active": False
    }
    assert client_post(
        fresh_server, "/oauth/introspect", token=expiring["access_token"]
    ).json() == {"active": False}


def test_introspect_other_apps_token_inactive(fresh_server: MockServer, machine_token: Any) -> None:
    body = client_post(fresh_server, "/oauth/introspect", token=machine_token("production")).json()
    assert body == {"active": False}


def test_introspect_garbage_inactive(server: MockServer) -> None:
    assert client_post(server, "/oauth/introspect", token="garbage").json() == {"active": False}


def test_introspect_needs_client_authentication(server: MockServer) -> None:
    response = httpx.post(
        server.url("production") + "/oauth/introspect", data={"token": "x"}, auth=(APP, "wrong")
    )
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Basic")
