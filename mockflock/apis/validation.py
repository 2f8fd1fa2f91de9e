"""Check request bodies and query parameters against the OpenAPI contract.

A value that breaks the contract is rejected with the status the
operation documents (422 where Flock lists it, otherwise 400) and a
message that names the field, the rule and the value received.
"""

from __future__ import annotations

import functools
import json
import logging
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from mockflock.errors import ApiError

logger = logging.getLogger(__name__)

MAX_ECHO = 80


BASE_URI = "urn:mockflock:openapi"


@functools.cache
def _document() -> dict[str, Any]:
    from mockflock.openapi import load_openapi

    return load_openapi()


@functools.cache
def _registry() -> Registry:
    resource = Resource.from_contents(_document(), default_specification=DRAFT202012)
    return Registry().with_resource(BASE_URI, resource)


@functools.cache
def _operation(operation_id: str) -> tuple[str, dict[str, Any]]:
    """Return the JSON pointer of the operation and the operation itself."""
    for path, path_item in _document()["paths"].items():
        for method, operation in path_item.items():
            if isinstance(operation, dict) and operation.get("operationId") == operation_id:
                return f"/paths/{_escape(path)}/{method}", operation
    raise KeyError(f"The OpenAPI contract has no operationId {operation_id!r}")


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


@functools.cache
def _validator(pointer: str) -> Draft202012Validator:
    # Validate through a $ref into the whole document, so that the schema's
    # own "#/components/..." references resolve against the document.
    return Draft202012Validator({"$ref": f"{BASE_URI}#{pointer}"}, registry=_registry())


def invalid_status(operation_id: str) -> int:
    """Return 422 where the operation documents it for invalid input, else 400."""
    return 422 if "422" in _operation(operation_id)[1].get("responses", {}) else 400


def validate_body(operation_id: str, value: Any, media_type: str = "application/json") -> None:
    pointer, operation = _operation(operation_id)
    content = (operation.get("requestBody") or {}).get("content", {})
    if "schema" not in content.get(media_type, {}):
        return
    _raise_first_error(operation_id, _validator(f"{pointer}/requestBody/content/{_escape(media_type)}/schema"), value, "body")


def query_parameters(operation_id: str) -> dict[str, tuple[str, dict[str, Any]]]:
    """Return the operation's query parameters: name -> (schema pointer, parameter)."""
    pointer, operation = _operation(operation_id)
    found = {}
    for index, parameter in enumerate(operation.get("parameters", [])):
        location = f"{pointer}/parameters/{index}"
        while "$ref" in parameter:
            location = parameter["$ref"].removeprefix("#")
            parameter = _lookup(location)
        if parameter.get("in") == "query":
            found[parameter["name"]] = (f"{location}/schema", parameter)
    return found


def validate_query(operation_id: str, params: dict[str, Any]) -> None:
    """Check query parameters already converted to their schema types."""
    for name, (pointer, parameter) in query_parameters(operation_id).items():
        if name not in params:
            if parameter.get("required"):
                raise ApiError(f"Query parameter {name!r} is required.", status=invalid_status(operation_id))
            continue
        _raise_first_error(operation_id, _validator(pointer), params[name], f"query parameter {name!r}", prefix=name)


def _lookup(pointer: str) -> Any:
    target: Any = _document()
    for part in pointer.lstrip("/").split("/"):
        target = target[part.replace("~1", "/").replace("~0", "~")]
    return target


def _raise_first_error(operation_id: str, validator: Draft202012Validator, value: Any, where: str, prefix: str = "") -> None:
    error = next(iter(sorted(validator.iter_errors(value), key=lambda e: (len(e.path), str(e.path)))), None)
    if error is None:
        return
    field = _field_name(error, prefix)
    raise ApiError(
        f"{field or where} {_rule(error)}; received {_echo(error.instance)}.",
        status=invalid_status(operation_id),
        error="invalid_request",
        extra={"field": field or where, "rule": error.validator},
    )


def _field_name(error: ValidationError, prefix: str) -> str:
    parts = [prefix] if prefix else []
    for part in error.absolute_path:
        parts.append(f"[{part}]" if isinstance(part, int) else str(part))
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = set((error.schema or {}).get("properties", {}))
        extra = sorted(str(key) for key in error.instance if key not in allowed)
        if extra:
            parts.append(extra[0])
    if error.validator == "required":
        missing = error.message.split("'")[1] if "'" in error.message else ""
        parts.append(missing)
    return ".".join(parts).replace(".[", "[")


def _rule(error: ValidationError) -> str:
    value = error.validator_value
    rules = {
        "required": "is required",
        "type": f"must be of JSON type {' or '.join(map(str, value)) if isinstance(value, list) else value}",
        "enum": f"must be one of {value}",
        "minLength": f"must have at least {value} characters",
        "maxLength": f"must have at most {value} characters",
        "minimum": f"must be at least {value}",
        "maximum": f"must be at most {value}",
        "exclusiveMinimum": f"must be greater than {value}",
        "exclusiveMaximum": f"must be less than {value}",
        "minItems": f"must have at least {value} items",
        "maxItems": f"must have at most {value} items",
        "pattern": f"must match the pattern {value}",
        "format": f"must be a valid {value}",
        "additionalProperties": "is a field the contract does not define; remove it",
        "uniqueItems": "must not repeat items",
        "anyOf": "matches none of the allowed forms",
        "oneOf": "must match exactly one of the allowed forms",
        "not": "has a form the contract forbids",
        "const": f"must be {value!r}",
        "dependentRequired": "lacks a field that the fields present require: "
        + "; ".join(f"{key} needs {', '.join(needed)}" for key, needed in value.items())
        if isinstance(value, dict)
        else "lacks a field that the fields present require",
        "minProperties": f"must have at least {value} fields",
        "maxProperties": f"must have at most {value} fields",
        "multipleOf": f"must be a multiple of {value}",
    }
    return rules.get(str(error.validator), f"breaks the rule {error.validator}={value!r}")


def _echo(value: Any) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= MAX_ECHO else text[:MAX_ECHO] + "..."
