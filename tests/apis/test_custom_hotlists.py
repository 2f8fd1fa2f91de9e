"""Custom Hotlist API over HTTP with a machine token."""

from __future__ import annotations

import base64
import uuid
from datetime import datetime, timezone
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from mockflock.apis.custom_hotlists import add_hotlist, find_matches
from mockflock.server import MockServer

UNKNOWN_ID = "00000000-0000-4000-8000-000000000000"


def entry(plate: str, **fields: Any) -> dict[str, Any]:
    return {"plate": plate, "reason": "Stolen vehicle", "caseNumber": "2025-001", **fields}


def create(api: httpx.Client, name: str = "Stolen vehicles", plates: tuple[str, ...] = ("ABC123",)) -> str:
    response = api.post("/hotlists", json={"name": name, "entries": [entry(plate) for plate in plates]})
    assert response.status_code == 201, response.text
    return response.json()["id"]


@pytest.fixture
def client(fresh_server: MockServer, api: httpx.Client) -> httpx.Client:
    return api


@pytest.fixture
def dev_api(server: MockServer, machine_token: Callable[..., str]) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {machine_token('development')}"}
    with httpx.Client(base_url=server.url("development") + "/api/v3", headers=headers) as dev:
        yield dev


def test_create_returns_uuid(client: httpx.Client) -> None:
    response = client.post("/hotlists", json={"name": "Stolen vehicles", "entries": [entry("ABC123")]})
    assert response.status_code == 201
    assert uuid.UUID(response.json()["id"])
    assert set(response.json()) == {"id"}


def test_list_shows_name_and_id(client: httpx.Client) -> None:
    hotlist_id = create(client, name="Amber alerts")
    response = client.get("/hotlists")
    assert response.status_code == 200
    assert response.json() == [{"id": hotlist_id, "name": "Amber alerts"}]


def test_get_returns_normalized_entries(client: httpx.Client) -> None:
    response = client.post("/hotlists", json={"name": "Watch", "entries": [entry("  abo 12o\t", state="texas")]})
    hotlist_id = response.json()["id"]
    body = client.get(f"/hotlists/{hotlist_id}").json()
    assert body["id"] == hotlist_id
    assert body["name"] == "Watch"
    assert body["organizationId"] == "demo-org"
    assert len(body["entries"]) == 1
    assert body["entries"][0]["plate"] == "AB0 120"
    assert body["entries"][0]["state"] == "texas"
    assert body["entries"][0]["reason"] == "Stolen vehicle"
    assert body["entries"][0]["caseNumber"] == "2025-001"
    assert uuid.UUID(body["entries"][0]["id"])


def test_get_keeps_optional_fields(client: httpx.Client) -> None:
    fields = {"expiry": "2030-01-31T00:00:00Z", "note": {"message": "Seen at 5th and Main"}}
    hotlist_id = client.post("/hotlists", json={"name": "Watch", "entries": [entry("XYZ9", **fields)]}).json()["id"]
    stored = client.get(f"/hotlists/{hotlist_id}").json()["entries"][0]
    assert stored["expiry"] == "2030-01-31T00:00:00Z"
    assert stored["note"] == {"message": "Seen at 5th and Main"}


def test_update_replaces_name_and_entries(client: httpx.Client) -> None:
    hotlist_id = create(client, plates=("AAA111", "BBB222"))
    response = client.put(f"/hotlists/{hotlist_id}", json={"name": "Renamed", "entries": [entry("CCC333")]})
    assert response.status_code == 204
    assert response.content == b""
    body = client.get(f"/hotlists/{hotlist_id}").json()
    assert body["name"] == "Renamed"
    assert [stored["plate"] for stored in body["entries"]] == ["CCC333"]


def test_delete_removes_hotlist(client: httpx.Client) -> None:
    hotlist_id = create(client)
    response = client.delete(f"/hotlists/{hotlist_id}")
    assert response.status_code == 204
    assert client.get(f"/hotlists/{hotlist_id}").status_code == 404
    assert client.get("/hotlists").json() == []


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/hotlists/{id}", None),
        ("PUT", "/hotlists/{id}", {"name": "x", "entries": []}),
        ("DELETE", "/hotlists/{id}", None),
        ("GET", "/hotlists/{id}/entries", None),
        ("POST", "/hotlists/{id}/entries/addBatch", {"entries": []}),
        ("POST", "/hotlists/{id}/entries/deleteBatch", {"ids": []}),
    ],
)
def test_unknown_hotlist_is_404(client: httpx.Client, method: str, path: str, body: Any) -> None:
    response = client.request(method, path.format(id=UNKNOWN_ID), json=body)
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"
    assert UNKNOWN_ID in response.json()["error_description"]


def test_hotlists_are_per_environment(client: httpx.Client, dev_api: httpx.Client) -> None:
    hotlist_id = create(client)
    assert dev_api.get("/hotlists").json() == []
    assert dev_api.get(f"/hotlists/{hotlist_id}").status_code == 404


def test_create_without_reason_names_field(client: httpx.Client) -> None:
    response = client.post("/hotlists", json={"name": "x", "entries": [{"plate": "ABC", "caseNumber": "1"}]})
    assert response.status_code == 400
    assert response.json()["field"] == "entries[0].reason"
    assert "entries[0].reason" in response.json()["error_description"]


def test_create_with_unknown_state_is_400(client: httpx.Client) -> None:
    response = client.post("/hotlists", json={"name": "x", "entries": [entry("ABC", state="TX")]})
    assert response.status_code == 400
    assert response.json()["field"] == "entries[0].state"


def test_create_with_bad_expiry_names_field(client: httpx.Client) -> None:
    response = client.post("/hotlists", json={"name": "x", "entries": [entry("ABC", expiry="next week")]})
    assert response.status_code == 400
    assert response.json()["field"] == "entries[0].expiry"
    assert "'next week'" in response.json()["error_description"]


@pytest.mark.parametrize("plate", ["", "   "])
def test_create_with_blank_plate_is_400(client: httpx.Client, plate: str) -> None:
    response = client.post("/hotlists", json={"name": "x", "entries": [entry(plate)]})
    assert response.status_code == 400
    assert response.json()["field"] == "entries[0].plate"


def test_create_keeps_first_of_repeated_plate(client: httpx.Client) -> None:
    entries = [entry("AB0", reason="First"), entry(" abo ", reason="Second")]
    hotlist_id = client.post("/hotlists", json={"name": "x", "entries": entries}).json()["id"]
    stored = client.get(f"/hotlists/{hotlist_id}").json()["entries"]
    assert [(item["plate"], item["reason"]) for item in stored] == [("AB0", "First")]


def test_create_counts_distinct_plates_for_limit(client: httpx.Client) -> None:
    entries = [entry(f"P{index}") for index in range(3000)] + [entry("P1")]
    response = client.post("/hotlists", json={"name": "Full", "entries": entries})
    assert response.status_code == 201


def test_create_over_limit_is_413(client: httpx.Client) -> None:
    entries = [entry(f"P{index}") for index in range(3001)]
    response = client.post("/hotlists", json={"name": "Big", "entries": entries})
    assert response.status_code == 413
    assert "3001" in response.json()["error_description"]
    assert response.json()["limit"] == 3000
    assert client.get("/hotlists").json() == []


def test_create_at_limit_succeeds(client: httpx.Client) -> None:
    entries = [entry(f"P{index}") for index in range(3000)]
    response = client.post("/hotlists", json={"name": "Full", "entries": entries})
    assert response.status_code == 201


def test_update_over_limit_is_413(client: httpx.Client) -> None:
    hotlist_id = create(client)
    entries = [entry(f"P{index}") for index in range(3001)]
    response = client.put(f"/hotlists/{hotlist_id}", json={"name": "Big", "entries": entries})
    assert response.status_code == 413
    assert client.get(f"/hotlists/{hotlist_id}").json()["name"] == "Stolen vehicles"


def test_add_batch_normalizes_plates(client: httpx.Client) -> None:
    hotlist_id = create(client, plates=())
    response = client.post(f"/hotlists/{hotlist_id}/entries/addBatch", json={"entries": [entry(" ab0o1\n")]})
    assert response.status_code == 200
    added = response.json()["entries"]
    assert [stored["plate"] for stored in added] == ["AB001"]
    assert uuid.UUID(added[0]["id"])


def test_add_batch_skips_existing_plates(client: httpx.Client) -> None:
    hotlist_id = create(client, plates=("AB0",))
    response = client.post(
        f"/hotlists/{hotlist_id}/entries/addBatch", json={"entries": [entry("abo"), entry("NEW1")]}
    )
    assert response.status_code == 200
    assert [stored["plate"] for stored in response.json()["entries"]] == ["NEW1"]
    plates = [stored["plate"] for stored in client.get(f"/hotlists/{hotlist_id}").json()["entries"]]
    assert plates == ["AB0", "NEW1"]


def test_add_batch_keeps_first_of_repeated_plate(client: httpx.Client) -> None:
    hotlist_id = create(client, plates=())
    batch = {"entries": [entry("XY1", reason="First"), entry("xy1 ", reason="Second")]}
    response = client.post(f"/hotlists/{hotlist_id}/entries/addBatch", json=batch)
    assert response.status_code == 200
    added = response.json()["entries"]
    assert [(item["plate"], item["reason"]) for item in added] == [("XY1", "First")]


def test_add_batch_over_limit_is_413(client: httpx.Client) -> None:
    hotlist_id = client.post(
        "/hotlists", json={"name": "Nearly full", "entries": [entry(f"P{index}") for index in range(2999)]}
    ).json()["id"]
    response = client.post(
        f"/hotlists/{hotlist_id}/entries/addBatch", json={"entries": [entry("NEW1"), entry("NEW2")]}
    )
    assert response.status_code == 413
    assert "3001" in response.json()["error_description"]
    total = client.get(f"/hotlists/{hotlist_id}/entries", params={"limit": 1}).json()["totalResults"]
    assert total == 2999


def test_add_batch_of_existing_plates_at_limit_succeeds(client: httpx.Client) -> None:
    hotlist_id = client.post(
        "/hotlists", json={"name": "Full", "entries": [entry(f"P{index}") for index in range(3000)]}
    ).json()["id"]
    response = client.post(f"/hotlists/{hotlist_id}/entries/addBatch", json={"entries": [entry("P1")]})
    assert response.status_code == 200
    assert response.json() == {"entries": []}


def test_delete_batch_removes_entries(client: httpx.Client) -> None:
    hotlist_id = create(client, plates=("AAA1", "BBB2", "CCC3"))
    entries = client.get(f"/hotlists/{hotlist_id}").json()["entries"]
    ids = [entries[0]["id"], entries[2]["id"], UNKNOWN_ID]
    response = client.post(f"/hotlists/{hotlist_id}/entries/deleteBatch", json={"ids": ids})
    assert response.status_code == 200
    assert response.content == b""
    plates = [stored["plate"] for stored in client.get(f"/hotlists/{hotlist_id}").json()["entries"]]
    assert plates == ["BBB2"]


def test_deleted_plate_can_be_added_again(client: httpx.Client) -> None:
    hotlist_id = create(client, plates=("AAA1",))
    entry_id = client.get(f"/hotlists/{hotlist_id}").json()["entries"][0]["id"]
    client.post(f"/hotlists/{hotlist_id}/entries/deleteBatch", json={"ids": [entry_id]})
    response = client.post(f"/hotlists/{hotlist_id}/entries/addBatch", json={"entries": [entry("AAA1")]})
    assert len(response.json()["entries"]) == 1


def test_entries_page_through_cursor(client: httpx.Client) -> None:
    hotlist_id = create(client, plates=("P1", "P2", "P3", "P4", "P5"))
    seen: list[str] = []
    params: dict[str, Any] = {"limit": 2}
    pages = 0
    while True:
        response = client.get(f"/hotlists/{hotlist_id}/entries", params=params)
        assert response.status_code == 200
        body = response.json()
        assert body["totalResults"] == 5
        seen.extend(stored["plate"] for stored in body["entries"])
        pages += 1
        if body["nextPage"] is None:
            break
        params = {"limit": 2, "cursor": body["nextPage"]}
    assert seen == ["P1", "P2", "P3", "P4", "P5"]
    assert pages == 3


def test_entries_default_page_has_all(client: httpx.Client) -> None:
    hotlist_id = create(client, plates=("P1", "P2"))
    body = client.get(f"/hotlists/{hotlist_id}/entries").json()
    assert len(body["entries"]) == 2
    assert body["nextPage"] is None


def test_cursor_survives_deleted_entry(client: httpx.Client) -> None:
    hotlist_id = create(client, plates=("P1", "P2", "P3", "P4"))
    first = client.get(f"/hotlists/{hotlist_id}/entries", params={"limit": 2}).json()
    client.post(f"/hotlists/{hotlist_id}/entries/deleteBatch", json={"ids": [first["entries"][1]["id"]]})
    second = client.get(f"/hotlists/{hotlist_id}/entries", params={"limit": 2, "cursor": first["nextPage"]}).json()
    assert [stored["plate"] for stored in second["entries"]] == ["P3", "P4"]
    assert second["nextPage"] is None


def test_invalid_cursor_is_400(client: httpx.Client) -> None:
    hotlist_id = create(client)
    response = client.get(f"/hotlists/{hotlist_id}/entries", params={"cursor": "not-a-cursor"})
    assert response.status_code == 400
    assert response.json()["field"] == "cursor"
    assert "nextPage" in response.json()["error_description"]


def test_cursor_of_other_hotlist_is_400(client: httpx.Client) -> None:
    first = create(client, name="One", plates=("P1", "P2"))
    second = create(client, name="Two", plates=("P3",))
    cursor = client.get(f"/hotlists/{first}/entries", params={"limit": 1}).json()["nextPage"]
    response = client.get(f"/hotlists/{second}/entries", params={"cursor": cursor})
    assert response.status_code == 400


def cursor_for(hotlist_id: str, position: str) -> str:
    return base64.urlsafe_b64encode(f"{hotlist_id}:{position}".encode()).decode().rstrip("=")


def test_edited_cursor_is_400(client: httpx.Client) -> None:
    hotlist_id = create(client, plates=("P1", "P2", "P3"))
    cursor = client.get(f"/hotlists/{hotlist_id}/entries", params={"limit": 1}).json()["nextPage"]
    for edited in (cursor + "A", cursor + "x", cursor[:-1]):
        response = client.get(f"/hotlists/{hotlist_id}/entries", params={"cursor": edited})
        assert response.status_code == 400, edited
        assert response.json()["field"] == "cursor"
        assert edited in response.json()["error_description"]


@pytest.mark.parametrize("position", ["-1", "0", "4", "99", "+1", " 1"])
def test_out_of_range_cursor_is_400(client: httpx.Client, position: str) -> None:
    hotlist_id = create(client, plates=("P1", "P2", "P3"))
    response = client.get(f"/hotlists/{hotlist_id}/entries", params={"cursor": cursor_for(hotlist_id, position)})
    assert response.status_code == 400
    assert response.json()["field"] == "cursor"


@pytest.mark.parametrize("limit", ["0", "3001", "ten"])
def test_invalid_limit_is_400(client: httpx.Client, limit: str) -> None:
    hotlist_id = create(client)
    response = client.get(f"/hotlists/{hotlist_id}/entries", params={"limit": limit})
    assert response.status_code == 400
    assert "limit" in response.json()["error_description"]


def test_hotlist_scope_token_can_write(server: MockServer, machine_token: Callable[..., str]) -> None:
    server.reset()
    headers = {"Authorization": f"Bearer {machine_token(client_id='demo-hotlists')}"}
    with httpx.Client(base_url=server.url("production") + "/api/v3", headers=headers) as hotlists_app:
        response = hotlists_app.post("/hotlists", json={"name": "x", "entries": []})
    assert response.status_code == 201


def test_read_scope_cannot_write(server: MockServer, machine_token: Callable[..., str]) -> None:
    headers = {"Authorization": f"Bearer {machine_token(scope='custom-hotlists:read')}"}
    with httpx.Client(base_url=server.url("production") + "/api/v3", headers=headers) as reader:
        response = reader.post("/hotlists", json={"name": "x", "entries": []})
    assert response.status_code == 403


@pytest.mark.parametrize("read", ["HOOK1", "hook 1", "H00K-1", "HO-OK1"])
def test_reads_match_ignoring_spaces_and_hyphens(fresh_server: MockServer, read: str) -> None:
    data = fresh_server.store.org("production", "demo-org")
    add_hotlist(data, "Hyphens", [{"plate": "HOOK-1", "reason": "Stolen vehicle"}])
    matches = find_matches(data, read, None, datetime.now(timezone.utc))
    assert [entry["plate"] for _, entry in matches] == ["H00K-1"]


def test_deleted_entry_stops_matching(fresh_server: MockServer) -> None:
    data = fresh_server.store.org("production", "demo-org")
    hotlist = add_hotlist(data, "Two forms", [{"plate": "AB-1", "reason": "a"}, {"plate": "AB 1", "reason": "b"}])
    hotlist.remove(next(iter(hotlist.entries)))
    matches = find_matches(data, "AB1", None, datetime.now(timezone.utc))
    assert [entry["reason"] for _, entry in matches] == ["b"]
