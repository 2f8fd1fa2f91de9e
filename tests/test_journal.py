"""The request journal: what it records about each request, and what it never keeps."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from urllib.parse import urlencode

import httpx
import jwt
import pytest

from mockflock.control import Control
from mockflock.journal import (
    DEFAULT_MAX_ENTRIES,
    Journal,
    endpoint_kind,
    fingerprint,
    parse_retry_after,
    to_json,
)

SECRET = "demo-hotlists-secret"


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as client:
        yield client


def fetch(http: httpx.Client, control: Control, environment: str = "production", **form: str) -> httpx.Response:
    body = {"grant_type": "client_credentials", "client_id": "demo-hotlists", "client_secret": SECRET,
            "audience": control.audience(environment), **form}
    return http.post(control.token_url(environment), data=body)


def requests_of(control: Control) -> list[dict]:
    return [entry for entry in control.journal() if entry["endpoint"] != "control"]


def test_journal_drops_oldest_and_counts_them() -> None:
    journal = Journal(max_entries=3)
    for number in range(5):
        journal.append({"endpoint": "other", "number": number})
    assert [entry["number"] for entry in journal.entries()] == [2, 3, 4]
    assert journal.dropped == 2
    assert journal.summary() == {"entries": 3, "dropped": 2, "max_entries": 3}


def test_journal_reads_entries_after_a_seq() -> None:
    journal = Journal()
    for number in range(4):
        journal.append({"endpoint": "other", "number": number})
    assert [entry["number"] for entry in journal.entries(since=2)] == [2, 3]


def test_journal_clear_forgets_steps_and_drops() -> None:
    journal = Journal(max_entries=1)
    journal.append({"endpoint": "other"})
    journal.append({"endpoint": "other"})
    journal.begin_step("call", time=1.0)
    journal.clear()
    assert journal.entries() == []
    assert journal.dropped == 0
    assert journal.step == 0


def test_journal_resize_drops_beyond_new_size() -> None:
    journal = Journal()
    for number in range(5):
        journal.append({"endpoint": "other", "number": number})
    journal.resize(2)
    assert [entry["number"] for entry in journal.entries()] == [3, 4]
    assert journal.dropped == 3


def test_journal_rejects_zero_size() -> None:
    with pytest.raises(ValueError, match="max_entries=0"):
        Journal(max_entries=0)


def test_steps_number_later_entries() -> None:
    journal = Journal()
    journal.append({"endpoint": "other"})
    journal.begin_step("first call", time=5.0)
    journal.append({"endpoint": "other"})
    entries = journal.entries()
    assert [entry["step"] for entry in entries] == [0, 1, 1]
    assert entries[1] == {**entries[1], "action": "step", "label": "first call", "endpoint": "control"}


@pytest.mark.parametrize(
    ("path", "kind"),
    [("/oauth/token", "token"), ("/authorize", "authorize"), ("/oauth/revoke", "revoke"),
     ("/oauth/introspect", "introspect"), ("/api/v3/hotlists", "api"), ("/.well-known/jwks.json", "jwks"),
     ("/.well-known/openid-configuration", "discovery"), ("/healthz", "health"), ("/nothing", "other")],
)
def test_endpoint_kinds(path: str, kind: str) -> None:
    assert endpoint_kind(path) == kind


def test_retry_after_reads_seconds_and_dates() -> None:
    assert parse_retry_after("7", now=0) == 7.0
    assert parse_retry_after("Thu, 01 Jan 1970 00:00:30 GMT", now=10) == 20.0
    assert parse_retry_after("soon", now=0) is None


def test_token_request_is_summarized_without_secrets(mockflock: Control, http: httpx.Client) -> None:
    response = fetch(http, mockflock, scope="custom-hotlists:read")
    token = response.json()["access_token"]
    claims = jwt.decode(token, options={"verify_signature": False})

    [entry] = requests_of(mockflock)
    assert entry["endpoint"] == "token"
    assert entry["client_id"] == "demo-hotlists"
    assert entry["auth_method"] == "post"
    assert entry["grant_type"] == "client_credentials"
    assert entry["audience"] == "com.flocksafety.integrations"
    assert entry["scope"] == frozenset({"custom-hotlists:read"})
    assert entry["issued"]["jti"] == claims["jti"]
    assert entry["issued"]["kid"] == jwt.get_unverified_header(token)["kid"]
    assert entry["issued"]["level"] == "machine"
    assert entry["issued"]["audience"] == "com.flocksafety.integrations"
    assert entry["issued"]["scopes"] == frozenset({"custom-hotlists:read"})
    text = json.dumps(to_json(entry))
    assert SECRET not in text
    assert token not in text
    assert token.split(".")[2] not in text


def test_basic_and_both_auth_methods(mockflock: Control, http: httpx.Client) -> None:
    form = {"grant_type": "client_credentials", "audience": mockflock.audience()}
    http.post(mockflock.token_url(), data=form, auth=("demo-hotlists", SECRET))
    http.post(mockflock.token_url(), data={**form, "client_secret": SECRET}, auth=("demo-hotlists", SECRET))
    basic, both = requests_of(mockflock)
    assert basic["auth_method"] == "basic"
    assert basic["client_id"] == "demo-hotlists"
    assert both["auth_method"] == "both"
    assert both["status"] == 400


def test_rejected_token_request_keeps_code_and_reason(mockflock: Control, http: httpx.Client) -> None:
    fetch(http, mockflock, audience=mockflock.audience("development"))
    [entry] = requests_of(mockflock)
    assert entry["status"] == 403
    assert entry["outcome"] == "rejected"
    assert entry["error"] == "access_denied"
    assert entry["reason"] == "other_environment_audience"


def test_api_request_carries_token_summary(mockflock: Control, http: httpx.Client) -> None:
    token = fetch(http, mockflock).json()["access_token"]
    http.get(mockflock.api_url() + "/hotlists", headers={"Authorization": f"Bearer {token}"})
    entry = requests_of(mockflock)[-1]
    claims = jwt.decode(token, options={"verify_signature": False})
    assert entry["endpoint"] == "api"
    assert entry["operation"] == "listHotlists"
    assert entry["api"] == "custom-hotlists"
    assert entry["status"] == 200
    assert entry["client_id"] == "demo-hotlists"
    assert entry["token"]["jti"] == claims["jti"]
    assert entry["token"]["scopes"] == frozenset(claims["scope"].split())
    assert entry["token"]["environment"] == "production"


def test_rejected_api_request_is_summarized_from_the_token(mockflock: Control, http: httpx.Client) -> None:
    token = fetch(http, mockflock, environment="development").json()["access_token"]
    http.get(mockflock.api_url("production") + "/hotlists", headers={"Authorization": f"Bearer {token}"})
    entry = requests_of(mockflock)[-1]
    assert entry["status"] == 401
    assert entry["reason"] == "wrong_environment"
    assert entry["operation"] == "listHotlists"
    assert entry["token"]["environment"] == "development"
    assert entry["client_id"] == "demo-hotlists"


def test_time_comes_from_the_mock_clock(mockflock: Control, http: httpx.Client) -> None:
    mockflock.advance_clock(10_000)
    before = mockflock.now()
    http.get(mockflock.url() + "/healthz")
    entry = requests_of(mockflock)[-1]
    assert before <= entry["t"] <= entry["t_end"] <= mockflock.now()


def test_secret_in_query_is_named_not_kept(mockflock: Control, http: httpx.Client) -> None:
    query = urlencode({"client_id": "demo-hotlists", "client_secret": SECRET})
    http.post(f"{mockflock.token_url()}?{query}", data={"grant_type": "client_credentials"})
    http.get(mockflock.api_url() + "/hotlists?access_token=abc.def.ghi")
    token_entry, api_entry = requests_of(mockflock)
    assert token_entry["secret_in_url"] == ("client_secret",)
    assert api_entry["secret_in_url"] == ("access_token",)
    assert SECRET not in json.dumps(to_json(token_entry))


def test_retry_after_and_fault_are_recorded(mockflock: Control, http: httpx.Client) -> None:
    mockflock.inject_fault("rate_limit", target="token", retry_after=3)
    response = fetch(http, mockflock)
    assert response.status_code == 429
    entry = requests_of(mockflock)[-1]
    assert entry["retry_after"] == 3.0
    assert entry["outcome"] == "fault"
    assert entry["fault"] == "429 Retry-After 3"
    assert entry["client_id"] == "demo-hotlists"


def test_dropped_connection_is_recorded(mockflock: Control, http: httpx.Client) -> None:
    mockflock.inject_fault("drop", target="token")
    with pytest.raises(httpx.TransportError):
        fetch(http, mockflock)
    entry = requests_of(mockflock)[-1]
    assert entry["status"] is None
    assert entry["outcome"] == "dropped"
    assert entry["client_id"] == "demo-hotlists"


def test_admin_requests_are_not_journaled(mockflock: Control, http: httpx.Client) -> None:
    http.get(mockflock.url() + "/_mockflock/journal")
    http.post(mockflock.url() + "/_mockflock/clock/advance", json={"seconds": 1})
    assert requests_of(mockflock) == []


def test_entry_is_there_when_the_response_arrives(mockflock: Control, http: httpx.Client) -> None:
    for number in range(1, 31):
        http.get(mockflock.url() + "/healthz")
        assert len(requests_of(mockflock)) == number


def test_journal_size_bounds_the_server_journal(mockflock: Control, http: httpx.Client) -> None:
    mockflock.journal_state.resize(3)
    try:
        for _ in range(5):
            http.get(mockflock.url() + "/healthz")
        assert len(mockflock.journal()) == 3
        assert mockflock.journal_summary()["dropped"] == 2
    finally:
        mockflock.journal_state.resize(DEFAULT_MAX_ENTRIES)


def _login(http: httpx.Client, control: Control, **params: str) -> httpx.Response:
    verifier = "v" * 64
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    query = {"response_type": "code", "client_id": "demo-user-app", "redirect_uri": "http://127.0.0.1:8400/callback",
             "scope": "custom-hotlists:read", "state": "s1", "code_challenge": challenge,
             "code_challenge_method": "S256", "login_hint": "demo-admin", **params}
    query = {name: value for name, value in query.items() if value}
    return http.get(control.authorize_url() + "?" + urlencode(query))


def test_authorization_request_records_state_pkce_and_redirect(mockflock: Control, http: httpx.Client) -> None:
    _login(http, mockflock)
    _login(http, mockflock, state="", code_challenge="", code_challenge_method="")
    _login(http, mockflock, redirect_uri="http://127.0.0.1:9999/elsewhere")
    good, bare, elsewhere = requests_of(mockflock)
    assert (good["state"], good["pkce"], good["redirect_uri_registered"]) == (True, "S256", True)
    assert good["status"] == 302
    assert good["scope"] == frozenset({"custom-hotlists:read"})
    assert (bare["state"], bare["pkce"]) == (False, None)
    assert elsewhere["redirect_uri_registered"] is False
    assert elsewhere["redirect_uri"] == "http://127.0.0.1:9999/elsewhere"


def test_refresh_tokens_are_fingerprinted(mockflock: Control, http: httpx.Client) -> None:
    from urllib.parse import parse_qs, urlsplit

    location = _login(http, mockflock, code_challenge="", code_challenge_method="").headers["location"]
    code = parse_qs(urlsplit(location).query)["code"][0]
    auth = ("demo-user-app", "demo-user-secret")
    first = http.post(mockflock.token_url(), auth=auth, data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": "http://127.0.0.1:8400/callback"}).json()
    second = http.post(mockflock.token_url(), auth=auth, data={
        "grant_type": "refresh_token", "refresh_token": first["refresh_token"]}).json()

    exchange, refresh = requests_of(mockflock)[-2:]
    assert exchange["refresh_issued"] == fingerprint(first["refresh_token"])
    assert exchange["issued"]["level"] == "user"
    assert exchange["issued"]["subject"] == "demo-admin"
    assert refresh["refresh_presented"] == fingerprint(first["refresh_token"])
    assert refresh["refresh_issued"] == fingerprint(second["refresh_token"])
    assert first["refresh_token"] not in json.dumps(to_json(refresh))


def test_client_secret_in_api_query_is_reported(mockflock: Control, http: httpx.Client) -> None:
    token = fetch(http, mockflock).json()["access_token"]
    query = urlencode({"client_secret": SECRET, "refresh_token": "r-1"})
    http.get(f"{mockflock.api_url()}/hotlists?{query}", headers={"Authorization": f"Bearer {token}"})
    assert requests_of(mockflock)[-1]["secret_in_url"] == ("client_secret", "refresh_token")
    assert [violation.rule for violation in mockflock.violations()] == ["secret-in-url"]


def test_token_in_path_is_not_kept() -> None:
    from mockflock.journal import redact_path

    token = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"
    assert redact_path(f"/api/v3/hotlists/{token}") == "/api/v3/hotlists/<jwt>"
    assert redact_path("/api/v3/hotlists/abc") == "/api/v3/hotlists/abc"


def test_surrogate_in_rejected_body_keeps_journal_readable(mockflock, http) -> None:
    body = b'{"grant_type":"client_credentials","client_id":"demo-machine","audience":"\\ud800"}'
    response = http.post(mockflock.url("production") + "/oauth/token", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    journal = http.get(mockflock.url("production") + "/_mockflock/journal")
    assert journal.status_code == 200
