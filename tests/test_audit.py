"""The audit trail: every v3 API call, allowed or rejected, read from Python and over the admin API."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from mockflock.access.audit import AuditLog, AuditRecord, audit_records
from mockflock.server import MockServer
from mockflock.userflow import sign_in

SEARCH = {
    "plate": "DEMO123",
    "startDate": "2000-01-01T00:00:00Z",
    "endDate": "2100-01-01T00:00:00Z",
}


@pytest.fixture(autouse=True)
def reset_mock(server: MockServer) -> Iterator[None]:
    server.reset()
    yield
    server.reset()


def user_token(server: MockServer, user: str, environment: str = "production") -> str:
    tokens = sign_in(
        server.url(environment),
        client_id="demo-user-app",
        client_secret="demo-user-secret",
        user=user,
    )
    return tokens["access_token"]


def call(
    server: MockServer, method: str, path: str, token: str | None = None, **kwargs: Any
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.request(
        method, server.url("production") + "/api/v3" + path, headers=headers, **kwargs
    )


def only_record(server: MockServer, **filters: str) -> AuditRecord:
    records = server.environments["production"].audit.records(**filters)
    assert len(records) == 1, records
    return records[0]


def test_allowed_search_is_recorded(server: MockServer) -> None:
    token = user_token(server, "demo-investigator")
    before = server.clock.now()
    response = call(
        server,
        "POST",
        "/reads/search",
        token,
        json={**SEARCH, "reason": "Stolen vehicle", "caseNumber": "24-0117"},
    )
    record = only_record(server)
    assert response.status_code == 200
    assert record.actor == "demo-investigator"
    assert record.actor_type == "user"
    assert record.user == "demo-investigator"
    assert record.app == "demo-user-app"
    assert record.organization == "demo-org"
    assert record.environment == "production"
    assert record.api == "lpr-search"
    assert record.operation == "searchReads"
    assert record.decision == "allowed"
    assert record.reason == "role investigator permits searchReads"
    assert record.status == 200
    assert record.search_reason == "Stolen vehicle"
    assert record.case_number == "24-0117"
    assert before <= record.time <= server.clock.now()
    assert record.request_id == response.headers["x-request-id"]


def test_machine_call_names_app(server: MockServer, machine_token: Callable[..., str]) -> None:
    call(server, "GET", "/devices", machine_token("production"))
    record = only_record(server)
    assert record.actor == "demo-machine"
    assert record.actor_type == "app"
    assert record.user is None
    assert record.app == "demo-machine"
    assert record.decision == "allowed"
    assert record.reason == "scope devices:read"


def test_machine_search_refusal_keeps_reason(
    server: MockServer, machine_token: Callable[..., str]
) -> None:
    response = call(
        server,
        "POST",
        "/reads/search",
        machine_token("production"),
        json={**SEARCH, "reason": "Amber alert"},
    )
    record = only_record(server)
    assert response.status_code == 403
    assert record.decision == "denied"
    assert record.reason == "wrong_level"
    assert record.status == 403
    assert record.actor == "demo-machine"
    assert record.search_reason == "Amber alert"
    assert record.case_number is None
    assert "LPR Search API" in (record.detail or "")


def test_missing_token_is_recorded(server: MockServer) -> None:
    call(server, "GET", "/hotlists")
    record = only_record(server)
    assert record.actor is None
    assert record.actor_type == "anonymous"
    assert record.decision == "denied"
    assert record.reason == "missing_token"
    assert record.status == 401


def test_expired_token_is_recorded(server: MockServer) -> None:
    token = user_token(server, "demo-viewer")
    server.clock.advance(1800)
    call(server, "GET", "/hotlists", token)
    record = only_record(server)
    assert record.reason == "expired"
    assert record.status == 401
    assert record.actor_type == "anonymous"


def test_role_refusal_is_recorded(server: MockServer) -> None:
    token = user_token(server, "demo-viewer")
    call(server, "POST", "/reads/search", token, json={**SEARCH, "reason": "Curiosity"})
    record = only_record(server)
    assert record.decision == "denied"
    assert record.reason == "role_not_permitted"
    assert record.user == "demo-viewer"
    assert record.search_reason == "Curiosity"


def test_network_refusal_is_denied(server: MockServer) -> None:
    token = user_token(server, "demo-investigator")
    call(
        server,
        "POST",
        "/reads/search",
        token,
        json={**SEARCH, "reason": "Patrol", "networkIds": ["net-harbor"]},
    )
    record = only_record(server)
    assert record.decision == "denied"
    assert record.status == 403
    assert record.search_reason == "Patrol"


def test_handler_error_is_allowed_with_status(server: MockServer) -> None:
    call(server, "GET", "/hotlists/no-such-hotlist", user_token(server, "demo-admin"))
    record = only_record(server)
    assert record.decision == "allowed"
    assert record.status == 404


def test_filters(server: MockServer, machine_token: Callable[..., str]) -> None:
    call(server, "GET", "/hotlists", user_token(server, "demo-investigator"))
    call(server, "GET", "/hotlists", machine_token("production"))
    call(server, "GET", "/hotlists")
    log = server.environments["production"].audit
    assert len(log.records()) == 3
    assert len(log.records(user="demo-investigator")) == 1
    assert len(log.records(app="demo-machine")) == 1
    assert len(log.records(decision="denied")) == 1
    assert len(log.records(operation="listHotlists")) == 3


def test_unknown_filter_is_type_error() -> None:
    with pytest.raises(TypeError, match="Unknown audit filters"):
        AuditLog().records(who="x")


def test_records_of_both_environments(server: MockServer) -> None:
    call(server, "GET", "/hotlists", user_token(server, "demo-admin"))
    httpx.get(
        server.url("development") + "/api/v3/hotlists",
        headers={"Authorization": f"Bearer {user_token(server, 'demo-admin', 'development')}"},
    )
    records = audit_records(server, user="demo-admin")
    assert [record.environment for record in records] == ["production", "development"]


def test_time_follows_mock_clock(server: MockServer) -> None:
    server.clock.advance(86_400)
    call(server, "GET", "/hotlists")
    assert only_record(server).time >= server.clock.now() - 60


def test_admin_endpoint(server: MockServer) -> None:
    token = user_token(server, "demo-investigator")
    call(
        server,
        "POST",
        "/reads/search",
        token,
        json={**SEARCH, "reason": "Stolen vehicle", "caseNumber": "24-0117"},
    )
    call(server, "GET", "/hotlists")
    response = httpx.get(
        server.url("production") + "/_mockflock/audit", params={"user": "demo-investigator"}
    )
    body = response.json()
    assert response.status_code == 200
    assert body["environment"] == "production"
    assert len(body["records"]) == 1
    assert body["records"][0]["search_reason"] == "Stolen vehicle"
    assert body["records"][0]["case_number"] == "24-0117"
    assert body["records"][0]["timestamp"].endswith("Z")


def test_admin_endpoint_limit(server: MockServer) -> None:
    for _ in range(3):
        call(server, "GET", "/hotlists")
    limited = httpx.get(
        server.url("production") + "/_mockflock/audit", params={"limit": "2"}
    ).json()
    invalid = httpx.get(server.url("production") + "/_mockflock/audit", params={"limit": "-1"})
    assert len(limited["records"]) == 2
    assert invalid.status_code == 400


def test_admin_endpoint_clears(server: MockServer) -> None:
    call(server, "GET", "/hotlists")
    cleared = httpx.delete(server.url("production") + "/_mockflock/audit")
    assert cleared.status_code == 204
    assert server.environments["production"].audit.records() == []


def test_reset_clears_trail(server: MockServer) -> None:
    call(server, "GET", "/hotlists")
    server.reset()
    assert audit_records(server) == []


def test_log_is_bounded() -> None:
    log = AuditLog(max_records=2)
    for index in range(3):
        log.append(
            AuditRecord(
                time=float(index),
                environment="production",
                request_id=None,
                actor=None,
                actor_type="anonymous",
                user=None,
                app=None,
                organization=None,
                api="custom-hotlists",
                operation="listHotlists",
                method="GET",
                path="/api/v3/hotlists",
                decision="denied",
                reason="missing_token",
                status=401,
                detail=None,
                search_reason=None,
                case_number=None,
                token_jti=None,
            )
        )
    assert [record.time for record in log.records()] == [1.0, 2.0]
