"""Hotlist Alerts Subscription API over HTTP with a machine token."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from mockflock import webhooks
from mockflock.server import MockServer

PATH = "/integrations/lpr/alerts/subscriptions"
UNKNOWN_ID = "00000000-0000-4000-8000-000000000000"
API_KEY = {"scheme": "apiKey", "apiKey": {"key": "key-secret-1", "headerName": "X-Api-Key"}}
BASIC = {"scheme": "basic", "basic": {"username": "flock", "password": "basic-secret-1", "headerName": "Authorization"}}
OAUTH2 = {
    "scheme": "oauth2",
    "oauth2": {
        "tokenEndpoint": "https://auth.example.com/oauth/token",
        "clientId": "flock-alerts",
        "clientSecret": "oauth-secret-1",
        "grantType": "client_credentials",
        "scope": "alerts:write",
        "customFields": {"audience": "https://alerts.example.com"},
        "headerName": "Authorization",
    },
}


def body(url: str = "https://alerts.example.com/flock", credentials: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    return {
        "callbackUrl": url,
        "contentType": "application/json",
        "credentials": credentials or {"scheme": "none"},
        **fields,
    }


def stored(server: MockServer, subscription_id: str) -> dict[str, Any]:
    data = server.store.org("production", "demo-org")
    return data.collection(webhooks.SUBSCRIPTIONS)[subscription_id]


@pytest.fixture
def client(fresh_server: MockServer, api: httpx.Client) -> httpx.Client:
    return api


def test_create_returns_subscription(client: httpx.Client) -> None:
    response = client.post(PATH, json=body(name="Dispatch"))
    assert response.status_code == 201
    created = response.json()
    assert uuid.UUID(created["id"])
    assert created["name"] == "Dispatch"
    assert created["callbackUrl"] == "https://alerts.example.com/flock"
    assert created["credentials"] == {"scheme": "none"}
    assert created["createdAt"] == created["updatedAt"]


def test_create_fills_defaults(client: httpx.Client) -> None:
    created = client.post(PATH, json=body()).json()
    assert created["customHotlistAudienceFilter"] == "organization"
    assert created["enabledFirstResponderJurisdictionAlerts"] is False
    assert created["enabled"] is True
    assert "name" not in created


def test_create_redacts_api_key(client: httpx.Client) -> None:
    created = client.post(PATH, json=body(credentials=API_KEY)).json()
    assert created["credentials"] == {"scheme": "apiKey", "apiKey": {"key": "********", "headerName": "X-Api-Key"}}


def test_create_redacts_basic_password(client: httpx.Client) -> None:
    created = client.post(PATH, json=body(credentials=BASIC)).json()
    assert created["credentials"]["basic"]["password"] == "********"
    assert created["credentials"]["basic"]["username"] == "flock"


def test_create_redacts_oauth2_secrets(client: httpx.Client) -> None:
    created = client.post(PATH, json=body(credentials=OAUTH2)).json()
    oauth2 = created["credentials"]["oauth2"]
    assert oauth2["clientSecret"] == "********"
    assert oauth2["customFields"] == {"audience": "********"}
    assert oauth2["clientId"] == "flock-alerts"
    assert oauth2["tokenScheme"] == "body"


def test_secrets_are_stored_unredacted(server: MockServer, client: httpx.Client) -> None:
    created = client.post(PATH, json=body(credentials=OAUTH2)).json()
    oauth2 = stored(server, created["id"])["credentials"]["oauth2"]
    assert oauth2["clientSecret"] == "oauth-secret-1"
    assert oauth2["customFields"] == {"audience": "https://alerts.example.com"}


def test_create_keeps_only_named_scheme(server: MockServer, client: httpx.Client) -> None:
    credentials = {"scheme": "none", "basic": BASIC["basic"]}
    created = client.post(PATH, json=body(credentials=credentials)).json()
    assert created["credentials"] == {"scheme": "none"}
    assert stored(server, created["id"])["credentials"] == {"scheme": "none"}


def test_list_shows_created(client: httpx.Client) -> None:
    first = client.post(PATH, json=body("https://a.example.com/hook")).json()
    second = client.post(PATH, json=body("https://b.example.com/hook", credentials=API_KEY)).json()
    response = client.get(PATH)
    assert response.status_code == 200
    assert response.json() == [first, second]


def test_get_returns_redacted(client: httpx.Client) -> None:
    created = client.post(PATH, json=body(credentials=BASIC)).json()
    response = client.get(f"{PATH}/{created['id']}")
    assert response.status_code == 200
    assert response.json() == created


def test_update_replaces_fields(client: httpx.Client) -> None:
    created = client.post(PATH, json=body(name="Old")).json()
    update = body("https://new.example.com/hook", credentials=API_KEY, id=created["id"], enabled=False,
                  customHotlistAudienceFilter="any")
    response = client.put(PATH, json=update)
    assert response.status_code == 200
    updated = response.json()
    assert updated["callbackUrl"] == "https://new.example.com/hook"
    assert updated["enabled"] is False
    assert updated["customHotlistAudienceFilter"] == "any"
    assert updated["credentials"]["apiKey"]["key"] == "********"
    assert "name" not in updated
    assert updated["createdAt"] == created["createdAt"]
    assert client.get(f"{PATH}/{created['id']}").json() == updated


def test_update_moves_updated_at(server: MockServer, client: httpx.Client) -> None:
    created = client.post(PATH, json=body()).json()
    server.clock.advance(60)
    updated = client.put(PATH, json=body(id=created["id"], name="Later")).json()
    assert updated["updatedAt"] > created["updatedAt"]


def test_update_with_redacted_secret_keeps_it(server: MockServer, client: httpx.Client) -> None:
    created = client.post(PATH, json=body(credentials=OAUTH2)).json()
    read_back = client.get(f"{PATH}/{created['id']}").json()
    read_back.pop("createdAt")
    read_back.pop("updatedAt")
    read_back["name"] = "Renamed"
    response = client.put(PATH, json=read_back)
    assert response.status_code == 200
    oauth2 = stored(server, created["id"])["credentials"]["oauth2"]
    assert oauth2["clientSecret"] == "oauth-secret-1"
    assert oauth2["customFields"] == {"audience": "https://alerts.example.com"}


def test_redacted_secret_for_new_scheme_is_kept(server: MockServer, client: httpx.Client) -> None:
    created = client.post(PATH, json=body(credentials=API_KEY)).json()
    basic = {"scheme": "basic", "basic": {"username": "u", "password": "********", "headerName": "Authorization"}}
    response = client.put(PATH, json=body(credentials=basic, id=created["id"]))
    assert response.status_code == 200
    assert stored(server, created["id"])["credentials"]["basic"]["password"] == "********"


def test_update_unknown_id_is_404(client: httpx.Client) -> None:
    response = client.put(PATH, json=body(id=UNKNOWN_ID))
    assert response.status_code == 404
    assert UNKNOWN_ID in response.json()["error_description"]


def test_update_without_id_is_400(client: httpx.Client) -> None:
    response = client.put(PATH, json=body())
    assert response.status_code == 400
    assert response.json()["field"] == "id"


def test_delete_removes_subscription(client: httpx.Client) -> None:
    created = client.post(PATH, json=body()).json()
    response = client.delete(f"{PATH}/{created['id']}")
    assert response.status_code == 204
    assert client.get(f"{PATH}/{created['id']}").status_code == 404
    assert client.get(PATH).json() == []


@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_unknown_id_is_404(client: httpx.Client, method: str) -> None:
    response = client.request(method, f"{PATH}/{UNKNOWN_ID}")
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"
    assert UNKNOWN_ID in response.json()["error_description"]


def test_same_callback_url_is_409(client: httpx.Client) -> None:
    first = client.post(PATH, json=body()).json()
    response = client.post(PATH, json=body(credentials=API_KEY))
    assert response.status_code == 409
    assert response.json()["error"] == "conflict"
    assert response.json()["subscriptionId"] == first["id"]
    assert "callbackUrl" in response.json()["error_description"]


def test_update_onto_other_url_is_409(client: httpx.Client) -> None:
    client.post(PATH, json=body("https://a.example.com/hook"))
    second = client.post(PATH, json=body("https://b.example.com/hook")).json()
    response = client.put(PATH, json=body("https://a.example.com/hook", id=second["id"]))
    assert response.status_code == 409


def test_update_keeping_own_url_succeeds(client: httpx.Client) -> None:
    created = client.post(PATH, json=body()).json()
    response = client.put(PATH, json=body(id=created["id"], name="Same URL"))
    assert response.status_code == 200


def test_same_url_in_other_environment_succeeds(
    server: MockServer, client: httpx.Client, machine_token: Callable[..., str]
) -> None:
    client.post(PATH, json=body())
    headers = {"Authorization": f"Bearer {machine_token('development')}"}
    with httpx.Client(base_url=server.url("development") + "/api/v3", headers=headers) as dev:
        response = dev.post(PATH, json=body())
    assert response.status_code == 201


def test_missing_scheme_settings_names_field(client: httpx.Client) -> None:
    response = client.post(PATH, json=body(credentials={"scheme": "apiKey"}))
    assert response.status_code == 400
    assert response.json()["field"] == "credentials.apiKey"


def test_missing_oauth2_client_id_names_field(client: httpx.Client) -> None:
    oauth2 = {key: value for key, value in OAUTH2["oauth2"].items() if key != "clientId"}
    response = client.post(PATH, json=body(credentials={"scheme": "oauth2", "oauth2": oauth2}))
    assert response.status_code == 400
    assert response.json()["field"] == "credentials.oauth2.clientId"


@pytest.mark.parametrize("url", ["not a url", "ftp://files.example.com/x", "/relative/path", "https:///no-host"])
def test_invalid_callback_url_is_400(client: httpx.Client, url: str) -> None:
    response = client.post(PATH, json=body(url))
    assert response.status_code == 400
    assert response.json()["field"] == "callbackUrl"


def test_invalid_token_endpoint_is_400(client: httpx.Client) -> None:
    credentials = {"scheme": "oauth2", "oauth2": {**OAUTH2["oauth2"], "tokenEndpoint": "auth.example.com"}}
    response = client.post(PATH, json=body(credentials=credentials))
    assert response.status_code == 400
    assert response.json()["field"] == "credentials.oauth2.tokenEndpoint"


def test_unknown_content_type_is_400(client: httpx.Client) -> None:
    response = client.post(PATH, json={**body(), "contentType": "text/plain"})
    assert response.status_code == 400
    assert response.json()["field"] == "contentType"


def test_unknown_field_is_400(client: httpx.Client) -> None:
    response = client.post(PATH, json={**body(), "secret": "x"})
    assert response.status_code == 400


def test_hotlist_only_token_is_403(server: MockServer, machine_token: Callable[..., str]) -> None:
    headers = {"Authorization": f"Bearer {machine_token(client_id='demo-hotlists')}"}
    with httpx.Client(base_url=server.url("production") + "/api/v3", headers=headers) as hotlists_app:
        response = hotlists_app.get(PATH)
    assert response.status_code == 403
