"""Device API over HTTP with a machine token, against the seeded demo-org devices."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import httpx
import pytest

from mockflock.server import MockServer

SEEDED_DEVICES = 10
AIRPORT = {"latitude": 33.8177, "longitude": -118.1516}
NEW_DEVICE = {
    "name": "Gate camera",
    "location": {"latitude": 33.77, "longitude": -118.19},
    "metadata": {"serial": "G-1"},
}


@pytest.fixture
def client(fresh_server: MockServer, api: httpx.Client) -> httpx.Client:
    return api


@pytest.fixture
def dev_api(server: MockServer, machine_token: Callable[..., str]) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {machine_token('development')}"}
    with httpx.Client(base_url=server.url("development") + "/api/v3", headers=headers) as dev:
        yield dev


def create(client: httpx.Client, **fields: object) -> dict:
    response = client.post("/devices", json={**NEW_DEVICE, **fields})
    assert response.status_code == 201, response.text
    return response.json()


# Listing


def test_list_returns_seeded_devices(client: httpx.Client) -> None:
    body = client.get("/devices", params={"pageSize": 100}).json()
    assert body["totalItems"] == SEEDED_DEVICES
    assert body["totalPages"] == 1
    assert len(body["results"]) == SEEDED_DEVICES


def test_list_device_has_network(client: httpx.Client) -> None:
    devices = client.get("/devices", params={"pageSize": 100}).json()["results"]
    by_id = {device["id"]: device for device in devices}
    assert by_id["cam-harbor-01"]["network"] == {"id": "net-harbor", "name": "Harbor District"}
    assert by_id["cam-harbor-01"]["type"] == "camera"


def test_list_default_page_size(client: httpx.Client) -> None:
    response = client.get("/devices")
    assert response.status_code == 200
    assert len(response.json()["results"]) == SEEDED_DEVICES


def test_list_pages_cover_every_device(client: httpx.Client) -> None:
    seen: list[str] = []
    for page in range(1, 5):
        body = client.get("/devices", params={"page": page, "pageSize": 3}).json()
        assert body["totalPages"] == 4
        seen.extend(device["id"] for device in body["results"])
    assert len(seen) == SEEDED_DEVICES
    assert len(set(seen)) == SEEDED_DEVICES


def test_list_page_past_end_is_empty(client: httpx.Client) -> None:
    body = client.get("/devices", params={"page": 9, "pageSize": 5}).json()
    assert body["results"] == []
    assert body["totalItems"] == SEEDED_DEVICES


def test_list_area_filter_in_miles(client: httpx.Client) -> None:
    body = client.get("/devices", params={**AIRPORT, "radius": 1}).json()
    ids = {device["id"] for device in body["results"]}
    assert ids == {"cam-airport-01", "cam-airport-02", "cam-airport-03"}
    assert body["totalItems"] == 3


def test_list_area_filter_wide_radius(client: httpx.Client) -> None:
    body = client.get("/devices", params={**AIRPORT, "radius": 10}).json()
    assert body["totalItems"] == SEEDED_DEVICES


def test_list_area_filter_far_away(client: httpx.Client) -> None:
    body = client.get(
        "/devices", params={"latitude": 40.78, "longitude": -73.97, "radius": 50}
    ).json()
    assert body["totalItems"] == 0


@pytest.mark.parametrize(
    ("params", "missing"),
    [
        ({"latitude": 33.8}, "longitude"),
        ({"latitude": 33.8, "longitude": -118.1}, "radius"),
        ({"radius": 5}, "latitude"),
    ],
)
def test_list_partial_area_filter_rejected(
    client: httpx.Client, params: dict, missing: str
) -> None:
    response = client.get("/devices", params=params)
    assert response.status_code == 422
    assert response.json()["field"] == missing
    assert missing in response.json()["error_description"]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"pageSize": 101}, "pageSize"),
        ({"page": 0}, "page"),
        ({"page": "two"}, "page"),
        ({**AIRPORT, "radius": 0}, "radius"),
        ({"latitude": 91, "longitude": 0, "radius": 1}, "latitude"),
    ],
)
def test_list_invalid_query_rejected(client: httpx.Client, params: dict, field: str) -> None:
    response = client.get("/devices", params=params)
    assert response.status_code == 422
    assert field in response.json()["error_description"]


# Create, read, update, decommission


def test_create_returns_device(client: httpx.Client) -> None:
    device = create(client)
    assert uuid.UUID(device["id"])
    assert device["name"] == "Gate camera"
    assert device["type"] == "external"
    assert device["metadata"] == {"serial": "G-1"}
    assert device["network"] == {"id": "net-downtown", "name": "Downtown Patrol"}
    assert device["createdAt"] == device["modifiedAt"]


def test_create_defaults_empty_metadata(client: httpx.Client) -> None:
    device = create(client, metadata={})
    response = client.post("/devices", json={"name": "Bare", "location": {"city": "Long Beach"}})
    assert device["metadata"] == {}
    assert response.status_code == 201
    assert response.json()["metadata"] == {}
    assert response.json()["location"] == {"city": "Long Beach"}


def test_created_device_is_listed(client: httpx.Client) -> None:
    device = create(client)
    body = client.get("/devices", params={"pageSize": 100}).json()
    assert body["totalItems"] == SEEDED_DEVICES + 1
    assert device["id"] in {listed["id"] for listed in body["results"]}


def test_get_returns_created_device(client: httpx.Client) -> None:
    device = create(client)
    response = client.get(f"/devices/{device['id']}")
    assert response.status_code == 200
    assert response.json() == device


def test_get_unknown_device_is_404(client: httpx.Client) -> None:
    response = client.get("/devices/no-such-device")
    assert response.status_code == 404
    assert "no-such-device" in response.json()["error_description"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "No location"}, "location"),
        ({"location": {"city": "Long Beach"}}, "name"),
        ({"name": "", "location": {"city": "Long Beach"}}, "name"),
        ({"name": "Half", "location": {"latitude": 33.7}}, "location"),
        ({"name": "Empty", "location": {}}, "location"),
        ({"name": "Far", "location": {"latitude": 95, "longitude": 0}}, "location.latitude"),
        ({**NEW_DEVICE, "color": "red"}, "color"),
    ],
)
def test_create_invalid_body_is_422(client: httpx.Client, body: dict, field: str) -> None:
    response = client.post("/devices", json=body)
    assert response.status_code == 422
    assert response.json()["field"].startswith(field)


def test_create_malformed_json_is_400(client: httpx.Client) -> None:
    response = client.post(
        "/devices", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400


def test_update_changes_name(fresh_server: MockServer, client: httpx.Client) -> None:
    device = create(client)
    fresh_server.clock.advance(5)
    response = client.patch(f"/devices/{device['id']}", json={"name": "Renamed"})
    changed = client.get(f"/devices/{device['id']}").json()
    assert response.status_code == 204
    assert changed["name"] == "Renamed"
    assert changed["metadata"] == device["metadata"]
    assert changed["location"] == device["location"]
    assert changed["modifiedAt"] > device["modifiedAt"]
    assert changed["createdAt"] == device["createdAt"]


def test_update_replaces_metadata(client: httpx.Client) -> None:
    device = create(client)
    client.patch(f"/devices/{device['id']}", json={"metadata": {"url": "https://example.com/cam"}})
    changed = client.get(f"/devices/{device['id']}").json()
    assert changed["metadata"] == {"url": "https://example.com/cam"}


def test_update_seeded_device_location(client: httpx.Client) -> None:
    response = client.patch(
        "/devices/cam-downtown-01", json={"location": {"latitude": 33.8, "longitude": -118.2}}
    )
    assert response.status_code == 204
    assert client.get("/devices/cam-downtown-01").json()["location"] == {
        "latitude": 33.8,
        "longitude": -118.2,
    }


def test_update_empty_body_is_422(client: httpx.Client) -> None:
    response = client.patch("/devices/cam-downtown-01", json={})
    assert response.status_code == 422


def test_update_unknown_field_is_422(client: httpx.Client) -> None:
    response = client.patch("/devices/cam-downtown-01", json={"type": "audio"})
    assert response.status_code == 422
    assert response.json()["field"] == "type"


def test_update_unknown_device_is_404(client: httpx.Client) -> None:
    response = client.patch("/devices/no-such-device", json={"name": "Renamed"})
    assert response.status_code == 404
    assert "no-such-device" in response.json()["error_description"]


def test_decommission_keeps_device(client: httpx.Client) -> None:
    device = create(client)
    response = client.post(f"/devices/{device['id']}/decommission")
    assert response.status_code == 204
    assert client.get(f"/devices/{device['id']}").status_code == 200


def test_decommission_twice_is_204(client: httpx.Client) -> None:
    device = create(client)
    client.post(f"/devices/{device['id']}/decommission")
    response = client.post(f"/devices/{device['id']}/decommission")
    assert response.status_code == 204


def test_decommission_unknown_device_is_404(client: httpx.Client) -> None:
    response = client.post("/devices/no-such-device/decommission")
    assert response.status_code == 404


def test_devices_separate_per_environment(client: httpx.Client, dev_api: httpx.Client) -> None:
    device = create(client)
    assert dev_api.get(f"/devices/{device['id']}").status_code == 404
    assert dev_api.get("/devices").json()["totalItems"] == SEEDED_DEVICES


def test_reset_restores_seeded_devices(server: MockServer, client: httpx.Client) -> None:
    create(client)
    server.reset()
    assert client.get("/devices").json()["totalItems"] == SEEDED_DEVICES


def test_read_scope_cannot_create(server: MockServer, machine_token: Callable[..., str]) -> None:
    headers = {"Authorization": f"Bearer {machine_token(scope='devices:read')}"}
    with httpx.Client(base_url=server.url("production") + "/api/v3", headers=headers) as reader:
        assert reader.get("/devices").status_code == 200
        assert reader.post("/devices", json=NEW_DEVICE).status_code == 403
