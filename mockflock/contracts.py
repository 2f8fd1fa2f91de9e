"""Load the access matrix from contracts/matrix.yaml.

The matrix lists which token levels each Flock API accepts, which v3
operations it has and which scope each one requires. The server, the
OpenAPI documents and the tests all read it from here.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mockflock.errors import ContractError

logger = logging.getLogger(__name__)

LEVELS = ("machine", "user")
AVAILABILITIES = ("supported", "planned", "not-available")
SOURCES = ("published", "modeled")
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


def contracts_dir() -> Path:
    """Return the folder holding the contracts.

    An installed wheel carries them inside the package as `_contracts`; a
    source checkout (editable install) reads the repository's `contracts/`.
    """
    packaged = Path(__file__).parent / "_contracts"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent / "contracts"


@dataclass(frozen=True)
class Scope:
    name: str
    source: str
    description: str


@dataclass(frozen=True)
class Operation:
    """One v3 operation: method, path under /api/v3, and required scope."""

    id: str
    api: str
    method: str
    path: str
    scope: str
    source: str


@dataclass(frozen=True)
class Api:
    id: str
    name: str
    levels: dict[str, str]
    operations: tuple[Operation, ...]

    def accepts(self, level: str) -> bool:
        return self.levels.get(level) == "supported"

    def accepted_levels(self) -> list[str]:
        return [level for level in LEVELS if self.accepts(level)]


@dataclass(frozen=True)
class Matrix:
    apis: dict[str, Api]
    scopes: dict[str, Scope]

    @property
    def operations(self) -> list[Operation]:
        return [op for api in self.apis.values() for op in api.operations]

    def operation(self, operation_id: str) -> Operation:
        for op in self.operations:
            if op.id == operation_id:
                return op
        raise KeyError(operation_id)

    def scopes_for_level(self, level: str) -> frozenset[str]:
        """Return every scope that some operation accepting `level` requires."""
        return frozenset(
            op.scope
            for api in self.apis.values()
            if api.accepts(level)
            for op in api.operations
        )


@functools.cache
def load_matrix(path: Path | None = None) -> Matrix:
    """Read and check the matrix file; raise `ContractError` on any flaw."""
    path = path or contracts_dir() / "matrix.yaml"
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ContractError(f"Cannot read the access matrix {path}: {exc}") from exc

    scopes = {name: _parse_scope(name, body) for name, body in _mapping(raw, "scopes").items()}
    apis = {
        api_id: _parse_api(api_id, body, scopes)
        for api_id, body in _mapping(raw, "apis").items()
    }
    _check_unique_routes(apis)
    logger.debug("Loaded %d APIs and %d scopes from %s", len(apis), len(scopes), path)
    return Matrix(apis=apis, scopes=scopes)


def _mapping(raw: Any, key: str) -> dict[str, Any]:
    value = raw.get(key) if isinstance(raw, dict) else None
    if not isinstance(value, dict) or not value:
        raise ContractError(f"The access matrix needs a non-empty mapping {key!r}")
    return value


def _parse_scope(name: str, body: dict[str, Any]) -> Scope:
    source = body.get("source")
    if source not in SOURCES:
        raise ContractError(f"Scope {name!r} has source={source!r}; expected one of {SOURCES}")
    return Scope(name=name, source=source, description=str(body.get("description", "")))


def _parse_api(api_id: str, body: dict[str, Any], scopes: dict[str, Scope]) -> Api:
    levels = body.get("levels") or {}
    for level in LEVELS:
        if levels.get(level) not in AVAILABILITIES:
            raise ContractError(
                f"API {api_id!r} has levels.{level}={levels.get(level)!r}; "
                f"expected one of {AVAILABILITIES}"
            )
    operations = tuple(_parse_operation(api_id, op, scopes) for op in body.get("operations") or [])
    if not operations:
        raise ContractError(f"API {api_id!r} lists no operations")
    return Api(id=api_id, name=str(body.get("name", api_id)), levels=dict(levels), operations=operations)


def _parse_operation(api_id: str, body: dict[str, Any], scopes: dict[str, Scope]) -> Operation:
    op = Operation(
        id=str(body.get("id")),
        api=api_id,
        method=str(body.get("method", "")).upper(),
        path=str(body.get("path", "")),
        scope=str(body.get("scope")),
        source=str(body.get("source")),
    )
    if op.method not in METHODS or not op.path.startswith("/"):
        raise ContractError(f"Operation {op.id!r} of {api_id!r} has method={op.method!r} path={op.path!r}")
    if op.scope not in scopes:
        raise ContractError(f"Operation {op.id!r} requires scope {op.scope!r}, which the matrix does not define")
    if op.source not in SOURCES:
        raise ContractError(f"Operation {op.id!r} has source={op.source!r}; expected one of {SOURCES}")
    return op


def _check_unique_routes(apis: dict[str, Api]) -> None:
    seen: dict[tuple[str, str], str] = {}
    for api in apis.values():
        for op in api.operations:
            key = (op.method, op.path)
            if key in seen:
                raise ContractError(f"{op.method} {op.path} is listed twice: {seen[key]!r} and {op.id!r}")
            seen[key] = op.id
