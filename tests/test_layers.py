"""The layering rules of docs/architecture.md, checked on the source."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "mockflock"


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


@pytest.mark.parametrize("path", sorted((PACKAGE / "oauth").glob("*.py")), ids=lambda p: p.name)
def test_oauth_never_imports_apis(path: Path) -> None:
    offending = sorted(name for name in imported_modules(path) if name == "mockflock.apis" or name.startswith("mockflock.apis."))
    assert offending == []


def test_matrix_is_not_written_in_python() -> None:
    # Operation paths and scope names live in contracts/matrix.yaml only.
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert '"/integrations/lpr/alerts/subscriptions"' not in text, path
        assert "'hotlist-alert-subscriptions:write'" not in text, path
