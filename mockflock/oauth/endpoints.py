"""Routes of the authorization server: token endpoint, discovery and JWKS."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from mockflock.config import load_oauth_contract
from mockflock.environments import Environment
from mockflock.errors import InvalidRequest, UnauthorizedClient, UnsupportedGrantType
from mockflock.oauth import client_credentials
from mockflock.oauth.clients import ClientAuthentication
from mockflock.oauth.forms import read_parameters
from mockflock.responses import token_response
from mockflock.users import load_user_oauth_contract

logger = logging.getLogger(__name__)

# A grant returns the token response body, directly or as a coroutine.
Grant = Callable[[Environment, dict[str, str], ClientAuthentication, dict[str, Environment]], Any]

# Grant handlers by grant_type; user-level grants register themselves here.
GRANTS: dict[str, Grant] = {client_credentials.GRANT_TYPE: client_credentials.exchange}

# Parameters that must travel in the body, never in the URL (RFC 6749 2.3.1, 3.2).
BODY_ONLY = {"client_secret", "client_id", "grant_type", "audience", "code", "refresh_token", "code_verifier"}


def environment_of(request: Request) -> Environment:
    return request.app.state.environment


def other_environments(request: Request) -> dict[str, Environment]:
    env = environment_of(request)
    return {name: other for name, other in request.app.state.environments.items() if name != env.name}


async def token(request: Request) -> JSONResponse:
    env = environment_of(request)
    in_url = sorted(BODY_ONLY & set(request.query_params.keys()))
    if in_url:
        raise InvalidRequest(
            f"{', '.join(in_url)} must be sent in the POST body, not in the URL, where proxies and "
            f"logs keep it (RFC 6749 3.2). Move them into the form body.",
            reason="parameters_in_url",
        )
    max_bytes = load_oauth_contract()["token_endpoint"]["max_body_bytes"]["value"]
    params = await read_parameters(request, max_bytes)
    # The request journal reads the parsed parameters instead of parsing again.
    request.state.form_params = params

    grant_type = params.get("grant_type")
    if not grant_type:
        raise InvalidRequest(f"grant_type is missing; send grant_type=client_credentials with audience={env.audience}.")
    grant = GRANTS.get(grant_type)
    if grant is None:
        raise UnsupportedGrantType(
            f"grant_type={grant_type!r} is not supported; use one of: {', '.join(sorted(GRANTS))}."
        )

    auth = env.clients.authenticate(params, request.headers)
    if grant_type not in auth.app.grants:
        raise UnauthorizedClient(
            f"client_id={auth.app.client_id!r} is not registered for grant_type={grant_type}; "
            f"its grants are: {', '.join(auth.app.grants)}."
        )
    request.state.client_id = auth.app.client_id
    request.state.auth_method = auth.method
    body = grant(env, params, auth, other_environments(request))
    if inspect.isawaitable(body):
        body = await body
    return token_response(body)


def metadata(env: Environment, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Return RFC 8414 authorization server metadata for one environment."""
    matrix_scopes = sorted({scope for app in env.clients.all() for scope in app.scopes})
    return {
        "issuer": env.issuer,
        "token_endpoint": env.token_url,
        "jwks_uri": env.jwks_url,
        "grant_types_supported": sorted(GRANTS),
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "token_endpoint_auth_signing_alg_values_supported": ["RS256"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "scopes_supported": matrix_scopes,
        "response_types_supported": ["token"] if "authorization_code" not in GRANTS else ["code"],
        "subject_types_supported": ["public"],
        "audience": env.audience,
        **user_level_metadata(env),
        **(extra or {}),
    }


def user_level_metadata(env: Environment) -> dict[str, Any]:
    """Return the metadata of the user-level endpoints (RFC 8414, RFC 7009, RFC 7662, RFC 9207).

    Flock serves /authorize on its login host; mockflock serves it on each
    environment's base URL, and names Flock's location beside it.
    """
    contract = load_user_oauth_contract()
    login_host = contract["authorize"]["flock_login_host"]["value"]
    client_auth = ["client_secret_basic", "client_secret_post"]
    return {
        "authorization_endpoint": f"{env.base_url}/authorize",
        "flock_authorization_endpoint": f"{login_host}/authorize",
        "authorization_endpoint_note": (
            f"Flock serves /authorize on its login host, {login_host}; mockflock serves it on each "
            f"environment's base URL."
        ),
        "response_modes_supported": contract["authorize"]["response_modes"]["value"],
        "code_challenge_methods_supported": contract["pkce"]["methods"]["value"],
        "authorization_response_iss_parameter_supported": True,
        "prompt_values_supported": contract["authorize"]["prompt_values"]["value"],
        "revocation_endpoint": f"{env.base_url}/oauth/revoke",
        "revocation_endpoint_auth_methods_supported": client_auth,
        "introspection_endpoint": f"{env.base_url}/oauth/introspect",
        "introspection_endpoint_auth_methods_supported": client_auth,
    }


async def discovery(request: Request) -> JSONResponse:
    env = environment_of(request)
    extra = getattr(request.app.state, "metadata_extra", None)
    return JSONResponse(metadata(env, extra))


async def jwks(request: Request) -> JSONResponse:
    return JSONResponse(environment_of(request).keys.jwks(), headers={"Cache-Control": "max-age=60"})


def routes() -> list[Route]:
    return [
        Route("/oauth/token", token, methods=["POST"]),
        Route("/authorize", authorize.authorize, methods=["GET"]),
        Route("/authorize", authorize.submit, methods=["POST"]),
        Route("/oauth/revoke", revocation.revoke, methods=["POST"]),
        Route("/oauth/introspect", introspection.introspect, methods=["POST"]),
        Route("/.well-known/openid-configuration", discovery, methods=["GET"]),
        Route("/.well-known/oauth-authorization-server", discovery, methods=["GET"]),
        Route("/.well-known/jwks.json", jwks, methods=["GET"]),
    ]


# The user-level grants register themselves in GRANTS when imported; they
# import GRANTS from this module, so they are imported after it is defined.
from mockflock.oauth import (  # noqa: E402, F401
    authorization_code,
    authorize,
    introspection,
    refresh_token,
    revocation,
)
