"""Mount every operation of the access matrix under /api/v3.

Each route runs the same pipeline: bearer token, token level, scope, the
extra checks registered in `ACCESS_CHECKS` (roles, quotas), then the API's
handler. The matrix decides which operations exist; a matrix operation
without a handler stops the server at start.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mockflock import apis
from mockflock.access.bearer import Principal, authenticate
from mockflock.access.matrix import check_level, check_scope
from mockflock.apis.base import HANDLERS, Call, Handler
from mockflock.contracts import Api, Matrix, Operation
from mockflock.errors import ContractError

logger = logging.getLogger(__name__)

PREFIX = "/api/v3"

# Checks run after the level and scope checks, in order; each raises a
# ProtocolError to reject. Roles and quotas add themselves here.
AccessCheck = Callable[[Request, Principal, Api, Operation], None]
ACCESS_CHECKS: list[AccessCheck] = []


def load_handlers() -> dict[str, Handler]:
    """Import every API module so that its handlers register."""
    for module in pkgutil.iter_modules(apis.__path__):
        if module.name not in ("base", "routing"):
            importlib.import_module(f"{apis.__name__}.{module.name}")
    return HANDLERS


def routes(matrix: Matrix) -> list[Route]:
    handlers = load_handlers()
    missing = [op.id for op in matrix.operations if op.id not in handlers]
    if missing:
        raise ContractError(f"Operations in contracts/matrix.yaml without a handler: {', '.join(missing)}")
    operations = [(api, op) for api in matrix.apis.values() for op in api.operations]
    # Literal segments must win over parameters: /cad/events/active before /cad/events/{externalId}.
    operations.sort(key=lambda pair: (pair[1].path.count("{"), pair[1].path))
    return [
        Route(PREFIX + op.path, _endpoint(api, op, handlers[op.id]), methods=[op.method], name=op.id)
        for api, op in operations
    ]


def _endpoint(api: Api, operation: Operation, handler: Handler) -> Callable[[Request], object]:
    async def endpoint(request: Request) -> Response:
        env = request.app.state.environment
        principal = authenticate(request, env, request.app.state.others)
        request.state.principal = principal
        request.state.api = api
        request.state.operation = operation
        check_level(principal, api)
        check_scope(principal, operation)
        for check in ACCESS_CHECKS:
            check(request, principal, api, operation)
        data = request.app.state.store.org(env.name, principal.organization)
        return await handler(Call(request=request, env=env, principal=principal, operation=operation, data=data))

    endpoint.__name__ = operation.id
    return endpoint
