"""DELIBERATELY BROKEN variants of the example client, one per violation rule.

Each variant changes one thing in `flock_client` the way real clients get
it wrong. `VARIANTS` pairs it with a short scenario that exposes the
mistake and the rule that must report it. These clients are wrong on
purpose: demo.py prints their reports, and mockflock's own tests check
that each one is caught by its rule. Do not copy them.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from flock_client import (  # noqa: E402
    FLOCK_ENVIRONMENTS,
    FlockError,
    FlockSettings,
    MachineClient,
    Token,
    UserSession,
)

from mockflock.control import Control  # noqa: E402
from mockflock.testing.checker import ClientTarget, SignInFailed  # noqa: E402

SEARCH = {"plate": "AB*", "start": "2024-01-01T00:00:00Z", "end": "2024-02-01T00:00:00Z", "reason": "case 42"}


# -- machine-level mistakes ------------------------------------------------------


class ProductionAudienceClient(MachineClient):
    """Asks every environment for production's audience."""

    def access_token(self) -> Token:
        with self.lock:
            if self.token is not None and self.clock() < self.token.renew_at:
                return self.token
            form = {"grant_type": "client_credentials", "audience": FLOCK_ENVIRONMENTS["production"][1]}
            return self.keep(self.post_token_request(form), frozenset())


class SharedCacheClient(MachineClient):
    """Keeps one token for the whole process, whatever the environment."""

    shared: Token | None = None

    def access_token(self) -> Token:
        if SharedCacheClient.shared is None:
            SharedCacheClient.shared = super().access_token()
        return SharedCacheClient.shared


class MachineSearchClient(MachineClient):
    """Calls the LPR Search API, which takes user tokens only, with its machine token."""

    def search_reads(self) -> Any:
        body = {"plate": SEARCH["plate"], "startDate": SEARCH["start"], "endDate": SEARCH["end"], "reason": SEARCH["reason"]}
        return self.request("POST", "/reads/search", json=body)


class GreedyScopesClient(MachineClient):
    """Asks for every hotlist and device scope, though it only lists hotlists."""

    def access_token(self) -> Token:
        with self.lock:
            if self.token is not None and self.clock() < self.token.renew_at:
                return self.token
            scopes = "custom-hotlists:read custom-hotlists:write devices:read devices:write"
            form = {"grant_type": "client_credentials", "audience": self.settings.audience, "scope": scopes}
            return self.keep(self.post_token_request(form), frozenset(scopes.split()))


class NoCacheClient(MachineClient):
    """Fetches a new token for every call."""

    def access_token(self) -> Token:
        form = {"grant_type": "client_credentials", "audience": self.settings.audience}
        return self.keep(self.post_token_request(form), frozenset())


class NoRetryClient(MachineClient):
    """Reports a 401 to the caller instead of fetching a new token and retrying."""

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._send(method, self.settings.api_url + path, token=self.access_token().value, **kwargs)
        if response.is_error:
            raise FlockError.from_response(response)
        return response.json()


class StaleTokenLoopClient(MachineClient):
    """Retries a 401 four times, with the same cached token each time."""

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        for _ in range(5):
            response = self._send(method, self.settings.api_url + path, token=self.access_token().value, **kwargs)
            if response.status_code != 401:
                break
        if response.is_error:
            raise FlockError.from_response(response)
        return response.json()


class Retry403Client(MachineClient):
    """Retries a 403 three times with a fresh token of the same scopes."""

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        for _ in range(4):
            response = self._send(method, self.settings.api_url + path, token=self.access_token().value, **kwargs)
            if response.status_code != 403:
                break
            self.token = None
        if response.is_error:
            raise FlockError.from_response(response)
        return response.json()


class ImpatientClient(MachineClient):
    """Retries a 429 at once, ignoring Retry-After."""

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        for _ in range(3):
            response = self._send(method, self.settings.api_url + path, token=self.access_token().value, **kwargs)
            if response.status_code != 429:
                break
        if response.is_error:
            raise FlockError.from_response(response)
        return response.json()


class BasicAndPostClient(MachineClient):
    """Sends the secret in a Basic header and again in the form body."""

    def post_token_request(self, form: dict[str, str]) -> dict[str, Any]:
        form = {**form, "client_id": self.settings.client_id, "client_secret": self.settings.client_secret}
        response = self.http.post(self.settings.token_url, data=form,
                                  auth=(self.settings.client_id, self.settings.client_secret))
        if response.is_error:
            raise FlockError.from_response(response)
        return response.json()


class SecretInUrlClient(MachineClient):
    """Puts the client credentials in the token URL's query string."""

    def post_token_request(self, form: dict[str, str]) -> dict[str, Any]:
        query = urlencode({"client_id": self.settings.client_id, "client_secret": self.settings.client_secret})
        response = self.http.post(f"{self.settings.token_url}?{query}", data=form)
        if response.is_error:
            raise FlockError.from_response(response)
        return response.json()


# -- user-level mistakes ---------------------------------------------------------


class ForgetfulRefreshSession(UserSession):
    """Keeps the first refresh token and ignores the rotated ones."""

    def _store(self, body: dict[str, Any]) -> Token:
        if self.refresh_token is None:
            self.refresh_token = body.get("refresh_token")
        return self.keep(body, frozenset(self.settings.scopes))


class _CustomLoginSession(UserSession):
    """Builds the authorization URL from `login_parameters`, for the variants below."""

    def login_parameters(self, state: str, verifier: str) -> dict[str, str]:
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        return {
            "response_type": "code", "client_id": self.settings.client_id, "redirect_uri": self.settings.redirect_uri or "",
            "scope": " ".join(self.settings.scopes), "state": state,
            "code_challenge": challenge, "code_challenge_method": "S256",
        }

    def authorization_url(self, *, login_hint: str | None = None) -> str:
        state, verifier = secrets.token_urlsafe(24), secrets.token_urlsafe(48)
        self._pending[state] = verifier
        params = self.login_parameters(state, verifier)
        if login_hint:
            params["login_hint"] = login_hint
        return f"{self.settings.base_url}/authorize?{urlencode(params)}"


class StatelessLoginSession(_CustomLoginSession):
    """Sends no state, so the app cannot distinguish a forged redirect from its own."""

    def login_parameters(self, state: str, verifier: str) -> dict[str, str]:
        params = super().login_parameters(state, verifier)
        del params["state"]
        self._pending[""] = self._pending.pop(state)
        return params


class NoPkceSession(_CustomLoginSession):
    """Sends no PKCE code challenge."""

    def login_parameters(self, state: str, verifier: str) -> dict[str, str]:
        params = super().login_parameters(state, verifier)
        del params["code_challenge"], params["code_challenge_method"]
        return params

    def finish_login(self, redirect_url: str) -> None:
        from urllib.parse import parse_qs, urlsplit

        query = {name: values[0] for name, values in parse_qs(urlsplit(redirect_url).query).items()}
        self._pending.pop(query.get("state", ""), None)
        body = self.post_token_request({
            "grant_type": "authorization_code", "code": query["code"], "redirect_uri": self.settings.redirect_uri or "",
        })
        with self.lock:
            self._store(body)


class WrongRedirectSession(_CustomLoginSession):
    """Sends a redirect_uri that the app never registered."""

    def login_parameters(self, state: str, verifier: str) -> dict[str, str]:
        return {**super().login_parameters(state, verifier), "redirect_uri": "http://localhost:9999/oauth/callback"}


# -- the variants and their scenarios ------------------------------------------------


@dataclass(frozen=True)
class BrokenVariant:
    """A broken client, the scenario that exposes it, and the rule and fix the report must contain."""

    name: str
    rule: str
    fix_mentions: str
    scenario: Callable[[Control], None]


def _machine(cls: type[MachineClient], control: Control, *, environment: str = "production",
             registered: tuple[str, ...] = ("custom-hotlists:read", "custom-hotlists:write"),
             requested: tuple[str, ...] = ()) -> MachineClient:
    target = ClientTarget.create(control, environment=environment, registered=registered, requested=requested)
    return cls(_settings(target), clock=target.clock, sleep=target.sleep)


def _session(cls: type[UserSession], control: Control, *requested: str) -> tuple[UserSession, ClientTarget]:
    target = ClientTarget.create(control, level="user", registered=("*",), requested=requested)
    return cls(_settings(target), clock=target.clock, sleep=target.sleep), target


def _settings(target: ClientTarget) -> FlockSettings:
    return FlockSettings(base_url=target.base_url, audience=target.audience, client_id=target.client_id,
                         client_secret=target.client_secret, scopes=target.scopes, redirect_uri=target.redirect_uri)


def _quietly(call: Callable[[], Any]) -> None:
    """Run one app operation; the broken client reporting an error is part of the demonstration."""
    try:
        call()
    except (FlockError, httpx.HTTPError, SignInFailed):
        pass


def _sign_in(session: UserSession, target: ClientTarget) -> None:
    _quietly(lambda: session.finish_login(target.sign_in(session.authorization_url(login_hint=target.user))))


def _wrong_audience(control: Control) -> None:
    with _machine(ProductionAudienceClient, control, environment="development") as client:
        _quietly(client.list_hotlists)


def _shared_cache(control: Control) -> None:
    SharedCacheClient.shared = None
    target = ClientTarget.create(control, environment="production", registered=("custom-hotlists:read",))
    control.register_app(target.client_id, secret=target.client_secret, scopes=["custom-hotlists:read"],
                         environments=["development"])
    for environment in ("production", "development"):
        settings = FlockSettings(base_url=control.url(environment), audience=control.audience(environment),
                                 client_id=target.client_id, client_secret=target.client_secret)
        with SharedCacheClient(settings, clock=control.now, sleep=control.sleep) as client:
            _quietly(client.list_hotlists)


def _machine_search(control: Control) -> None:
    with _machine(MachineSearchClient, control, registered=("*",)) as client:
        _quietly(client.search_reads)


def _greedy(control: Control) -> None:
    with _machine(GreedyScopesClient, control, registered=("*",)) as client:
        _quietly(client.list_hotlists)
        _quietly(client.list_hotlists)


def _unregistered_scope(control: Control) -> None:
    with _machine(MachineClient, control, requested=("custom-hotlists:read", "plate-reads:lookup")) as client:
        _quietly(client.list_hotlists)


def _no_cache(control: Control) -> None:
    with _machine(NoCacheClient, control) as client:
        for _ in range(3):
            control.begin_step("list hotlists")
            _quietly(client.list_hotlists)


def _no_retry(control: Control) -> None:
    with _machine(NoRetryClient, control) as client:
        _quietly(client.list_hotlists)
        control.revoke(client_id=client.settings.client_id)
        control.begin_step("list hotlists after revocation")
        _quietly(client.list_hotlists)


def _stale_loop(control: Control) -> None:
    with _machine(StaleTokenLoopClient, control) as client:
        _quietly(client.list_hotlists)
        control.rotate_keys(keep_old=False)
        control.begin_step("list hotlists after an emergency key rotation")
        _quietly(client.list_hotlists)


def _retry_403(control: Control) -> None:
    with _machine(Retry403Client, control, registered=("custom-hotlists:read",)) as client:
        _quietly(client.list_devices)


def _impatient(control: Control) -> None:
    with _machine(ImpatientClient, control) as client:
        control.inject_fault("rate_limit", target="api", retry_after=5)
        _quietly(client.list_hotlists)


def _basic_and_post(control: Control) -> None:
    with _machine(BasicAndPostClient, control) as client:
        _quietly(client.list_hotlists)


def _secret_in_url(control: Control) -> None:
    with _machine(SecretInUrlClient, control) as client:
        _quietly(client.list_hotlists)


def _forgetful_refresh(control: Control) -> None:
    session, target = _session(ForgetfulRefreshSession, control, "custom-hotlists:read")
    with session:
        _sign_in(session, target)
        lifetime = control.environment().config.lifetimes.user_access
        for _ in range(2):
            control.advance_clock(lifetime + 1)
            control.begin_step("list hotlists")
            _quietly(session.list_hotlists)


def _login_variant(cls: type[UserSession]) -> Callable[[Control], None]:
    def scenario(control: Control) -> None:
        session, target = _session(cls, control, "plate-reads:search")
        with session:
            _sign_in(session, target)
            _quietly(lambda: session.search_reads(
                SEARCH["plate"], start=SEARCH["start"], end=SEARCH["end"], reason=SEARCH["reason"]))

    return scenario


VARIANTS = [
    BrokenVariant("production audience everywhere", "wrong-audience", "audience=com.flocksafety.integrations.dev", _wrong_audience),
    BrokenVariant("one token cache for both environments", "cross-environment-token", "one token cache per environment", _shared_cache),
    BrokenVariant("machine token on the LPR Search API", "wrong-token-level", "user-level token", _machine_search),
    BrokenVariant("every scope requested", "scope-not-needed", "scope=custom-hotlists:read", _greedy),
    BrokenVariant("unregistered scope requested", "scope-not-registered", "Leave plate-reads:lookup out", _unregistered_scope),
    BrokenVariant("no token cache", "token-refetched-while-valid", "Cache the token", _no_cache),
    BrokenVariant("no retry after 401", "no-retry-after-401", "retry the request once", _no_retry),
    BrokenVariant("401 retry loop with a stale token", "repeated-retry-after-401", "retry once", _stale_loop),
    BrokenVariant("retries after 403", "retry-after-403", "Treat 403 as final", _retry_403),
    BrokenVariant("Retry-After ignored", "retry-after-ignored", "Wait at least the Retry-After time", _impatient),
    BrokenVariant("secret in header and body", "credentials-in-two-places", "one client authentication method", _basic_and_post),
    BrokenVariant("secret in the token URL", "secret-in-url", "never in the query string", _secret_in_url),
    BrokenVariant("rotated refresh token not stored", "refresh-token-reused", "Store the refresh_token", _forgetful_refresh),
    BrokenVariant("login without state", "authorize-without-state", "Send a fresh, unguessable state", _login_variant(StatelessLoginSession)),
    BrokenVariant("login without PKCE", "authorize-without-pkce-s256", "code_challenge_method=S256", _login_variant(NoPkceSession)),
    BrokenVariant("unregistered redirect_uri", "unregistered-redirect-uri", "registered redirect URIs", _login_variant(WrongRedirectSession)),
]
