"""Check API responses against the OpenAPI contract, for the API tests."""

from __future__ import annotations

import functools

import httpx
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from mockflock.openapi import load_openapi

DOCUMENT_URI = "urn:test:openapi"


@functools.cache
def _response_validators() -> dict[tuple[str, int], Draft202012Validator]:
    """Map (operationId, status) to a validator of that response's JSON body."""
    document = load_openapi()
    registry = Registry().with_resource(
        DOCUMENT_URI, Resource.from_contents(document, default_specification=DRAFT202012)
    )
    validators = {}
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if not isinstance(operation, dict) or "operationId" not in operation:
                continue
            for status, response in operation["responses"].items():
                if "application/json" in response.get("content", {}):
                    escaped = path.replace("~", "~0").replace("/", "~1")
                    pointer = f"#/paths/{escaped}/{method}/responses/{status}/content/application~1json/schema"
                    validators[(operation["operationId"], int(status))] = Draft202012Validator(
                        {"$ref": DOCUMENT_URI + pointer}, registry=registry
                    )
    return validators


def assert_conforms(response: httpx.Response, operation_id: str) -> None:
    """Assert that the response body matches the contract's schema for its status."""
    validator = _response_validators()[(operation_id, response.status_code)]
    errors = [error.message for error in validator.iter_errors(response.json())]
    assert errors == []
