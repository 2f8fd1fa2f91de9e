"""Render docs/apis.md, the API reference, from contracts/.

The page is generated so that it cannot disagree with what the server
enforces: `python -m mockflock.apidocs > docs/apis.md` rewrites it, and a
test fails when the committed page is out of date.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from mockflock.contracts import Matrix, load_matrix
from mockflock.openapi import load_openapi

LEVEL_WORDS = {"supported": "supported", "planned": "planned (rejected until Flock ships it)", "not-available": "not available"}


def render(matrix: Matrix | None = None, document: dict[str, Any] | None = None) -> str:
    matrix = matrix or load_matrix()
    document = document or load_openapi()
    operations = _operations_by_id(document)
    lines = [
        "# API reference",
        "",
        "Generated from `contracts/matrix.yaml` and `contracts/openapi/` by",
        "`python -m mockflock.apidocs > docs/apis.md`; do not edit by hand.",
        "",
        "Every v3 path below is relative to an environment's `/api/v3`. A token must",
        "be of a level the API supports and carry the operation's scope. *published*",
        "means Flock's developer hub states it; *modeled* means Flock publishes",
        "nothing and mockflock chose the behaviour, which lives in `contracts/` so",
        "that it can change when Flock publishes more.",
        "",
        "## Modeled behaviour",
        "",
        *[f"- {item}" for item in document["info"].get("x-mockflock-modeled", [])],
        "",
        "## Scopes",
        "",
        "| scope | source | grants |",
        "|---|---|---|",
        *[f"| `{scope.name}` | {scope.source} | {scope.description} |" for scope in matrix.scopes.values()],
        "",
    ]
    for api in matrix.apis.values():
        lines += [
            f"## {api.name}",
            "",
            f"Machine-level tokens: {LEVEL_WORDS[api.levels['machine']]}. "
            f"User-level tokens: {LEVEL_WORDS[api.levels['user']]}.",
            "",
            "| operation | method and path | scope (source) | path source | status codes | modeled status codes |",
            "|---|---|---|---|---|---|",
        ]
        for op in api.operations:
            spec = operations.get(op.id, {})
            statuses = ", ".join(sorted(spec.get("responses", {})))
            modeled = ", ".join(spec.get("x-mockflock-modeled-responses", [])) or "none"
            lines.append(
                f"| `{op.id}`: {spec.get('summary', '')} | `{op.method} {op.path}` | "
                f"`{op.scope}` ({matrix.scopes[op.scope].source}) | {op.source} | {statuses} | {modeled} |"
            )
        lines += ["", *_behaviour(api.id), ""]
    return "\n".join(lines)


def _behaviour(api_id: str) -> list[str]:
    """Return the API module's docstring, which describes what its handlers do and model."""
    module = importlib.import_module(f"mockflock.apis.{api_id.replace('-', '_')}")
    doc = inspect.getdoc(module) or ""
    return ["### Behaviour", "", *doc.splitlines()] if doc else []


def _operations_by_id(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found = {}
    for path_item in document["paths"].values():
        for operation in path_item.values():
            if isinstance(operation, dict) and "operationId" in operation:
                found[operation["operationId"]] = operation
    return found


if __name__ == "__main__":
    print(render(), end="")  # noqa: T201
