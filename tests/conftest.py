"""Shared fixtures: one mock server on free loopback ports for the session."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import pytest
import yaml

from mockflock.config import DEMO_CONFIG, MockConfig, parse_config
from mockflock.server import MockServer, ServerOptions

AUDIENCES = {"production": "com.flocksafety.integrations", "development": "com.flocksafety.integrations.dev"}
DEMO_SECRETS = {"demo-machine": "demo-machine-secret", "demo-hotlists": "demo-hotlists-secret"}


def demo_config_without_quotas() -> MockConfig:
    """The demo configuration with quotas off, so fast test loops are never throttled."""
    raw = yaml.safe_load(DEMO_CONFIG.read_text(encoding="utf-8"))
    raw["quotas"] = {**(raw.get("quotas") or {}), "enabled": False}
    return parse_config(raw, source="the demo configuration without quotas")


@pytest.fixture(scope="session")
def server() -> Iterator[MockServer]:
    options = ServerOptions(ports={"production": 0, "development": 0})
    mock = MockServer(demo_config_without_quotas(), options).start()
    yield mock
    mock.stop()


@pytest.fixture
def fresh_server(server: MockServer) -> MockServer:
    """The session's server, reset to its state at start."""
    server.reset()
    return server


@pytest.fixture(scope="session")
def machine_token(server: MockServer) -> Callable[..., str]:
    """Fetch a machine token over HTTP: machine_token("production", scope=None, client_id="demo-machine")."""

    def fetch(environment: str = "production", *, scope: str | None = None, client_id: str = "demo-machine") -> str:
        form = {
            "grant_type": "client_credentials",
            "client_id": client_id,
            "client_secret": DEMO_SECRETS[client_id],
            "audience": AUDIENCES[environment],
        }
        if scope is not None:
            form["scope"] = scope
        response = httpx.post(server.url(environment) + "/oauth/token", data=form)
        assert response.status_code == 200, response.text
        return response.json()["access_token"]

    return fetch


@pytest.fixture
def api(server: MockServer, machine_token: Callable[..., str]) -> Iterator[httpx.Client]:
    """An httpx client for production's /api/v3 with a demo-machine token."""
    headers = {"Authorization": f"Bearer {machine_token('production')}"}
    with httpx.Client(base_url=server.url("production") + "/api/v3", headers=headers) as client:
        yield client
