"""Exceptions raised by mockflock, all under one root, `MockflockError`.

Protocol errors carry the HTTP status, the OAuth `error` code and the
headers of their response; `mockflock.responses` renders them as JSON.
"""

from __future__ import annotations


class MockflockError(Exception):
    """Root of every exception that mockflock raises on purpose."""


class ConfigError(MockflockError):
    """A configuration file, option or environment variable is invalid."""


class ContractError(MockflockError):
    """A file under contracts/ is missing, malformed or inconsistent."""


class ProtocolError(MockflockError):
    """A request that mockflock rejects, as Flock would, with an HTTP error.

    `error` is the OAuth or RFC 6750 error code, `description` names
    the value that was wrong and how to fix it, and `extra` adds fields to the JSON
    body (for example the API and token level of a level mismatch).
    """

    status = 400
    error = "invalid_request"

    def __init__(
        self,
        description: str,
        *,
        status: int | None = None,
        error: str | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, object] | None = None,
        reason: str | None = None,
    ) -> None:
        super().__init__(description)
        # A short machine-readable cause ("expired", "wrong_environment")
        # for the journal; never sent to the client.
        self.reason = reason
        self.description = description
        if status is not None:
            self.status = status
        if error is not None:
            self.error = error
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})

    def body(self) -> dict[str, object]:
        """Return the JSON body: `error`, `error_description`, then extras."""
        return {"error": self.error, "error_description": self.description, **self.extra}


class OAuthError(ProtocolError):
    """An error of the token, authorize, revoke or introspect endpoints (RFC 6749 5.2)."""


class InvalidRequest(OAuthError):
    error = "invalid_request"


class InvalidClient(OAuthError):
    status = 401
    error = "invalid_client"


class InvalidGrant(OAuthError):
    error = "invalid_grant"


class UnauthorizedClient(OAuthError):
    error = "unauthorized_client"


class UnsupportedGrantType(OAuthError):
    error = "unsupported_grant_type"


class InvalidScope(OAuthError):
    error = "invalid_scope"


class AccessDenied(OAuthError):
    status = 403
    error = "access_denied"


class PayloadTooLarge(OAuthError):
    status = 413
    error = "invalid_request"


class BearerError(ProtocolError):
    """A rejected bearer token on a resource API (RFC 6750 3.1)."""

    status = 401
    error = "invalid_token"


class ApiError(ProtocolError):
    """A rejection by a mocked v3 API: validation, not found, conflict and so on."""
