"""Injected faults and narrowed scopes, applied as ASGI middleware.

A `Fault` makes matching requests slow (latency), fail (a 5xx status),
hit a rate limit (429 with Retry-After) or lose their connection (the
server closes the socket without a response). Faults target the token
endpoint, the v3 APIs, the authorization endpoint or one operation id, in
one environment or both, for a number of requests or until cleared.

Scope narrowing makes the token endpoint grant fewer scopes than a client
asks for, as RFC 6749 3.3 allows, and report that in the response's `scope`.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import math
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mockflock.contracts import load_matrix
from mockflock.errors import ProtocolError
from mockflock.journal import (
    ADMIN_PREFIX,
    basic_client_id,
    endpoint_kind,
    operation_for,
    read_ahead,
)
from mockflock.responses import error_response

if TYPE_CHECKING:
    from mockflock.environments import Environment

logger = logging.getLogger(__name__)

KINDS = ("latency", "error", "rate_limit", "drop")
ENDPOINT_TARGETS = ("token", "api", "authorize", "revoke", "introspect", "any")
# Longest injected latency, so that a typo cannot hang a test run.
MAX_LATENCY_SECONDS = 30.0
NARROWABLE_GRANTS = ("client_credentials", "refresh_token")


@dataclass
class Fault:
    """One injected fault; `times` is how many requests it still affects (None: until cleared)."""

    kind: str
    target: str
    environment: str | None = None
    times: int | None = 1
    status: int = 503
    retry_after: int | None = None
    latency: float = 0.0
    id: int = 0
    fired: int = 0

    @property
    def label(self) -> str:
        if self.kind == "latency":
            return f"latency {self.latency:g}s"
        if self.kind == "drop":
            return "dropped connection"
        if self.kind == "rate_limit":
            return f"429 Retry-After {self.retry_after}"
        return f"{self.status}" + (f" Retry-After {self.retry_after}" if self.retry_after is not None else "")

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.id, "kind": self.kind, "target": self.target, "environment": self.environment,
            "times": self.times, "status": self.status, "retry_after": self.retry_after,
            "latency": self.latency, "fired": self.fired, "label": self.label,
        }


def make_fault(
    kind: str,
    *,
    target: str = "api",
    environment: str | None = None,
    times: int | None = 1,
    status: int | None = None,
    retry_after: float | None = None,
    latency: float | None = None,
    environments: tuple[str, ...] = ("production", "development"),
) -> Fault:
    """Check a fault's arguments and return it; raise ValueError naming the wrong one."""
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r} is not a fault kind; use one of {', '.join(KINDS)}")
    if target not in ENDPOINT_TARGETS and target not in _operation_ids():
        raise ValueError(
            f"target={target!r} is neither an endpoint ({', '.join(ENDPOINT_TARGETS)}) nor an operation id "
            f"of contracts/matrix.yaml, such as listHotlists"
        )
    if environment is not None and environment not in environments:
        raise ValueError(f"environment={environment!r} is not served; use one of {', '.join(environments)} or null for all")
    if times is not None and (isinstance(times, bool) or not isinstance(times, int) or times < 1):
        raise ValueError(f"times={times!r} must be a whole number of requests of at least 1, or null for every request")
    if retry_after is not None:
        if not _is_number(retry_after) or not 0 <= retry_after <= 86400:
            raise ValueError(f"retry_after={retry_after!r} must be a number of seconds between 0 and 86400")
        # Retry-After carries whole seconds (RFC 9110 10.2.3): round a fraction up, never down to "retry at once".
        retry_after = math.ceil(retry_after)

    if kind == "error":
        status = 503 if status is None else status
        if isinstance(status, bool) or not isinstance(status, int) or not 500 <= status <= 599:
            raise ValueError(f"status={status!r} must be a 5xx status for an error fault; use rate_limit for 429")
    elif status is not None and not (kind == "rate_limit" and status == 429):
        raise ValueError(f"status={status!r} applies only to error faults")
    if kind == "rate_limit":
        status = 429
        retry_after = 1 if retry_after is None else retry_after
    if kind == "latency":
        if not _is_number(latency) or not 0 < latency <= MAX_LATENCY_SECONDS:
            raise ValueError(f"latency={latency!r} must be a number of seconds above 0 and at most {MAX_LATENCY_SECONDS:g}")
    elif latency is not None:
        raise ValueError(f"latency={latency!r} applies only to latency faults")
    return Fault(
        kind=kind, target=target, environment=environment, times=times, status=status or 503,
        retry_after=retry_after, latency=float(latency or 0.0),
    )


def _is_number(value: object) -> bool:
    """Tell whether `value` is an int or float (true and false are not numbers here)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _operation_ids() -> set[str]:
    return {op.id for op in load_matrix().operations}


@dataclass
class FaultPlan:
    """The faults and scope narrowings in force, shared by every environment of a server."""

    faults: list[Fault] = field(default_factory=list)
    # (environment or None, client id or None) -> scopes to leave out of grants.
    narrowing: dict[tuple[str | None, str | None], frozenset[str]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1), repr=False)

    @property
    def active(self) -> bool:
        return bool(self.faults or self.narrowing)

    def add(self, fault: Fault) -> Fault:
        with self._lock:
            fault.id = next(self._ids)
            self.faults = [*self.faults, fault]
        logger.info("Injected fault %d: %s on %s (%s)", fault.id, fault.label, fault.target, fault.environment or "all environments")
        return fault

    def narrow(self, drop: frozenset[str], *, client_id: str | None, environment: str | None) -> None:
        with self._lock:
            self.narrowing = {**self.narrowing, (environment, client_id): drop}

    def clear(self) -> None:
        with self._lock:
            self.faults = []
            self.narrowing = {}

    def take(self, environment: str, method: str, path: str) -> Fault | None:
        """Return the first fault that matches the request, counting it as fired."""
        kind = endpoint_kind(path)
        with self._lock:
            for fault in self.faults:
                if fault.environment not in (None, environment) or not _targets(fault.target, kind, method, path):
                    continue
                fault.fired += 1
                if fault.times is not None:
                    fault.times -= 1
                    if fault.times == 0:
                        self.faults = [other for other in self.faults if other is not fault]
                return fault
        return None

    def dropped_scopes(self, environment: str, client_id: str | None) -> frozenset[str]:
        drop: frozenset[str] = frozenset()
        for (env, client), scopes in self.narrowing.items():
            if env in (None, environment) and client in (None, client_id):
                drop |= scopes
        return drop


def _targets(target: str, kind: str, method: str, path: str) -> bool:
    if target == "any":
        return kind != "health"
    if target in ENDPOINT_TARGETS:
        return target == kind
    return kind == "api" and operation_for(method, path) == target


class FaultMiddleware:
    """ASGI middleware that applies a server's `FaultPlan` to one environment."""

    def __init__(self, app: ASGIApp, *, environment: Environment, plan: FaultPlan) -> None:
        self.app = app
        self.environment = environment
        self.plan = plan

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.plan.active or scope["path"].startswith(ADMIN_PREFIX):
            await self.app(scope, receive, send)
            return
        fault = self.plan.take(self.environment.name, scope["method"], scope["path"])
        if fault is not None:
            state = scope.setdefault("state", {})
            state["fault"] = fault.label
            if fault.kind == "latency":
                await asyncio.sleep(fault.latency)
            elif fault.kind == "drop":
                state["fault_response"] = True
                await _drop_connection(scope, receive, send)
                return
            else:
                state["fault_response"] = True
                await self._respond(fault, scope, receive, send)
                return
        if self.plan.narrowing and scope["method"] == "POST" and endpoint_kind(scope["path"]) == "token":
            await self._narrowed(scope, receive, send)
            return
        await self.app(scope, receive, send)

    async def _respond(self, fault: Fault, scope: Scope, receive: Receive, send: Send) -> None:
        where = self._describe_target(scope)
        headers = {}
        if fault.retry_after is not None:
            headers["Retry-After"] = str(fault.retry_after)
        if fault.kind == "rate_limit":
            error = ProtocolError(
                f"Too many requests: mockflock injected a 429 on {where}. Wait the Retry-After "
                f"seconds ({headers['Retry-After']}) before the next request.",
                status=429, error="too_many_requests", headers=headers, reason="injected_rate_limit",
            )
        else:
            error = ProtocolError(
                f"mockflock injected a {fault.status} fault on {where}. Retry later with backoff"
                + (f", after the Retry-After seconds ({headers['Retry-After']})." if headers else "."),
                status=fault.status, error="temporarily_unavailable", headers=headers, reason="injected_error",
            )
        state = scope["state"]
        state["error_code"] = error.error
        state["error_reason"] = error.reason
        await error_response(error)(scope, receive, send)

    def _describe_target(self, scope: Scope) -> str:
        return f"{scope['method']} {scope['path']} in the {self.environment.name} environment"

    async def _narrowed(self, scope: Scope, receive: Receive, send: Send) -> None:
        body, receive = await read_ahead(receive)
        content_type = _header(scope, b"content-type")
        params = _parse(body, content_type)
        client_id = params.get("client_id") or basic_client_id(_header(scope, b"authorization"))
        drop = self.plan.dropped_scopes(self.environment.name, client_id)
        narrowed = self._narrow_scopes(params, client_id, drop)
        if narrowed is None:
            await self.app(scope, receive, send)
            return

        params["scope"] = " ".join(sorted(narrowed))
        new_body = json.dumps(params).encode() if "json" in (content_type or "") else urlencode(params).encode()
        headers = [(k, v) for k, v in scope["headers"] if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(new_body)).encode()))
        logger.debug("Narrowed the scopes of %s in %s to %s", client_id, self.environment.name, params["scope"])

        async def replay() -> Message:
            return {"type": "http.request", "body": new_body, "more_body": False}

        replay.__wrapped__ = receive  # type: ignore[attr-defined]
        # The journal must record the scopes the client sent, not these.
        scope.setdefault("state", {})["body_rewritten"] = True
        await self.app({**scope, "headers": headers}, replay, _ScopeAnnouncer(send, params["scope"]))

    def _narrow_scopes(self, params: dict[str, str], client_id: str | None, drop: frozenset[str]) -> frozenset[str] | None:
        """Return the narrowed scope set, or None when the request is left as it is."""
        if not drop or params.get("grant_type") not in NARROWABLE_GRANTS:
            return None
        requested = frozenset(params.get("scope", "").split()) or self._default_scopes(params, client_id)
        if not requested:
            return None
        narrowed = requested - drop
        # An empty scope means "every registered scope" to the endpoint, so never send one.
        if not narrowed or narrowed == requested:
            return None
        return narrowed


    def _default_scopes(self, params: dict[str, str], client_id: str | None) -> frozenset[str]:
        """Return what a request without `scope` is granted: the app's scopes, or the refresh token's grant."""
        env = self.environment
        if params.get("grant_type") == "refresh_token":
            with env.grants.lock:
                record = env.grants.refresh_tokens.get(params.get("refresh_token", ""))
                family = env.grants.families.get(record.family_id) if record is not None else None
            return family.scopes if family is not None else frozenset()
        app = env.clients.get(client_id or "")
        return app.scopes if app is not None else frozenset()


class _ScopeAnnouncer:
    """ASGI send wrapper that adds `scope` to a successful token response when it is missing."""

    def __init__(self, send: Send, scope: str) -> None:
        self.send = send
        self.scope = scope
        self.start: Message | None = None
        self.chunks: list[bytes] = []

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            if message["status"] != 200:
                await self.send(message)
                return
            self.start = message
            return
        if self.start is None or message["type"] != "http.response.body":
            await self.send(message)
            return
        self.chunks.append(message.get("body", b""))
        if message.get("more_body", False):
            return
        body = b"".join(self.chunks)
        try:
            value = json.loads(body)
            if isinstance(value, dict):
                value.setdefault("scope", self.scope)
                body = json.dumps(value).encode()
        except ValueError:
            pass
        headers = [(k, v) for k, v in self.start.get("headers", ()) if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        await self.send({**self.start, "headers": headers})
        await self.send({"type": "http.response.body", "body": body, "more_body": False})


async def _drop_connection(scope: Scope, receive: Receive, send: Send) -> None:
    """Close the connection without a response, as a crashed server or proxy would.

    uvicorn's receive callable is a method of the request's cycle, and the
    cycle has the connection's transport, so aborting the transport closes
    the socket. When it is not reachable (another ASGI server), the response
    is started and never finished, which makes the server close the connection.
    """
    state = scope.setdefault("state", {})
    raw = receive
    while hasattr(raw, "__wrapped__"):
        raw = raw.__wrapped__
    cycle = getattr(raw, "__self__", None)
    transport = getattr(cycle, "transport", None)
    if transport is not None and hasattr(transport, "abort"):
        record = state.get("journal_record")
        if record is not None:
            state["dropped"] = True
            record()
        transport.abort()
        # Let the server see the lost connection, so that it sends nothing to a closed socket.
        for _ in range(20):
            if getattr(cycle, "disconnected", True):
                return
            await asyncio.sleep(0)
        return
    state["dropped"] = True
    await send({"type": "http.response.start", "status": 500, "headers": [(b"content-length", b"1")]})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def _parse(body: bytes, content_type: str | None) -> dict[str, str]:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return {}
    if content_type and "json" in content_type:
        try:
            value = json.loads(text)
        except ValueError:
            return {}
        return {k: v for k, v in value.items() if isinstance(v, str)} if isinstance(value, dict) else {}
    try:
        return dict(parse_qsl(text, keep_blank_values=True))
    except ValueError:
        return {}
