"""The audit trail: one record per v3 API call, allowed or rejected.

Each record names the actor: the user of a user token, the app of a
machine token, or "anonymous" when no valid token came. It also names the
app, the environment and the API operation, what was decided and why, the
search `reason` and case number when the request gave them, and the time
on the mock's clock. Read it from Python with `env.audit.records()` or
`audit_records(server)`, or over HTTP at GET /_mockflock/audit.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from mockflock.admin import admin_route, environment_of
from mockflock.errors import ProtocolError
from mockflock.journal import redact_path
from mockflock.jsonbody import parse_json
from mockflock.oauth.tokens import format_time
from mockflock.users import load_user_oauth_contract

if TYPE_CHECKING:
    from mockflock.contracts import Api, Operation
    from mockflock.server import MockServer

logger = logging.getLogger(__name__)

AUDIT_CONTRACT = load_user_oauth_contract()["audit"]
MAX_REASON = AUDIT_CONTRACT["max_reason_length"]["value"]
REASON_OPERATIONS = frozenset(AUDIT_CONTRACT["reason_operations"]["value"])
# A rejected request's body is read for its search reason only up to this size.
MAX_BODY_FOR_REASON = 64 * 1024
FILTERS = ("actor", "user", "app", "api", "operation", "decision", "environment")


@dataclass(frozen=True)
class AuditRecord:
    """One API call as the audit trail keeps it.

    `decision` is "allowed" when the call passed every access check, even
    if its handler then rejected the input (see `status`), and "denied"
    when a token, level, scope, role, network or quota check rejected it.
    """

    time: float
    environment: str
    request_id: str | None
    actor: str | None
    actor_type: str  # "user", "app" or "anonymous"
    user: str | None
    app: str | None
    organization: str | None
    api: str
    operation: str
    method: str
    path: str
    decision: str
    reason: str
    status: int
    detail: str | None
    search_reason: str | None
    case_number: str | None
    token_jti: str | None

    @property
    def timestamp(self) -> str:
        # Formatted when read, not on the request path.
        return format_time(self.time)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "timestamp": self.timestamp}


class AuditLog:
    """The audit records of one environment, oldest first, bounded in number."""

    def __init__(self, max_records: int | None = None) -> None:
        self._records: deque[AuditRecord] = deque(
            maxlen=max_records or AUDIT_CONTRACT["max_records"]["value"]
        )
        self._lock = threading.Lock()

    def append(self, record: AuditRecord) -> None:
        with self._lock:
            self._records.append(record)

    def records(self, **filters: str | None) -> list[AuditRecord]:
        """Return the records whose fields equal every filter given (actor, user, app, api, operation, decision)."""
        unknown = set(filters) - set(FILTERS)
        if unknown:
            raise TypeError(f"Unknown audit filters {sorted(unknown)}; use some of {list(FILTERS)}")
        with self._lock:
            records = list(self._records)
        return [
            r for r in records if all(v is None or getattr(r, k) == v for k, v in filters.items())
        ]

    def clear(self) -> None:
        with self._lock:
            self._records.clear()


def audit_records(mock: MockServer, **filters: str | None) -> list[AuditRecord]:
    """Return the records of every environment of `mock`, oldest first."""
    merged: Iterable[AuditRecord] = (
        record for env in mock.environments.values() for record in env.audit.records(**filters)
    )
    return sorted(merged, key=lambda record: record.time)


async def record_call(
    request: Request, api: Api, operation: Operation, *, status: int, error: Exception | None = None
) -> None:
    """Append the record of one API call to its environment's audit log."""
    env = request.app.state.environment
    principal = getattr(request.state, "principal", None)
    user = principal.user if principal else None
    app = principal.client_id if principal else None
    decision, reason = _decision(request, operation, principal, status, error)
    actor_type = "anonymous"
    if user:
        actor_type = "user"
    elif app:
        actor_type = "app"
    search_reason, case_number = await _search_reason(request, operation)
    now = env.clock.now()
    record = AuditRecord(
        time=now,
        environment=env.name,
        request_id=getattr(request.state, "request_id", None),
        actor=user or app,
        actor_type=actor_type,
        user=user,
        app=app,
        organization=principal.organization if principal else None,
        api=api.id,
        operation=operation.id,
        method=request.method,
        path=redact_path(request.scope["path"]),
        decision=decision,
        reason=reason,
        status=status,
        detail=error.description[:MAX_REASON] if isinstance(error, ProtocolError) else None,
        search_reason=search_reason,
        case_number=case_number,
        token_jti=principal.jti if principal else None,
    )
    env.audit.append(record)
    logger.debug(
        "Audit %s %s by %s: %s (%s)", env.name, operation.id, record.actor, decision, reason
    )


def _decision(
    request: Request, operation: Operation, principal: Any, status: int, error: Exception | None
) -> tuple[str, str]:
    authorized = getattr(request.state, "authorized", False)
    if isinstance(error, ProtocolError):
        code = error.reason or error.error
        # A 403 from a handler is an access decision too: a network the user may not see.
        if not authorized or error.status == 403:
            return "denied", code
        return "allowed", code
    if error is not None:
        return "allowed", "server_error"
    roles = getattr(request.state, "permitting_roles", None)
    if principal is not None and principal.level == "user" and roles:
        return "allowed", f"role {roles[0]} permits {operation.id}"
    return "allowed", f"scope {operation.scope}"


async def _search_reason(request: Request, operation: Operation) -> tuple[str | None, str | None]:
    reason = getattr(request.state, "search_reason", None)
    case_number = getattr(request.state, "search_case_number", None)
    if reason is None and case_number is None and operation.id in REASON_OPERATIONS:
        reason, case_number = await _reason_from_body(request)
    return _clip(reason), _clip(case_number)


async def _reason_from_body(request: Request) -> tuple[Any, Any]:
    """Read `reason` and `caseNumber` from a JSON body that no handler parsed (a rejected search)."""
    declared = request.headers.get("content-length", "")
    if not declared.isdigit() or int(declared) > MAX_BODY_FOR_REASON:
        return None, None
    try:
        body = parse_json(await request.body())
    except (ValueError, RuntimeError, ClientDisconnect):
        return None, None
    if not isinstance(body, dict):
        return None, None
    return body.get("reason"), body.get("caseNumber")


def _clip(value: Any) -> str | None:
    return value[:MAX_REASON] if isinstance(value, str) else None


@admin_route("/audit", ["GET"])
async def list_audit(request: Request) -> Response:
    """Return this environment's audit records, filtered by query parameters, oldest first.

    Filters: actor, user, app, api, operation, decision; `limit` keeps the newest N.
    """
    filters = {name: request.query_params.get(name) for name in FILTERS if name != "environment"}
    records = environment_of(request).audit.records(**filters)
    limit = request.query_params.get("limit")
    if limit is not None:
        if not limit.isdigit() or int(limit) == 0:
            raise ProtocolError(f"limit={limit[:20]!r} must be a positive whole number of records.")
        records = records[-int(limit) :]
    return JSONResponse(
        {"environment": environment_of(request).name, "records": [r.as_dict() for r in records]}
    )


@admin_route("/audit", ["DELETE"])
async def clear_audit(request: Request) -> Response:
    """Forget this environment's audit records."""
    environment_of(request).audit.clear()
    return Response(status_code=204)
