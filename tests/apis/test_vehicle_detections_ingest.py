"""Vehicle Detections Ingest API over HTTP with a machine token, with real multipart bodies."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from mockflock import webhooks
from mockflock.server import MockServer

MIB = 1024 * 1024
LIMIT = 9 * MIB
JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 1020
DEVICE = "cam-downtown-01"
DECOMMISSIONED_DEVICE = "cam-airport-03"


@pytest.fixture
def client(fresh_server: MockServer, api: httpx.Client) -> httpx.Client:
    return api


@pytest.fixture
def alerts(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Record the reads that the upload hands to the hotlist alert check."""
    seen: list[dict[str, Any]] = []

    def record(mock: Any, env_name: str, data: Any, read: dict[str, Any]) -> None:
        seen.append({"environment": env_name, "organization": data.organization, **read})

    monkeypatch.setattr(webhooks, "on_read", record)
    return seen


def image(
    size: int = len(JPEG), name: str = "car.jpg", content_type: str = "image/jpeg"
) -> tuple[str, bytes, str]:
    return (name, JPEG[:size] if size <= len(JPEG) else b"\xff" * size, content_type)


def upload(
    client: httpx.Client, device: str = DEVICE, files: Any = None, data: Any = None
) -> httpx.Response:
    return client.post(f"/devices/{device}/images", files=files or {"image": image()}, data=data)


def lookup(client: httpx.Client, server: MockServer, plate: str) -> dict[str, Any]:
    now = datetime.fromtimestamp(server.clock.now(), UTC)
    body = {
        "plate": plate,
        "reason": "Upload check",
        "startDate": (now - timedelta(days=400)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "endDate": (now + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    response = client.post("/reads/lookup", json=body)
    assert response.status_code == 200, response.text
    return response.json()


# Accepted uploads


def test_upload_image_is_204(client: httpx.Client) -> None:
    response = upload(client)
    assert response.status_code == 204
    assert response.content == b""


def test_upload_with_context_images(client: httpx.Client) -> None:
    files = [
        ("image", image()),
        ("contextImages", image(name="a.jpg")),
        ("contextImages", image(name="b.jpg")),
    ]
    assert upload(client, files=files).status_code == 204


def test_upload_with_location_and_time(client: httpx.Client) -> None:
    data = {"capturedAt": "2025-04-02T17:45:10Z", "latitude": "33.7", "longitude": "-118.2"}
    assert upload(client, data=data).status_code == 204


def test_upload_octet_stream_image(client: httpx.Client) -> None:
    assert (
        upload(client, files={"image": image(content_type="application/octet-stream")}).status_code
        == 204
    )


def test_upload_of_exactly_nine_mib(client: httpx.Client) -> None:
    files = [("image", image(size=5 * MIB)), ("contextImages", image(size=LIMIT - 5 * MIB))]
    assert upload(client, files=files).status_code == 204


def test_upload_to_created_device(client: httpx.Client) -> None:
    device = client.post(
        "/devices", json={"name": "New", "location": {"city": "Long Beach"}}
    ).json()
    assert upload(client, device=device["id"]).status_code == 204


# Modeled plate reads


def test_plate_field_creates_read(
    client: httpx.Client, fresh_server: MockServer, alerts: list
) -> None:
    response = upload(client, data={"plate": "up-load1", "state": "nevada"})
    page = lookup(client, fresh_server, "UPLOAD1")
    assert response.status_code == 204
    assert page["totalItems"] == 1
    read = page["results"][0]
    assert read["plate"] == {"plate": "UPLOAD1", "confidence": 1.0}
    assert read["state"] == {"state": "nevada", "confidence": 1.0}
    assert read["device"]["id"] == DEVICE


def test_read_takes_captured_at(
    client: httpx.Client, fresh_server: MockServer, alerts: list
) -> None:
    upload(client, data={"plate": "TIME001", "capturedAt": "2026-01-02T03:04:05+02:00"})
    read = lookup(client, fresh_server, "TIME001")["results"][0]
    assert read["capturedAt"] == "2026-01-02T01:04:05.000Z"


def test_read_takes_device_network(
    client: httpx.Client, fresh_server: MockServer, alerts: list
) -> None:
    upload(client, device="cam-harbor-02", data={"plate": "NET0001"})
    assert alerts[0]["networkId"] == "net-harbor"
    assert alerts[0]["latitude"] == 33.76


def test_read_goes_to_alert_check(client: httpx.Client, alerts: list) -> None:
    upload(client, data={"plate": "ROBOT 1", "state": "texas"})
    assert len(alerts) == 1
    assert alerts[0]["plate"] == "R0B0T1"
    assert alerts[0]["state"] == "texas"
    assert alerts[0]["environment"] == "production"
    assert alerts[0]["organization"] == "demo-org"
    assert alerts[0]["deviceId"] == DEVICE


def test_upload_without_plate_creates_no_read(client: httpx.Client, alerts: list) -> None:
    upload(client)
    assert alerts == []


# Rejections


def test_oversized_image_is_413(client: httpx.Client) -> None:
    response = upload(client, files={"image": image(size=10 * MIB)})
    assert response.status_code == 413
    assert response.json()["error"] == "max_image_size_exceeded"
    assert "9 MiB" in response.json()["error_description"]
    assert "10.00 MiB" in response.json()["error_description"]


def test_images_over_limit_together_is_413(client: httpx.Client) -> None:
    files = [("image", image(size=5 * MIB)), ("contextImages", image(size=LIMIT - 5 * MIB + 1))]
    response = upload(client, files=files)
    assert response.status_code == 413
    assert f"({LIMIT + 1} bytes)" in response.json()["error_description"]
    assert f"({LIMIT} bytes)" in response.json()["error_description"]


def test_chunked_oversized_body_is_413(client: httpx.Client) -> None:
    def body() -> Iterator[bytes]:
        yield b'--b\r\nContent-Disposition: form-data; name="image"; filename="car.jpg"\r\n'
        yield b"Content-Type: image/jpeg\r\n\r\n"
        for _ in range(24):
            yield b"\xff" * (512 * 1024)
        yield b"\r\n--b--\r\n"

    response = client.post(
        f"/devices/{DEVICE}/images",
        content=body(),
        headers={"Content-Type": "multipart/form-data; boundary=b"},
    )
    assert response.status_code == 413
    assert "9 MiB" in response.json()["error_description"]


def test_server_still_serves_after_413(client: httpx.Client) -> None:
    upload(client, files={"image": image(size=10 * MIB)})
    assert upload(client).status_code == 204


def test_unknown_device_is_404(client: httpx.Client) -> None:
    response = upload(client, device="no-such-device")
    assert response.status_code == 404
    assert "no-such-device" in response.json()["error_description"]


def test_decommissioned_seed_device_is_409(client: httpx.Client) -> None:
    response = upload(client, device=DECOMMISSIONED_DEVICE)
    assert response.status_code == 409
    assert "decommissioned" in response.json()["error_description"]


def test_upload_after_decommission_is_409(client: httpx.Client) -> None:
    client.post(f"/devices/{DEVICE}/decommission")
    assert upload(client).status_code == 409


@pytest.mark.parametrize(
    ("files", "data", "field"),
    [
        ({"contextImages": image()}, None, "image"),
        ([("image", image()), ("image", image())], None, "image"),
        ({"image": image(size=0)}, None, "image"),
        ({"image": image(content_type="image/png")}, None, "image"),
        ({"image": image()}, {"color": "red"}, "color"),
        ({"image": image()}, {"latitude": "91", "longitude": "0"}, "latitude"),
        ({"image": image()}, {"latitude": "north", "longitude": "0"}, "latitude"),
        ({"image": image()}, {"latitude": "33.7"}, "longitude"),
        ({"image": image()}, {"capturedAt": "yesterday"}, "capturedAt"),
        ({"image": image()}, {"capturedAt": "9999-12-31T23:59:59-01:00"}, "capturedAt"),
        ({"image": image()}, {"capturedAt": "0001-01-01T00:00:00+01:00"}, "capturedAt"),
        ({"image": image()}, {"plate": "ABC123", "state": "CA"}, "state"),
        ({"image": image()}, {"plate": "AB/123"}, "plate"),
        ({"image": image()}, {"plate": " - "}, "plate"),
    ],
)
def test_invalid_form_is_400(client: httpx.Client, files: Any, data: Any, field: str) -> None:
    response = upload(client, files=files, data=data)
    assert response.status_code == 400
    assert response.json()["field"] == field


def test_image_as_text_field_is_400(client: httpx.Client) -> None:
    response = client.post(
        f"/devices/{DEVICE}/images", files={"contextImages": image()}, data={"image": "abc"}
    )
    assert response.status_code == 400
    assert "file part" in response.json()["error_description"]


def test_json_body_is_400(client: httpx.Client) -> None:
    response = client.post(f"/devices/{DEVICE}/images", json={"image": "abc"})
    assert response.status_code == 400
    assert "multipart/form-data" in response.json()["error_description"]


def test_missing_boundary_is_400(client: httpx.Client) -> None:
    response = client.post(
        f"/devices/{DEVICE}/images", content=b"x", headers={"Content-Type": "multipart/form-data"}
    )
    assert response.status_code == 400


def test_truncated_multipart_is_400(client: httpx.Client) -> None:
    body = (
        b'--b\r\nContent-Disposition: form-data; name="image"; filename="car.jpg"\r\n\r\n\xff\xd8'
    )
    response = client.post(
        f"/devices/{DEVICE}/images",
        content=body,
        headers={"Content-Type": "multipart/form-data; boundary=b"},
    )
    assert response.status_code == 400
