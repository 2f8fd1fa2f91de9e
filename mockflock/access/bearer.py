"""Bearer token checks on resource requests (RFC 6750)."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

import jwt
from starlette.requests import Request

from mockflock.config import load_oauth_contract
from mockflock.environments import Environment
from mockflock.errors import BearerError

logger = logging.getLogger(__name__)

# RFC 6750 2.1: b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
REALM = load_oauth_contract()["resource_apis"]["realm"]["value"]


@dataclass(frozen=True)
class Principal:
    """The app, user, organization and scopes of a valid access token."""

    environment: str
    client_id: str
    organization: str
    level: str
    scopes: frozenset[str]
    subject: str
    jti: str
    kid: str
    expires_at: int
    claims: dict[str, Any]

    @property
    def user(self) -> str | None:
        return self.subject if self.level == "user" else None


def challenge(error: str | None = None, description: str | None = None, scope: str | None = None) -> dict[str, str]:
    """Build the WWW-Authenticate header of RFC 6750 3."""
    parts = [f'realm="{REALM}"']
    if error:
        parts.append(f'error="{error}"')
    if description:
        parts.append(f'error_description="{_quoted_safe(description)}"')
    if scope:
        parts.append(f'scope="{scope}"')
    return {"WWW-Authenticate": "Bearer " + ", ".join(parts)}


def _quoted_safe(text: str) -> str:
    # RFC 6750 3: error_description may contain only %x20-21 / %x23-5B / %x5D-7E.
    return "".join(ch for ch in text if " " <= ch <= "~" and ch not in '"\\')


def extract_token(request: Request) -> str:
    """Return the token of the Authorization header, or raise 401/400."""
    headers = request.headers.getlist("authorization")
    # The byte check spares parsing the query string on every request.
    if b"access_token" in request.scope.get("query_string", b"") and "access_token" in request.query_params:
        raise BearerError(
            "The access token is in the URL query, where logs and proxies keep it. "
            "Send it as an Authorization: Bearer header instead.",
            status=400,
            error="invalid_request",
            headers=challenge("invalid_request"),
            reason="token_in_url",
        )
    if len(headers) > 1:
        raise BearerError(
            "The request has more than one Authorization header; send exactly one Bearer token.",
            status=400,
            error="invalid_request",
            headers=challenge("invalid_request"),
            reason="several_authorization_headers",
        )
    if not headers:
        raise BearerError(
            "No access token: send the header Authorization: Bearer <access_token>, with a token "
            "from this environment's /oauth/token.",
            error="invalid_request",
            headers=challenge(),
            reason="missing_token",
        )
    scheme, _, token = headers[0].strip().partition(" ")
    if scheme.lower() != "bearer":
        raise BearerError(
            f"The Authorization header uses the {scheme!r} scheme; this API takes Authorization: Bearer <access_token>.",
            error="invalid_request",
            headers=challenge(),
            reason="wrong_scheme",
        )
    token = token.strip()
    if not token or not B64TOKEN.fullmatch(token):
        description = "The Authorization header has the Bearer scheme but no well-formed token after it."
        raise BearerError(description, headers=challenge("invalid_token", description), reason="malformed")
    return token


def authenticate(request: Request, env: Environment, others: dict[str, Environment]) -> Principal:
    """Verify the request's bearer token for `env` and return its principal."""
    token = extract_token(request)
    try:
        verified = env.tokens.verify(token)
    except BearerError as exc:
        if exc.reason in ("unknown_key", "wrong_audience", "wrong_issuer"):
            _raise_if_other_environment(token, env, others)
        exc.headers.update(challenge("invalid_token", exc.description))
        raise
    claims = verified.claims
    if claims["jti"] in env.revoked:
        description = "The token was revoked. Fetch a new token; do not reuse tokens after revocation."
        raise BearerError(description, headers=challenge("invalid_token", description), reason="revoked")
    return Principal(
        environment=env.name,
        client_id=claims["client_id"],
        organization=claims["org_id"],
        level=claims["token_level"],
        scopes=frozenset(claims["scope"].split()),
        subject=claims["sub"],
        jti=claims["jti"],
        kid=verified.kid,
        expires_at=claims["exp"],
        claims=claims,
    )


def _raise_if_other_environment(token: str, env: Environment, others: dict[str, Environment]) -> None:
    try:
        unverified = jwt.decode(token, options={"verify_signature": False})
    except jwt.InvalidTokenError:
        return
    for other in others.values():
        if unverified.get("aud") == other.audience or unverified.get("iss") == other.issuer:
            description = (
                f"This token was issued by the {other.name} environment (audience {other.audience}), "
                f"but was sent to the {env.name} environment, which accepts only audience {env.audience}. "
                f"Fetch a token from {env.token_url} for calls to {env.base_url}."
            )
            raise BearerError(
                description,
                headers=challenge("invalid_token", description),
                reason="wrong_environment",
                extra={"token_environment": other.name, "environment": env.name},
            )
