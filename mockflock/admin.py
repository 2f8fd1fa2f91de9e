"""The admin HTTP API under the reserved prefix /_mockflock.

Parts of mockflock register their admin routes with `admin_route`. On a
loopback bind the admin API is open; on any other address it requires
`Authorization: Bearer <admin token>`, or is off when no token is set.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from mockflock.errors import ProtocolError

if TYPE_CHECKING:
    from mockflock.environments import Environment
    from mockflock.server import MockServer

logger = logging.getLogger(__name__)

PREFIX = "/_mockflock"
AdminHandler = Callable[[Request], Awaitable[Response]]
_ROUTES: list[tuple[str, list[str], AdminHandler]] = []


def admin_route(path: str, methods: list[str]) -> Callable[[AdminHandler], AdminHandler]:
    """Register an admin endpoint at PREFIX + path on every environment."""

    def register(handler: AdminHandler) -> AdminHandler:
        _ROUTES.append((path, methods, handler))
        return handler

    return register


def mock_of(request: Request) -> MockServer:
    return request.app.state.mock


def environment_of(request: Request) -> Environment:
    return request.app.state.environment


def describe_access(mock: MockServer) -> str:
    """Say who may use the admin API, for the start-up log."""
    if mock.options.loopback:
        return f"admin API open at {PREFIX} (loopback bind)"
    if mock.options.admin_token:
        return f"admin API at {PREFIX} requires Authorization: Bearer <admin token> (non-loopback bind)"
    return f"admin API is off: the server binds {mock.options.host} and no admin token is set"


def _guard(handler: AdminHandler) -> AdminHandler:
    async def guarded(request: Request) -> Response:
        mock = mock_of(request)
        if not mock.options.loopback:
            token = mock.options.admin_token
            if not token:
                raise ProtocolError(
                    "The admin API is off because the server listens on a non-loopback address. "
                    "Start it with --admin-token (MOCKFLOCK_ADMIN_TOKEN) to enable it.",
                    status=404, error="not_found",
                )
            scheme, _, presented = request.headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(presented.strip().encode(), token.encode()):
                raise ProtocolError(
                    "The admin API needs Authorization: Bearer <admin token>, the value of --admin-token.",
                    status=401, error="invalid_token", headers={"WWW-Authenticate": 'Bearer realm="mockflock-admin"'},
                )
        return await handler(request)

    guarded.__name__ = handler.__name__
    return guarded


def routes() -> list[Route]:
    return [Route(PREFIX + path, _guard(handler), methods=methods) for path, methods, handler in _ROUTES]


@admin_route("/reset", ["POST"])
async def reset(request: Request) -> Response:
    """Return the whole mock, both environments, to its state at start."""
    mock_of(request).reset()
    logger.info("State reset through the admin API")
    return JSONResponse({"reset": True})
