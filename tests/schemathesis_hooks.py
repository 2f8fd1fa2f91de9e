"""schemathesis hooks for tests/test_schemathesis.py, loaded by the CLI through SCHEMATHESIS_HOOKS.

The test process starts the mock, fetches the tokens and passes them in
the MOCKFLOCK_SCHEMATHESIS_* variables below, and this module applies them.
It runs inside the `schemathesis run` subprocess, never under pytest.
"""

from __future__ import annotations

import json
import os
from typing import Any

import schemathesis
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

# {"machine": <token>, "user": <token>}
TOKENS_VARIABLE = "MOCKFLOCK_SCHEMATHESIS_TOKENS"
# {"client_id": ..., "client_secret": ..., "audience": ...} of a machine app
CLIENT_VARIABLE = "MOCKFLOCK_SCHEMATHESIS_CLIENT"
# Token levels in order of preference, for an API that accepts several.
LEVELS = ("machine", "user")
# schemathesis' code for positive_data_acceptance failures.
SCHEMA_VALID_REQUEST_REJECTED = "ST202"
DOCUMENT_URI = "urn:mockflock:openapi"


def _load(variable: str) -> dict[str, str]:
    try:
        return json.loads(os.environ[variable])
    except KeyError:
        raise RuntimeError(f"{variable} is not set; run these hooks through tests/test_schemathesis.py") from None


TOKENS = _load(TOKENS_VARIABLE)
CLIENT = _load(CLIENT_VARIABLE)


def token_level(operation: Any) -> str | None:
    """Return the token level to send to `operation`, from its x-mockflock-levels, or None for no bearer token."""
    levels = operation.definition.raw.get("x-mockflock-levels") or {}
    for level in LEVELS:
        if levels.get(level) == "supported":
            return level
    return None


def _takes_no_bearer(context: Any) -> bool:
    return token_level(context.operation) is None


# No caching (refresh_interval=None), because the tokens outlive the run and
# an uncached provider never replays a request after a 401. So every 401 is reported.
@schemathesis.auth(refresh_interval=None).skip_for(_takes_no_bearer)
class ContractTokens:
    """A machine token where the operation's API accepts one, else a user token."""

    def get(self, case: Any, context: Any) -> str:
        return TOKENS[token_level(context.operation)]

    def set(self, case: Any, token: str, context: Any) -> None:
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {token}"}


@schemathesis.hook("before_call").apply_to(operation_id="requestToken")
def use_registered_client(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    """Send a registered app's credentials in positive client credentials requests to the token endpoint.

    Generated client ids and audiences are never registered, so without this
    every positive request would end in 401 or 403 and the 200 response would
    go unchecked. Negative requests keep their generated values.
    """
    body = case.body
    if not isinstance(body, dict) or body.get("grant_type") != "client_credentials":
        return
    if case.meta is None or not case.meta.generation.mode.is_positive:
        return
    body.update(CLIENT)
    # A generated scope is never one the app has registered.
    body.pop("scope", None)
    if case.headers:
        case.headers = {name: value for name, value in case.headers.items() if name.lower() != "authorization"}


@schemathesis.hook
def filter_failure(context: Any, failure: Any, case: Any, response: Any) -> bool:
    """Drop a "schema-valid request rejected" failure whose JSON body is not schema-valid after all.

    schemathesis 4.32 generates some positive bodies that break a nested
    `dependentRequired`, such as a Location with latitude and no longitude.
    The mock rightly rejects them. A full Draft 2020-12 validator decides
    here. It does not check formats, so a failure is dropped only for a clear
    schema violation.
    """
    if failure.code != SCHEMA_VALID_REQUEST_REJECTED:
        return True
    return not _body_errors(case)


_validators: dict[str, Draft202012Validator | None] = {}


def _body_errors(case: Any) -> list[str]:
    if case.media_type != "application/json" or not isinstance(case.body, (dict, list)):
        return []
    validator = _body_validator(case.operation)
    if validator is None:
        return []
    return [error.message for error in validator.iter_errors(case.body)]


def _body_validator(operation: Any) -> Draft202012Validator | None:
    if operation.label not in _validators:
        content = (operation.definition.raw.get("requestBody") or {}).get("content") or {}
        validator = None
        if "application/json" in content:
            escaped_path = operation.path.replace("~", "~0").replace("/", "~1")
            pointer = f"/paths/{escaped_path}/{operation.method.lower()}/requestBody/content/application~1json/schema"
            resource = Resource.from_contents(operation.schema.raw_schema, default_specification=DRAFT202012)
            registry = Registry().with_resource(DOCUMENT_URI, resource)
            validator = Draft202012Validator({"$ref": f"{DOCUMENT_URI}#{pointer}"}, registry=registry)
        _validators[operation.label] = validator
    return _validators[operation.label]
