"""Token revocation, POST /oauth/revoke (RFC 7009).

A registered app revokes one of its own tokens. Revoking a refresh token
revokes its whole family: every refresh token and access token issued
from the same authorization (RFC 7009 2.1). Revoking an access token
revokes only that token. An unknown, invalid or expired token gets the
same empty 200 as a revoked one (RFC 7009 2.2), so that the response
reveals nothing about tokens the app does not hold.
"""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import Response

from mockflock.config import load_oauth_contract
from mockflock.environments import Environment
from mockflock.errors import InvalidRequest, OAuthError
from mockflock.oauth.clients import ClientAuthentication
from mockflock.oauth.forms import read_parameters
from mockflock.oauth.grants import find_token
from mockflock.responses import NO_STORE
from mockflock.users import load_user_oauth_contract

logger = logging.getLogger(__name__)

TOKEN_TYPE_HINTS = ("access_token", "refresh_token")


async def read_client_request(
    request: Request,
) -> tuple[Environment, dict[str, str], ClientAuthentication]:
    """Read a form-encoded request to an app-authenticated endpoint and authenticate the app."""
    env: Environment = request.app.state.environment
    in_url = sorted({"token", "client_secret", "client_id"} & set(request.query_params.keys()))
    if in_url:
        raise InvalidRequest(
            f"{', '.join(in_url)} must be sent in the POST body, not in the URL, where proxies and logs keep it.",
            reason="parameters_in_url",
        )
    max_bytes = load_oauth_contract()["token_endpoint"]["max_body_bytes"]["value"]
    params = await read_parameters(request, max_bytes)
    auth = env.clients.authenticate(params, request.headers)
    request.state.client_id = auth.app.client_id
    token = params.get("token")
    if not token:
        raise InvalidRequest(
            "token is missing; send the access token or refresh token as token=<value>."
        )
    return env, params, auth


async def revoke(request: Request) -> Response:
    env, params, auth = await read_client_request(request)
    found = find_token(env, params["token"], params.get("token_type_hint"))
    if found is None:
        logger.debug(
            "Revocation of an unknown or invalid token by %s in %s", auth.app.client_id, env.name
        )
        return Response(status_code=200, headers=NO_STORE)
    if found.client_id != auth.app.client_id:
        rejection = load_user_oauth_contract()["revocation"]["other_client"]
        raise OAuthError(
            f"The token was issued to another app, not to client_id={auth.app.client_id!r}; an app may revoke "
            f"only its own tokens.",
            status=rejection["status"],
            error=rejection["error"],
            reason="revoke_other_client",
        )

    if found.family is not None:
        env.grants.revoke_family(
            env, found.family.id, f"the app {auth.app.client_id!r} revoked it through /oauth/revoke"
        )
    elif found.claims is not None:
        env.revoked.add(found.claims["jti"])
        logger.info(
            "Revoked access token jti=%s of %s in %s",
            found.claims["jti"],
            auth.app.client_id,
            env.name,
        )
    return Response(status_code=200, headers=NO_STORE)
