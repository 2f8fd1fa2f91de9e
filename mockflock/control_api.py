"""The control interface over HTTP, under the admin prefix /_mockflock.

Each endpoint calls the `Control` method of the same name, so tests in any
language can do what Python tests do. They can register apps and users,
change token lifetimes, advance the clock, rotate keys, revoke tokens,
inject faults and narrow scopes, and read the journal and the report.
Bodies are JSON objects; a wrong value gets 400 naming it. The admin
API's access rule (open on loopback, admin token otherwise) applies.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from mockflock.admin import admin_route, mock_of
from mockflock.control import AppExists, Control
from mockflock.errors import ProtocolError
from mockflock.journal import to_json
from mockflock.jsonbody import json_type, parse_json
from mockflock.violations import format_report

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024
T = TypeVar("T")


def _control(request: Request) -> Control:
    return Control(mock_of(request))


async def _body(request: Request, allowed: set[str]) -> dict[str, Any]:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise ProtocolError(f"The body has {declared} bytes; admin endpoints accept at most {MAX_BODY_BYTES}.", status=413)
    raw = await request.body()
    if len(raw) > MAX_BODY_BYTES:
        raise ProtocolError(f"The body has {len(raw)} bytes; admin endpoints accept at most {MAX_BODY_BYTES}.", status=413)
    if not raw.strip():
        return {}
    try:
        body = parse_json(raw)
    except ValueError as exc:
        raise ProtocolError(f"The body is not valid JSON ({exc}); send a JSON object.") from None
    if not isinstance(body, dict):
        raise ProtocolError(f"The body must be a JSON object, not {json_type(body)}.")
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise ProtocolError(f"Unknown fields {unknown}; this endpoint takes {sorted(allowed)}.")
    return body


def _call(action: Callable[[], T]) -> T:
    """Run a control action, turning a bad argument into a 400 (404 for an unknown app or user)."""
    try:
        return action()
    except AppExists as exc:
        raise ProtocolError(f"{exc}.", status=409, error="conflict") from None
    except KeyError as exc:
        raise ProtocolError(f"{exc.args[0] if exc.args else exc}.", status=404, error="not_found") from None
    except (ValueError, TypeError) as exc:
        raise ProtocolError(f"{exc}.") from None


def _required(body: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    value = body.get(name)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise ProtocolError(f"{name} is missing or has the wrong type; send {name} as {_kind_name(kind)}.")
    return value


def _kind_name(kind: type | tuple[type, ...]) -> str:
    names = {str: "a string", int: "a number", float: "a number", list: "a list", bool: "true or false"}
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(dict.fromkeys(names.get(k, k.__name__) for k in kinds))


@admin_route("/clock", ["GET"])
async def get_clock(request: Request) -> Response:
    """Return the mock's clock in seconds since the epoch."""
    return JSONResponse({"now": _control(request).now()})


@admin_route("/clock/advance", ["POST"])
async def advance_clock(request: Request) -> Response:
    """Move the clock forward by {"seconds": N}."""
    body = await _body(request, {"seconds"})
    seconds = _required(body, "seconds", (int, float))
    return JSONResponse({"now": _call(lambda: _control(request).advance_clock(seconds))})


@admin_route("/apps", ["POST"])
async def register_app(request: Request) -> Response:
    """Register an app: {"client_id", "secret", "grants", "scopes", "environments", "redirect_uris", ...}.

    A client_id that is already registered gets 409 unless "replace" is true.
    """
    fields = {"client_id", "secret", "organization", "grants", "scopes", "environments", "redirect_uris",
              "auto_consent", "require_pkce", "name", "replace"}
    body = await _body(request, fields)
    client_id = _required(body, "client_id", str)
    secret = _required(body, "secret", str)
    options = {name: value for name, value in body.items() if name not in ("client_id", "secret")}
    app = _call(lambda: _control(request).register_app(client_id, secret=secret, **options))
    return JSONResponse({
        "client_id": app.client_id, "name": app.name, "organization": app.organization, "grants": list(app.grants),
        "environments": list(app.environments), "scopes": sorted(app.scopes), "redirect_uris": list(app.redirect_uris),
    }, status_code=201)


@admin_route("/users", ["POST"])
async def register_user(request: Request) -> Response:
    """Register a user: {"id", "password", "roles", "networks", "organization", "name", "requests_per_window"}."""
    body = await _body(request, {"id", "password", "roles", "networks", "organization", "name",
                                 "requests_per_window", "environments"})
    user_id = _required(body, "id", str)
    password = _required(body, "password", str)
    options = {name: value for name, value in body.items() if name not in ("id", "password")}
    user = _call(lambda: _control(request).register_user(user_id, password=password, **options))
    return JSONResponse(user.describe(), status_code=201)


@admin_route("/lifetimes", ["PUT"])
async def set_lifetimes(request: Request) -> Response:
    """Change token lifetimes in seconds: {"machine_access": 60, "environment": "production"}."""
    body = await _body(request, {"environment", "machine_access", "user_access", "user_refresh", "authorization_code"})
    environment = body.pop("environment", None)
    lifetimes = _call(lambda: _control(request).set_token_lifetimes(environment=environment, **body))
    return JSONResponse({name: getattr(lifetimes, name) for name in body} or {"unchanged": True})


@admin_route("/keys/rotate", ["POST"])
async def rotate_keys(request: Request) -> Response:
    """Rotate signing keys: {"environment": null for all, "keep_old": true}."""
    body = await _body(request, {"environment", "keep_old"})
    keep_old = body.get("keep_old", True)
    if not isinstance(keep_old, bool):
        raise ProtocolError("keep_old must be true or false.")
    rotated = _call(lambda: _control(request).rotate_keys(environment=body.get("environment"), keep_old=keep_old))
    return JSONResponse({"rotated": rotated})


@admin_route("/tokens/revoke", ["POST"])
async def revoke_tokens(request: Request) -> Response:
    """Revoke tokens: {"jti"} or {"client_id"} or {"subject"}, optionally with "environment".

    A jti goes on the deny list even if the mock never issued it; "revoked"
    lists each revoked id once, and is empty when a client or user had no tokens.
    """
    body = await _body(request, {"jti", "client_id", "subject", "environment"})
    revoked = _call(lambda: _control(request).revoke(**body))
    return JSONResponse({"revoked": revoked})


@admin_route("/faults", ["POST"])
async def inject_fault(request: Request) -> Response:
    """Inject a fault: {"kind", "target", "environment", "times", "status", "retry_after", "latency"}."""
    body = await _body(request, {"kind", "target", "environment", "times", "status", "retry_after", "latency"})
    kind = _required(body, "kind", str)
    options = {name: value for name, value in body.items() if name != "kind"}
    fault = _call(lambda: _control(request).inject_fault(kind, **options))
    return JSONResponse(fault.describe(), status_code=201)


@admin_route("/faults", ["GET"])
async def list_faults(request: Request) -> Response:
    return JSONResponse({"faults": [fault.describe() for fault in _control(request).faults()]})


@admin_route("/faults", ["DELETE"])
async def clear_faults(request: Request) -> Response:
    """Remove every fault and scope narrowing."""
    _control(request).clear_faults()
    return Response(status_code=204)


@admin_route("/scopes/narrow", ["POST"])
async def narrow_scopes(request: Request) -> Response:
    """Grant fewer scopes: {"drop": [...], "client_id": null for all, "environment": null for all}."""
    body = await _body(request, {"drop", "client_id", "environment"})
    drop = _required(body, "drop", list)
    _call(lambda: _control(request).narrow_scopes(drop, client_id=body.get("client_id"), environment=body.get("environment")))
    return Response(status_code=204)


@admin_route("/steps", ["POST"])
async def begin_step(request: Request) -> Response:
    """Start a new step of the journal: {"label": "..."}; retry rules never join two steps."""
    body = await _body(request, {"label"})
    label = body.get("label", "")
    if not isinstance(label, str):
        raise ProtocolError("label must be a string.")
    return JSONResponse({"step": _control(request).begin_step(label[:200])})


@admin_route("/journal", ["GET"])
async def read_journal(request: Request) -> Response:
    """Return journal entries after ?since=N (default 0), oldest first, with the count of dropped ones."""
    since = request.query_params.get("since", "0")
    if not since.isdigit():
        raise ProtocolError(f"since={since[:20]!r} must be a whole number: the seq of the last entry already read.")
    control = _control(request)
    return JSONResponse({**control.journal_summary(), "entries": [to_json(e) for e in control.journal(since=int(since))]})


@admin_route("/violations", ["GET"])
async def read_violations(request: Request) -> Response:
    """Return the violation report as JSON; ?ignore=rule-a,rule-b skips rules."""
    ignore = [name for name in request.query_params.get("ignore", "").split(",") if name]
    control = _control(request)
    found = _call(lambda: control.violations(ignore=ignore))
    entries = control.journal()
    summary = control.journal_summary()
    return JSONResponse({
        "count": len(found),
        "violations": [violation.to_json() for violation in found],
        "journal": summary,
        "report": format_report(found, entries, summary),
    })
