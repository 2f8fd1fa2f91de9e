"""Inbound Alerts API over HTTP with a machine token."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from mockflock.server import MockServer
from tests.apis.contract import assert_conforms

UNKNOWN_ID = "00000000-0000-4000-8000-000000000000"




def alert(**fields: Any) -> dict[str, Any]:
    return {
        "title": "Traffic accident",
        "type": "other",
        "subType": "traffic-accident",
        "priority": 3,
        "eventTime": "2025-04-12T21:09:30Z",
        "location": {"latitude": 34.7465, "longitude": -92.2896, "address": "500 Main St"},
        **fields,
    }


def create(api: httpx.Client, **fields: Any) -> dict[str, Any]:
    response = api.post("/alerts", json=alert(**fields))
    assert response.status_code == 200, response.text
    return response.json()


def listed_titles(response: httpx.Response) -> list[str]:
    return [item["title"] for item in response.json()["results"]]


def tracked_subject(api: httpx.Client) -> dict[str, Any]:
    """Register a type and a subject through the Geolocation API and return the subject."""
    api.post(
        "/geo/types",
        json={
            "subjectType": "vehicle",
            "subjectSubtype": "patrol-car",
            "displayName": "Patrol car",
        },
    )
    response = api.put(
        "/geo/subjects",
        json={
            "externalId": "unit-12",
            "subjectType": "vehicle",
            "subjectSubtype": "patrol-car",
            "latitude": 34.7,
            "longitude": -92.3,
        },
    )
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture
def client(fresh_server: MockServer, api: httpx.Client) -> httpx.Client:
    return api


# Create, read, update, close


def test_create_returns_open_alert(client: httpx.Client) -> None:
    response = client.post("/alerts", json=alert())
    assert response.status_code == 200
    assert_conforms(response, "createAlert")
    body = response.json()
    assert uuid.UUID(body["id"])
    assert body["status"] == "open"
    assert body["vendorId"] == "demo-machine"
    assert body["vendorName"] == "Demo machine app"
    assert body["createdAt"] == body["updatedAt"]
    assert body["attachments"] == []
    assert body["metadata"] == {}
    assert body["location"]["address"] == "500 Main St"


def test_create_keeps_attachment_and_metadata(client: httpx.Client) -> None:
    attachment = {"type": "link", "name": "Report", "url": "https://example.com/reports/1"}
    body = create(client, attachments=[attachment], metadata={"case": "24-0012"}, ttl=600)
    assert body["attachments"] == [attachment]
    assert body["metadata"] == {"case": "24-0012"}
    assert body["ttl"] == 600


def test_get_returns_stored_alert(client: httpx.Client) -> None:
    created = create(client)
    response = client.get(f"/alerts/{created['id']}")
    assert response.status_code == 200
    assert_conforms(response, "getAlert")
    assert response.json() == created


def test_update_replaces_content(client: httpx.Client, fresh_server: MockServer) -> None:
    created = create(client, description="Two cars", metadata={"lane": "2"})
    fresh_server.clock.advance(5)
    response = client.put(
        f"/alerts/{created['id']}", json=alert(title="Traffic accident cleared", priority=5)
    )
    assert response.status_code == 200
    assert_conforms(response, "updateAlert")
    body = response.json()
    assert body["title"] == "Traffic accident cleared"
    assert body["priority"] == 5
    assert "description" not in body
    assert body["metadata"] == {}
    assert body["id"] == created["id"]
    assert body["createdAt"] == created["createdAt"]
    assert body["updatedAt"] != created["updatedAt"]
    assert client.get(f"/alerts/{created['id']}").json() == body


def test_close_hides_alert(client: httpx.Client) -> None:
    still_open = create(client, title="Kept")
    closed = create(client, title="Closed")
    response = client.post(f"/alerts/{closed['id']}/close")
    assert response.status_code == 204
    assert response.content == b""
    assert client.get(f"/alerts/{closed['id']}").json()["status"] == "closed"
    assert listed_titles(client.get("/alerts")) == [still_open["title"]]
    assert listed_titles(client.get("/alerts", params={"includeInactive": "true"})) == [
        "Closed",
        "Kept",
    ]


def test_close_twice_is_no_content(client: httpx.Client) -> None:
    created = create(client)
    client.post(f"/alerts/{created['id']}/close")
    response = client.post(f"/alerts/{created['id']}/close")
    assert response.status_code == 204


def test_update_leaves_closed_status(client: httpx.Client) -> None:
    created = create(client)
    client.post(f"/alerts/{created['id']}/close")
    body = client.put(f"/alerts/{created['id']}", json=alert(title="Late note")).json()
    assert body["status"] == "closed"


@pytest.mark.parametrize(
    ("method", "suffix", "body"),
    [("GET", "", None), ("PUT", "", alert()), ("POST", "/close", None)],
)
def test_unknown_alert_is_not_found(
    client: httpx.Client, method: str, suffix: str, body: Any
) -> None:
    response = client.request(method, f"/alerts/{UNKNOWN_ID}{suffix}", json=body)
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"
    assert UNKNOWN_ID in response.json()["error_description"]


# Listing


def test_list_newest_first(client: httpx.Client) -> None:
    for title in ("First", "Second", "Third"):
        create(client, title=title)
    response = client.get("/alerts")
    assert response.status_code == 200
    assert_conforms(response, "listAlerts")
    assert listed_titles(response) == ["Third", "Second", "First"]


def test_list_limit_and_offset(client: httpx.Client) -> None:
    for title in ("First", "Second", "Third"):
        create(client, title=title)
    response = client.get("/alerts", params={"limit": 1, "offset": 1})
    assert listed_titles(response) == ["Second"]


def test_ttl_expiry_hides_alert(client: httpx.Client, fresh_server: MockServer) -> None:
    created = create(client, ttl=60)
    fresh_server.clock.advance(61)
    assert listed_titles(client.get("/alerts")) == []
    assert listed_titles(client.get("/alerts", params={"includeInactive": "true"})) == [
        created["title"]
    ]
    assert client.get(f"/alerts/{created['id']}").json()["status"] == "open"


def test_update_restarts_ttl(client: httpx.Client, fresh_server: MockServer) -> None:
    created = create(client, ttl=60)
    fresh_server.clock.advance(50)
    client.put(f"/alerts/{created['id']}", json=alert(ttl=60))
    fresh_server.clock.advance(50)
    assert listed_titles(client.get("/alerts")) == [created["title"]]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": 101}, "limit"),
        ({"limit": 0}, "limit"),
        ({"offset": -1}, "offset"),
        ({"includeInactive": "yes"}, "includeInactive"),
    ],
)
def test_list_rejects_invalid_query(
    client: httpx.Client, params: dict[str, Any], field: str
) -> None:
    response = client.get("/alerts", params=params)
    assert response.status_code == 400
    assert response.json()["field"] == field


# Tracked subjects


def test_alert_on_subject_has_null_location(client: httpx.Client) -> None:
    subject = tracked_subject(client)
    response = client.post("/alerts", json=alert(subjectId=subject["subjectId"], location=None))
    assert response.status_code == 200
    assert_conforms(response, "createAlert")
    assert response.json()["subjectId"] == subject["subjectId"]
    assert response.json()["location"] is None


def test_alert_on_subject_rejects_location(client: httpx.Client) -> None:
    subject = tracked_subject(client)
    response = client.post("/alerts", json=alert(subjectId=subject["subjectId"]))
    assert response.status_code == 400
    assert response.json()["field"] == "location"


def test_unknown_subject_is_rejected(client: httpx.Client) -> None:
    response = client.post("/alerts", json=alert(subjectId=UNKNOWN_ID, location=None))
    assert response.status_code == 400
    assert response.json()["field"] == "subjectId"
    assert UNKNOWN_ID in response.json()["error_description"]


def test_subject_external_id_gets_hint(client: httpx.Client) -> None:
    tracked_subject(client)
    response = client.post("/alerts", json=alert(subjectId="unit-12", location=None))
    assert response.status_code == 400
    assert "externalId" in response.json()["error_description"]


def test_update_checks_subject(client: httpx.Client) -> None:
    created = create(client)
    response = client.put(
        f"/alerts/{created['id']}", json=alert(subjectId=UNKNOWN_ID, location=None)
    )
    assert response.status_code == 400
    assert response.json()["field"] == "subjectId"


# Invalid alerts


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"title": None}, "title"),
        ({"title": ""}, "title"),
        ({"priority": 6}, "priority"),
        ({"priority": 0}, "priority"),
        ({"type": "boat"}, "type"),
        ({"subType": "traffic accident"}, "subType"),
        ({"eventTime": None}, "eventTime"),
        ({"eventTime": "2025-04-12"}, "eventTime"),
        ({"location": None}, "location"),
        ({"location": {"latitude": 91, "longitude": 0}}, "location.latitude"),
        ({"ttl": 0}, "ttl"),
        ({"metadata": {"count": 3}}, "metadata.count"),
        (
            {"attachments": [{"type": "file", "name": "A", "url": "https://example.com/a"}]},
            "attachments[0].type",
        ),
        (
            {"attachments": [{"type": "link", "name": "A", "url": "reports/1"}]},
            "attachments[0].url",
        ),
        (
            {"attachments": [{"type": "link", "name": "A", "url": "https://a.example"}] * 2},
            "attachments",
        ),
        ({"status": "open"}, "status"),
    ],
)
def test_create_rejects_invalid_alert(
    client: httpx.Client, fields: dict[str, Any], field: str
) -> None:
    body = alert(**fields)
    for name in ("title", "eventTime"):
        if body[name] is None:
            del body[name]
    response = client.post("/alerts", json=body)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
    assert response.json()["field"] == field


def test_token_without_alerts_scope_is_forbidden(
    fresh_server: MockServer, machine_token: Any
) -> None:
    headers = {"Authorization": f"Bearer {machine_token(client_id='demo-hotlists')}"}
    response = httpx.get(fresh_server.url("production") + "/api/v3/alerts", headers=headers)
    assert response.status_code == 403
