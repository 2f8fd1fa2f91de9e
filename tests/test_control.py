"""The control interface, in Python and over the admin HTTP API, and the faults it injects."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import jwt
import pytest

from mockflock.control import Control

HOTLISTS = "/hotlists"


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as client:
        yield client


def token_for(http: httpx.Client, control: Control, client_id: str = "demo-hotlists", secret: str = "demo-hotlists-secret",
              environment: str = "production", **form: str) -> httpx.Response:
    body = {"grant_type": "client_credentials", "audience": control.audience(environment), **form}
    return http.post(control.token_url(environment), data=body, auth=(client_id, secret))


def get(http: httpx.Client, control: Control, token: str, path: str = HOTLISTS, environment: str = "production") -> httpx.Response:
    return http.get(control.api_url(environment) + path, headers={"Authorization": f"Bearer {token}"})


def access(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


def test_registered_app_gets_tokens(mockflock: Control, http: httpx.Client) -> None:
    app = mockflock.register_app("sync-job", secret="sync-secret", scopes=["custom-hotlists:read"])
    assert app.scopes == frozenset({"custom-hotlists:read"})
    token = access(token_for(http, mockflock, "sync-job", "sync-secret"))
    assert get(http, mockflock, token).status_code == 200


def test_registered_app_is_gone_after_reset(mockflock: Control, http: httpx.Client) -> None:
    mockflock.register_app("sync-job", secret="sync-secret")
    mockflock.reset()
    assert token_for(http, mockflock, "sync-job", "sync-secret").status_code == 401


def test_register_app_rejects_unknown_scope(mockflock: Control) -> None:
    with pytest.raises(ValueError, match="no-such:scope"):
        mockflock.register_app("sync-job", secret="s", scopes=["no-such:scope"])


def test_lifetimes_change_new_tokens_until_reset(mockflock: Control, http: httpx.Client) -> None:
    mockflock.set_token_lifetimes(machine_access=120)
    assert token_for(http, mockflock).json()["expires_in"] == 120
    mockflock.reset()
    assert token_for(http, mockflock).json()["expires_in"] == 86400


def test_lifetimes_reject_unknown_names(mockflock: Control) -> None:
    with pytest.raises(ValueError, match="machine_acess"):
        mockflock.set_token_lifetimes(machine_acess=60)


def test_advancing_clock_expires_tokens(mockflock: Control, http: httpx.Client) -> None:
    mockflock.set_token_lifetimes(machine_access=60)
    token = access(token_for(http, mockflock))
    mockflock.advance_clock(61)
    response = get(http, mockflock, token)
    assert response.status_code == 401
    assert "expired" in response.json()["error_description"]


def test_sleep_moves_the_clock(mockflock: Control) -> None:
    before = mockflock.now()
    mockflock.sleep(300)
    assert mockflock.now() >= before + 300


def test_revoke_by_client_and_by_jti(mockflock: Control, http: httpx.Client) -> None:
    first = access(token_for(http, mockflock))
    second = access(token_for(http, mockflock, "demo-machine", "demo-machine-secret"))
    assert mockflock.revoke(client_id="demo-hotlists") == [jwt.decode(first, options={"verify_signature": False})["jti"]]
    assert get(http, mockflock, first).status_code == 401
    assert get(http, mockflock, second).status_code == 200
    mockflock.revoke(jti=jwt.decode(second, options={"verify_signature": False})["jti"])
    assert get(http, mockflock, second).status_code == 401


def test_revoke_needs_a_target(mockflock: Control) -> None:
    with pytest.raises(ValueError, match="jti, client_id or subject"):
        mockflock.revoke()


def test_rotation_keeping_old_key(mockflock: Control, http: httpx.Client) -> None:
    token = access(token_for(http, mockflock))
    rotated = mockflock.rotate_keys(environment="production")
    assert get(http, mockflock, token).status_code == 200
    jwks = http.get(mockflock.environment().jwks_url).json()
    assert rotated["production"] in {key["kid"] for key in jwks["keys"]}
    assert jwt.get_unverified_header(access(token_for(http, mockflock)))["kid"] == rotated["production"]


def test_rotation_dropping_old_key(mockflock: Control, http: httpx.Client) -> None:
    token = access(token_for(http, mockflock))
    mockflock.rotate_keys(keep_old=False)
    response = get(http, mockflock, token)
    assert response.status_code == 401
    assert "does not publish" in response.json()["error_description"]


def test_rotation_never_brings_a_key_back(mockflock: Control) -> None:
    seen = {mockflock.environment().keys.active.kid}
    for _ in range(4):
        kid = mockflock.rotate_keys(environment="production", keep_old=False)["production"]
        assert kid not in seen
        seen.add(kid)


def test_error_fault_hits_next_requests_only(mockflock: Control, http: httpx.Client) -> None:
    token = access(token_for(http, mockflock))
    mockflock.inject_fault("error", target="api", status=502, times=2, retry_after=2)
    statuses = [get(http, mockflock, token).status_code for _ in range(3)]
    assert statuses == [502, 502, 200]


def test_fault_on_one_operation(mockflock: Control, http: httpx.Client) -> None:
    token = access(token_for(http, mockflock, "demo-machine", "demo-machine-secret"))
    mockflock.inject_fault("error", target="listDevices", times=None)
    assert get(http, mockflock, token, "/devices").status_code == 503
    assert get(http, mockflock, token).status_code == 200
    assert get(http, mockflock, token, "/devices").status_code == 503
    mockflock.clear_faults()
    assert get(http, mockflock, token, "/devices").status_code == 200


def test_fault_in_one_environment(mockflock: Control, http: httpx.Client) -> None:
    mockflock.inject_fault("rate_limit", target="token", environment="development", retry_after=4)
    assert token_for(http, mockflock).status_code == 200
    limited = token_for(http, mockflock, environment="development")
    assert limited.status_code == 429
    assert limited.headers["retry-after"] == "4"
    assert limited.json()["error"] == "too_many_requests"


def test_latency_fault_still_answers(mockflock: Control, http: httpx.Client) -> None:
    mockflock.inject_fault("latency", target="token", latency=0.01)
    assert token_for(http, mockflock).status_code == 200
    assert mockflock.journal()[-1]["fault"] == "latency 0.01s"


def test_dropped_connection_fault(mockflock: Control, http: httpx.Client) -> None:
    mockflock.inject_fault("drop", target="api")
    token = access(token_for(http, mockflock))
    with pytest.raises(httpx.RemoteProtocolError):
        get(http, mockflock, token)
    assert get(http, mockflock, token).status_code == 200


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"kind": "explode"}, "not a fault kind"),
        ({"kind": "error", "target": "nowhere"}, "target='nowhere'"),
        ({"kind": "error", "status": 404}, "5xx"),
        ({"kind": "latency"}, "latency=None"),
        ({"kind": "error", "times": 0}, "times=0"),
        ({"kind": "drop", "environment": "staging"}, "environment='staging'"),
        ({"kind": "rate_limit", "retry_after": "5"}, "retry_after='5'"),
        ({"kind": "latency", "latency": "1"}, "latency='1'"),
    ],
)
def test_fault_arguments_are_checked(mockflock: Control, options: dict, message: str) -> None:
    options = dict(options)
    with pytest.raises(ValueError, match=message):
        mockflock.inject_fault(options.pop("kind"), **options)


def test_narrowed_scopes_show_in_response_and_token(mockflock: Control, http: httpx.Client) -> None:
    mockflock.narrow_scopes(["custom-hotlists:write"], client_id="demo-hotlists")
    body = token_for(http, mockflock, scope="custom-hotlists:read custom-hotlists:write").json()
    assert body["scope"] == "custom-hotlists:read"
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["scope"] == "custom-hotlists:read"
    assert mockflock.journal()[-1]["scope"] == frozenset({"custom-hotlists:read", "custom-hotlists:write"})


def test_narrowing_applies_to_default_scope(mockflock: Control, http: httpx.Client) -> None:
    mockflock.narrow_scopes(["custom-hotlists:write"])
    body = token_for(http, mockflock).json()
    assert body["scope"] == "custom-hotlists:read"


def test_narrowing_other_client_leaves_request_alone(mockflock: Control, http: httpx.Client) -> None:
    mockflock.narrow_scopes(["custom-hotlists:write"], client_id="demo-machine")
    assert "scope" not in token_for(http, mockflock).json()


def test_minted_revoked_token_stays_revoked_after_reset(mockflock: Control, http: httpx.Client) -> None:
    token, _ = mockflock.mint_token(client_id="demo-hotlists", revoked=True)
    mockflock.reset()
    response = get(http, mockflock, token)
    assert response.status_code == 401
    assert "revoked" in response.json()["error_description"]


def test_audit_trail_lists_api_calls(mockflock: Control, http: httpx.Client) -> None:
    token = access(token_for(http, mockflock))
    get(http, mockflock, token)
    records = mockflock.audit(environment="production", operation="listHotlists")
    assert [record["app"] for record in records] == ["demo-hotlists"]


def test_assert_no_violations_raises_report(mockflock: Control, http: httpx.Client) -> None:
    token_for(http, mockflock, audience=mockflock.audience("development"))
    with pytest.raises(AssertionError, match=r"\[wrong-audience\]"):
        mockflock.assert_no_violations()
    mockflock.assert_no_violations(ignore=["wrong-audience"])


# -- the admin HTTP API --------------------------------------------------------------


def admin(control: Control, environment: str = "production") -> str:
    return control.url(environment) + "/_mockflock"


def test_admin_registers_app_and_user(mockflock: Control, http: httpx.Client) -> None:
    created = http.post(admin(mockflock) + "/apps", json={
        "client_id": "ci-app", "secret": "ci-secret", "scopes": ["custom-hotlists:read"]})
    assert created.status_code == 201
    assert "secret" not in created.json()
    assert token_for(http, mockflock, "ci-app", "ci-secret").status_code == 200
    user = http.post(admin(mockflock) + "/users", json={"id": "ci-user", "password": "pw-123456", "roles": ["viewer"]})
    assert user.status_code == 201
    assert user.json()["roles"] == ["viewer"]
    assert mockflock.environment().users.get("ci-user") is not None


def test_admin_rejects_bad_bodies(mockflock: Control, http: httpx.Client) -> None:
    assert http.post(admin(mockflock) + "/apps", json={"client_id": "x"}).status_code == 400
    assert http.post(admin(mockflock) + "/apps", content=b"{not json").status_code == 400
    response = http.post(admin(mockflock) + "/clock/advance", json={"seconds": -1})
    assert response.status_code == 400
    assert "seconds=-1" in response.json()["error_description"]
    assert http.post(admin(mockflock) + "/faults", json={"kind": "drop", "colour": "red"}).status_code == 400


def test_admin_clock_lifetimes_and_keys(mockflock: Control, http: httpx.Client) -> None:
    before = http.get(admin(mockflock) + "/clock").json()["now"]
    after = http.post(admin(mockflock) + "/clock/advance", json={"seconds": 3600}).json()["now"]
    assert after >= before + 3600
    assert http.put(admin(mockflock) + "/lifetimes", json={"machine_access": 90}).json() == {"machine_access": 90}
    assert token_for(http, mockflock).json()["expires_in"] == 90
    rotated = http.post(admin(mockflock) + "/keys/rotate", json={"environment": "development", "keep_old": False}).json()
    assert list(rotated["rotated"]) == ["development"]


def test_admin_revokes_tokens(mockflock: Control, http: httpx.Client) -> None:
    token = access(token_for(http, mockflock))
    revoked = http.post(admin(mockflock) + "/tokens/revoke", json={"client_id": "demo-hotlists"}).json()["revoked"]
    assert len(revoked) == 1
    assert get(http, mockflock, token).status_code == 401


def test_admin_faults_and_narrowing(mockflock: Control, http: httpx.Client) -> None:
    fault = http.post(admin(mockflock) + "/faults", json={"kind": "error", "target": "token", "status": 500, "times": 1})
    assert fault.status_code == 201
    assert [f["kind"] for f in http.get(admin(mockflock) + "/faults").json()["faults"]] == ["error"]
    assert token_for(http, mockflock).status_code == 500
    assert http.post(admin(mockflock) + "/scopes/narrow", json={"drop": ["custom-hotlists:write"]}).status_code == 204
    assert token_for(http, mockflock).json()["scope"] == "custom-hotlists:read"
    assert http.delete(admin(mockflock) + "/faults").status_code == 204
    assert "scope" not in token_for(http, mockflock).json()


def test_admin_journal_and_violations(mockflock: Control, http: httpx.Client) -> None:
    token_for(http, mockflock, audience=mockflock.audience("development"))
    journal = http.get(admin(mockflock) + "/journal").json()
    assert journal["dropped"] == 0
    assert journal["entries"][0]["reason"] == "other_environment_audience"
    later = http.get(admin(mockflock) + "/journal", params={"since": journal["entries"][-1]["seq"]}).json()
    assert later["entries"] == []
    report = http.get(admin(mockflock, "development") + "/violations").json()
    assert report["count"] == 1
    assert report["violations"][0]["rule"] == "wrong-audience"
    assert "Fix:" in report["report"]
    ignored = http.get(admin(mockflock) + "/violations", params={"ignore": "wrong-audience"}).json()
    assert ignored["count"] == 0
    assert http.get(admin(mockflock) + "/violations", params={"ignore": "nope"}).status_code == 400


def test_admin_steps_split_retries(mockflock: Control, http: httpx.Client) -> None:
    first = http.post(admin(mockflock) + "/steps", json={"label": "sync"}).json()["step"]
    second = http.post(admin(mockflock) + "/steps", json={"label": "sync"}).json()["step"]
    assert second == first + 1


def test_admin_needs_token_off_loopback(mockflock: Control, http: httpx.Client) -> None:
    options = mockflock.server.options
    host, token = options.host, options.admin_token
    # The guard reads the options per request; the server itself stays on loopback.
    options.host, options.admin_token = "192.0.2.10", "let-me-in"
    try:
        assert http.get(admin(mockflock) + "/violations").status_code == 401
        allowed = http.get(admin(mockflock) + "/violations", headers={"Authorization": "Bearer let-me-in"})
        assert allowed.status_code == 200
        options.admin_token = None
        assert http.get(admin(mockflock) + "/journal").status_code == 404
    finally:
        options.host, options.admin_token = host, token


def test_narrowing_applies_to_refresh_grants(mockflock: Control, http: httpx.Client) -> None:
    from mockflock.userflow import sign_in

    tokens = sign_in(mockflock.url(), client_id="demo-user-app", client_secret="demo-user-secret",
                     user="demo-admin", scope="custom-hotlists:read custom-hotlists:write")
    mockflock.narrow_scopes(["custom-hotlists:write"], client_id="demo-user-app")
    body = http.post(mockflock.token_url(), auth=("demo-user-app", "demo-user-secret"),
                     data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}).json()
    assert body["scope"] == "custom-hotlists:read"


@pytest.mark.parametrize("seconds", [float("inf"), float("nan"), 1e308])
def test_clock_rejects_endless_advance(mockflock: Control, seconds: float) -> None:
    before = mockflock.now()
    with pytest.raises(ValueError, match="seconds="):
        mockflock.advance_clock(seconds)
    assert mockflock.now() < before + 60


def test_clock_offset_is_capped_in_total(mockflock: Control) -> None:
    mockflock.advance_clock(99 * 365 * 86400)
    with pytest.raises(ValueError, match="100 years"):
        mockflock.advance_clock(2 * 365 * 86400)


@pytest.mark.parametrize("body", ['{"seconds": 1e999}', '{"seconds": Infinity}', '{"seconds": 1e308}',
                                  '{"seconds": "60"}'])
def test_admin_clock_rejects_out_of_range_advance(mockflock: Control, http: httpx.Client, body: str) -> None:
    response = http.post(admin(mockflock) + "/clock/advance", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert http.get(admin(mockflock) + "/clock").status_code == 200
    assert token_for(http, mockflock).status_code == 200


@pytest.mark.parametrize("value", [1e20, 10**12, 60.5, 0])
def test_admin_lifetimes_need_bounded_whole_seconds(mockflock: Control, http: httpx.Client, value: float) -> None:
    response = http.put(admin(mockflock) + "/lifetimes", json={"machine_access": value})
    assert response.status_code == 400
    description = response.json()["error_description"]
    assert f"machine_access={value!r}" in description
    assert "10 years" in description
    assert token_for(http, mockflock).json()["expires_in"] == 86400


@pytest.mark.parametrize(("given", "sent"), [(0.5, "1"), (1e-9, "1"), (2, "2"), (0, "0")])
def test_retry_after_is_whole_seconds(mockflock: Control, http: httpx.Client, given: float, sent: str) -> None:
    mockflock.inject_fault("rate_limit", target="token", retry_after=given)
    assert token_for(http, mockflock).headers["Retry-After"] == sent


def test_admin_fault_with_text_retry_after_is_400(mockflock: Control, http: httpx.Client) -> None:
    response = http.post(admin(mockflock) + "/faults", json={"kind": "rate_limit", "retry_after": "5"})
    assert response.status_code == 400
    assert "retry_after='5' must be a number" in response.json()["error_description"]


def test_admin_refuses_duplicate_client_id(mockflock: Control, http: httpx.Client) -> None:
    response = http.post(admin(mockflock) + "/apps", json={"client_id": "demo-machine", "secret": "other"})
    assert response.status_code == 409
    assert "client_id='demo-machine' is already registered" in response.json()["error_description"]
    assert mockflock.app("demo-machine").secret != "other"
    replaced = http.post(admin(mockflock) + "/apps", json={"client_id": "demo-machine", "secret": "other", "replace": True})
    assert replaced.status_code == 201
    assert mockflock.app("demo-machine").secret == "other"


@pytest.mark.parametrize("uri", ["javascript:alert(1)", "ftp://files.example/cb", "/callback", "https://app.example/cb#x"])
def test_admin_needs_http_redirect_uris(mockflock: Control, http: httpx.Client, uri: str) -> None:
    response = http.post(admin(mockflock) + "/apps", json={"client_id": "web-app", "secret": "s", "redirect_uris": [uri]})
    assert response.status_code == 400
    assert "redirect_uris" in response.json()["error_description"]
    assert mockflock.environment().clients.get("web-app") is None


@pytest.mark.parametrize(("body", "field"), [
    ({"client_id": "", "secret": "s"}, "client_id=''"),
    ({"client_id": "x", "secret": ""}, "secret"),
    ({"client_id": "x", "secret": "s", "grants": "client_credentials"}, "grants="),
    ({"client_id": "x", "secret": "s", "auto_consent": "yes"}, "auto_consent="),
])
def test_admin_app_errors_name_the_field(mockflock: Control, http: httpx.Client, body: dict, field: str) -> None:
    description = http.post(admin(mockflock) + "/apps", json=body).json()["error_description"]
    assert field in description
    assert "register_app" not in description
    assert "None" not in description


def test_revoke_reports_each_id_once(mockflock: Control, http: httpx.Client) -> None:
    assert http.post(admin(mockflock) + "/tokens/revoke", json={"jti": "x"}).json() == {"revoked": ["x"]}
    assert http.post(admin(mockflock) + "/tokens/revoke", json={"client_id": "nobody"}).json() == {"revoked": []}
    assert http.post(admin(mockflock) + "/tokens/revoke", json={"jti": 5}).status_code == 400


def test_register_app_reads_generator_arguments(mockflock: Control) -> None:
    app = mockflock.register_app("gen-app", secret="s", grants=(g for g in ["authorization_code"]),
                                 redirect_uris=(uri for uri in ["https://app.example/cb"]))
    assert app.grants == ("authorization_code",)
    assert app.redirect_uris == ("https://app.example/cb",)
