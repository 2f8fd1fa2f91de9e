"""Hotlist alert webhooks: injected reads POSTed to receivers that the tests serve on loopback."""

from __future__ import annotations

import base64
import json
import logging
import socket
import threading
import time
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest

from mockflock import webhooks
from mockflock.apis.custom_hotlists import add_hotlist
from mockflock.server import MockServer

SUBSCRIPTIONS = "/integrations/lpr/alerts/subscriptions"
DEVICE = "5d0f6a43-9a3c-4a61-8c36-2b7c1f0e9d12"
NETWORK = "0c9e2f7a-61b4-4d8e-a3f5-7e1d2c3b4a56"
TOKEN = "receiver-issued-token"


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def form(self) -> dict[str, str]:
        return {name: values[-1] for name, values in parse_qs(self.body.decode()).items()}


@dataclass
class Receiver:
    """An HTTP server on 127.0.0.1 that records requests and responds with queued statuses."""

    url: str = ""
    requests: list[Received] = field(default_factory=list)
    # Path -> statuses to respond with, one per request; 200 once the list is empty.
    statuses: dict[str, list[int]] = field(default_factory=dict)
    token_lifetime: int = 3600
    lock: threading.Lock = field(default_factory=threading.Lock)

    def on(self, path: str) -> list[Received]:
        with self.lock:
            return [request for request in self.requests if request.path == path]

    def answer(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        with self.lock:
            self.requests.append(Received(path, headers, body))
            queued = self.statuses.get(path) or []
            status = queued.pop(0) if queued else 200
        if path == "/token" and status == 200:
            return 200, json.dumps({"access_token": TOKEN, "token_type": "Bearer", "expires_in": self.token_lifetime}).encode()
        return status, b"{}"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            headers = {name.lower(): value for name, value in self.headers.items()}
            status, reply = state.answer(self.path, headers, body)
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    http.daemon_threads = True
    state.url = f"http://127.0.0.1:{http.server_address[1]}"
    thread = threading.Thread(target=http.serve_forever, kwargs={"poll_interval": 0.05}, name="webhook-receiver", daemon=True)
    thread.start()
    yield state
    http.shutdown()
    http.server_close()
    thread.join(5)


@pytest.fixture
def mock(fresh_server: MockServer) -> MockServer:
    log = webhooks.deliveries(fresh_server)
    assert log.wait_idle(10)
    log.clear()
    return fresh_server


def hotlist(api: httpx.Client, plate: str = "ABC123", **fields: Any) -> str:
    entry = {"plate": plate, "reason": "Stolen vehicle", "caseNumber": "2025-0042", **fields}
    response = api.post("/hotlists", json={"name": "Stolen vehicles", "entries": [entry]})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def subscribe(api: httpx.Client, url: str, credentials: dict[str, Any] | None = None, **fields: Any) -> str:
    body = {"callbackUrl": url, "contentType": "application/json", "credentials": credentials or {"scheme": "none"}, **fields}
    response = api.post(SUBSCRIPTIONS, json=body)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def inject(mock: MockServer, plate: str = "ABC123", **fields: Any) -> dict[str, Any]:
    read = webhooks.inject_read(mock, "production", "demo-org", {"plate": plate, "deviceId": DEVICE, "networkId": NETWORK, **fields})
    assert webhooks.deliveries(mock).wait_idle(15)
    return read


def oauth2(**fields: Any) -> dict[str, Any]:
    settings = {
        "clientId": "flock-alerts",
        "clientSecret": "oauth-secret-1",
        "grantType": "client_credentials",
        "scope": "alerts:write",
        "customFields": {"audience": "https://receiver.example"},
        "headerName": "Authorization",
        **fields,
    }
    return {"scheme": "oauth2", "oauth2": settings}


def test_matching_read_is_delivered(mock: MockServer, api: httpx.Client, receiver: Receiver) -> None:
    hotlist(api)
    subscription_id = subscribe(api, receiver.url + "/alerts")
    read = inject(mock, plate=" abc123 ", timestamp="2025-05-01T10:00:00Z", state="California", latitude=33.77, longitude=-118.19)
    alerts = receiver.on("/alerts")
    assert len(alerts) == 1
    alert = alerts[0].json()
    assert alerts[0].headers["content-type"] == "application/json"
    assert alert["objectId"] == read["id"]
    assert alert["deviceExternalId"] == DEVICE
    assert alert["networkExternalId"] == NETWORK
    assert alert["eventTime"] == "2025-05-01T10:00:00Z"
    assert alert["deviceLat"] == 33.77
    assert alert["deviceLong"] == -118.19
    assert alert["ocr"]["label"] == "ABC123"
    assert alert["ocr"]["state"] == "california"
    assert alert["sources"] == [
        {"name": "Stolen vehicles", "reason": "Stolen vehicle", "caseNumber": "2025-0042", "customHotlistAudience": "organization"}
    ]
    records = webhooks.deliveries(mock).records(subscription_id=subscription_id)
    assert [(record["attempt"], record["statusCode"], record["outcome"]) for record in records] == [(1, 200, "delivered")]


def test_no_credentials_sends_no_authorization(mock: MockServer, api: httpx.Client, receiver: Receiver) -> None:
    hotlist(api)
    subscribe(api, receiver.url + "/alerts")
    inject(mock)
    assert "authorization" not in receiver.on("/alerts")[0].headers


def test_basic_credentials_are_sent(mock: MockServer, api: httpx.Client, receiver: Receiver) -> None:
    hotlist(api)
    basic = {"username": "flock", "password": "basic-secret-1", "headerName": "Authorization"}
    subscribe(api, receiver.url + "/alerts", {"scheme": "basic", "basic": basic})
    inject(mock)
    expected = "Basic " + base64.b64encode(b"flock:basic-secret-1").decode()
    assert receiver.on("/alerts")[0].headers["authorization"] == expected


def test_api_key_is_sent_in_header(mock: MockServer, api: httpx.Client, receiver: Receiver) -> None:
    hotlist(api)
    subscribe(api, receiver.url + "/alerts", {"scheme": "apiKey", "apiKey": {"key": "key-secret-1", "headerName": "X-Api-Key"}})
    inject(mock)
    headers = receiver.on("/alerts")[0].headers
    assert headers["x-api-key"] == "key-secret-1"
    assert "authorization" not in headers


def test_oauth2_token_is_fetched_and_sent(mock: MockServer, api: httpx.Client, receiver: Receiver) -> None:
    hotlist(api)
    subscribe(api, receiver.url + "/alerts", oauth2(tokenEndpoint=receiver.url + "/token"))
    inject(mock)
    token_requests = receiver.on("/token")
    assert len(token_requests) == 1
    form = token_requests[0].form()
    assert form == {
        "grant_type": "client_credentials",
        "client_id": "flock-alerts",
        "client_secret": "oauth-secret-1",
        "scope": "alerts:write",
        "audience": "https://receiver.example",
    }
    assert receiver.on("/alerts")[0].headers["authorization"] == f"Bearer {TOKEN}"


def test_oauth2_basic_token_scheme(mock: MockServer, api: httpx.Client, receiver: Receiver) -> None:
    hotlist(api)
    subscribe(api, receiver.url + "/alerts", oauth2(tokenEndpoint=receiver.url + "/token", tokenScheme="basic", clientSecret="s/cret"))
    inject(mock)
    token_request = receiver.on("/token")[0]
    assert token_request.headers["authorization"] == "Basic " + base64.b64encode(b"flock-alerts:s%2Fcret").decode()
    assert "client_secret" not in token_request.form()
    assert receiver.on("/alerts")[0].headers["authorization"] == f"Bearer {TOKEN}"


def test_oauth2_token_is_cached(mock: MockServer, api: httpx.Client, receiver: Receiver) -> None:
    hotlist(api)
    subscribe(api, receiver.url + "/alerts", oauth2(tokenEndpoint=receiver.url + "/token"))
    inject(mock)
    inject(mock)
    assert len(receiver.on("/alerts")) == 2
    assert len(receiver.on("/token")) == 1


def test_oauth2_expired_token_is_refetched(mock: MockServer, api: httpx.Client, receiver: Receiver) -> None:
    receiver.token_lifetime = 1
    hotlist(api)
    subscribe(api, receiver.url + "/alerts", oauth2(tokenEndpoint=receiver.url + "/token"))
    inject(mock)
    # A token is refreshed once 90% of its lifetime has passed.
    time.sleep(1.0)
    inject(mock)
    assert len(receiver.on("/token")) == 2


def test_oauth2_401_fetches_new_token(mock: MockServer, api: httpx.Client, receiver: Receiver) -> None:
    receiver.statuses["/alerts"] = [401]
    hotlist(api)
    subscription_id = subscribe(api, receiver.url + "/alerts", oauth2(tokenEndpoint=receiver.url + "/token"))
    inject(mock)
    assert len(receiver.on("/token")) == 2
    records = webhooks.deliveries(mock).records(subscription_id=subscription_id)
    assert [record["statusCode"] for record in records] == [401, 200]


def test_token_endpoint_failure_is_recorded(mock: MockServer, api: httpx.Client, receiver: Receiver) -> None:
    receiver.statuses["/token"] = [400]
    hotlist(api)
    subscription_id = subscribe(api, receiver.url + "/alerts", oauth2(tokenEndpoint=receiver.url + "/token"))
    inject(mock)
    first = webhooks.deliveries(mock).records(subscription_id=subscription_id)[0]
    assert first["statusCode"] is None
    assert "status 400" in first["error"]
    assert len(receiver.on("/alerts")) == 1


def test_failing_receiver_is_retried(mock: MockServer, api: httpx.Client, receiver: Receiver) -> None:
    receiver.statuses["/alerts"] = [503, 500]
    hotlist(api)
    subscription_id = subscribe(api, receiver.url + "/alerts")
    read = inject(mock)
    records = webhooks.deliveries(mock).records(subscription_id=subscription_id)
    assert [record["attempt"] for record in records] == [1, 2, 3]
    assert [record["statusCode"] for record in records] == [503, 500, 200]
    assert [record["outcome"] for record in records] == ["retrying", "retrying", "delivered"]
    assert {record["readId"] for record in records} == {read["id"]}
    assert len({record["deliveryId"] for record in records}) == 1
    assert len(receiver.on("/alerts")) == 3


def test_429_is_retried(mock: MockServer, api: httpx.Client, receiver: Receiver) -> None:
    receiver.statuses["/alerts"] = [429]
    hotlist(api)
    subscription_id = subscribe(api, receiver.url + "/alerts")
    inject(mock)
    records = webhooks.deliveries(mock).records(subscription_id=subscription_id)
    assert [record["statusCode"] for record in records] == [429, 200]


def test_client_error_is_not_retried(mock: MockServer, api: httpx.Client, receiver: Receiver) -> None:
    receiver.statuses["/alerts"] = [400]
    hotlist(api)
    subscription_id = subscribe(api, receiver.url + "/alerts")
    inject(mock)
    records = webhooks.deliveries(mock).records(subscription_id=subscription_id)
    assert [(record["statusCode"], record["outcome"]) for record in records] == [(400, "failed")]


def test_retries_stop_at_max_attempts(
    mock: MockServer, api: httpx.Client, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = webhooks.deliveries(mock)
    monkeypatch.setattr(log, "settings", webhooks.WebhookSettings(max_attempts=3, base_delay=0.01))
    receiver.statuses["/alerts"] = [500] * 10
    hotlist(api)
    subscription_id = subscribe(api, receiver.url + "/alerts")
    inject(mock)
    records = log.records(subscription_id=subscription_id)
    assert [record["outcome"] for record in records] == ["retrying", "retrying", "failed"]
    assert len(receiver.on("/alerts")) == 3


def test_unreachable_receiver_records_error(
    mock: MockServer, api: httpx.Client, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = webhooks.deliveries(mock)
    monkeypatch.setattr(log, "settings", webhooks.WebhookSettings(max_attempts=2, base_delay=0.01))
    hotlist(api)
    # Port 9 (discard) is closed on loopback, so the connection is refused.
    subscription_id = subscribe(api, "http://127.0.0.1:9/alerts")
    inject(mock)
    records = log.records(subscription_id=subscription_id)
    assert [record["outcome"] for record in records] == ["retrying", "failed"]
    assert records[0]["statusCode"] is None
    assert "ConnectError" in records[0]["error"]


def test_non_matching_plate_sends_nothing(mock: MockServer, api: httpx.Client, receiver: Receiver) -> None:
    hotlist(api)
    subscribe(api, receiver.url + "/alerts")
    read = inject(mock, plate="XYZ999")
    assert receiver.requests == []
    assert webhooks.deliveries(mock).records(read_id=read["id"]) == []


def test_plate_o_matches_zero(mock: MockServer, api: httpx.Client, receiver: Receiver) -> None:
    hotlist(api, plate="B0B1")
    subscribe(api, receiver.url + "/alerts")
    inject(mock, plate="bob1")
    assert len(receiver.on("/alerts")) == 1


def test_other_state_sends_nothing(mock: MockServer, api: httpx.Client, receiver: Receiver) -> None:
    hotlist(api, state="texas")
    subscribe(api, receiver.url + "/alerts")
    inject(mock, state="nevada")
    assert receiver.requests == []


def test_expired_entry_sends_nothing(mock: MockServer, api: httpx.Client, receiver: Receiver) -> None:
    hotlist(api, expiry="2025-01-01T00:00:00Z")
    subscribe(api, receiver.url + "/alerts")
    inject(mock, timestamp="2025-02-01T00:00:00Z")
    assert receiver.requests == []


def test_disabled_subscription_gets_nothing(mock: MockServer, api: httpx.Client, receiver: Receiver) -> None:
    hotlist(api)
    subscribe(api, receiver.url + "/alerts", enabled=False)
    inject(mock)
    assert receiver.requests == []


def test_deleted_subscription_gets_nothing(mock: MockServer, api: httpx.Client, receiver: Receiver) -> None:
    hotlist(api)
    subscription_id = subscribe(api, receiver.url + "/alerts")
    api.delete(f"{SUBSCRIPTIONS}/{subscription_id}")
    inject(mock)
    assert receiver.requests == []


def test_each_subscription_gets_alert(mock: MockServer, api: httpx.Client, receiver: Receiver) -> None:
    hotlist(api)
    subscribe(api, receiver.url + "/first")
    subscribe(api, receiver.url + "/second")
    inject(mock)
    assert len(receiver.on("/first")) == 1
    assert len(receiver.on("/second")) == 1


def test_restricted_hotlist_needs_any_filter(mock: MockServer, api: httpx.Client, receiver: Receiver) -> None:
    data = mock.store.org("production", "demo-org")
    add_hotlist(data, "Detective unit", [{"plate": "SECRET1", "reason": "Surveillance", "caseNumber": "D-7"}], audience="restricted")
    subscribe(api, receiver.url + "/organization")
    subscribe(api, receiver.url + "/any", customHotlistAudienceFilter="any")
    inject(mock, plate="SECRET1")
    assert receiver.on("/organization") == []
    assert len(receiver.on("/any")) == 1
    assert receiver.on("/any")[0].json()["sources"][0]["customHotlistAudience"] == "restricted"


def test_all_matching_hotlists_are_sources(mock: MockServer, api: httpx.Client, receiver: Receiver) -> None:
    hotlist(api)
    api.post("/hotlists", json={"name": "Warrants", "entries": [{"plate": "ABC123", "reason": "Warrant", "caseNumber": ""}]})
    subscribe(api, receiver.url + "/alerts")
    inject(mock)
    sources = receiver.on("/alerts")[0].json()["sources"]
    assert sorted(source["name"] for source in sources) == ["Stolen vehicles", "Warrants"]
    assert "caseNumber" not in next(source for source in sources if source["name"] == "Warrants")


def test_xml_subscription_gets_xml(mock: MockServer, api: httpx.Client, receiver: Receiver) -> None:
    hotlist(api)
    subscribe(api, receiver.url + "/alerts", contentType="application/xml")
    read = inject(mock)
    received = receiver.on("/alerts")[0]
    assert received.headers["content-type"] == "application/xml"
    root = ElementTree.fromstring(received.body)
    assert root.findtext("objectId") == read["id"]
    assert root.findtext("sources/source/name") == "Stolen vehicles"


def test_secrets_stay_out_of_records_and_logs(
    mock: MockServer, api: httpx.Client, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="mockflock")
    receiver.statuses["/alerts"] = [503]
    hotlist(api)
    subscription_id = subscribe(api, receiver.url + "/alerts", oauth2(tokenEndpoint=receiver.url + "/token"))
    inject(mock)
    recorded = json.dumps(webhooks.deliveries(mock).records(subscription_id=subscription_id))
    for secret in ("oauth-secret-1", TOKEN):
        assert secret not in recorded
        assert secret not in caplog.text


def test_inject_stores_read(mock: MockServer) -> None:
    read = inject(mock, plate="  new1 ")
    stored = mock.store.org("production", "demo-org").collection("reads")[read["id"]]
    assert stored["plate"] == "NEW1"
    assert stored["source"] == "injected"
    assert stored["timestamp"].endswith("Z")


def test_inject_without_device_is_rejected(mock: MockServer) -> None:
    with pytest.raises(webhooks.ApiError, match="deviceId"):
        webhooks.inject_read(mock, "production", "demo-org", {"plate": "ABC123"})


def test_admin_injects_and_lists(mock: MockServer, api: httpx.Client, receiver: Receiver) -> None:
    hotlist(api)
    subscription_id = subscribe(api, receiver.url + "/alerts")
    admin = mock.url("production") + "/_mockflock"
    response = httpx.post(admin + "/reads", json={"plate": "abc123", "deviceId": DEVICE, "networkId": NETWORK})
    assert response.status_code == 201
    read = response.json()
    assert read["plate"] == "ABC123"
    assert webhooks.deliveries(mock).wait_idle(15)
    listed = httpx.get(admin + "/webhooks/deliveries", params={"subscriptionId": subscription_id}).json()
    assert listed["pending"] == 0
    assert [record["readId"] for record in listed["deliveries"]] == [read["id"]]
    assert listed["deliveries"][0]["alert"]["objectId"] == read["id"]


def test_admin_lists_only_own_environment(mock: MockServer, api: httpx.Client, receiver: Receiver) -> None:
    hotlist(api)
    subscribe(api, receiver.url + "/alerts")
    inject(mock)
    listed = httpx.get(mock.url("development") + "/_mockflock/webhooks/deliveries").json()
    assert listed["deliveries"] == []


def test_admin_unknown_organization_is_400(mock: MockServer) -> None:
    response = httpx.post(
        mock.url("production") + "/_mockflock/reads",
        json={"organization": "nobody", "plate": "ABC123", "deviceId": DEVICE, "networkId": NETWORK},
    )
    assert response.status_code == 400
    assert "nobody" in response.json()["error_description"]


def test_admin_clears_deliveries(mock: MockServer, api: httpx.Client, receiver: Receiver) -> None:
    hotlist(api)
    subscribe(api, receiver.url + "/alerts")
    inject(mock)
    response = httpx.delete(mock.url("production") + "/_mockflock/webhooks/deliveries")
    assert response.status_code == 204
    assert webhooks.deliveries(mock).records() == []


def test_settings_reject_unknown_key() -> None:
    with pytest.raises(webhooks.ConfigError, match="retries"):
        webhooks.parse_settings({"retries": 3})


def test_settings_reject_zero_attempts() -> None:
    with pytest.raises(webhooks.ConfigError, match="max_attempts"):
        webhooks.parse_settings({"max_attempts": 0})


def test_settings_read_values() -> None:
    settings = webhooks.parse_settings({"max_attempts": 2, "base_delay": 1})
    assert settings.max_attempts == 2
    assert settings.base_delay == 1.0
    assert settings.history == 1000


def test_hyphenated_entry_matches_plain_read(mock: MockServer, api: httpx.Client, receiver: Receiver) -> None:
    hotlist(api, plate="HOOK-1")
    subscribe(api, receiver.url + "/alerts")
    inject(mock, plate="HOOK1")
    inject(mock, plate="hook 1")
    assert len(receiver.on("/alerts")) == 2


def test_injected_read_drops_spaces_and_hyphens(mock: MockServer) -> None:
    assert inject(mock, plate=" ab-12 3 ")["plate"] == "AB123"
    with pytest.raises(webhooks.ApiError, match="plate"):
        inject(mock, plate=" - ")


@dataclass
class RawReceiver:
    """A loopback TCP server whose every connection runs `reply(connection)` after reading the request head."""

    url: str
    stop: threading.Event


@pytest.fixture
def raw_receiver() -> Iterator[Callable[[Callable[[socket.socket], None]], RawReceiver]]:
    servers: list[tuple[socket.socket, threading.Event]] = []

    def start(reply: Callable[[socket.socket], None]) -> RawReceiver:
        listener = socket.create_server(("127.0.0.1", 0))
        listener.settimeout(0.1)
        stop = threading.Event()

        def serve() -> None:
            while not stop.is_set():
                try:
                    connection, _ = listener.accept()
                except OSError:
                    continue
                with connection:
                    head = b""
                    while b"\r\n\r\n" not in head and len(head) < 65536:
                        chunk = connection.recv(4096)
                        if not chunk:
                            break
                        head += chunk
                    try:
                        reply(connection)
                    except OSError:
                        pass

        threading.Thread(target=serve, name="raw-receiver", daemon=True).start()
        servers.append((listener, stop))
        return RawReceiver(f"http://127.0.0.1:{listener.getsockname()[1]}", stop)

    yield start
    for listener, stop in servers:
        stop.set()
        listener.close()


def test_trickling_receiver_hits_attempt_deadline(
    mock: MockServer, api: httpx.Client, raw_receiver: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = webhooks.deliveries(mock)
    monkeypatch.setattr(log, "settings", webhooks.WebhookSettings(max_attempts=1, timeout=0.5))

    def trickle(connection: socket.socket) -> None:
        connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
        for _ in range(2000):
            connection.sendall(b"x")
            time.sleep(0.05)

    target = raw_receiver(trickle)
    hotlist(api)
    subscription_id = subscribe(api, target.url + "/alerts")
    inject(mock)
    records = log.records(subscription_id=subscription_id)
    assert [record["outcome"] for record in records] == ["failed"]
    assert "timed out: no complete response within 0.5 s" in records[0]["error"]


def test_huge_token_response_is_not_read(
    mock: MockServer, api: httpx.Client, receiver: Receiver, raw_receiver: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = webhooks.deliveries(mock)
    monkeypatch.setattr(log, "settings", webhooks.WebhookSettings(max_attempts=1))

    def flood(connection: socket.socket) -> None:
        connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 209715200\r\n\r\n")
        block = b" " * 65536
        for _ in range(3200):
            connection.sendall(block)

    token_server = raw_receiver(flood)
    hotlist(api)
    subscription_id = subscribe(api, receiver.url + "/alerts", oauth2(tokenEndpoint=token_server.url + "/token"))
    inject(mock)
    records = log.records(subscription_id=subscription_id)
    assert "more than 65536 bytes" in records[0]["error"]
    assert receiver.on("/alerts") == []


def test_clearing_cancels_pending_retries(
    mock: MockServer, api: httpx.Client, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = webhooks.deliveries(mock)
    monkeypatch.setattr(log, "settings", webhooks.WebhookSettings(max_attempts=5, base_delay=30, max_delay=30))
    receiver.statuses["/alerts"] = [503] * 10
    hotlist(api)
    subscribe(api, receiver.url + "/alerts")
    webhooks.inject_read(mock, "production", "demo-org", {"plate": "ABC123", "deviceId": DEVICE, "networkId": NETWORK})
    for _ in range(200):
        if log.records():
            break
        time.sleep(0.05)
    assert [record["outcome"] for record in log.records()] == ["retrying"]
    mock.reset()
    assert log.wait_idle(10)
    assert log.records() == []
    assert len(receiver.on("/alerts")) == 1


def test_xml_alert_drops_forbidden_characters(mock: MockServer, api: httpx.Client, receiver: Receiver) -> None:
    hotlist(api)
    subscribe(api, receiver.url + "/alerts", contentType="application/xml")
    inject(mock, imageUrl="https://images.example/a\x00b\x01c\ud800.jpg")
    root = ElementTree.fromstring(receiver.on("/alerts")[0].body)
    assert root.findtext("imageUrl") == "https://images.example/abc.jpg"
