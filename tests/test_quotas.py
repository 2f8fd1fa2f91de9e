"""Request quotas: exact counts under concurrent requests, within one window of the mock's clock.

The servers here use hour-long windows, so every request of a test falls
in one window however slow the machine is. The tests end a window with
`clock.advance`.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from mockflock.access.audit import audit_records
from mockflock.access.quotas import parse_quota_settings
from mockflock.config import load_config, parse_config
from mockflock.errors import ConfigError
from mockflock.server import MockServer, ServerOptions
from mockflock.userflow import sign_in

WINDOW = 3600
ORGANIZATION_CAP = 20
USER_CAP = 30
AUDIENCE = "com.flocksafety.integrations"


def start_server(quotas: dict[str, Any], users: dict[str, Any] | None = None) -> MockServer:
    raw = load_config().raw | {"quotas": quotas}
    if users:
        raw["users"] = {
            name: {**body, **users.get(name, {})} for name, body in raw["users"].items()
        }
    return MockServer(
        config=parse_config(raw), options=ServerOptions(ports={"production": 0, "development": 0})
    ).start()


@pytest.fixture(scope="module")
def quota_server() -> Iterator[MockServer]:
    mock = start_server(
        {
            "window_seconds": WINDOW,
            "organization_requests_per_window": ORGANIZATION_CAP,
            "user_requests_per_window": USER_CAP,
        },
        users={"demo-viewer": {"requests_per_window": 5}},
    )
    yield mock
    mock.stop()


@pytest.fixture
def mock(quota_server: MockServer) -> MockServer:
    quota_server.reset()
    return quota_server


def machine_token(mock: MockServer, client_id: str, environment: str = "production") -> str:
    audience = AUDIENCE if environment == "production" else AUDIENCE + ".dev"
    response = httpx.post(
        mock.url(environment) + "/oauth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": client_id,
            "client_secret": f"{client_id}-secret",
            "audience": audience,
        },
    )
    return response.json()["access_token"]


def user_token(mock: MockServer, user: str) -> str:
    return sign_in(
        mock.url("production"),
        client_id="demo-user-app",
        client_secret="demo-user-secret",
        user=user,
    )["access_token"]


def fire(
    mock: MockServer, tokens: list[str], environment: str = "production"
) -> list[httpx.Response]:
    """Send one GET /hotlists per token, all at once, and return the responses in order."""

    async def send_all() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=len(tokens))
        async with httpx.AsyncClient(
            base_url=mock.url(environment), limits=limits, timeout=30
        ) as client:
            return await asyncio.gather(
                *(
                    client.get("/api/v3/hotlists", headers={"Authorization": f"Bearer {token}"})
                    for token in tokens
                )
            )

    return asyncio.run(send_all())


def statuses(responses: list[httpx.Response]) -> Counter[int]:
    return Counter(response.status_code for response in responses)


def test_machine_tokens_share_organization_quota(mock: MockServer) -> None:
    tokens = [machine_token(mock, "demo-machine"), machine_token(mock, "demo-hotlists")]
    responses = fire(mock, tokens * 25)
    assert statuses(responses) == {200: ORGANIZATION_CAP, 429: 50 - ORGANIZATION_CAP}


def test_rejection_names_organization_quota(mock: MockServer) -> None:
    responses = fire(mock, [machine_token(mock, "demo-machine")] * (ORGANIZATION_CAP + 1))
    rejected = next(response for response in responses if response.status_code == 429)
    body = rejected.json()
    assert body["error"] == "too_many_requests"
    assert body["quota"] == "organization"
    assert body["organization"] == "demo-org"
    assert body["limit"] == ORGANIZATION_CAP
    assert body["window_seconds"] == WINDOW
    assert 1 <= int(rejected.headers["retry-after"]) <= WINDOW
    assert "organization_requests_per_window" in body["error_description"]


def test_each_user_has_own_quota(mock: MockServer) -> None:
    investigator = user_token(mock, "demo-investigator")
    admin = user_token(mock, "demo-admin")
    tokens = [investigator, admin] * 40
    responses = fire(mock, tokens)
    by_user = Counter(
        (token, response.status_code) for token, response in zip(tokens, responses, strict=True)
    )
    assert by_user[(investigator, 200)] == USER_CAP
    assert by_user[(admin, 200)] == USER_CAP
    assert by_user[(investigator, 429)] == 40 - USER_CAP


def test_user_quota_is_higher_and_separate(mock: MockServer) -> None:
    fire(mock, [machine_token(mock, "demo-machine")] * ORGANIZATION_CAP)
    responses = fire(mock, [user_token(mock, "demo-investigator")] * USER_CAP)
    assert statuses(responses) == {200: USER_CAP}
    assert USER_CAP > ORGANIZATION_CAP


def test_rejection_names_user_quota(mock: MockServer) -> None:
    responses = fire(mock, [user_token(mock, "demo-investigator")] * (USER_CAP + 1))
    rejected = next(response for response in responses if response.status_code == 429)
    assert rejected.json()["quota"] == "user"
    assert rejected.json()["user"] == "demo-investigator"
    assert rejected.json()["limit"] == USER_CAP


def test_user_override(mock: MockServer) -> None:
    responses = fire(mock, [user_token(mock, "demo-viewer")] * 12)
    assert statuses(responses) == {200: 5, 429: 7}


def test_tokens_of_one_user_share_quota(mock: MockServer) -> None:
    tokens = [user_token(mock, "demo-admin") for _ in range(3)]
    responses = fire(mock, tokens * 15)
    assert statuses(responses) == {200: USER_CAP, 429: 45 - USER_CAP}


def test_window_ends_on_clock_advance(mock: MockServer) -> None:
    token = machine_token(mock, "demo-machine")
    fire(mock, [token] * ORGANIZATION_CAP)
    before = fire(mock, [token])
    mock.clock.advance(WINDOW)
    after = fire(mock, [token] * (ORGANIZATION_CAP + 3))
    assert statuses(before) == {429: 1}
    assert statuses(after) == {200: ORGANIZATION_CAP, 429: 3}


def test_environments_count_apart(mock: MockServer) -> None:
    fire(mock, [machine_token(mock, "demo-machine")] * ORGANIZATION_CAP)
    responses = fire(
        mock, [machine_token(mock, "demo-machine", "development")] * ORGANIZATION_CAP, "development"
    )
    assert statuses(responses) == {200: ORGANIZATION_CAP}


def test_rejections_are_audited(mock: MockServer) -> None:
    fire(mock, [machine_token(mock, "demo-machine")] * (ORGANIZATION_CAP + 2))
    denied = audit_records(mock, decision="denied")
    assert [record.reason for record in denied] == ["organization_quota_exceeded"] * 2
    assert {record.status for record in denied} == {429}
    assert {record.actor for record in denied} == {"demo-machine"}


def test_disabled_quotas() -> None:
    mock = start_server(
        {"enabled": False, "organization_requests_per_window": 1, "window_seconds": WINDOW}
    )
    try:
        responses = fire(mock, [machine_token(mock, "demo-machine")] * 10)
    finally:
        mock.stop()
    assert statuses(responses) == {200: 10}


def test_default_settings_come_from_contract() -> None:
    settings = load_config().quotas
    assert settings.enabled is True
    assert settings.window_seconds == 1
    assert settings.user_requests_per_window > settings.organization_requests_per_window


@pytest.mark.parametrize(
    "body",
    [
        {"window_seconds": 0},
        {"window_seconds": -1},
        {"organization_requests_per_window": 2.5},
        {"user_requests_per_window": True},
        {"user_requests_per_window": "100"},
        {"enabled": "yes"},
        {"burst": 3},
    ],
)
def test_invalid_settings_are_rejected(body: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="quotas"):
        parse_quota_settings(body, "test")


def test_invalid_user_override_is_rejected() -> None:
    raw = load_config().raw | {
        "users": {
            "someone": {"password": "x", "organization": "demo-org", "requests_per_window": 0}
        }
    }
    with pytest.raises(ConfigError, match="requests_per_window"):
        parse_config(raw)
