"""A Hypothesis state machine over the refresh-token lifecycle: rotate, reuse, revoke, expire.

The model stores, for every refresh and access token the machine obtained,
the response the server must send, and each rule checks one response over HTTP.
Time moves only through the mock's clock, in whole minutes. Token
lifetimes are whole minutes too, so real time between steps (well under a
minute per example) never decides an expiry.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    MultipleResults,
    RuleBasedStateMachine,
    invariant,
    multiple,
    precondition,
    rule,
    run_state_machine_as_test,
)

from mockflock.config import load_config, parse_config
from mockflock.server import MockServer, ServerOptions
from mockflock.userflow import authorization_url, pkce_pair

APP = "demo-user-app"
SECRET = "demo-user-secret"
REDIRECT = "http://127.0.0.1:8400/callback"
ACCESS_LIFETIME = 1800
REFRESH_LIFETIME = 43_200
GRACE_SECONDS = 10
SCOPES = ("custom-hotlists:read", "custom-hotlists:write", "plate-reads:search")
scope_sets = st.sets(st.sampled_from(SCOPES), min_size=1).map(lambda names: " ".join(sorted(names)))


@dataclass
class Family:
    scopes: frozenset[str]
    revoked: bool = False


@dataclass
class RefreshModel:
    family: Family
    issued_at: int
    rotated_at: int | None = None
    successor: str | None = None


@dataclass
class AccessModel:
    family: Family
    issued_at: int
    scopes: frozenset[str]
    revoked: bool = False


@dataclass
class Model:
    now: int = 0
    refresh: dict[str, RefreshModel] = field(default_factory=dict)
    access: dict[str, AccessModel] = field(default_factory=dict)


class RefreshLifecycle(RuleBasedStateMachine):
    """Set `mock` and `concurrency` ("strict" or "grace") in a subclass."""

    mock: MockServer
    concurrency: str
    refresh_tokens = Bundle("refresh_tokens")

    def __init__(self) -> None:
        super().__init__()
        self.mock.reset()
        self.base = self.mock.url("production")
        self.http = httpx.Client(timeout=10)
        self.model = Model()

    def teardown(self) -> None:
        self.http.close()

    # Obtaining tokens

    @rule(target=refresh_tokens, scope=scope_sets)
    def sign_in(self, scope: str) -> str:
        verifier, challenge = pkce_pair()
        url = authorization_url(
            self.base,
            APP,
            REDIRECT,
            scope=scope,
            login_hint="demo-investigator",
            code_challenge=challenge,
            code_challenge_method="S256",
        )
        location = self.http.get(url).headers["location"]
        code = httpx.URL(location).params["code"]
        response = self.token(
            grant_type="authorization_code",
            code=code,
            redirect_uri=REDIRECT,
            code_verifier=verifier,
        )
        assert response.status_code == 200, response.text
        family = Family(scopes=frozenset(scope.split()))
        return self.record(response.json(), family, family.scopes)

    @rule(target=refresh_tokens, token=refresh_tokens, narrow=st.none() | scope_sets)
    def rotate(self, token: str, narrow: str | None) -> str | MultipleResults[str]:
        return self.refresh(token, narrow)

    @precondition(
        lambda self: any(record.rotated_at is not None for record in self.model.refresh.values())
    )
    @rule(target=refresh_tokens, data=st.data(), narrow=st.none() | scope_sets)
    def reuse(self, data: st.DataObject, narrow: str | None) -> str | MultipleResults[str]:
        """Present a token that was already rotated: reuse, or a repeat within the grace period."""
        # Tokens are random strings, so choices index them in issue order, which
        # replays of an example share; sorting them would pick other tokens.
        rotated = [
            token for token, record in self.model.refresh.items() if record.rotated_at is not None
        ]
        return self.refresh(
            data.draw(st.sampled_from(rotated), label="rotated refresh token"), narrow
        )

    def refresh(self, token: str, narrow: str | None) -> str | MultipleResults[str]:
        expected = self.expected_refresh(token, narrow)
        response = self.token(
            grant_type="refresh_token", refresh_token=token, **({"scope": narrow} if narrow else {})
        )
        assert (response.status_code, self.error_of(response)) == expected[:2], response.text
        record = self.model.refresh[token]
        if expected[2] == "reuse":
            record.family.revoked = True
            self.revoke_family_access(record.family)
            return multiple()
        if response.status_code != 200:
            return multiple()
        body = response.json()
        scopes = frozenset(narrow.split()) if narrow else record.family.scopes
        if expected[2] == "grace":
            assert body["refresh_token"] == record.successor
            self.add_access(body["access_token"], record.family, scopes)
            return body["refresh_token"]
        record.rotated_at = self.model.now
        record.successor = body["refresh_token"]
        return self.record(body, record.family, scopes)

    # Revoking and expiring

    @rule(token=refresh_tokens)
    def revoke_refresh(self, token: str) -> None:
        response = self.http.post(
            f"{self.base}/oauth/revoke", data={"token": token}, auth=(APP, SECRET)
        )
        assert response.status_code == 200
        family = self.model.refresh[token].family
        family.revoked = True
        self.revoke_family_access(family)

    @precondition(lambda self: self.model.access)
    @rule(data=st.data())
    def revoke_access(self, data: st.DataObject) -> None:
        token = data.draw(st.sampled_from(list(self.model.access)), label="access token")
        response = self.http.post(
            f"{self.base}/oauth/revoke", data={"token": token}, auth=(APP, SECRET)
        )
        assert response.status_code == 200
        self.model.access[token].revoked = True

    @rule(minutes=st.sampled_from([1, 10, 29, 30, 31, 60, 719, 720]))
    def advance_clock(self, minutes: int) -> None:
        self.mock.clock.advance(minutes * 60)
        self.model.now += minutes * 60

    # Using tokens

    @precondition(lambda self: self.model.access)
    @rule(data=st.data())
    def call_api(self, data: st.DataObject) -> None:
        token = data.draw(st.sampled_from(list(self.model.access)), label="access token")
        model = self.model.access[token]
        response = self.http.get(
            f"{self.base}/api/v3/hotlists", headers={"Authorization": f"Bearer {token}"}
        )
        if not self.access_active(model):
            assert response.status_code == 401, response.text
        elif "custom-hotlists:read" in model.scopes:
            assert response.status_code == 200, response.text
        else:
            assert response.status_code == 403, response.text

    @rule(token=refresh_tokens)
    def introspect_refresh(self, token: str) -> None:
        response = self.http.post(
            f"{self.base}/oauth/introspect", data={"token": token}, auth=(APP, SECRET)
        )
        record = self.model.refresh[token]
        active = (
            record.rotated_at is None
            and not record.family.revoked
            and not self.refresh_expired(record)
        )
        assert response.json()["active"] is active

    @invariant()
    def server_records_match_model(self) -> None:
        records = self.mock.environments["production"].grants.refresh_tokens
        for token, model in self.model.refresh.items():
            expected = (
                "revoked"
                if model.family.revoked
                else "rotated"
                if model.rotated_at is not None
                else "active"
            )
            assert records[token].status == expected

    # The model's expected responses

    def expected_refresh(self, token: str, narrow: str | None) -> tuple[int, str | None, str]:
        """Return (status, error, kind) that the server must send for a refresh with `token`."""
        record = self.model.refresh[token]
        if record.family.revoked:
            return 400, "invalid_grant", "revoked"
        if record.rotated_at is not None:
            successor = self.model.refresh[record.successor or ""]
            within_grace = (
                self.model.now - record.rotated_at <= GRACE_SECONDS and successor.rotated_at is None
            )
            if self.concurrency == "grace" and within_grace:
                if narrow and not set(narrow.split()) <= record.family.scopes:
                    return 400, "invalid_scope", "widened"
                return 200, None, "grace"
            return 400, "invalid_grant", "reuse"
        if self.refresh_expired(record):
            return 400, "invalid_grant", "expired"
        if narrow and not set(narrow.split()) <= record.family.scopes:
            return 400, "invalid_scope", "widened"
        return 200, None, "rotated"

    def refresh_expired(self, record: RefreshModel) -> bool:
        return self.model.now - record.issued_at >= REFRESH_LIFETIME

    def access_active(self, model: AccessModel) -> bool:
        expired = self.model.now - model.issued_at >= ACCESS_LIFETIME
        return not (model.revoked or model.family.revoked or expired)

    # Helpers

    def token(self, **form: str) -> httpx.Response:
        return self.http.post(f"{self.base}/oauth/token", data=form, auth=(APP, SECRET))

    def error_of(self, response: httpx.Response) -> str | None:
        return None if response.status_code == 200 else response.json()["error"]

    def record(self, body: dict[str, str], family: Family, scopes: frozenset[str]) -> str:
        self.model.refresh[body["refresh_token"]] = RefreshModel(
            family=family, issued_at=self.model.now
        )
        self.add_access(body["access_token"], family, scopes)
        return body["refresh_token"]

    def add_access(self, token: str, family: Family, scopes: frozenset[str]) -> None:
        self.model.access[token] = AccessModel(
            family=family, issued_at=self.model.now, scopes=scopes
        )

    def revoke_family_access(self, family: Family) -> None:
        for model in self.model.access.values():
            if model.family is family:
                model.revoked = True


def start_server(concurrency: str) -> MockServer:
    raw = load_config().raw | {
        "refresh": {"concurrency": concurrency, "grace_seconds": GRACE_SECONDS},
        # Steps run faster than any quota allows; quotas have their own tests.
        "quotas": {"enabled": False},
    }
    return MockServer(
        config=parse_config(raw), options=ServerOptions(ports={"production": 0, "development": 0})
    ).start()


@pytest.fixture(scope="module", params=["strict", "grace"])
def lifecycle_server(request: pytest.FixtureRequest) -> Iterator[tuple[MockServer, str]]:
    mock = start_server(request.param)
    yield mock, request.param
    mock.stop()


def test_refresh_lifecycle(lifecycle_server: tuple[MockServer, str]) -> None:
    mock, concurrency = lifecycle_server
    machine = type(
        f"RefreshLifecycle_{concurrency}",
        (RefreshLifecycle,),
        {"mock": mock, "concurrency": concurrency},
    )
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=75,
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
