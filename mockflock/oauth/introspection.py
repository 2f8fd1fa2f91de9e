"""Token introspection, POST /oauth/introspect (RFC 7662).

A registered app learns whether a token is active and which claims it
carries. An app can inspect only the tokens issued to itself. Any other token, and
every unknown, expired or revoked one, is reported as {"active": false}
(modeled). A user token is also inactive once its user no longer exists.
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from mockflock.environments import Environment
from mockflock.oauth.grants import ACTIVE, FoundToken, find_token
from mockflock.oauth.revocation import read_client_request
from mockflock.responses import NO_STORE

logger = logging.getLogger(__name__)

ACCESS_CLAIMS = (
    "scope",
    "client_id",
    "exp",
    "iat",
    "nbf",
    "sub",
    "aud",
    "iss",
    "jti",
    "token_level",
    "org_id",
)
USER_CLAIMS = ("name", "roles", "networks", "grant_id")


async def introspect(request: Request) -> JSONResponse:
    env, params, auth = await read_client_request(request)
    found = find_token(env, params["token"], params.get("token_type_hint"))
    body: dict[str, Any] = {"active": False}
    if found is not None and found.client_id == auth.app.client_id:
        body = describe(env, found) or body
    logger.debug(
        "Introspection by %s in %s: active=%s", auth.app.client_id, env.name, body["active"]
    )
    return JSONResponse(body, headers=NO_STORE)


def describe(env: Environment, found: FoundToken) -> dict[str, Any] | None:
    """Return the introspection response of an active token, or None when it is not active."""
    if found.claims is not None:
        return _describe_access(env, found.claims)
    return _describe_refresh(env, found)


def _describe_access(env: Environment, claims: dict[str, Any]) -> dict[str, Any] | None:
    if claims["jti"] in env.revoked:
        return None
    body: dict[str, Any] = {"active": True, "token_type": "Bearer"}
    body.update({name: claims[name] for name in ACCESS_CLAIMS})
    if claims["token_level"] == "user":
        if env.users.get(claims["sub"]) is None:
            return None
        body["username"] = claims["sub"]
        body.update({name: claims[name] for name in USER_CLAIMS if name in claims})
    return body


def _describe_refresh(env: Environment, found: FoundToken) -> dict[str, Any] | None:
    record, family = found.refresh, found.family
    assert record is not None and family is not None
    now = env.clock.now()
    expired = record.expires_at <= now or (
        family.expires_at is not None and family.expires_at <= now
    )
    if (
        record.status != ACTIVE
        or family.revoked_at is not None
        or expired
        or env.users.get(family.user_id) is None
    ):
        return None
    return {
        "active": True,
        "token_type": "refresh_token",
        "scope": " ".join(sorted(family.scopes)),
        "client_id": family.client_id,
        "sub": family.user_id,
        "username": family.user_id,
        "exp": int(record.expires_at),
        "iat": int(record.issued_at),
        "iss": env.issuer,
        "aud": family.audience,
        "token_level": "user",
        "org_id": family.organization,
        "grant_id": family.id,
    }
