"""A small Flock API client, written the way an integrator would write one.

It is the example that mockflock's test harness checks; nothing in it
depends on mockflock. Two clients share one request pipeline:

- `MachineClient` uses the client credentials grant. It caches one token
  per client (so per environment), renews it shortly before it expires,
  and fetches a new one once after a 401.
- `UserSession` uses the authorization code flow with `state` and PKCE
  S256, refreshes with the refresh token and stores each rotated one.

Both wait the Retry-After time of a 429 or 503 (retrying a few times at
most, and honouring it on the next call too after giving up), and never
repeat a request rejected with 403. `clock` and `sleep` can be
replaced, so a test can run them on a mock's clock instead of waiting.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Self
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx

FLOCK_ENVIRONMENTS = {
    "production": ("https://api.flocksafety.com", "com.flocksafety.integrations"),
    "development": ("https://dev-api.flocksafety.com", "com.flocksafety.integrations.dev"),
}
# Renew a token when less than this share of its lifetime is left.
RENEW_REMAINING_SHARE = 0.1
MAX_WAITS = 3
DEFAULT_BACKOFF_SECONDS = 1.0


@dataclass(frozen=True)
class FlockSettings:
    """The base URL and audience of one Flock environment, and the app's credentials there."""

    base_url: str
    audience: str
    client_id: str
    client_secret: str
    scopes: tuple[str, ...] = ()
    redirect_uri: str | None = None

    @classmethod
    def for_environment(cls, environment: str, **app: Any) -> FlockSettings:
        base_url, audience = FLOCK_ENVIRONMENTS[environment]
        return cls(base_url=base_url, audience=audience, **app)

    @property
    def token_url(self) -> str:
        return self.base_url + "/oauth/token"

    @property
    def api_url(self) -> str:
        return self.base_url + "/api/v3"


class FlockError(Exception):
    """A request that Flock rejected, or that could not reach Flock."""

    def __init__(self, message: str, *, status: int | None = None, error: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.error = error

    @classmethod
    def from_response(cls, response: httpx.Response) -> FlockError:
        error, description = _error_of(response)
        return cls(
            f"{response.request.method} {response.request.url.path} failed with {response.status_code} "
            f"{error or ''}: {description or response.text[:200]}",
            status=response.status_code,
            error=error,
        )


@dataclass
class Token:
    value: str
    expires_at: float
    renew_at: float
    scopes: frozenset[str]


def _error_of(response: httpx.Response) -> tuple[str | None, str | None]:
    try:
        body = response.json()
    except ValueError:
        return None, None
    if not isinstance(body, dict):
        return None, None
    return body.get("error"), body.get("error_description")


def _wait_seconds(response: httpx.Response, attempt: int) -> float:
    value = response.headers.get("retry-after", "")
    try:
        return max(0.0, float(value))
    except ValueError:
        return DEFAULT_BACKOFF_SECONDS * 2**attempt


class _Pipeline:
    """The request pipeline both clients share: the HTTP client, the clock and the retry policy."""

    def __init__(self, settings: FlockSettings, *, http: httpx.Client | None = None,
                 clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep) -> None:
        self.settings = settings
        self._owns_http = http is None
        self.http = http or httpx.Client(timeout=10)
        self.clock = clock
        self.sleep = sleep
        self.lock = threading.Lock()
        self.token: Token | None = None
        # When the token endpoint and the API may be called again, from the
        # last Retry-After; a call that gave up still leaves it in force.
        self.not_before = {"token": 0.0, "api": 0.0}

    def close(self) -> None:
        """Close the HTTP client, unless the caller passed in its own."""
        if self._owns_http:
            self.http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """Send an API request with a valid token; return the parsed JSON body (None when empty)."""
        renewed = False
        attempt = 0
        while True:
            token = self.access_token()
            response = self._send(method, self.settings.api_url + path, token=token.value, **kwargs)
            error, _ = _error_of(response)
            if response.status_code == 401 and error == "invalid_token" and not renewed:
                renewed = True
                self.forget(token)
                continue
            if response.status_code in (429, 503):
                self.back_off("api", response, attempt)
                if attempt < MAX_WAITS:
                    attempt += 1
                    continue
            if response.is_error:
                raise FlockError.from_response(response)
            return response.json() if response.content else None

    def _send(self, method: str, url: str, *, token: str, **kwargs: Any) -> httpx.Response:
        self.wait_for("api")
        try:
            return self.http.request(method, url, headers={"Authorization": f"Bearer {token}"}, **kwargs)
        except httpx.HTTPError as exc:
            raise FlockError(f"{method} {url} failed: {exc}") from exc

    def back_off(self, endpoint: str, response: httpx.Response, attempt: int) -> None:
        """Remember how long `endpoint` asked the client to wait."""
        self.not_before[endpoint] = max(self.not_before[endpoint], self.clock() + _wait_seconds(response, attempt))

    def wait_for(self, endpoint: str) -> None:
        """Sleep until the last Retry-After of `endpoint` has passed."""
        delay = self.not_before[endpoint] - self.clock()
        if delay > 0:
            self.sleep(delay)

    def post_token_request(self, form: dict[str, str]) -> dict[str, Any]:
        """POST to the token endpoint with Basic client authentication; wait out 429 and 503."""
        auth = (self.settings.client_id, self.settings.client_secret)
        for attempt in range(MAX_WAITS + 1):
            self.wait_for("token")
            try:
                response = self.http.post(self.settings.token_url, data=form, auth=auth)
            except httpx.TransportError as exc:
                if attempt == MAX_WAITS:
                    raise FlockError(f"The token endpoint is unreachable: {exc}") from exc
                continue
            if response.status_code in (429, 503):
                self.back_off("token", response, attempt)
                if attempt < MAX_WAITS:
                    continue
            if response.is_error:
                raise FlockError.from_response(response)
            return response.json()
        raise FlockError("The token endpoint kept failing")

    def keep(self, body: dict[str, Any], requested: frozenset[str]) -> Token:
        now = self.clock()
        lifetime = float(body.get("expires_in", 0))
        granted = frozenset(body["scope"].split()) if isinstance(body.get("scope"), str) else requested
        self.token = Token(
            value=body["access_token"],
            expires_at=now + lifetime,
            renew_at=now + lifetime * (1 - RENEW_REMAINING_SHARE),
            scopes=granted,
        )
        return self.token

    def forget(self, token: Token) -> None:
        with self.lock:
            if self.token is token:
                self.token = None

    def access_token(self) -> Token:
        raise NotImplementedError


class MachineClient(_Pipeline):
    """A backend service's client: machine-level tokens from the client credentials grant."""

    def access_token(self) -> Token:
        with self.lock:
            if self.token is not None and self.clock() < self.token.renew_at:
                return self.token
            form = {"grant_type": "client_credentials", "audience": self.settings.audience}
            if self.settings.scopes:
                form["scope"] = " ".join(self.settings.scopes)
            return self.keep(self.post_token_request(form), frozenset(self.settings.scopes))

    def list_hotlists(self) -> list[dict[str, Any]]:
        return self.request("GET", "/hotlists")

    def create_hotlist(self, name: str, plates: list[str]) -> str:
        entries = [{"plate": plate, "reason": "stolen vehicle", "caseNumber": "CASE-1"} for plate in plates]
        return self.request("POST", "/hotlists", json={"name": name, "entries": entries})["id"]

    def list_devices(self) -> Any:
        return self.request("GET", "/devices")


class UserSession(_Pipeline):
    """An app acting for one Flock user: the authorization code flow with PKCE and refresh tokens."""

    def __init__(self, settings: FlockSettings, **kwargs: Any) -> None:
        super().__init__(settings, **kwargs)
        self.refresh_token: str | None = None
        self._pending: dict[str, str] = {}

    def authorization_url(self, *, login_hint: str | None = None) -> str:
        """Return the URL to send the user's browser to; remember its state and PKCE verifier."""
        state = secrets.token_urlsafe(24)
        verifier = secrets.token_urlsafe(48)
        self._pending[state] = verifier
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        params = {
            "response_type": "code",
            "client_id": self.settings.client_id,
            "redirect_uri": self.settings.redirect_uri,
            "scope": " ".join(self.settings.scopes),
            "state": state,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
        if login_hint:
            params["login_hint"] = login_hint
        return f"{self.settings.base_url}/authorize?{urlencode(params)}"

    def finish_login(self, redirect_url: str) -> None:
        """Handle the browser's return to the redirect URI: check state, exchange the code."""
        query = {name: values[0] for name, values in parse_qs(urlsplit(redirect_url).query).items()}
        verifier = self._pending.pop(query.get("state", ""), None)
        if verifier is None:
            raise FlockError("The redirect's state matches no login this app started; possible CSRF.")
        if "error" in query:
            raise FlockError(f"Login failed: {query['error']}: {query.get('error_description', '')}", error=query["error"])
        if query.get("iss") not in (None, self.settings.base_url):
            raise FlockError(f"The redirect comes from issuer {query['iss']!r}, not {self.settings.base_url!r}.")
        body = self.post_token_request({
            "grant_type": "authorization_code",
            "code": query["code"],
            "redirect_uri": self.settings.redirect_uri or "",
            "code_verifier": verifier,
        })
        with self.lock:
            self._store(body)

    def access_token(self) -> Token:
        with self.lock:
            if self.token is not None and self.clock() < self.token.renew_at:
                return self.token
            if self.refresh_token is None:
                raise FlockError("Not signed in: call authorization_url() and finish_login() first.")
            body = self.post_token_request({"grant_type": "refresh_token", "refresh_token": self.refresh_token})
            return self._store(body)

    def _store(self, body: dict[str, Any]) -> Token:
        # Flock rotates refresh tokens: the old one is dead once this response arrives.
        self.refresh_token = body.get("refresh_token", self.refresh_token)
        return self.keep(body, frozenset(self.settings.scopes))

    def search_reads(self, plate: str, *, start: str, end: str, reason: str) -> dict[str, Any]:
        body = {"plate": plate, "startDate": start, "endDate": end, "reason": reason}
        return self.request("POST", "/reads/search", json=body)

    def list_hotlists(self) -> list[dict[str, Any]]:
        return self.request("GET", "/hotlists")
