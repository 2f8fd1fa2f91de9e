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
from collections.abc import Awaitable, Callable
from urllib.parse import unquote

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from mockflock import apis
from mockflock.access.audit import record_call
from mockflock.access.bearer import Principal, authenticate
from mockflock.access.matrix import check_level, check_scope
from mockflock.access.quotas import check_quota
from mockflock.access.roles import check_roles
from mockflock.apis.base import HANDLERS, Call, Handler
from mockflock.contracts import Api, Matrix, Operation
from mockflock.errors import ContractError, ProtocolError

logger = logging.getLogger(__name__)

PREFIX = "/api/v3"

# Checks run after the level and scope checks, in order; each raises a
# ProtocolError to reject. The quota comes first, so that a request a role
# rejects still counts, as it would at an API gateway.
AccessCheck = Callable[[Request, Principal, Api, Operation], None]
ACCESS_CHECKS: list[AccessCheck] = [check_quota, check_roles]


def load_handlers() -> dict[str, Handler]:
    """Import every API module so that its handlers register."""
    for module in pkgutil.iter_modules(apis.__path__):
        if module.name not in ("base", "routing"):
            importlib.import_module(f"{apis.__name__}.{module.name}")
    return HANDLERS


def routes(matrix: Matrix) -> list[Route]:
    """Return one catch-all route for /api/v3 that dispatches through `OperationIndex`."""
    handlers = load_handlers()
    missing = [op.id for op in matrix.operations if op.id not in handlers]
    if missing:
        raise ContractError(f"Operations in contracts/matrix.yaml without a handler: {', '.join(missing)}")
    index = OperationIndex()
    for api in matrix.apis.values():
        for op in api.operations:
            index.add(op, _endpoint(api, op, handlers[op.id]))
    # The index is an ASGI app, so Starlette passes every method to it (a
    # function endpoint would get GET only) and it returns 405 itself.
    return [Route(PREFIX + "/{operation_path:path}", index, name="api_v3")]


class OperationIndex:
    """Find an operation by method and path with a dict lookup and a short scan.

    Starlette's router tries every route's regex in turn; with dozens of
    operations that scan cost more than the token checks. Templates are
    grouped by segment count, and within a group literal segments win over
    parameters (/cad/events/active before /cad/events/{externalId}).
    """

    def __init__(self) -> None:
        self._templates: dict[int, list[tuple[tuple[str, ...], dict[str, Endpoint]]]] = {}

    def add(self, operation: Operation, endpoint: Endpoint) -> None:
        segments = tuple(operation.path.strip("/").split("/"))
        group = self._templates.setdefault(len(segments), [])
        for template, by_method in group:
            if template == segments:
                by_method[operation.method] = endpoint
                return
        group.append((segments, {operation.method: endpoint}))
        group.sort(key=lambda entry: [part.startswith("{") for part in entry[0]])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await self.dispatch(Request(scope, receive, send))
        await response(scope, receive, send)

    async def dispatch(self, request: Request) -> Response:
        segments = _segments(request.scope)
        for template, by_method in self._templates.get(len(segments), ()):
            params = _match(template, segments)
            if params is None:
                continue
            # The first template that matches owns the path, so a literal
            # path such as /cad/events/externalIds never falls through to
            # /cad/events/{externalId} for another method.
            # HEAD is GET without the body (RFC 9110 9.3.2); uvicorn drops the body.
            endpoint = by_method.get("GET" if request.method == "HEAD" else request.method)
            if endpoint is None:
                allowed = sorted({*by_method, "HEAD"} if "GET" in by_method else by_method)
                raise HTTPException(405, headers={"Allow": ", ".join(allowed)})
            request.scope["path_params"] = params
            return await endpoint(request)
        raise HTTPException(404)


def _segments(scope: dict[str, object]) -> list[str]:
    """Split the path after /api/v3 into percent-decoded segments.

    The raw path is split before decoding, so an id containing %2F stays one
    segment and is decoded exactly once. The route's own regex is not used:
    it would let a trailing newline through.
    """
    raw = scope.get("raw_path")
    path = raw.decode("latin-1") if isinstance(raw, bytes) else str(scope["path"])
    rest = path[len(PREFIX) :].strip("/")
    return [unquote(segment, errors="replace") for segment in rest.split("/")]


def _match(template: tuple[str, ...], segments: list[str]) -> dict[str, str] | None:
    params = {}
    for part, value in zip(template, segments, strict=True):
        if part.startswith("{"):
            if not value:
                return None
            params[part[1:-1]] = value
        elif part != value:
            return None
    return params


Endpoint = Callable[[Request], Awaitable[Response]]


def _endpoint(api: Api, operation: Operation, handler: Handler) -> Endpoint:
    async def endpoint(request: Request) -> Response:
        # Every call goes into the audit trail, rejections included.
        try:
            response = await pipeline(request)
        except Exception as exc:
            status = exc.status if isinstance(exc, ProtocolError) else getattr(exc, "status_code", 500)
            await record_call(request, api, operation, status=status, error=exc)
            raise
        await record_call(request, api, operation, status=response.status_code)
        return response

    async def pipeline(request: Request) -> Response:
        env = request.app.state.environment
        principal = authenticate(request, env, request.app.state.others)
        request.state.principal = principal
        request.state.api = api
        request.state.operation = operation
        check_level(principal, api)
        check_scope(principal, operation)
        for check in ACCESS_CHECKS:
            check(request, principal, api, operation)
        request.state.authorized = True
        data = request.app.state.store.org(env.name, principal.organization)
        return await handler(Call(request=request, env=env, principal=principal, operation=operation, data=data))

    endpoint.__name__ = operation.id
    return endpoint
