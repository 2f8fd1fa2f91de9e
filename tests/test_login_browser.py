"""The login and consent page in headless Chromium, with JavaScript turned off.

Uses Debian's `chromium` at /usr/bin/chromium through Playwright (never a
browser that Playwright downloads). Without Chromium or Playwright the
tests are skipped, except under CI=true, where they fail.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from mockflock.server import MockServer
from mockflock.userflow import authorization_url, pkce_pair

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
APP = "demo-user-app"
SECRET = "demo-user-secret"


def unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; CI must run the browser tests")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable(
            "Playwright is not installed: pip install playwright (never run `playwright install`)"
        )
    if shutil.which(CHROMIUM) is None:
        unavailable(f"{CHROMIUM} is missing: apt-get install -y chromium")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        yield chromium
        chromium.close()


class Callback(BaseHTTPRequestHandler):
    """The app's redirect URI: records each request's query and shows a plain page."""

    queries: list[dict[str, str]]

    def do_GET(self) -> None:  # noqa: N802 (the name http.server requires)
        url = urlsplit(self.path)
        if url.path != "/callback":
            # The browser also requests /favicon.ico.
            self.send_error(404)
            return
        self.queries.append({name: values[0] for name, values in parse_qs(url.query).items()})
        body = b"callback reached"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def callback(server: MockServer) -> Iterator[tuple[str, list[dict[str, str]]]]:
    """A callback server on a free loopback port, registered as the demo app's only redirect URI."""
    queries: list[dict[str, str]] = []
    handler = type("RecordingCallback", (Callback,), {"queries": queries})
    httpd = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    redirect_uri = f"http://127.0.0.1:{httpd.server_port}/callback"
    server.reset()
    server.environments["production"].clients.update(APP, redirect_uris=(redirect_uri,))
    yield redirect_uri, queries
    httpd.shutdown()
    httpd.server_close()
    server.reset()


def open_login_page(
    browser: Any, server: MockServer, redirect_uri: str, challenge: str | None = None
) -> Any:
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    url = authorization_url(
        server.url("production"),
        APP,
        redirect_uri,
        state="browser-state",
        scope="plate-reads:search",
        code_challenge=challenge,
        code_challenge_method="S256" if challenge else None,
    )
    page.goto(url)
    return page


def test_approve_in_browser(
    browser: Any, server: MockServer, callback: tuple[str, list[dict[str, str]]]
) -> None:
    redirect_uri, queries = callback
    verifier, challenge = pkce_pair()
    page = open_login_page(browser, server, redirect_uri, challenge)
    assert "Demo user app" in page.content()
    assert "plate-reads:search" in page.inner_text("#scopes")

    page.select_option("#username", "demo-investigator")
    page.fill("#password", "demo-investigator-password")
    page.click("button[value=approve]")
    page.wait_for_url(redirect_uri + "?*")

    assert page.inner_text("body") == "callback reached"
    assert queries[-1]["state"] == "browser-state"
    token = httpx.post(
        server.url("production") + "/oauth/token",
        data={
            "grant_type": "authorization_code",
            "code": queries[-1]["code"],
            "redirect_uri": redirect_uri,
            "code_verifier": verifier,
        },
        auth=(APP, SECRET),
    )
    assert token.status_code == 200, token.text
    assert token.json()["scope"] == "plate-reads:search"


def test_deny_in_browser(
    browser: Any, server: MockServer, callback: tuple[str, list[dict[str, str]]]
) -> None:
    redirect_uri, queries = callback
    page = open_login_page(browser, server, redirect_uri)
    page.click("button[value=deny]")
    page.wait_for_url(redirect_uri + "?*")
    assert queries[-1]["error"] == "access_denied"
    assert queries[-1]["state"] == "browser-state"
    assert "code" not in queries[-1]


def test_wrong_password_in_browser(
    browser: Any, server: MockServer, callback: tuple[str, list[dict[str, str]]]
) -> None:
    redirect_uri, queries = callback
    page = open_login_page(browser, server, redirect_uri)
    page.select_option("#username", "demo-viewer")
    page.fill("#password", "not-the-password")
    page.click("button[value=approve]")
    assert "Wrong user or password" in page.inner_text("[role=alert]")
    assert queries == []

    page.fill("#password", "demo-viewer-password")
    page.click("button[value=approve]")
    page.wait_for_url(redirect_uri + "?*")
    assert "code" in queries[-1]


def test_redirect_mismatch_in_browser(
    browser: Any, server: MockServer, callback: tuple[str, list[dict[str, str]]]
) -> None:
    _, queries = callback
    page = open_login_page(browser, server, "http://127.0.0.1:9/elsewhere")
    assert page.inner_text("h1") == "Redirect URI mismatch"
    assert queries == []
