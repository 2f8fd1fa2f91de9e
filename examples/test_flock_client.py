"""The example client's test suite, written with mockflock's pytest plugin.

Every test here fails at teardown if the client broke a rule (the module's
`check=True` marker), and the last tests let the client checker drive the
client through expiry, key rotation, revocation, faults and narrowed scopes.

    pytest examples/test_flock_client.py
"""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from conftest import demo_machine_client, demo_user_session, settings_for
from flock_client import FlockError, MachineClient, UserSession
from hypothesis import given, settings

from mockflock.control import Control
from mockflock.testing.checker import ClientTarget, check_client, operation
from mockflock.testing.strategies import environments

# What the app needs, so that the scope rule judges requests by the whole
# app rather than by the operations one test happens to call.
NEEDED_SCOPES = {"demo-hotlists": ["custom-hotlists:read"], "demo-user-app": ["plate-reads:search"]}
pytestmark = pytest.mark.mockflock(check=True, needed_scopes=NEEDED_SCOPES)
SEARCH = {"start": "2024-01-01T00:00:00Z", "end": "2024-03-01T00:00:00Z", "reason": "case 2024-0117"}


def token_requests(control: Control) -> list[dict]:
    return [entry for entry in control.journal() if entry["endpoint"] == "token"]


def test_lists_hotlists(mockflock: Control, http: httpx.Client) -> None:
    client = demo_machine_client(mockflock, http)
    assert isinstance(client.list_hotlists(), list)


def test_reuses_one_token(mockflock: Control, http: httpx.Client) -> None:
    client = demo_machine_client(mockflock, http)
    for _ in range(3):
        client.list_hotlists()
    assert len(token_requests(mockflock)) == 1


def test_renews_token_before_expiry(mockflock: Control, http: httpx.Client) -> None:
    mockflock.set_token_lifetimes(machine_access=600)
    client = demo_machine_client(mockflock, http)
    client.list_hotlists()
    mockflock.advance_clock(560)
    client.list_hotlists()
    assert len(token_requests(mockflock)) == 2


def test_recovers_from_revocation(mockflock: Control, http: httpx.Client) -> None:
    client = demo_machine_client(mockflock, http)
    client.list_hotlists()
    mockflock.revoke(client_id="demo-hotlists")
    client.list_hotlists()
    assert [entry["status"] for entry in mockflock.journal() if entry["endpoint"] == "api"] == [200, 401, 200]


def test_recovers_from_emergency_key_rotation(mockflock: Control, http: httpx.Client) -> None:
    client = demo_machine_client(mockflock, http)
    client.list_hotlists()
    mockflock.rotate_keys(keep_old=False)
    client.list_hotlists()


@pytest.mark.mockflock(check=True, needed_scopes=NEEDED_SCOPES,
                       faults=[{"kind": "rate_limit", "target": "api", "retry_after": 30}])
def test_waits_out_rate_limit(mockflock: Control, http: httpx.Client) -> None:
    before = mockflock.now()
    demo_machine_client(mockflock, http).list_hotlists()
    assert mockflock.now() >= before + 30


@pytest.mark.mockflock(check=True, needed_scopes=NEEDED_SCOPES, faults=[{"kind": "drop", "target": "token"}])
def test_survives_dropped_token_request(mockflock: Control, http: httpx.Client) -> None:
    demo_machine_client(mockflock, http).list_hotlists()


def test_reports_missing_scope_once(mockflock: Control, http: httpx.Client) -> None:
    client = demo_machine_client(mockflock, http)
    with pytest.raises(FlockError) as error:
        client.list_devices()
    assert error.value.status == 403
    assert len([entry for entry in mockflock.journal() if entry["endpoint"] == "api"]) == 1


def test_keeps_environments_apart(mockflock: Control, http: httpx.Client) -> None:
    for environment in ("production", "development"):
        demo_machine_client(mockflock, http, environment).list_hotlists()
    issued = {entry["environment"]: entry["issued"]["audience"] for entry in token_requests(mockflock)}
    assert issued == {"production": mockflock.audience("production"), "development": mockflock.audience("development")}


@settings(max_examples=10, deadline=None)
@given(environment=environments())
def test_works_in_every_environment(mockflock_server: Control, mockflock_reset: Callable[[], None],
                                    http: httpx.Client, environment: str) -> None:
    mockflock_reset()
    demo_machine_client(mockflock_server, http, environment).list_hotlists()
    mockflock_server.assert_no_violations(needed_scopes=NEEDED_SCOPES)


def test_user_session_searches(mockflock: Control, http: httpx.Client) -> None:
    session = demo_user_session(mockflock, http)
    page = session.search_reads("AB*", **SEARCH)
    assert "results" in page


def test_user_session_stores_rotated_refresh_tokens(mockflock: Control, http: httpx.Client) -> None:
    session = demo_user_session(mockflock, http)
    lifetime = mockflock.environment().config.lifetimes.user_access
    for _ in range(3):
        mockflock.advance_clock(lifetime + 1)
        session.search_reads("AB*", **SEARCH)
    refreshes = [entry for entry in token_requests(mockflock) if entry["grant_type"] == "refresh_token"]
    assert len(refreshes) == 3
    assert refreshes[1]["refresh_presented"] == refreshes[0]["refresh_issued"]


def test_user_session_rejects_forged_redirect(mockflock: Control, http: httpx.Client) -> None:
    session = demo_user_session(mockflock, http)
    with pytest.raises(FlockError, match="state matches no login"):
        session.finish_login("http://127.0.0.1:8400/callback?code=stolen&state=forged")


def machine_factory(http: httpx.Client) -> Callable[[ClientTarget], MachineClient]:
    return lambda target: MachineClient(settings_for(target), http=http, clock=target.clock, sleep=target.sleep)


def user_factory(http: httpx.Client) -> Callable[[ClientTarget], UserSession]:
    def build(target: ClientTarget) -> UserSession:
        session = UserSession(settings_for(target), http=http, clock=target.clock, sleep=target.sleep)
        session.finish_login(target.sign_in(session.authorization_url(login_hint=target.user)))
        return session

    return build


def test_checker_machine_flow(mockflock_server: Control, http: httpx.Client) -> None:
    check_client(
        mockflock_server,
        machine_factory(http),
        [
            operation("list hotlists", lambda client: client.list_hotlists(), "listHotlists"),
            operation("create hotlist", lambda client: client.create_hotlist("stolen", ["ABC123"]), "createHotlist"),
            operation("list devices", lambda client: client.list_devices(), "listDevices"),
        ],
        expected_errors=(FlockError,),
    )


def test_checker_user_flow(mockflock_server: Control, http: httpx.Client) -> None:
    check_client(
        mockflock_server,
        user_factory(http),
        [
            operation("search reads", lambda session: session.search_reads("AB*", **SEARCH), "searchReads"),
            operation("list hotlists", lambda session: session.list_hotlists(), "listHotlists"),
        ],
        level="user",
        expected_errors=(FlockError,),
    )
