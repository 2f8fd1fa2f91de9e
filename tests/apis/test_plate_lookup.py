"""LPR Plate Lookup API over HTTP with a machine token, against the seeded demo-org reads."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from mockflock.server import MockServer

# The demo plates of seed.yaml.
DEMO_READS = 120
HARBOR_READS = 60
AIRPORT_READS = 8
LOW_CONFIDENCE_READS = 10
HARBOR = {"latitude": 33.7600, "longitude": -118.2200}
# A ring of [longitude, latitude] around the airport devices.
AIRPORT_RING = [
    [-118.18, 33.80],
    [-118.13, 33.80],
    [-118.13, 33.83],
    [-118.18, 33.83],
    [-118.18, 33.80],
]


@pytest.fixture
def client(fresh_server: MockServer, api: httpx.Client) -> httpx.Client:
    return api


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def lookup_body(server: MockServer, plate: str = "DEMO123", **fields: Any) -> dict[str, Any]:
    """Return a lookup body whose range covers every seeded read."""
    now = datetime.fromtimestamp(server.clock.now(), UTC)
    body = {
        "plate": plate,
        "reason": "Stolen vehicle investigation",
        "caseNumber": "2025-0042",
        "startDate": iso(now - timedelta(days=31)),
        "endDate": iso(now + timedelta(hours=1)),
    }
    return {**body, **fields}


def lookup(client: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post("/reads/lookup", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def all_pages(client: httpx.Client, body: dict[str, Any]) -> list[dict[str, Any]]:
    page = lookup(client, body)
    pages = [page]
    while "nextPageId" in page:
        response = client.get(f"/reads/lookup/page/{page['nextPageId']}")
        assert response.status_code == 200, response.text
        page = response.json()
        pages.append(page)
    return pages


def times(reads: list[dict[str, Any]]) -> list[str]:
    return [read["capturedAt"] for read in reads]


# Paging


def test_first_page_has_fifty_reads(client: httpx.Client, server: MockServer) -> None:
    page = lookup(client, lookup_body(server))
    assert len(page["results"]) == 50
    assert page["totalItems"] == DEMO_READS
    assert "nextPageId" in page
    assert "previousPageId" not in page


def test_pages_cover_every_read(client: httpx.Client, server: MockServer) -> None:
    pages = all_pages(client, lookup_body(server))
    ids = [read["id"] for page in pages for read in page["results"]]
    assert [len(page["results"]) for page in pages] == [50, 50, 20]
    assert len(set(ids)) == DEMO_READS
    assert "nextPageId" not in pages[-1]


def test_pages_newest_first(client: httpx.Client, server: MockServer) -> None:
    pages = all_pages(client, lookup_body(server))
    captured = times([read for page in pages for read in page["results"]])
    assert captured == sorted(captured, reverse=True)


def test_previous_page_returns_same_reads(client: httpx.Client, server: MockServer) -> None:
    first = lookup(client, lookup_body(server))
    second = client.get(f"/reads/lookup/page/{first['nextPageId']}").json()
    again = client.get(f"/reads/lookup/page/{second['previousPageId']}").json()
    assert again["results"] == first["results"]
    assert again["nextPageId"] == first["nextPageId"]


def test_limit_sets_page_size(client: httpx.Client, server: MockServer) -> None:
    pages = all_pages(client, lookup_body(server, limit=10))
    assert len(pages) == 12
    assert all(len(page["results"]) == 10 for page in pages)


def test_sort_ascending(client: httpx.Client, server: MockServer) -> None:
    page = lookup(client, lookup_body(server, sort=[{"field": "capturedAt", "order": "asc"}]))
    assert times(page["results"]) == sorted(times(page["results"]))


def test_unknown_page_is_404(client: httpx.Client) -> None:
    response = client.get("/reads/lookup/page/no-such-page")
    assert response.status_code == 404
    assert "no-such-page" in response.json()["error_description"]


def test_page_expires_after_an_hour(client: httpx.Client, server: MockServer) -> None:
    page = lookup(client, lookup_body(server))
    server.clock.advance(3601)
    response = client.get(f"/reads/lookup/page/{page['nextPageId']}")
    assert response.status_code == 404
    assert "expired" in response.json()["error_description"]


def test_pages_belong_to_their_environment(
    client: httpx.Client, server: MockServer, machine_token: Callable[..., str]
) -> None:
    page = lookup(client, lookup_body(server))
    headers = {"Authorization": f"Bearer {machine_token('development')}"}
    with httpx.Client(base_url=server.url("development") + "/api/v3", headers=headers) as dev:
        assert dev.get(f"/reads/lookup/page/{page['nextPageId']}").status_code == 404


# Matching and filters


def test_read_has_device_and_confidences(client: httpx.Client, server: MockServer) -> None:
    read = lookup(client, lookup_body(server, plate="8HRB442"))["results"][0]
    assert read["plate"]["plate"] == "8HRB442"
    assert 0 <= read["plate"]["confidence"] <= 1
    assert read["state"]["state"] == "california"
    assert read["device"]["network"]["id"] == "net-harbor"
    assert read["capturedAt"].endswith("Z")


@pytest.mark.parametrize("plate", ["demo123", "DEMO-123", "DEMO 123", "DEM0123"])
def test_plate_match_ignores_case_spacing_and_o(
    client: httpx.Client, server: MockServer, plate: str
) -> None:
    assert lookup(client, lookup_body(server, plate=plate))["totalItems"] == DEMO_READS


def test_partial_plate_matches_nothing(client: httpx.Client, server: MockServer) -> None:
    assert lookup(client, lookup_body(server, plate="DEMO12"))["totalItems"] == 0


def test_range_limits_reads(client: httpx.Client, server: MockServer) -> None:
    every = all_pages(client, lookup_body(server))
    captured = sorted(times([read for page in every for read in page["results"]]))
    middle = captured[len(captured) // 2]
    page = lookup(client, lookup_body(server, startDate=middle))
    assert page["totalItems"] == len([moment for moment in captured if moment >= middle])


def test_state_filter(client: httpx.Client, server: MockServer) -> None:
    assert lookup(client, lookup_body(server, state="california"))["totalItems"] == DEMO_READS
    assert lookup(client, lookup_body(server, state="nevada"))["totalItems"] == 0


def test_min_confidence_filter(client: httpx.Client, server: MockServer) -> None:
    body = lookup_body(server, minConfidences=[{"attribute": "plate", "minConfidence": 0.7}])
    assert lookup(client, body)["totalItems"] == DEMO_READS - LOW_CONFIDENCE_READS


def test_radius_filter(client: httpx.Client, server: MockServer) -> None:
    near = lookup_body(server, plate="8HRB442", radius={"radius": {**HARBOR, "radius": 3}})
    far = lookup_body(
        server,
        plate="8HRB442",
        radius={"radius": {"latitude": 34.5, "longitude": -118.2, "radius": 5}},
    )
    assert lookup(client, near)["totalItems"] == HARBOR_READS
    assert lookup(client, far)["totalItems"] == 0


def test_area_filter(client: httpx.Client, server: MockServer) -> None:
    area = {"area": {"type": "Polygon", "coordinates": [AIRPORT_RING]}}
    assert (
        lookup(client, lookup_body(server, plate="FNA579", area=area))["totalItems"]
        == AIRPORT_READS
    )
    assert lookup(client, lookup_body(server, plate="8HRB442", area=area))["totalItems"] == 0


# Rejections


def test_end_before_start_is_422(client: httpx.Client, server: MockServer) -> None:
    body = lookup_body(server)
    body["startDate"], body["endDate"] = body["endDate"], body["startDate"]
    response = client.post("/reads/lookup", json=body)
    assert response.status_code == 422
    assert response.json()["field"] == "endDate"
    assert "before startDate" in response.json()["error_description"]


def test_equal_start_and_end_is_instant(client: httpx.Client, server: MockServer) -> None:
    newest = lookup(client, lookup_body(server))["results"][0]["capturedAt"]
    page = lookup(client, lookup_body(server, startDate=newest, endDate=newest))
    assert page["totalItems"] == 1
    assert page["results"][0]["capturedAt"] == newest


@pytest.mark.parametrize(
    "value", ["yesterday", "2025-01-01", "2025-01-01T10:00:00", "2025-02-30T10:00:00Z"]
)
def test_invalid_date_is_422(client: httpx.Client, server: MockServer, value: str) -> None:
    response = client.post("/reads/lookup", json=lookup_body(server, startDate=value))
    assert response.status_code == 422
    assert response.json()["field"] == "startDate"


@pytest.mark.parametrize("field", ["reason", "plate", "startDate", "endDate"])
def test_missing_required_field_is_422(
    client: httpx.Client, server: MockServer, field: str
) -> None:
    body = lookup_body(server)
    del body[field]
    response = client.post("/reads/lookup", json=body)
    assert response.status_code == 422
    assert response.json()["field"] == field


def test_blank_reason_is_422(client: httpx.Client, server: MockServer) -> None:
    response = client.post("/reads/lookup", json=lookup_body(server, reason="   "))
    assert response.status_code == 422
    assert response.json()["field"] == "reason"


def test_limit_above_fifty_is_422(client: httpx.Client, server: MockServer) -> None:
    response = client.post("/reads/lookup", json=lookup_body(server, limit=51))
    assert response.status_code == 422
    assert response.json()["field"] == "limit"


def test_radius_and_area_together_is_422(client: httpx.Client, server: MockServer) -> None:
    body = lookup_body(
        server,
        radius={"radius": {**HARBOR, "radius": 3}},
        area={"area": {"type": "Polygon", "coordinates": [AIRPORT_RING]}},
    )
    assert client.post("/reads/lookup", json=body).status_code == 422


def test_open_ring_is_422(client: httpx.Client, server: MockServer) -> None:
    ring = AIRPORT_RING[:-1] + [[-118.17, 33.80]]
    body = lookup_body(server, area={"area": {"type": "Polygon", "coordinates": [ring]}})
    response = client.post("/reads/lookup", json=body)
    assert response.status_code == 422
    assert "closed ring" in response.json()["error_description"]


def test_unknown_state_is_422(client: httpx.Client, server: MockServer) -> None:
    response = client.post("/reads/lookup", json=lookup_body(server, state="CA"))
    assert response.status_code == 422
    assert response.json()["field"] == "state"


def test_malformed_json_is_400(client: httpx.Client) -> None:
    response = client.post(
        "/reads/lookup", content=b"{", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400


def test_token_without_lookup_scope_is_403(
    server: MockServer, machine_token: Callable[..., str]
) -> None:
    headers = {"Authorization": f"Bearer {machine_token(client_id='demo-hotlists')}"}
    with httpx.Client(base_url=server.url("production") + "/api/v3", headers=headers) as other:
        assert other.post("/reads/lookup", json=lookup_body(server)).status_code == 403
