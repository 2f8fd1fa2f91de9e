"""The client credentials grant: machine-level tokens (RFC 6749 4.4)."""

from __future__ import annotations

import logging

from mockflock.environments import Environment
from mockflock.errors import AccessDenied, InvalidScope
from mockflock.oauth.clients import ClientAuthentication

logger = logging.getLogger(__name__)

GRANT_TYPE = "client_credentials"


def check_audience(env: Environment, params: dict[str, str], others: dict[str, Environment]) -> None:
    """Reject a missing or wrong `audience` with 403, naming the one expected."""
    audience = params.get("audience")
    if audience == env.audience:
        return
    if not audience:
        raise AccessDenied(
            f"audience is missing. The {env.name} environment expects audience={env.audience}.",
            reason="missing_audience",
        )
    other = next((o for o in others.values() if o.audience == audience), None)
    if other is not None:
        raise AccessDenied(
            f"audience={audience!r} is the audience of the {other.name} environment, but this is the "
            f"{env.name} environment, which expects audience={env.audience}. Send each environment "
            f"its own audience.",
            reason="other_environment_audience",
        )
    raise AccessDenied(
        f"audience={audience!r} is not valid here. The {env.name} environment expects audience={env.audience}.",
        reason="wrong_audience",
    )


def grant_scopes(requested: str | None, registered: frozenset[str], client_id: str) -> frozenset[str]:
    """Return the scopes to grant; no scope or an empty one means every registered scope."""
    names = set((requested or "").split())
    if not names:
        return registered
    unknown = names - registered
    if unknown:
        raise InvalidScope(
            f"scope {' '.join(sorted(unknown))!r} is not registered for client_id={client_id!r}. "
            f"Its registered scopes are: {' '.join(sorted(registered)) or '(none)'}. Ask Flock to add the scope "
            f"to the app, or leave it out of the request.",
            reason="unregistered_scope",
        )
    return frozenset(names)


async def exchange(env: Environment, params: dict[str, str], auth: ClientAuthentication, others: dict[str, Environment]) -> dict[str, object]:
    """Issue a machine-level access token; never a refresh token (RFC 6749 4.4.3)."""
    check_audience(env, params, others)
    app = auth.app
    requested = params.get("scope")
    scopes = grant_scopes(requested, app.scopes, app.client_id)
    issued = await env.tokens.mint_async(
        subject=app.client_id,
        client_id=app.client_id,
        organization=app.organization,
        level="machine",
        scopes=scopes,
        lifetime=env.config.lifetimes.machine_access,
    )
    logger.debug("Issued machine token jti=%s to %s in %s", issued.claims["jti"], app.client_id, env.name)
    body: dict[str, object] = {
        "access_token": issued.token,
        "token_type": "Bearer",
        "expires_in": issued.expires_in,
    }
    # RFC 6749 5.1: scope is returned only when it differs from the request.
    # No scope at all means "the app's registered scopes", as in Flock's
    # documented request, so the granted scopes then match the request.
    if requested and requested.strip() and frozenset(requested.split()) != scopes:
        body["scope"] = issued.claims["scope"]
    return body
