"""LPR Search API (modeled) over HTTP with a user token, against the seeded demo-org reads."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from mockflock.apis import routing
from mockflock.server import MockServer

# The demo plates of seed.yaml.
DEMO_READS = 120
DEMO128_READS = 3
HARBOR_READS = 60
TRUCK_READS = 25


def user_client(server: MockServer, subject: str) -> httpx.Client:
    """Return an httpx client for production's /api/v3 with a user token of `subject`."""
    # NOTE: minted directly until the authorization code flow issues user tokens in tests.
    issued = server.environments["production"].tokens.mint(
        subject=subject,
        client_id="demo-user-app",
        organization="demo-org",
        level="user",
        scopes={"plate-reads:search"},
        lifetime=1800,
    )
    headers = {"Authorization": f"Bearer {issued.token}"}
    return httpx.Client(base_url=server.url("production") + "/api/v3", headers=headers)


@pytest.fixture
def user_api(fresh_server: MockServer) -> Iterator[httpx.Client]:
    """A client of demo-admin, a demo user who may access every network."""
    with user_client(fresh_server, "demo-admin") as client:
        yield client


@pytest.fixture
def investigator_api(fresh_server: MockServer) -> Iterator[httpx.Client]:
    """A client of demo-investigator, a demo user who may access only net-downtown."""
    with user_client(fresh_server, "demo-investigator") as client:
        yield client


def search_body(server: MockServer, plate: str = "DEMO123", **fields: Any) -> dict[str, Any]:
    """Return a search body whose range covers every seeded read."""
    now = datetime.fromtimestamp(server.clock.now(), UTC)
    body = {
        "plate": plate,
        "reason": "Hit and run follow-up",
        "caseNumber": "2025-0077",
        "startDate": (now - timedelta(days=31)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "endDate": (now + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    return {**body, **fields}


def search(client: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post("/reads/search", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def all_results(client: httpx.Client, body: dict[str, Any]) -> list[dict[str, Any]]:
    page = search(client, body)
    results = list(page["results"])
    while "nextCursor" in page:
        page = search(client, {**body, "cursor": page["nextCursor"]})
        results.extend(page["results"])
    return results


# Paging


def test_first_page_has_fifty_reads(user_api: httpx.Client, fresh_server: MockServer) -> None:
    page = search(user_api, search_body(fresh_server))
    assert len(page["results"]) == 50
    assert page["totalItems"] == DEMO_READS
    assert "nextCursor" in page


def test_cursor_pages_cover_every_read(user_api: httpx.Client, fresh_server: MockServer) -> None:
    results = all_results(user_api, search_body(fresh_server))
    captured = [read["capturedAt"] for read in results]
    assert len({read["id"] for read in results}) == DEMO_READS
    assert captured == sorted(captured, reverse=True)


def test_page_size(user_api: httpx.Client, fresh_server: MockServer) -> None:
    page = search(user_api, search_body(fresh_server, pageSize=7))
    assert len(page["results"]) == 7
    assert page["totalItems"] == DEMO_READS


def test_last_page_has_no_cursor(user_api: httpx.Client, fresh_server: MockServer) -> None:
    page = search(user_api, search_body(fresh_server, plate="DEMO128"))
    assert page["totalItems"] == DEMO128_READS
    assert "nextCursor" not in page


# Matching


@pytest.mark.parametrize(
    ("plate", "expected"),
    [
        ("DEMO12*", DEMO_READS + DEMO128_READS),
        ("demo12*", DEMO_READS + DEMO128_READS),
        ("*HRB*", HARBOR_READS),
        ("6TRK*08", TRUCK_READS),
        ("DEMO12", 0),
        ("8HRB442", HARBOR_READS),
    ],
)
def test_plate_pattern(
    user_api: httpx.Client, fresh_server: MockServer, plate: str, expected: int
) -> None:
    assert search(user_api, search_body(fresh_server, plate=plate))["totalItems"] == expected


def test_network_ids_limit_search(user_api: httpx.Client, fresh_server: MockServer) -> None:
    assert (
        search(user_api, search_body(fresh_server, plate="8HRB442", networkIds=["net-airport"]))[
            "totalItems"
        ]
        == 0
    )
    assert (
        search(user_api, search_body(fresh_server, plate="8HRB442", networkIds=["net-harbor"]))[
            "totalItems"
        ]
        == HARBOR_READS
    )


def test_results_only_from_user_networks(
    investigator_api: httpx.Client, fresh_server: MockServer
) -> None:
    results = all_results(investigator_api, search_body(fresh_server, plate="DEMO12*"))
    assert results
    assert {read["device"]["network"]["id"] for read in results} == {"net-downtown"}


def test_user_networks_hide_harbor_plate(
    investigator_api: httpx.Client, fresh_server: MockServer
) -> None:
    assert search(investigator_api, search_body(fresh_server, plate="8HRB442"))["totalItems"] == 0


def test_network_outside_user_networks_is_403(
    investigator_api: httpx.Client, fresh_server: MockServer
) -> None:
    response = investigator_api.post(
        "/reads/search", json=search_body(fresh_server, networkIds=["net-harbor"])
    )
    assert response.status_code == 403
    assert "net-harbor" in response.json()["error_description"]


def test_no_allowed_networks_searches_all(
    investigator_api: httpx.Client, fresh_server: MockServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without the roles layer, nothing sets request.state.allowed_networks.
    monkeypatch.setattr(routing, "ACCESS_CHECKS", [])
    assert (
        search(investigator_api, search_body(fresh_server, plate="8HRB442"))["totalItems"]
        == HARBOR_READS
    )


def test_unknown_network_is_403(user_api: httpx.Client, fresh_server: MockServer) -> None:
    response = user_api.post(
        "/reads/search", json=search_body(fresh_server, networkIds=["net-nowhere"])
    )
    assert response.status_code == 403
    assert "net-nowhere" in response.json()["error_description"]


# Rejections


def test_machine_token_is_403(fresh_server: MockServer, api: httpx.Client) -> None:
    response = api.post("/reads/search", json=search_body(fresh_server))
    assert response.status_code == 403


@pytest.mark.parametrize("plate", ["*", "A*", "**1", "A"])
def test_too_short_plate_is_422(
    user_api: httpx.Client, fresh_server: MockServer, plate: str
) -> None:
    response = user_api.post("/reads/search", json=search_body(fresh_server, plate=plate))
    assert response.status_code == 422
    assert response.json()["field"] == "plate"


def test_end_before_start_is_422(user_api: httpx.Client, fresh_server: MockServer) -> None:
    body = search_body(fresh_server)
    body["startDate"], body["endDate"] = body["endDate"], body["startDate"]
    response = user_api.post("/reads/search", json=body)
    assert response.status_code == 422
    assert response.json()["field"] == "endDate"


def test_missing_reason_is_422(user_api: httpx.Client, fresh_server: MockServer) -> None:
    body = search_body(fresh_server)
    del body["reason"]
    response = user_api.post("/reads/search", json=body)
    assert response.status_code == 422
    assert response.json()["field"] == "reason"


def test_page_size_above_fifty_is_422(user_api: httpx.Client, fresh_server: MockServer) -> None:
    response = user_api.post("/reads/search", json=search_body(fresh_server, pageSize=51))
    assert response.status_code == 422
    assert response.json()["field"] == "pageSize"


def test_damaged_cursor_is_422(user_api: httpx.Client, fresh_server: MockServer) -> None:
    response = user_api.post("/reads/search", json=search_body(fresh_server, cursor="not-a-cursor"))
    assert response.status_code == 422
    assert response.json()["field"] == "cursor"


def test_cursor_of_other_search_is_422(user_api: httpx.Client, fresh_server: MockServer) -> None:
    cursor = search(user_api, search_body(fresh_server))["nextCursor"]
    response = user_api.post(
        "/reads/search", json=search_body(fresh_server, plate="DEMO12*", cursor=cursor)
    )
    assert response.status_code == 422
    assert "another plate" in response.json()["error_description"]
