"""What every mocked v3 API handler receives, and how handlers register."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from mockflock.access.bearer import Principal
from mockflock.contracts import Operation
from mockflock.environments import Environment
from mockflock.apis import validation
from mockflock.errors import ApiError
from mockflock.store import OrgData

MAX_JSON_BYTES = 4 * 1024 * 1024


@dataclass
class Call:
    """One authorized API request: who made it, what it asks and where its data lives."""

    request: Request
    env: Environment
    principal: Principal
    operation: Operation
    data: OrgData

    def path_param(self, name: str) -> str:
        return self.request.path_params[name]

    async def json(self) -> Any:
        """Return the parsed JSON body, or raise 400 naming what is wrong with it."""
        content_type = self.request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/json":
            raise ApiError(
                f"Content-Type {content_type or '(none)'!r} is not accepted; send the body as application/json.",
                status=415 if content_type else 400,
                error="invalid_request",
            )
        body = await self.request.body()
        if len(body) > MAX_JSON_BYTES:
            raise ApiError(f"The JSON body has {len(body)} bytes; at most {MAX_JSON_BYTES} are accepted.", status=413)
        try:
            value = json.loads(body, parse_constant=_reject_constant)
        except (ValueError, RecursionError) as exc:
            raise ApiError(f"The body is not valid JSON: {exc}.", error="invalid_request") from None
        validation.validate_body(self.operation.id, value)
        return value

    def query(self) -> dict[str, Any]:
        """Return the query parameters the contract defines, typed and validated.

        Values are converted to the schema's type (integer, number, boolean,
        array of strings); a value that does not convert is rejected naming it.
        """
        params: dict[str, Any] = {}
        for name, (_, parameter) in validation.query_parameters(self.operation.id).items():
            values = self.request.query_params.getlist(name)
            if values:
                params[name] = _convert(name, values, parameter.get("schema", {}), self.operation.id)
        validation.validate_query(self.operation.id, params)
        return params


def _reject_constant(name: str) -> Any:
    # Python's json module accepts NaN and Infinity, which JSON (RFC 8259) does not.
    raise ValueError(f"{name} is not a JSON number")


def _convert(name: str, values: list[str], schema: dict[str, Any], operation_id: str) -> Any:
    kind = schema.get("type")
    if kind == "array":
        items = [part for value in values for part in value.split(",") if part != ""]
        return [_convert_one(name, item, schema.get("items", {}), operation_id) for item in items]
    return _convert_one(name, values[-1], schema, operation_id)


def _convert_one(name: str, value: str, schema: dict[str, Any], operation_id: str) -> Any:
    kind = schema.get("type")
    try:
        if kind == "integer":
            return int(value)
        if kind == "number":
            number = float(value)
            if number != number or number in (float("inf"), float("-inf")):
                raise ValueError(value)
            return number
    except ValueError:
        raise ApiError(
            f"Query parameter {name!r} must be {'an integer' if kind == 'integer' else 'a number'}; received {value[:80]!r}.",
            status=validation.invalid_status(operation_id),
        ) from None
    if kind == "boolean":
        if value.lower() not in ("true", "false"):
            raise ApiError(
                f"Query parameter {name!r} must be true or false; received {value[:80]!r}.",
                status=validation.invalid_status(operation_id),
            )
        return value.lower() == "true"
    return value


Handler = Callable[[Call], Awaitable[Response]]

# Handlers by matrix operation id; each API module fills in its own.
HANDLERS: dict[str, Handler] = {}


def handles(operation_id: str) -> Callable[[Handler], Handler]:
    """Register the decorated coroutine as the handler of `operation_id`."""

    def register(handler: Handler) -> Handler:
        if operation_id in HANDLERS:
            raise RuntimeError(f"Operation {operation_id!r} has two handlers")
        HANDLERS[operation_id] = handler
        return handler

    return register
