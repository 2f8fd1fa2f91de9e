"""Parse JSON request bodies strictly, with errors a client can act on.

Python's json module accepts values that JSON (RFC 8259) forbids or that
cannot be sent back. NaN, Infinity and numbers such as 1e999 that overflow
to infinity are one kind. Lone UTF-16 surrogates such as "\\ud800", which
UTF-8 cannot encode, are another, and nesting deep enough to exhaust
recursion later is a third. Stored, they would break every later response
that contains them, so every JSON body that mockflock accepts goes through
`parse_json`.
"""

from __future__ import annotations

import json
from typing import Any

# JSON type names for the Python types json.loads produces.
MAX_DEPTH = 64
JSON_TYPES = {dict: "object", list: "array", str: "string", int: "number", float: "number", bool: "boolean", type(None): "null"}


def json_type(value: Any) -> str:
    """Return the JSON name of a parsed value's type ("object", "array", "null", ...)."""
    return JSON_TYPES.get(type(value), type(value).__name__)


def parse_json(body: bytes | str, **options: Any) -> Any:
    """Return the parsed body, or raise ValueError with a message fit for a client."""
    try:
        value = json.loads(body, parse_constant=_reject_constant, parse_float=_finite_float, **options)
    except RecursionError:
        raise ValueError("it is nested too deeply") from None
    except ValueError as exc:
        if "int_max_str_digits" in str(exc) or "integer string conversion" in str(exc):
            raise ValueError("a number in it has more than 4300 digits") from None
        raise ValueError(str(exc)) from None
    _check_depth(value)
    marker = b"\\u" if isinstance(body, bytes) else "\\u"
    if marker in body:
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("a string in it contains an unpaired UTF-16 surrogate escape such as \\ud800; send valid Unicode") from None
        except RecursionError:
            raise ValueError("it is nested too deeply") from None
    return value


def _check_depth(value: Any) -> None:
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise ValueError(f"it is nested more than {MAX_DEPTH} levels deep")
        if isinstance(node, dict):
            stack.extend((child, depth + 1) for child in node.values())
        elif isinstance(node, list):
            stack.extend((child, depth + 1) for child in node)


def _finite_float(text: str) -> float:
    number = float(text)
    if number in (float("inf"), float("-inf")):
        raise ValueError(f"the number {text[:40]} is too large for a 64-bit float")
    return number


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")
