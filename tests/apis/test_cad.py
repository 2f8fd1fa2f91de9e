"""CAD API over HTTP with a machine token."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest

from mockflock.server import MockServer
from tests.apis.contract import assert_conforms


def event(external_id: str = "INC-1", **fields: Any) -> dict[str, Any]:
    return {"externalId": external_id, "eventType": "Traffic stop", "priority": 2, **fields}


def upsert(api: httpx.Client, **fields: Any) -> dict[str, Any]:
    response = api.post("/cad/events", json=event(**fields))
    assert response.status_code == 200, response.text
    return response.json()


def external_ids(response: httpx.Response) -> list[str]:
    return [item["externalId"] for item in response.json()["events"]]


@pytest.fixture
def client(fresh_server: MockServer, api: httpx.Client) -> httpx.Client:
    return api


@pytest.fixture
def dev_api(server: MockServer, machine_token: Callable[..., str]) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {machine_token('development')}"}
    with httpx.Client(base_url=server.url("development") + "/api/v3", headers=headers) as dev:
        yield dev


# Create, read, update


def test_upsert_creates_event(client: httpx.Client) -> None:
    response = client.post(
        "/cad/events", json=event(timestamp="2025-04-12T21:05:00Z", area="Beat 4")
    )
    assert response.status_code == 200
    assert_conforms(response, "upsertCadEvent")
    body = response.json()
    assert body["externalId"] == "INC-1"
    assert body["timestamp"] == "2025-04-12T21:05:00Z"
    assert body["area"] == "Beat 4"
    assert "closedAt" not in body


def test_upsert_fills_defaults(client: httpx.Client) -> None:
    body = upsert(client, location={"city": "Riverside"})
    assert body["narratives"] == []
    assert body["additionalMetadata"] == {}
    assert body["location"] == {"city": "Riverside", "additionalMetadata": {}}
    assert datetime.fromisoformat(body["timestamp"]).tzinfo is not None


def test_get_returns_stored_event(client: httpx.Client) -> None:
    created = upsert(client, displayId="24-00012")
    response = client.get("/cad/events/INC-1")
    assert response.status_code == 200
    assert_conforms(response, "getCadEvent")
    assert response.json() == created


def test_upsert_same_external_id_updates(client: httpx.Client) -> None:
    upsert(client, timestamp="2025-04-12T21:05:00Z")
    updated = upsert(client, timestamp="2025-04-12T21:05:00Z", priority=1, displayStatus="On scene")
    listed = client.get("/cad/events", params={"start": "2025-04-12T00:00:00Z"})
    assert external_ids(listed) == ["INC-1"]
    assert updated["priority"] == 1
    assert client.get("/cad/events/INC-1").json()["displayStatus"] == "On scene"


def test_upsert_twice_returns_same_body(client: httpx.Client) -> None:
    fields = {
        "involvedPersons": [{"name": "Jane Roe"}],
        "callerInfo": {"name": "Sam", "location": {"state": "CA"}},
    }
    first = upsert(client, **fields)
    second = upsert(client, **fields)
    assert second == first


def test_upsert_generates_person_external_id(client: httpx.Client) -> None:
    body = upsert(
        client, involvedPersons=[{"name": "Jane Roe"}, {"name": "John Doe", "externalId": "P-2"}]
    )
    generated = body["involvedPersons"][0]["externalId"]
    assert generated != ""
    assert body["involvedPersons"][1]["externalId"] == "P-2"


def test_upsert_keeps_timestamp_and_narratives(client: httpx.Client) -> None:
    upsert(client, timestamp="2025-04-12T21:05:00Z")
    client.post("/cad/events/INC-1/narrative", json={"narratives": ["Unit 12 on scene."]})
    body = upsert(client, priority=1)
    assert body["timestamp"] == "2025-04-12T21:05:00Z"
    assert body["narratives"] == ["Unit 12 on scene."]


def test_upsert_replaces_omitted_fields(client: httpx.Client) -> None:
    upsert(client, area="Beat 4", department="EMS")
    body = upsert(client, area="Beat 5")
    assert body["area"] == "Beat 5"
    assert "department" not in body


def test_upsert_without_closed_at_reopens(client: httpx.Client) -> None:
    upsert(client, timestamp="2025-04-12T21:05:00Z", closedAt="2025-04-12T22:00:00Z")
    body = upsert(client)
    assert "closedAt" not in body


def test_events_are_separate_per_environment(client: httpx.Client, dev_api: httpx.Client) -> None:
    upsert(client)
    response = dev_api.get("/cad/events/INC-1")
    assert response.status_code == 404


# Listing


def test_list_filters_by_time_range(client: httpx.Client) -> None:
    upsert(client, external_id="OLD", timestamp="2025-01-01T08:00:00Z")
    upsert(client, external_id="MID", timestamp="2025-02-01T08:00:00Z")
    upsert(client, external_id="NEW", timestamp="2025-03-01T08:00:00Z")
    response = client.get(
        "/cad/events", params={"start": "2025-01-15T00:00:00Z", "end": "2025-03-01T08:00:00Z"}
    )
    assert response.status_code == 200
    assert_conforms(response, "listCadEvents")
    assert external_ids(response) == ["NEW", "MID"]


def test_list_end_defaults_to_now(client: httpx.Client) -> None:
    upsert(client, external_id="PAST", timestamp="2025-01-01T08:00:00Z")
    upsert(client, external_id="FUTURE", timestamp="2999-01-01T08:00:00Z")
    response = client.get("/cad/events", params={"start": "2024-01-01T00:00:00Z"})
    assert external_ids(response) == ["PAST"]


def test_list_pages_newest_first(client: httpx.Client) -> None:
    for day in range(1, 4):
        upsert(client, external_id=f"DAY-{day}", timestamp=f"2025-01-0{day}T08:00:00Z")
    params = {"start": "2025-01-01T00:00:00Z", "pageSize": 2}
    first = client.get("/cad/events", params=params)
    second = client.get("/cad/events", params={**params, "page": 2})
    third = client.get("/cad/events", params={**params, "page": 3})
    assert external_ids(first) == ["DAY-3", "DAY-2"]
    assert external_ids(second) == ["DAY-1"]
    assert external_ids(third) == []


def test_list_active_only(client: httpx.Client) -> None:
    upsert(client, external_id="OPEN", timestamp="2025-01-01T08:00:00Z")
    upsert(
        client,
        external_id="CLOSED",
        timestamp="2025-01-01T09:00:00Z",
        closedAt="2025-01-01T10:00:00Z",
    )
    response = client.get(
        "/cad/events", params={"start": "2025-01-01T00:00:00Z", "activeOnly": "true"}
    )
    assert external_ids(response) == ["OPEN"]


def test_list_requires_start(client: httpx.Client) -> None:
    response = client.get("/cad/events")
    assert response.status_code == 400
    assert "'start'" in response.json()["error_description"]


def test_list_rejects_invalid_start(client: httpx.Client) -> None:
    response = client.get("/cad/events", params={"start": "yesterday"})
    assert response.status_code == 400
    assert response.json()["field"] == "start"
    assert "'yesterday'" in response.json()["error_description"]


def test_list_future_start_finds_nothing(client: httpx.Client) -> None:
    upsert(client)
    response = client.get("/cad/events", params={"start": "2999-01-01T00:00:00Z"})
    assert response.status_code == 200
    assert external_ids(response) == []


def test_list_rejects_start_after_end(client: httpx.Client) -> None:
    params = {"start": "2025-02-01T00:00:00Z", "end": "2025-01-01T00:00:00Z"}
    response = client.get("/cad/events", params=params)
    assert response.status_code == 400
    assert "later than end" in response.json()["error_description"]


def test_list_rejects_page_size_over_25(client: httpx.Client) -> None:
    response = client.get("/cad/events", params={"start": "2025-01-01T00:00:00Z", "pageSize": 26})
    assert response.status_code == 400
    assert response.json()["field"] == "pageSize"


# Open, close, narrative


def test_close_sets_closed_at_now(client: httpx.Client, fresh_server: MockServer) -> None:
    upsert(client, timestamp="2025-04-12T21:05:00Z")
    response = client.post("/cad/events/INC-1/close")
    assert response.status_code == 200
    assert_conforms(response, "closeCadEvent")
    closed_at = datetime.fromisoformat(response.json()["closedAt"]).timestamp()
    assert abs(closed_at - fresh_server.clock.now()) < 60


def test_close_uses_given_timestamp(client: httpx.Client) -> None:
    upsert(client, timestamp="2025-04-12T21:05:00Z")
    response = client.post("/cad/events/INC-1/close", params={"timestamp": "2025-04-12T23:00:00Z"})
    assert response.json()["closedAt"] == "2025-04-12T23:00:00Z"


def test_close_again_keeps_closed_at(client: httpx.Client) -> None:
    upsert(client, timestamp="2025-04-12T21:05:00Z", closedAt="2025-04-12T23:00:00Z")
    response = client.post("/cad/events/INC-1/close")
    assert response.json()["closedAt"] == "2025-04-12T23:00:00Z"


def test_close_rejects_invalid_timestamp(client: httpx.Client) -> None:
    upsert(client, timestamp="2025-04-12T21:05:00Z")
    response = client.post("/cad/events/INC-1/close", params={"timestamp": "2025-04-12T20:00"})
    assert response.status_code == 400
    assert response.json()["field"] == "timestamp"
    assert "'2025-04-12T20:00'" in response.json()["error_description"]
    assert "closedAt" not in client.get("/cad/events/INC-1").json()


def test_open_removes_closed_at(client: httpx.Client) -> None:
    upsert(client, timestamp="2025-04-12T21:05:00Z", closedAt="2025-04-12T23:00:00Z")
    response = client.post("/cad/events/INC-1/open")
    assert response.status_code == 200
    assert_conforms(response, "openCadEvent")
    assert "closedAt" not in response.json()
    assert external_ids(client.get("/cad/events/active")) == ["INC-1"]


def test_narrative_appends_in_order(client: httpx.Client) -> None:
    upsert(client, narratives=["Caller reports a crash."])
    client.post("/cad/events/INC-1/narrative", json={"narratives": ["Unit 12 en route."]})
    response = client.post(
        "/cad/events/INC-1/narrative", json={"narratives": ["Unit 12 on scene.", "Tow called."]}
    )
    assert response.status_code == 200
    assert_conforms(response, "appendCadNarrative")
    expected = ["Caller reports a crash.", "Unit 12 en route.", "Unit 12 on scene.", "Tow called."]
    assert response.json()["narratives"] == expected


def test_narrative_requires_list(client: httpx.Client) -> None:
    upsert(client)
    response = client.post("/cad/events/INC-1/narrative", json={"narratives": "Unit 12 on scene."})
    assert response.status_code == 400
    assert response.json()["field"] == "narratives"


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/cad/events/NOPE-1", None),
        ("POST", "/cad/events/NOPE-1/open", None),
        ("POST", "/cad/events/NOPE-1/close", None),
        ("POST", "/cad/events/NOPE-1/narrative", {"narratives": ["Note."]}),
    ],
)
def test_unknown_event_is_not_found(
    client: httpx.Client, method: str, path: str, body: Any
) -> None:
    response = client.request(method, path, json=body)
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"
    assert "'NOPE-1'" in response.json()["error_description"]


# Active events


def test_active_lists_open_events_newest_first(client: httpx.Client) -> None:
    upsert(client, external_id="A", timestamp="2025-01-01T08:00:00Z")
    upsert(client, external_id="B", timestamp="2025-01-02T08:00:00Z")
    upsert(
        client, external_id="C", timestamp="2025-01-03T08:00:00Z", closedAt="2025-01-03T09:00:00Z"
    )
    response = client.get("/cad/events/active")
    assert response.status_code == 200
    assert_conforms(response, "listActiveCadEvents")
    assert external_ids(response) == ["B", "A"]


def test_active_upsert_closes_unlisted(client: httpx.Client) -> None:
    upsert(client, external_id="STALE", timestamp="2025-01-01T08:00:00Z")
    upsert(client, external_id="KEPT", timestamp="2025-01-02T08:00:00Z", priority=3)
    body = {"events": [event("KEPT", priority=1), event("NEW", timestamp="2025-01-03T08:00:00Z")]}
    response = client.post("/cad/events/active", json=body)
    assert response.status_code == 200
    assert_conforms(response, "upsertActiveCadEvent")
    assert external_ids(response) == ["KEPT", "NEW"]
    assert external_ids(client.get("/cad/events/active")) == ["NEW", "KEPT"]
    assert "closedAt" in client.get("/cad/events/STALE").json()
    assert client.get("/cad/events/KEPT").json()["priority"] == 1


def test_active_upsert_repeated_id_last_wins(client: httpx.Client) -> None:
    body = {
        "events": [
            event("A", priority=5),
            event("B"),
            event("A", priority=1, narratives=["Updated."]),
        ]
    }
    response = client.post("/cad/events/active", json=body)
    assert response.status_code == 200
    assert external_ids(response) == ["A", "B", "A"]
    assert [item["priority"] for item in response.json()["events"]] == [5, 2, 1]
    assert client.get("/cad/events/A").json()["priority"] == 1
    assert client.get("/cad/events/A").json()["narratives"] == ["Updated."]


def test_active_upsert_names_invalid_event(client: httpx.Client) -> None:
    body = {"events": [event("A"), event("B", timestamp="noon")]}
    response = client.post("/cad/events/active", json=body)
    assert response.status_code == 400
    assert response.json()["field"] == "events[1].timestamp"
    assert client.get("/cad/events/A").status_code == 404


# Lookup by external ids


def test_external_ids_returns_known_events(client: httpx.Client) -> None:
    upsert(client, external_id="A")
    upsert(client, external_id="B")
    response = client.post(
        "/cad/events/externalIds", json={"externalIds": ["B", "UNKNOWN", "A", "B"]}
    )
    assert response.status_code == 200
    assert_conforms(response, "getCadEventsByExternalIds")
    assert external_ids(response) == ["B", "A"]


def test_external_ids_all_unknown_is_not_found(client: httpx.Client) -> None:
    response = client.post("/cad/events/externalIds", json={"externalIds": ["X-1", "X-2"]})
    assert response.status_code == 404
    assert "'X-1'" in response.json()["error_description"]


def test_external_ids_requires_list(client: httpx.Client) -> None:
    response = client.post("/cad/events/externalIds", json={})
    assert response.status_code == 400
    assert response.json()["field"] == "externalIds"


# Invalid events


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"eventType": None}, "eventType"),
        ({"priority": 0}, "priority"),
        ({"externalId": ""}, "externalId"),
        ({"timestamp": "2025-04-12"}, "timestamp"),
        ({"closedAt": "not a time"}, "closedAt"),
        ({"location": {"latitude": 34.7}}, "location"),
        ({"dispatchedUnits": [{"id": "U12"}]}, "dispatchedUnits[0].dispatchTime"),
        (
            {"dispatchedUnits": [{"id": "U12", "dispatchTime": "soon"}]},
            "dispatchedUnits[0].dispatchTime",
        ),
        ({"involvedPersons": [{"dateOfBirth": "2017-02-30"}]}, "involvedPersons[0].dateOfBirth"),
        ({"involvedVehicles": [{"year": 1899}]}, "involvedVehicles[0].year"),
        ({"callerInfo": {"timestamp": "12:00"}}, "callerInfo.timestamp"),
        ({"unknownField": 1}, "unknownField"),
    ],
)
def test_upsert_rejects_invalid_event(
    client: httpx.Client, fields: dict[str, Any], field: str
) -> None:
    body = {key: value for key, value in {**event(), **fields}.items() if value is not None}
    response = client.post("/cad/events", json=body)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
    assert response.json()["field"] == field


def test_upsert_rejects_time_without_offset(client: httpx.Client) -> None:
    response = client.post("/cad/events", json=event(timestamp="2025-04-12T21:05:00"))
    assert response.status_code == 400
    assert response.json()["field"] == "timestamp"
    assert "'2025-04-12T21:05:00'" in response.json()["error_description"]


def test_token_without_cad_scope_is_forbidden(
    fresh_server: MockServer, machine_token: Callable[..., str]
) -> None:
    headers = {"Authorization": f"Bearer {machine_token(client_id='demo-hotlists')}"}
    response = httpx.get(
        fresh_server.url("production") + "/api/v3/cad/events/active", headers=headers
    )
    assert response.status_code == 403
