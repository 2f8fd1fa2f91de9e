"""The call object every mocked v3 API handler receives, and handler registration."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from mockflock.access.bearer import Principal
from mockflock.apis import validation
from mockflock.contracts import Operation
from mockflock.environments import Environment
from mockflock.errors import ApiError
from mockflock.jsonbody import parse_json
from mockflock.oauth.forms import read_body
from mockflock.store import OrgData

# Modeled: Flock publishes no body limit. A full hotlist of 3000 entries
# is about 0.2 MiB, so 1 MiB leaves room while keeping validation quick.
MAX_JSON_BYTES = 1024 * 1024


@dataclass
class Call:
    """One authorized API request: who made it, which operation it requests and where its data lives."""

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
        body = await read_body(self.request, MAX_JSON_BYTES, ApiError)
        try:
            value = parse_json(body)
        except ValueError as exc:
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
            if len(values) > 1 and parameter.get("schema", {}).get("type") != "array":
                raise ApiError(
                    f"Query parameter {name!r} appears {len(values)} times; send it once.",
                    status=validation.invalid_status(self.operation.id),
                )
            if values:
                params[name] = _convert(name, values, parameter.get("schema", {}), self.operation.id)
        validation.validate_query(self.operation.id, params)
        return params


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
