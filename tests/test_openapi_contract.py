"""The OpenAPI documents against the access matrix, and the merged document against OpenAPI 3.1."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import schemathesis
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from mockflock.config import load_environment_specs
from mockflock.contracts import contracts_dir, load_matrix
from mockflock.errors import ContractError, ProtocolError
from mockflock.openapi import load_openapi, merge_openapi

V3_PREFIX = "/api/v3"
TOKEN_ENDPOINT = ("POST", "/oauth/token")
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
OPENAPI_FOLDER = contracts_dir() / "openapi"
NON_API_FILES = {"_common", "oauth"}
BASE_URI = "urn:mockflock:test-openapi"

MATRIX = load_matrix()
MATRIX_OPERATIONS = MATRIX.operations


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return load_openapi()


@pytest.fixture(scope="module")
def operations(document: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return _operations(document)


def _operations(document: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    """Return every operation of the document, keyed by (METHOD, path)."""
    found = {}
    for path, item in document["paths"].items():
        for method in HTTP_METHODS:
            if method in item:
                found[(method.upper(), path)] = item[method]
    return found


def _resolve(document: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        target: Any = document
        for token in node["$ref"].removeprefix("#/").split("/"):
            target = target[token.replace("~1", "/").replace("~0", "~")]
        node = target
    return node


def _validator(document: dict[str, Any], pointer: str) -> Draft202012Validator:
    resource = Resource.from_contents(document, default_specification=DRAFT202012)
    registry = Registry().with_resource(BASE_URI, resource)
    return Draft202012Validator({"$ref": f"{BASE_URI}#{pointer}"}, registry=registry)


# The documents against the matrix.


def test_one_file_per_matrix_api() -> None:
    stems = {path.stem for path in OPENAPI_FOLDER.glob("*.yaml")} - NON_API_FILES
    assert stems == set(MATRIX.apis)


@pytest.mark.parametrize("op", MATRIX_OPERATIONS, ids=lambda op: op.id)
def test_matrix_operation_is_documented(op, operations) -> None:
    assert (op.method, V3_PREFIX + op.path) in operations


@pytest.mark.parametrize("op", MATRIX_OPERATIONS, ids=lambda op: op.id)
def test_operation_matches_matrix(op, operations) -> None:
    documented = operations[(op.method, V3_PREFIX + op.path)]
    api = MATRIX.apis[op.api]
    assert documented.get("operationId") == op.id
    assert documented.get("security") == [{"flockOAuth": [op.scope]}]
    assert documented.get("x-mockflock-levels") == api.levels
    assert documented.get("x-mockflock-source") == op.source
    assert documented.get("tags") == [api.name]


@pytest.mark.parametrize("op", [op for op in MATRIX_OPERATIONS if op.source == "modeled"], ids=lambda op: op.id)
def test_modeled_operation_says_so(op, operations) -> None:
    documented = operations[(op.method, V3_PREFIX + op.path)]
    assert "modeled" in documented.get("description", "").lower()


def test_no_operation_outside_matrix(operations) -> None:
    expected = {(op.method, V3_PREFIX + op.path) for op in MATRIX_OPERATIONS} | {TOKEN_ENDPOINT}
    assert set(operations) - expected == set()


def test_operation_ids_are_unique(operations) -> None:
    ids = [operation["operationId"] for operation in operations.values()]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("key", [(op.method, V3_PREFIX + op.path) for op in MATRIX_OPERATIONS] + [TOKEN_ENDPOINT])
def test_operation_lists_401_and_403(key, operations) -> None:
    responses = operations[key]["responses"]
    assert "401" in responses
    assert "403" in responses


@pytest.mark.parametrize("op", MATRIX_OPERATIONS, ids=lambda op: op.id)
def test_v3_operation_lists_429(op, document, operations) -> None:
    responses = operations[(op.method, V3_PREFIX + op.path)]["responses"]
    assert "429" in responses
    assert "Retry-After" in _resolve(document, responses["429"])["headers"]


def test_modeled_responses_are_documented(operations) -> None:
    for key, operation in operations.items():
        modeled = operation.get("x-mockflock-modeled-responses", [])
        assert set(modeled) <= set(operation["responses"]), key


def test_error_responses_use_envelope(document, operations) -> None:
    for key, operation in operations.items():
        for status, response in operation["responses"].items():
            if int(status) < 400:
                continue
            schema = _resolve(document, response)["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/Error"}, (key, status)


def test_scopes_match_matrix(document) -> None:
    flows = document["components"]["securitySchemes"]["flockOAuth"]["flows"]
    expected = {name: scope.description for name, scope in MATRIX.scopes.items()}
    assert set(flows) == {"clientCredentials", "authorizationCode"}
    assert flows["clientCredentials"]["scopes"] == expected
    assert flows["authorizationCode"]["scopes"] == expected


def test_info_lists_modeled_parts(document) -> None:
    info = document["info"]
    assert info["x-mockflock-modeled"]
    assert "x-mockflock-modeled" in info["description"]


# The token endpoint.


def test_token_endpoint_at_host_root(document, operations) -> None:
    assert TOKEN_ENDPOINT in operations
    assert not any(path.startswith(V3_PREFIX + "/oauth") for path in document["paths"])


def test_token_endpoint_fields(document, operations) -> None:
    operation = operations[TOKEN_ENDPOINT]
    form = operation["requestBody"]["content"]["application/x-www-form-urlencoded"]
    schema = _resolve(document, form["schema"])
    expected = {
        "grant_type", "client_id", "client_secret", "audience", "scope",
        "code", "redirect_uri", "code_verifier", "refresh_token",
    }  # fmt: skip
    assert set(schema["properties"]) == expected
    assert schema["required"] == ["grant_type"]


def test_token_endpoint_statuses(operations) -> None:
    assert set(operations[TOKEN_ENDPOINT]["responses"]) == {"200", "400", "401", "403", "413"}


# The merged document as OpenAPI 3.1 and JSON Schema.


def test_merged_document_is_openapi_31(document) -> None:
    assert document["openapi"].startswith("3.1.")
    # Raises jsonschema_rs.ValidationError on a document that breaks the 3.1 meta-schema.
    schemathesis.openapi.from_dict(load_openapi()).validate()


def test_schemathesis_loads_every_operation() -> None:
    schema = schemathesis.openapi.from_dict(load_openapi())
    results = list(schema.get_all_operations())
    errors = [result.err() for result in results if not hasattr(result, "ok")]
    assert errors == []
    assert len(results) == len(MATRIX_OPERATIONS) + 1


def _schemas(node: Any, where: str):
    """Yield (location, schema) for every schema object outside components/schemas."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "schema" and isinstance(value, dict):
                yield f"{where}/{key}", value
            else:
                yield from _schemas(value, f"{where}/{key}")
    elif isinstance(node, list):
        for index, item in enumerate(node):
            yield from _schemas(item, f"{where}/{index}")


def test_every_schema_is_valid_json_schema(document) -> None:
    meta_schema = Draft202012Validator(Draft202012Validator.META_SCHEMA)
    named = [(f"#/components/schemas/{name}", schema) for name, schema in document["components"]["schemas"].items()]
    located = named + list(_schemas(document["paths"], "#/paths")) + list(_schemas(document["components"], "#/components"))
    invalid = [location for location, schema in located if not meta_schema.is_valid(schema)]
    assert len(located) > len(named)
    assert invalid == []


def test_schema_examples_are_valid(document) -> None:
    checked = 0
    for name, schema in document["components"]["schemas"].items():
        validator = _validator(document, f"/components/schemas/{name}")
        for example in schema.get("examples", []):
            errors = [error.message for error in validator.iter_errors(example)]
            assert errors == [], name
            checked += 1
    assert checked >= 5


def test_error_schema_accepts_protocol_error_body(document) -> None:
    body = ProtocolError("The token has expired.", status=401, error="invalid_token", extra={"level": "machine"}).body()
    assert _validator(document, "/components/schemas/Error").is_valid(body)


def test_closed_schema_rejects_unknown_field(document) -> None:
    validator = _validator(document, "/components/schemas/HotlistRequest")
    assert validator.is_valid({"name": "Stolen", "entries": []})
    assert not validator.is_valid({"name": "Stolen", "entries": [], "color": "red"})


# The loader.


def test_load_returns_independent_copies() -> None:
    first = load_openapi()
    first["paths"].clear()
    first["components"]["securitySchemes"]["flockOAuth"]["flows"]["clientCredentials"]["scopes"].clear()
    second = load_openapi()
    assert second["paths"]
    assert second["components"]["securitySchemes"]["flockOAuth"]["flows"]["authorizationCode"]["scopes"]


def test_default_servers_are_local_environments(document) -> None:
    urls = [server["url"] for server in document["servers"]]
    expected = [f"http://127.0.0.1:{spec.default_port}" for spec in load_environment_specs().values()]
    assert urls == expected
    assert len(urls) == 2


def test_servers_argument_sets_flow_urls() -> None:
    document = load_openapi(servers=[{"url": "http://mock.test:9000/"}])
    flows = document["components"]["securitySchemes"]["flockOAuth"]["flows"]
    assert document["servers"] == [{"url": "http://mock.test:9000/"}]
    assert flows["clientCredentials"]["tokenUrl"] == "http://mock.test:9000/oauth/token"
    assert flows["authorizationCode"]["authorizationUrl"] == "http://mock.test:9000/authorize"


def test_relative_first_server_is_rejected() -> None:
    with pytest.raises(ValueError, match="absolute"):
        load_openapi(servers=[{"url": "/"}])


COMMON = """\
openapi: 3.1.0
info: {title: t, version: '1'}
components:
  schemas:
    Error: {type: object}
"""

API = """\
openapi: 3.1.0
info: {title: t, version: '1'}
servers: [{url: /api/v3}]
paths:
  /things:
    get:
      responses:
        '200':
          description: ok
          content:
            application/json:
              schema: {$ref: '#/components/schemas/Thing'}
components:
  schemas:
    Thing: {type: object}
"""


def _folder(tmp_path: Path, **files: str) -> Path:
    for name, text in files.items():
        (tmp_path / f"{name}.yaml").write_text(text, encoding="utf-8")
    return tmp_path


def test_merge_prefixes_paths(tmp_path) -> None:
    merged = merge_openapi(_folder(tmp_path, _common=COMMON, things=API))
    assert list(merged["paths"]) == ["/api/v3/things"]
    assert set(merged["components"]["schemas"]) == {"Error", "Thing"}


def test_merge_rejects_duplicate_component(tmp_path) -> None:
    folder = _folder(tmp_path, _common=COMMON, things=API, others=API.replace("/things", "/others"))
    with pytest.raises(ContractError, match="Thing is already defined in"):
        merge_openapi(folder)


def test_merge_rejects_duplicate_path(tmp_path) -> None:
    folder = _folder(tmp_path, _common=COMMON, things=API, others=API.replace("Thing", "Other"))
    with pytest.raises(ContractError, match="/api/v3/things is already defined"):
        merge_openapi(folder)


def test_merge_rejects_unquoted_status(tmp_path) -> None:
    folder = _folder(tmp_path, _common=COMMON, things=API.replace("'200'", "200"))
    with pytest.raises(ContractError, match="Quote it"):
        merge_openapi(folder)


def test_merge_rejects_dangling_reference(tmp_path) -> None:
    folder = _folder(tmp_path, _common=COMMON, things=API.replace("schemas/Thing'", "schemas/Nothing'"))
    with pytest.raises(ContractError, match="#/components/schemas/Nothing"):
        merge_openapi(folder)


def test_merge_rejects_missing_server(tmp_path) -> None:
    folder = _folder(tmp_path, _common=COMMON, things=API.replace("servers: [{url: /api/v3}]\n", ""))
    with pytest.raises(ContractError, match="exactly one server"):
        merge_openapi(folder)
