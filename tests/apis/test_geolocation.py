"""Geolocation API over HTTP with a machine token: tracked subjects and subject types."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import httpx
import pytest

from mockflock.server import MockServer
from tests.apis.contract import assert_conforms


def register_type(
    api: httpx.Client, kind: str = "vehicle", subtype: str = "patrol-car", **fields: Any
) -> dict[str, Any]:
    response = api.post(
        "/geo/types",
        json={
            "subjectType": kind,
            "subjectSubtype": subtype,
            "displayName": "Patrol car",
            **fields,
        },
    )
    assert response.status_code == 200, response.text
    return response.json()


def heartbeat(external_id: str = "unit-12", **fields: Any) -> dict[str, Any]:
    return {
        "externalId": external_id,
        "subjectType": "vehicle",
        "subjectSubtype": "patrol-car",
        "latitude": 34.7465,
        "longitude": -92.2896,
        **fields,
    }


def put_subject(api: httpx.Client, external_id: str = "unit-12", **fields: Any) -> dict[str, Any]:
    response = api.put("/geo/subjects", json=heartbeat(external_id, **fields))
    assert response.status_code == 200, response.text
    return response.json()


def listed_ids(response: httpx.Response) -> list[str]:
    return [subject["externalId"] for subject in response.json()]


@pytest.fixture
def client(fresh_server: MockServer, api: httpx.Client) -> httpx.Client:
    return api


@pytest.fixture
def tracked(client: httpx.Client) -> httpx.Client:
    """The client, with the subject type vehicle/patrol-car registered."""
    register_type(client)
    return client


# Subject types


def test_type_create_returns_id(client: httpx.Client) -> None:
    response = client.post(
        "/geo/types",
        json={"subjectType": "drone", "subjectSubtype": "quadcopter", "displayName": "Drone"},
    )
    assert response.status_code == 200
    assert_conforms(response, "createSubjectType")
    body = response.json()
    assert uuid.UUID(body["id"])
    assert body["displayName"] == "Drone"
    assert body["ttlSeconds"] == 0


def test_type_list_shows_registered(client: httpx.Client) -> None:
    first = register_type(client)
    second = register_type(client, "person", "officer", ttlSeconds=300)
    response = client.get("/geo/types")
    assert response.status_code == 200
    assert_conforms(response, "listSubjectTypes")
    assert response.json() == [first, second]


def test_type_duplicate_is_conflict(client: httpx.Client) -> None:
    existing = register_type(client)
    response = client.post(
        "/geo/types",
        json={"subjectType": "vehicle", "subjectSubtype": "patrol-car", "displayName": "Other"},
    )
    assert response.status_code == 409
    assert response.json()["error"] == "conflict"
    assert existing["id"] in response.json()["error_description"]
    assert "'patrol-car'" in response.json()["error_description"]


def test_type_same_subtype_other_kind_allowed(client: httpx.Client) -> None:
    register_type(client, "vehicle", "unit")
    response = client.post(
        "/geo/types",
        json={"subjectType": "person", "subjectSubtype": "unit", "displayName": "Unit"},
    )
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"subjectType": "vehicle", "subjectSubtype": "car"}, "displayName"),
        ({"subjectType": "boat", "subjectSubtype": "car", "displayName": "Boat"}, "subjectType"),
        ({"subjectType": "vehicle", "subjectSubtype": "", "displayName": "Car"}, "subjectSubtype"),
        (
            {
                "subjectType": "vehicle",
                "subjectSubtype": "car",
                "displayName": "Car",
                "ttlSeconds": -1,
            },
            "ttlSeconds",
        ),
    ],
)
def test_type_create_rejects_invalid(
    client: httpx.Client, body: dict[str, Any], field: str
) -> None:
    response = client.post("/geo/types", json=body)
    assert response.status_code == 400
    assert response.json()["field"] == field


def test_type_delete_returns_type(client: httpx.Client) -> None:
    created = register_type(client)
    response = client.delete(f"/geo/types/{created['id']}")
    assert response.status_code == 200
    assert_conforms(response, "deleteSubjectType")
    assert response.json() == created
    assert client.get("/geo/types").json() == []


def test_type_delete_removes_its_subjects(tracked: httpx.Client) -> None:
    type_id = tracked.get("/geo/types").json()[0]["id"]
    register_type(tracked, "person", "officer")
    put_subject(tracked, "unit-12")
    put_subject(tracked, "officer-7", subjectType="person", subjectSubtype="officer")
    tracked.delete(f"/geo/types/{type_id}")
    assert tracked.get("/geo/subjects/unit-12").status_code == 404
    assert tracked.get("/geo/subjects/officer-7").status_code == 200


def test_type_delete_unknown_is_not_found(client: httpx.Client) -> None:
    response = client.delete("/geo/types/no-such-type")
    assert response.status_code == 404
    assert "'no-such-type'" in response.json()["error_description"]


# Tracked subjects


def test_subject_put_creates_with_defaults(tracked: httpx.Client) -> None:
    response = tracked.put("/geo/subjects", json=heartbeat())
    assert response.status_code == 200
    assert_conforms(response, "upsertSubject")
    body = response.json()
    assert uuid.UUID(body["subjectId"])
    assert body["externalId"] == "unit-12"
    assert body["altitude"] == 0
    assert body["additionalMetadata"] == {}
    assert body["deviceLink"] == ""
    assert body["deviceStatus"] is None
    assert body["isRecording"] is False
    assert body["nickname"] == ""
    assert body["isLawEnforcement"] is False
    assert "disableAt" not in body


def test_subject_put_twice_updates_one_subject(tracked: httpx.Client) -> None:
    first = put_subject(tracked, nickname="Unit 12")
    second = put_subject(tracked, latitude=35.0, longitude=-92.0, nickname="Unit 12")
    assert second["subjectId"] == first["subjectId"]
    assert second["createdAt"] == first["createdAt"]
    assert listed_ids(tracked.get("/geo/subjects")) == ["unit-12"]
    assert tracked.get("/geo/subjects/unit-12").json()["latitude"] == 35.0


def test_subject_put_replaces_optional_fields(tracked: httpx.Client) -> None:
    put_subject(tracked, nickname="Unit 12", isRecording=True)
    body = put_subject(tracked)
    assert body["nickname"] == ""
    assert body["isRecording"] is False


def test_subject_put_keeps_given_updated_at(tracked: httpx.Client) -> None:
    body = put_subject(tracked, updatedAt="2025-04-12T21:04:30Z")
    assert body["updatedAt"] == "2025-04-12T21:04:30Z"


def test_subject_put_needs_registered_type(client: httpx.Client) -> None:
    response = client.put("/geo/subjects", json=heartbeat(subjectSubtype="boat"))
    assert response.status_code == 400
    assert response.json()["field"] == "subjectSubtype"
    assert "'boat'" in response.json()["error_description"]
    assert "/geo/types" in response.json()["error_description"]


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"latitude": 91}, "latitude"),
        ({"longitude": -181}, "longitude"),
        ({"subjectType": "boat"}, "subjectType"),
        ({"externalId": ""}, "externalId"),
        ({"updatedAt": "2025-04-12 noon"}, "updatedAt"),
        ({"isRecording": "yes"}, "isRecording"),
        ({"subjectId": "mine"}, "subjectId"),
    ],
)
def test_subject_put_rejects_invalid(
    tracked: httpx.Client, fields: dict[str, Any], field: str
) -> None:
    response = tracked.put("/geo/subjects", json=heartbeat(**fields))
    assert response.status_code == 400
    assert response.json()["field"] == field


def test_subject_put_requires_position(tracked: httpx.Client) -> None:
    body = heartbeat()
    del body["longitude"]
    response = tracked.put("/geo/subjects", json=body)
    assert response.status_code == 400
    assert response.json()["field"] == "longitude"


def test_subject_get_returns_stored(tracked: httpx.Client) -> None:
    created = put_subject(tracked, nickname="Unit 12", isLawEnforcement=True)
    response = tracked.get("/geo/subjects/unit-12")
    assert response.status_code == 200
    assert_conforms(response, "getSubject")
    assert response.json() == created


@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_subject_unknown_is_not_found(client: httpx.Client, method: str) -> None:
    response = client.request(method, "/geo/subjects/unit-99")
    assert response.status_code == 404
    assert "'unit-99'" in response.json()["error_description"]


def test_subject_disable_hides_from_list(tracked: httpx.Client) -> None:
    put_subject(tracked, "unit-12")
    put_subject(tracked, "unit-13")
    response = tracked.delete("/geo/subjects/unit-12")
    assert response.status_code == 200
    assert_conforms(response, "disableSubject")
    assert "disableAt" in response.json()
    assert listed_ids(tracked.get("/geo/subjects")) == ["unit-13"]
    assert listed_ids(tracked.get("/geo/subjects", params={"showInactive": "true"})) == [
        "unit-12",
        "unit-13",
    ]
    assert tracked.get("/geo/subjects/unit-12").status_code == 200


def test_subject_disable_twice_keeps_time(tracked: httpx.Client, fresh_server: MockServer) -> None:
    put_subject(tracked)
    first = tracked.delete("/geo/subjects/unit-12").json()
    fresh_server.clock.advance(30)
    second = tracked.delete("/geo/subjects/unit-12").json()
    assert second["disableAt"] == first["disableAt"]


def test_subject_put_enables_disabled(tracked: httpx.Client) -> None:
    put_subject(tracked)
    tracked.delete("/geo/subjects/unit-12")
    body = put_subject(tracked)
    assert "disableAt" not in body
    assert listed_ids(tracked.get("/geo/subjects")) == ["unit-12"]


def test_subject_ttl_sets_disable_at(client: httpx.Client, fresh_server: MockServer) -> None:
    register_type(client, ttlSeconds=60)
    body = put_subject(client, updatedAt="2025-04-12T21:00:00Z")
    disable_at = datetime.fromisoformat(body["disableAt"])
    assert disable_at == datetime.fromisoformat("2025-04-12T21:01:00+00:00")


def test_subject_ttl_expiry_hides_subject(client: httpx.Client, fresh_server: MockServer) -> None:
    register_type(client, ttlSeconds=60)
    put_subject(client)
    assert listed_ids(client.get("/geo/subjects")) == ["unit-12"]
    fresh_server.clock.advance(61)
    assert listed_ids(client.get("/geo/subjects")) == []


def test_subject_list_filters(tracked: httpx.Client) -> None:
    register_type(tracked, "vehicle", "fire-engine")
    register_type(tracked, "person", "officer")
    put_subject(tracked, "car-1")
    put_subject(tracked, "engine-1", subjectSubtype="fire-engine")
    put_subject(tracked, "officer-1", subjectType="person", subjectSubtype="officer")
    response = tracked.get("/geo/subjects", params={"subjectType": "vehicle"})
    assert response.status_code == 200
    assert_conforms(response, "listSubjects")
    assert listed_ids(response) == ["car-1", "engine-1"]
    assert listed_ids(tracked.get("/geo/subjects", params={"subjectSubtype": "fire-engine"})) == [
        "engine-1"
    ]


def test_subject_list_since(tracked: httpx.Client) -> None:
    put_subject(tracked, "old", updatedAt="2025-01-01T00:00:00Z")
    put_subject(tracked, "new", updatedAt="2025-01-02T00:00:00Z")
    since = int(datetime.fromisoformat("2025-01-02T00:00:00+00:00").timestamp())
    assert listed_ids(tracked.get("/geo/subjects", params={"since": since})) == ["new"]


def test_subject_list_pages_of_100(tracked: httpx.Client, fresh_server: MockServer) -> None:
    for index in range(101):
        # Move to the next rate limit window now and then, so that no PUT is throttled.
        if index % 40 == 0:
            fresh_server.clock.advance(2)
        put_subject(tracked, f"unit-{index:03d}")
    first = tracked.get("/geo/subjects")
    second = tracked.get("/geo/subjects", params={"page": 2})
    assert len(first.json()) == 100
    assert listed_ids(second) == ["unit-100"]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"subjectType": "boat"}, "subjectType"),
        ({"page": 0}, "page"),
        ({"since": -1}, "since"),
    ],
)
def test_subject_list_rejects_invalid_query(
    client: httpx.Client, params: dict[str, Any], field: str
) -> None:
    response = client.get("/geo/subjects", params=params)
    assert response.status_code == 400
    assert response.json()["field"] == field


def test_token_without_geolocation_scope_is_forbidden(
    fresh_server: MockServer, machine_token: Any
) -> None:
    headers = {"Authorization": f"Bearer {machine_token(client_id='demo-hotlists')}"}
    response = httpx.get(fresh_server.url("production") + "/api/v3/geo/types", headers=headers)
    assert response.status_code == 403
