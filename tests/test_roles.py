"""Roles and device networks: what a user token may do, and which reads it may see."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import yaml

from mockflock.config import load_config, parse_config
from mockflock.errors import ConfigError
from mockflock.seed import SEED_FILE
from mockflock.server import MockServer
from mockflock.userflow import sign_in

SEARCH = {"startDate": "2000-01-01T00:00:00Z", "endDate": "2100-01-01T00:00:00Z", "reason": "Test"}


@pytest.fixture(autouse=True)
def reset_mock(server: MockServer) -> Iterator[None]:
    server.reset()
    yield
    server.reset()


@pytest.fixture
def token_of(server: MockServer) -> Callable[[str], str]:
    def fetch(user: str) -> str:
        return sign_in(
            server.url("production"),
            client_id="demo-user-app",
            client_secret="demo-user-secret",
            user=user,
        )["access_token"]

    return fetch


def call(server: MockServer, method: str, path: str, token: str, **kwargs: Any) -> httpx.Response:
    return httpx.request(
        method,
        server.url("production") + "/api/v3" + path,
        headers={"Authorization": f"Bearer {token}"},
        **kwargs,
    )


def search_all(server: MockServer, token: str, plate: str, **fields: Any) -> list[dict[str, Any]]:
    body: dict[str, Any] = {**SEARCH, "plate": plate, **fields}
    results: list[dict[str, Any]] = []
    while True:
        response = call(server, "POST", "/reads/search", token, json=body)
        assert response.status_code == 200, response.text
        page = response.json()
        results.extend(page["results"])
        if "nextCursor" not in page:
            return results
        body["cursor"] = page["nextCursor"]


def networks_of(results: list[dict[str, Any]]) -> set[str]:
    return {read["device"]["network"]["id"] for read in results}


# Device networks


def test_search_sees_only_users_networks(
    server: MockServer, token_of: Callable[[str], str]
) -> None:
    results = search_all(server, token_of("demo-investigator"), "DEMO123")
    assert results
    assert networks_of(results) == {"net-downtown"}


def test_search_hides_other_networks_plate(
    server: MockServer, token_of: Callable[[str], str]
) -> None:
    assert search_all(server, token_of("demo-investigator"), "8HRB442") == []


def test_administrator_sees_every_network(
    server: MockServer, token_of: Callable[[str], str]
) -> None:
    results = search_all(server, token_of("demo-admin"), "DEMO123")
    assert networks_of(results) == {"net-downtown", "net-harbor", "net-airport"}
    assert len(search_all(server, token_of("demo-admin"), "8HRB442")) == 60


def test_search_of_forbidden_network_is_403(
    server: MockServer, token_of: Callable[[str], str]
) -> None:
    response = call(
        server,
        "POST",
        "/reads/search",
        token_of("demo-investigator"),
        json={**SEARCH, "plate": "8HRB442", "networkIds": ["net-harbor"]},
    )
    assert response.status_code == 403


def test_machine_token_refused_at_search(
    server: MockServer, machine_token: Callable[..., str]
) -> None:
    response = call(
        server,
        "POST",
        "/reads/search",
        machine_token("production"),
        json={**SEARCH, "plate": "DEMO123"},
    )
    body = response.json()
    assert response.status_code == 403
    assert body["error"] == "insufficient_token_level"
    assert body["api"] == "LPR Search API"
    assert body["required_token_levels"] == ["user"]


def test_network_change_applies_to_next_request(
    server: MockServer, token_of: Callable[[str], str]
) -> None:
    token = token_of("demo-investigator")
    server.environments["production"].users.set_networks("demo-investigator", ["net-harbor"])
    assert len(search_all(server, token, "8HRB442")) == 60


# Roles


def test_viewer_cannot_search(server: MockServer, token_of: Callable[[str], str]) -> None:
    response = call(
        server,
        "POST",
        "/reads/search",
        token_of("demo-viewer"),
        json={**SEARCH, "plate": "DEMO123"},
    )
    body = response.json()
    assert response.status_code == 403
    assert body["error"] == "insufficient_permissions"
    assert body["user"] == "demo-viewer"
    assert body["roles"] == ["viewer"]
    assert body["operation"] == "searchReads"
    assert body["permitting_roles"] == ["administrator", "investigator"]


def test_viewer_reads_but_cannot_write_hotlists(
    server: MockServer, token_of: Callable[[str], str]
) -> None:
    token = token_of("demo-viewer")
    listed = call(server, "GET", "/hotlists", token)
    created = call(server, "POST", "/hotlists", token, json={"name": "Viewer list", "entries": []})
    assert listed.status_code == 200
    assert created.status_code == 403
    assert created.json()["error"] == "insufficient_permissions"


def test_investigator_manages_hotlists(server: MockServer, token_of: Callable[[str], str]) -> None:
    response = call(
        server,
        "POST",
        "/hotlists",
        token_of("demo-investigator"),
        json={"name": "Investigator list", "entries": []},
    )
    assert response.status_code in (200, 201), response.text


def test_role_change_applies_to_next_request(
    server: MockServer, token_of: Callable[[str], str]
) -> None:
    token = token_of("demo-viewer")
    body = {**SEARCH, "plate": "DEMO123"}
    assert call(server, "POST", "/reads/search", token, json=body).status_code == 403
    promoted = httpx.put(
        server.url("production") + "/_mockflock/users/demo-viewer/roles",
        json={"roles": ["investigator"]},
    )
    allowed = call(server, "POST", "/reads/search", token, json=body)
    server.environments["production"].users.set_roles("demo-viewer", ["viewer"])
    demoted = call(server, "POST", "/reads/search", token, json=body)
    assert promoted.status_code == 200
    assert promoted.json()["roles"] == ["investigator"]
    assert allowed.status_code == 200
    assert demoted.status_code == 403


def test_user_without_roles_is_rejected(server: MockServer, token_of: Callable[[str], str]) -> None:
    token = token_of("demo-admin")
    server.environments["production"].users.set_roles("demo-admin", [])
    response = call(server, "GET", "/hotlists", token)
    assert response.status_code == 403
    assert "has no roles" in response.json()["error_description"]


def test_removed_user_token_is_401(server: MockServer, token_of: Callable[[str], str]) -> None:
    token = token_of("demo-viewer")
    server.environments["production"].users.remove("demo-viewer")
    response = call(server, "GET", "/hotlists", token)
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["www-authenticate"]


def test_machine_token_ignores_roles(server: MockServer, machine_token: Callable[..., str]) -> None:
    assert call(
        server,
        "POST",
        "/hotlists",
        machine_token("production"),
        json={"name": "Machine list", "entries": []},
    ).status_code in (200, 201)


# The admin API for users


def test_admin_lists_users_without_passwords(server: MockServer) -> None:
    body = httpx.get(server.url("production") + "/_mockflock/users").json()
    users = {user["id"]: user for user in body["users"]}
    assert users["demo-admin"]["networks"] == ["*"]
    assert users["demo-investigator"]["networks"] == ["net-downtown"]
    assert "password" not in users["demo-viewer"]
    assert "demo-viewer-password" not in str(body)


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/users/nobody/roles", {"roles": ["viewer"]}, 404),
        ("/users/demo-viewer/roles", {"roles": ["superuser"]}, 400),
        ("/users/demo-viewer/roles", {"roles": "viewer"}, 400),
        ("/users/demo-viewer/networks", {"networks": ["net-moon"]}, 400),
    ],
)
def test_admin_rejects_bad_changes(
    server: MockServer, path: str, body: dict[str, Any], status: int
) -> None:
    response = httpx.put(server.url("production") + "/_mockflock" + path, json=body)
    assert response.status_code == status
    assert response.json()["error_description"]


def test_admin_sets_networks(server: MockServer) -> None:
    response = httpx.put(
        server.url("production") + "/_mockflock/users/demo-viewer/networks",
        json={"networks": ["*"]},
    )
    assert response.json()["networks"] == ["*"]


def test_reset_restores_roles(server: MockServer) -> None:
    server.environments["production"].users.set_roles("demo-viewer", ["administrator"])
    server.reset()
    assert server.environments["production"].users.get("demo-viewer").roles == ("viewer",)


# Configuration


def test_demo_networks_match_seed() -> None:
    seed = yaml.safe_load(SEED_FILE.read_text(encoding="utf-8"))
    seeded = {
        network["id"]: network["name"] for network in seed["organizations"]["demo-org"]["networks"]
    }
    configured = {network.id: network.name for network in load_config().directory.networks.values()}
    assert configured == seeded


def test_roles_resolve_to_operations() -> None:
    roles = load_config().directory.roles
    assert roles["administrator"].operations is None
    assert roles["investigator"].permits("searchReads")
    assert roles["investigator"].permits("deleteHotlistEntries")
    assert not roles["viewer"].permits("createHotlist")
    assert roles["viewer"].permits("listDevices")


def config_with(**sections: Any) -> dict[str, Any]:
    return load_config().raw | sections


def test_configured_role_by_operation_id() -> None:
    config = parse_config(config_with(roles={"searcher": {"actions": ["searchReads"]}}))
    assert config.directory.roles["searcher"].operations == frozenset({"searchReads"})


@pytest.mark.parametrize(
    ("sections", "message"),
    [
        ({"roles": {"bad": {"actions": ["fly"]}}}, "neither a scope nor an operation id"),
        ({"roles": {"bad": {"actions": []}}}, "non-empty list 'actions'"),
        (
            {"users": {"u": {"password": "p", "organization": "demo-org", "roles": ["pilot"]}}},
            "unknown roles",
        ),
        (
            {
                "users": {
                    "u": {"password": "p", "organization": "demo-org", "networks": ["net-moon"]}
                }
            },
            "net-moon",
        ),
        ({"users": {"u": {"organization": "demo-org"}}}, "password"),
        ({"users": {"u": {"password": "p", "organization": "nowhere"}}}, "organization"),
        ({"networks": {"n": {"organization": "nowhere"}}}, "organization"),
        ({"users": ["demo-admin"]}, "mapping"),
    ],
)
def test_invalid_configuration(sections: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(config_with(**sections))


def test_network_of_other_organization_is_rejected() -> None:
    raw = config_with(
        organizations={"demo-org": {}, "other-org": {}},
        networks={"net-other": {"organization": "other-org"}},
        users={"u": {"password": "p", "organization": "demo-org", "networks": ["net-other"]}},
    )
    with pytest.raises(ConfigError, match="other-org"):
        parse_config(raw)
