"""Registered apps and client authentication at the token endpoint.

RFC 6749 2.3.1 allows the secret in an HTTP Basic header
(client_secret_basic) or in the form body (client_secret_post). A request
must use one method: both at once is `invalid_request`.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import threading
from dataclasses import dataclass, replace
from urllib.parse import unquote_plus

from starlette.datastructures import Headers

from mockflock.config import AppConfig
from mockflock.errors import InvalidClient, InvalidRequest

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClientAuthentication:
    """The outcome of client authentication: the app and the method it used."""

    app: AppConfig
    method: str  # "client_secret_basic" or "client_secret_post"


class ClientRegistry:
    """The apps registered in one environment; the admin API may add more."""

    def __init__(self, environment: str, apps: dict[str, AppConfig]) -> None:
        self.environment = environment
        self._initial = {cid: app for cid, app in apps.items() if environment in app.environments}
        self._apps = dict(self._initial)
        self._lock = threading.Lock()

    def get(self, client_id: str) -> AppConfig | None:
        return self._apps.get(client_id)

    def all(self) -> list[AppConfig]:
        return list(self._apps.values())

    def register(self, app: AppConfig) -> None:
        with self._lock:
            self._apps[app.client_id] = app

    def update(self, client_id: str, **changes: object) -> AppConfig:
        with self._lock:
            app = replace(self._apps[client_id], **changes)
            self._apps[client_id] = app
        return app

    def reset(self) -> None:
        with self._lock:
            self._apps = dict(self._initial)

    def authenticate(self, params: dict[str, str], headers: Headers) -> ClientAuthentication:
        """Check the client's credentials and return who it is, or raise."""
        basic = _parse_basic(headers.get("authorization"))
        if basic is not None:
            client_id, secret = basic
            if "client_secret" in params:
                raise InvalidRequest(
                    "The request sends the client secret twice: in the Authorization header and in the "
                    "body. Use one method, client_secret_basic or client_secret_post (RFC 6749 2.3.1)."
                )
            if params.get("client_id", client_id) != client_id:
                raise InvalidRequest(
                    f"client_id={params['client_id']!r} in the body differs from {client_id!r} in the "
                    f"Authorization header; send one client id."
                )
            return ClientAuthentication(self._check(client_id, secret, basic_auth=True), "client_secret_basic")

        client_id = params.get("client_id")
        secret = params.get("client_secret")
        if not client_id:
            raise InvalidClient(
                "No client credentials: send client_id and client_secret in the form body, "
                "or an Authorization: Basic header."
            )
        if secret is None:
            raise InvalidClient(f"client_secret is missing for client_id={client_id!r}; send the app's secret.")
        return ClientAuthentication(self._check(client_id, secret, basic_auth=False), "client_secret_post")

    def _check(self, client_id: str, secret: str, *, basic_auth: bool) -> AppConfig:
        headers = {"WWW-Authenticate": 'Basic realm="flock"'} if basic_auth else {}
        app = self._apps.get(client_id)
        if app is None:
            raise InvalidClient(
                f"client_id={client_id!r} is not registered in the {self.environment} environment. "
                f"Check the client id, and that the app is registered for {self.environment}.",
                headers=headers,
                reason="unknown_client",
            )
        if not hmac.compare_digest(app.secret.encode(), secret.encode()):
            raise InvalidClient(
                f"The client secret is wrong for client_id={client_id!r} in the {self.environment} environment. "
                f"Use the secret issued with this app for {self.environment}.",
                headers=headers,
                reason="wrong_secret",
            )
        return app


def _parse_basic(header: str | None) -> tuple[str, str] | None:
    """Return (client_id, secret) from a Basic header, or None when there is none."""
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        raise InvalidClient(
            f"The token endpoint takes Basic client authentication, not the {scheme!r} scheme.",
            headers={"WWW-Authenticate": 'Basic realm="flock"'},
        )
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        decoded = ""
    if ":" not in decoded:
        raise InvalidClient(
            "The Basic Authorization header is not base64 of client_id:client_secret.",
            headers={"WWW-Authenticate": 'Basic realm="flock"'},
        )
    client_id, _, secret = decoded.partition(":")
    # RFC 6749 2.3.1 form-encodes both values before base64.
    return unquote_plus(client_id), unquote_plus(secret)
