"""The client checker: it passes a correct client and shrinks a broken one to a short scenario."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import settings
from hypothesis.errors import InvalidArgument

from mockflock.control import Control
from mockflock.testing.checker import DEFAULT_SETTINGS, ClientTarget, check_client, operation

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
sys.path.insert(0, str(EXAMPLES))

from flock_client import FlockError, FlockSettings, MachineClient, UserSession  # noqa: E402

# Fixed seeds keep these tests deterministic; the checker's own default is random.
QUICK = settings(DEFAULT_SETTINGS, max_examples=40, database=None, derandomize=True)


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as client:
        yield client


def settings_for(target: ClientTarget) -> FlockSettings:
    return FlockSettings(base_url=target.base_url, audience=target.audience, client_id=target.client_id,
                         client_secret=target.client_secret, scopes=target.scopes, redirect_uri=target.redirect_uri)


def machine(cls: type[MachineClient], http: httpx.Client) -> Callable[[ClientTarget], MachineClient]:
    return lambda target: cls(settings_for(target), http=http, clock=target.clock, sleep=target.sleep)


HOTLIST_OPERATIONS = [
    operation("list hotlists", lambda client: client.list_hotlists(), "listHotlists"),
    operation("list devices", lambda client: client.list_devices(), "listDevices"),
]


def test_correct_client_passes(mockflock_server: Control, http: httpx.Client) -> None:
    check_client(mockflock_server, machine(MachineClient, http), HOTLIST_OPERATIONS,
                 expected_errors=(FlockError,), settings=QUICK)


def test_correct_user_session_passes(mockflock_server: Control, http: httpx.Client) -> None:
    def build(target: ClientTarget) -> UserSession:
        session = UserSession(settings_for(target), http=http, clock=target.clock, sleep=target.sleep)
        session.finish_login(target.sign_in(session.authorization_url()))
        return session

    check_client(mockflock_server, build, [operation("list hotlists", lambda s: s.list_hotlists(), "listHotlists")],
                 level="user", expected_errors=(FlockError,), settings=QUICK)


class TokenPerCallClient(MachineClient):
    def access_token(self) -> Any:
        self.token = None
        return super().access_token()


def test_broken_client_fails_with_scenario_and_report(mockflock_server: Control, http: httpx.Client) -> None:
    with pytest.raises(AssertionError) as failure:
        check_client(mockflock_server, machine(TokenPerCallClient, http), HOTLIST_OPERATIONS,
                     expected_errors=(FlockError,), settings=QUICK)
    report = str(failure.value)
    assert "[token-refetched-while-valid]" in report
    assert "Fix: Cache the token" in report
    scenario = "\n".join(getattr(failure.value, "__notes__", []))
    assert "state.start(" in scenario
    # Shrunk: the client is created and makes at most two more calls.
    assert scenario.count("then=") + scenario.count("state.call(") <= 2


class CrashingClient(MachineClient):
    def list_hotlists(self) -> Any:
        raise KeyError("scope")


def test_unexpected_exception_fails_scenario(mockflock_server: Control, http: httpx.Client) -> None:
    with pytest.raises(KeyError):
        check_client(mockflock_server, machine(CrashingClient, http), HOTLIST_OPERATIONS,
                     expected_errors=(FlockError,), settings=QUICK)


def test_ignored_rule_lets_client_pass(mockflock_server: Control, http: httpx.Client) -> None:
    check_client(mockflock_server, machine(TokenPerCallClient, http), HOTLIST_OPERATIONS,
                 expected_errors=(FlockError,), ignore=["token-refetched-while-valid"], settings=QUICK)


def test_mapping_of_operations_is_accepted(mockflock_server: Control, http: httpx.Client) -> None:
    check_client(mockflock_server, machine(MachineClient, http), {"list hotlists": lambda c: c.list_hotlists()},
                 expected_errors=(FlockError,), vary=["expiry"], settings=QUICK)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"operations": []}, "operations is empty"),
        ({"level": "robot"}, "level='robot'"),
        ({"vary": ["earthquakes"]}, "earthquakes"),
        ({"environments": ["staging"]}, "staging"),
        ({"ignore": ["no-such-rule"]}, "no-such-rule"),
    ],
)
def test_arguments_are_checked(mockflock_server: Control, options: dict, message: str) -> None:
    arguments = {"operations": HOTLIST_OPERATIONS, **options}
    with pytest.raises(InvalidArgument, match=message):
        check_client(mockflock_server, lambda target: None, **arguments)


def test_operation_rejects_unknown_operation_id() -> None:
    with pytest.raises(InvalidArgument, match="listHotlist"):
        operation("typo", lambda client: None, "listHotlist")


def test_target_signs_in_with_login_hint(mockflock: Control) -> None:
    target = ClientTarget.create(mockflock, level="user", requested=("custom-hotlists:read",))
    session = UserSession(settings_for(target))
    try:
        redirect = target.sign_in(session.authorization_url())
        assert redirect.startswith(target.redirect_uri + "?code=")
        session.finish_login(redirect)
        assert session.refresh_token
    finally:
        session.close()
