"""Fixtures of the example client's tests: one HTTP client, and clients built for the mock."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from flock_client import FlockSettings, MachineClient, UserSession

from mockflock.control import Control
from mockflock.testing.checker import ClientTarget


@pytest.fixture(scope="session")
def http() -> Iterator[httpx.Client]:
    """One connection pool for every client, as a real app would share one."""
    with httpx.Client(timeout=10) as client:
        yield client


def settings_for(target: ClientTarget) -> FlockSettings:
    return FlockSettings(
        base_url=target.base_url, audience=target.audience, client_id=target.client_id,
        client_secret=target.client_secret, scopes=target.scopes, redirect_uri=target.redirect_uri,
    )


def demo_machine_client(control: Control, http: httpx.Client, environment: str = "production") -> MachineClient:
    """The example client for the demo configuration's hotlist app, on the mock's clock."""
    settings = FlockSettings(
        base_url=control.url(environment), audience=control.audience(environment),
        client_id="demo-hotlists", client_secret="demo-hotlists-secret", scopes=("custom-hotlists:read",),
    )
    return MachineClient(settings, http=http, clock=control.now, sleep=control.sleep)


def demo_user_session(control: Control, http: httpx.Client, user: str = "demo-investigator") -> UserSession:
    """The example session for the demo user app, signed in as `user` through the headless login."""
    settings = FlockSettings(
        base_url=control.url(), audience=control.audience(), client_id="demo-user-app",
        client_secret="demo-user-secret", scopes=("plate-reads:search",),
        redirect_uri="http://127.0.0.1:8400/callback",
    )
    session = UserSession(settings, http=http, clock=control.now, sleep=control.sleep)
    # The demo app has auto-consent, so login_hint gets the code without the login page.
    redirect = http.get(session.authorization_url(login_hint=user)).headers["location"]
    session.finish_login(redirect)
    return session
