"""Complete the authorization code flow without a browser, for scripts and CI.

`sign_in` plays both the app and the person: it sends the user to
/authorize with PKCE and `login_hint`, takes the code from the redirect's
Location header (no callback server is needed), and exchanges it for
tokens. An app with auto-consent gets its code at once. For any other app,
`sign_in` fills in the login page's form with the user's password.

    from mockflock.userflow import sign_in
    tokens = sign_in("http://127.0.0.1:8080", client_id="demo-user-app",
                     client_secret="demo-user-secret", user="demo-investigator")
    tokens["access_token"], tokens["refresh_token"]
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx

from mockflock.errors import MockflockError

DEMO_REDIRECT_URI = "http://127.0.0.1:8400/callback"


class UserFlowError(MockflockError):
    """The flow stopped: `error` and `description` are what the server returned."""

    def __init__(self, error: str, description: str) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description


def pkce_pair() -> tuple[str, str]:
    """Return a new (code_verifier, S256 code_challenge) pair (RFC 7636 4.1, 4.2)."""
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def authorization_url(
    base_url: str, client_id: str, redirect_uri: str, **params: str | None
) -> str:
    """Return the /authorize URL for a code request; parameters that are None are left out."""
    query = {"response_type": "code", "client_id": client_id, "redirect_uri": redirect_uri}
    query.update({name: value for name, value in params.items() if value is not None})
    return f"{base_url.rstrip('/')}/authorize?{urlencode(query)}"


def sign_in(
    base_url: str,
    *,
    client_id: str,
    client_secret: str,
    user: str,
    password: str | None = None,
    redirect_uri: str = DEMO_REDIRECT_URI,
    scope: str | None = None,
    audience: str | None = None,
    http: httpx.Client | None = None,
) -> dict[str, Any]:
    """Sign in as `user`, approve the app and return the token response.

    Raises `UserFlowError` when /authorize redirects with an error, the
    login page rejects the password, or the token endpoint rejects the code.
    """
    client = http or httpx.Client(timeout=10)
    try:
        verifier, challenge = pkce_pair()
        state = secrets.token_urlsafe(16)
        url = authorization_url(
            base_url,
            client_id,
            redirect_uri,
            scope=scope,
            state=state,
            audience=audience,
            code_challenge=challenge,
            code_challenge_method="S256",
            login_hint=user,
        )
        response = client.get(url, follow_redirects=False)
        if response.status_code == 200 and password is not None:
            response = _approve_on_login_page(client, base_url, response.text, user, password)
        code = _code_from_redirect(response, state)
        token = client.post(
            f"{base_url.rstrip('/')}/oauth/token",
            data={
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": redirect_uri,
                "code_verifier": verifier,
                "client_id": client_id,
                "client_secret": client_secret,
            },
        )
        return _token_body(token)
    finally:
        if http is None:
            client.close()


def refresh(
    base_url: str,
    *,
    client_id: str,
    client_secret: str,
    refresh_token: str,
    scope: str | None = None,
    http: httpx.Client | None = None,
) -> dict[str, Any]:
    """Exchange a refresh token for new tokens; keep the returned refresh token, as the old one is now spent."""
    form = {
        "grant_type": "refresh_token",
        "refresh_token": refresh_token,
        "client_id": client_id,
        "client_secret": client_secret,
    }
    if scope is not None:
        form["scope"] = scope
    client = http or httpx.Client(timeout=10)
    try:
        return _token_body(client.post(f"{base_url.rstrip('/')}/oauth/token", data=form))
    finally:
        if http is None:
            client.close()


def _approve_on_login_page(
    client: httpx.Client, base_url: str, page: str, user: str, password: str
) -> httpx.Response:
    fields = _FormFields()
    fields.feed(page)
    if "authorization_id" not in fields.hidden:
        raise UserFlowError(
            "invalid_response", "/authorize returned a page without the login form."
        )
    form = {
        "authorization_id": fields.hidden["authorization_id"],
        "username": user,
        "password": password,
        "decision": "approve",
    }
    response = client.post(f"{base_url.rstrip('/')}/authorize", data=form, follow_redirects=False)
    if response.status_code == 401:
        raise UserFlowError(
            "access_denied", f"The login page rejected the password of user {user!r}."
        )
    return response


def _code_from_redirect(response: httpx.Response, state: str) -> str:
    location = response.headers.get("location")
    if response.status_code not in (302, 303) or not location:
        raise UserFlowError(
            "invalid_response",
            f"/authorize returned {response.status_code} instead of a redirect. Pass password= for an app "
            f"without auto-consent; an error page means the client_id or redirect_uri is wrong.",
        )
    query = {name: values[0] for name, values in parse_qs(urlsplit(location).query).items()}
    if query.get("state") != state:
        raise UserFlowError("invalid_state", "The redirect's state differs from the one sent.")
    if "error" in query:
        raise UserFlowError(query["error"], query.get("error_description", ""))
    if "code" not in query:
        raise UserFlowError("invalid_response", "The redirect carries neither a code nor an error.")
    return query["code"]


def _token_body(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    if response.status_code != 200:
        raise UserFlowError(str(body.get("error")), str(body.get("error_description")))
    return body


class _FormFields(HTMLParser):
    """Collects the hidden inputs of an HTML page."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "input" and values.get("type") == "hidden" and values.get("name"):
            self.hidden[str(values["name"])] = values.get("value") or ""
