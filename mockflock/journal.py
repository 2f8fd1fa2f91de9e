"""The request journal: each request a client made, and what it got back.

`JournalMiddleware` wraps one environment's app and appends one entry per
request to the server's `Journal`. The violation rules in
`mockflock.violations` read these entries, so an entry keeps what the
rules need and nothing secret. A token is summarized by its claims (kid,
jti, level, audience, scopes), a refresh token by a SHA-256 fingerprint,
and a client secret only by the name of the place it appeared in.

An entry is a plain dict, built once when the response is complete:

    seq, step       position in the journal; the step the checker or a test was in
    t, t_end        the mock clock when the request arrived and when it ended
    environment     environment whose port received the request
    method, path    as sent; the query string is never stored
    endpoint        token, authorize, revoke, introspect, api, discovery, jwks, health, other
    status          HTTP status, or None when the connection was dropped
    outcome         ok, rejected, fault (injected) or dropped
    error, reason   the `error` code sent and the rejection's internal cause
    retry_after     seconds of a Retry-After header, or None
    fault           label of the injected fault, or None
    client_id       the app: from the credentials or the token
    secret_in_url   names of secret-bearing query parameters (client_secret, access_token, ...)

Token, revocation and introspection requests add `auth_method` (basic,
post, both or None), `grant_type`, `audience`, `scope` (requested, a
frozenset or None), `redirect_uri_registered`, `refresh_presented`, and
for a token response `issued` (token summary), `refresh_issued` and
`granted_scope`. Authorization requests add `scope`, `state`, `pkce` (the
code_challenge_method, "plain" when a challenge has no method, None
without a challenge), `redirect_uri_registered` and `response_type`. API
requests add `operation`, `api` and `token` (summary of the token sent).

Control actions (clock, keys, revocations, faults, steps) are entries
with endpoint "control" and an `action`.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import itertools
import json
import logging
import re
import threading
from collections import deque
from collections.abc import Iterable
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote_plus, urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mockflock.contracts import load_matrix
from mockflock.jsonbody import parse_json

if TYPE_CHECKING:
    from mockflock.access.bearer import Principal
    from mockflock.clock import Clock
    from mockflock.environments import Environment

logger = logging.getLogger(__name__)

DEFAULT_MAX_ENTRIES = 10_000
ADMIN_PREFIX = "/_mockflock"
API_PREFIX = "/api/"
# Token endpoint bodies are read ahead up to this size; the endpoint itself
# rejects anything larger with 413.
MAX_CAPTURED_BODY = 65_536 + 1
# Parameters whose value is a credential: seeing one in a URL is a violation.
SECRET_PARAMETERS = frozenset(
    {"client_secret", "access_token", "refresh_token", "code_verifier", "password", "client_assertion"}
)
CREDENTIAL_ENDPOINTS = frozenset({"token", "revoke", "introspect"})


class Journal:
    """A bounded, thread-safe list of journal entries.

    The server's event loop appends and tests read from their own thread.
    When full, the oldest entry goes and `dropped` counts it.
    """

    def __init__(self, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries={max_entries!r} must be at least 1")
        self._entries: deque[dict[str, Any]] = deque(maxlen=max_entries)
        self._lock = threading.Lock()
        self._seq = itertools.count(1)
        self.dropped = 0
        # The checker (or a test) starts a new step before each operation,
        # so that retry rules never join two separate calls of the app.
        self.step = 0

    @property
    def max_entries(self) -> int:
        return self._entries.maxlen or 0

    def append(self, entry: dict[str, Any]) -> None:
        with self._lock:
            if len(self._entries) == self._entries.maxlen:
                self.dropped += 1
            entry["seq"] = next(self._seq)
            entry["step"] = self.step
            self._entries.append(entry)

    def record_event(self, action: str, *, time: float, environment: str | None = None, **details: Any) -> None:
        """Append a control action (clock advanced, key rotated, token revoked, ...)."""
        self.append(
            {"endpoint": "control", "action": action, "t": time, "t_end": time, "environment": environment, **details}
        )

    def begin_step(self, label: str, *, time: float) -> int:
        """Start a new step: requests after it belong to a new call of the app."""
        with self._lock:
            self.step += 1
            step = self.step
        self.record_event("step", time=time, label=label)
        return step

    def entries(self, *, since: int = 0) -> list[dict[str, Any]]:
        """Return a copy of the entries whose `seq` is greater than `since`, oldest first."""
        with self._lock:
            return [entry for entry in self._entries if entry["seq"] > since]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.dropped = 0
            self.step = 0

    def resize(self, max_entries: int) -> None:
        """Keep at most `max_entries` entries from now on; older ones beyond it are dropped."""
        if max_entries < 1:
            raise ValueError(f"max_entries={max_entries!r} must be at least 1")
        with self._lock:
            kept = list(self._entries)[-max_entries:]
            self.dropped += len(self._entries) - len(kept)
            self._entries = deque(kept, maxlen=max_entries)

    def summary(self) -> dict[str, int]:
        with self._lock:
            return {"entries": len(self._entries), "dropped": self.dropped, "max_entries": self.max_entries}

    def __len__(self) -> int:
        return len(self._entries)


def fingerprint(token: str) -> str:
    """Return a short SHA-256 fingerprint that distinguishes tokens without revealing them."""
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()[:16]


def summarize_principal(principal: Principal, environment: str) -> dict[str, Any]:
    """Summarize a verified token; no part of the token itself is kept."""
    return {
        "kid": principal.kid,
        "jti": principal.jti,
        "level": principal.level,
        "audience": principal.claims.get("aud"),
        "scopes": principal.scopes,
        "client_id": principal.client_id,
        "subject": principal.subject,
        "issued_at": principal.claims.get("iat"),
        "expires_at": principal.expires_at,
        "environment": environment,
    }


JWT_IN_PATH = re.compile(r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")


def redact_path(path: str) -> str:
    """Replace anything shaped like a JWT in a path, so no token is kept even if a client puts one there."""
    return JWT_IN_PATH.sub("<jwt>", path) if "eyJ" in path else path


def summarize_jwt(token: str, environments: Iterable[Environment]) -> dict[str, Any] | None:
    """Summarize a JWT from its unverified header and claims, or None if it is no JWT.

    The summary names the environment that issued the token (by audience
    or issuer), so that a token sent to the wrong environment is reported as such.
    """
    parts = token.split(".")
    if len(parts) != 3:
        return None
    header = _decode_segment(parts[0])
    claims = _decode_segment(parts[1])
    if header is None or claims is None:
        return None
    audience = claims.get("aud")
    issuer = claims.get("iss")
    issued_by = next(
        (env.name for env in environments if audience == env.audience or issuer == env.issuer),
        None,
    )
    scope = claims.get("scope")
    return {
        "kid": header.get("kid"),
        "jti": claims.get("jti"),
        "level": claims.get("token_level"),
        "audience": audience,
        "scopes": frozenset(scope.split()) if isinstance(scope, str) else frozenset(),
        "client_id": claims.get("client_id") or claims.get("azp"),
        "subject": claims.get("sub"),
        "issued_at": claims.get("iat"),
        "expires_at": claims.get("exp"),
        "environment": issued_by,
    }


def _decode_segment(segment: str) -> dict[str, Any] | None:
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
        value = parse_json(raw)
    except (binascii.Error, ValueError):
        return None
    return value if isinstance(value, dict) else None


def endpoint_kind(path: str) -> str:
    """Classify a request path as one of the journal's endpoint kinds."""
    if path.startswith(API_PREFIX):
        return "api"
    last = path.rstrip("/").rpartition("/")[2]
    if path.startswith("/.well-known/"):
        return "jwks" if last == "jwks.json" else "discovery"
    if last in ("token", "authorize", "revoke", "introspect"):
        return last
    if path == "/healthz":
        return "health"
    return "other"


@functools.cache
def _operation_patterns() -> list[tuple[str, re.Pattern[str], str]]:
    # Literal segments first, as the API router orders its routes.
    operations = sorted(load_matrix().operations, key=lambda op: (op.path.count("{"), op.path))
    return [
        (op.method, re.compile(API_PREFIX + "v3" + re.sub(r"\{[^/]+\}", "[^/]+", op.path) + "/?"), op.id)
        for op in operations
    ]


def operation_for(method: str, path: str) -> str | None:
    """Return the id of the matrix operation a request goes to, as the API router would pick it."""
    for op_method, pattern, op_id in _operation_patterns():
        if op_method == method and pattern.fullmatch(path):
            return op_id
    return None


def parse_retry_after(value: str, now: float) -> float | None:
    """Return the seconds a Retry-After value requests: delta-seconds or an HTTP date (RFC 9110 10.2.3)."""
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - now)
    except (TypeError, ValueError, IndexError):
        return None


def to_json(entry: dict[str, Any]) -> dict[str, Any]:
    """Return an entry with sets turned into sorted lists, ready for JSON."""
    return {name: _jsonable(value) for name, value in entry.items()}


def _jsonable(value: Any) -> Any:
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    if isinstance(value, dict):
        return {name: _jsonable(item) for name, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    return value


class _Exchange:
    """The status, headers and (for token responses) body the middleware saw of one response."""

    __slots__ = ("status", "retry_after", "location", "body")

    def __init__(self, capture_body: bool) -> None:
        self.status: int | None = None
        self.retry_after: str | None = None
        self.location: str | None = None
        self.body: list[bytes] | None = [] if capture_body else None


class JournalMiddleware:
    """ASGI middleware that journals every request of one environment.

    The admin API is not journaled, so that reading the journal does not
    change it. On the API hot path the middleware only watches the status
    line and builds one small dict. Requests to the credential endpoints
    also have their body read ahead and replayed, so that a request
    rejected before the endpoint parses it is still attributed to its app.
    """

    def __init__(self, app: ASGIApp, *, environment: Environment, environments: dict[str, Environment],
                 journal: Journal, clock: Clock) -> None:
        self.app = app
        self.environment = environment
        self.environments = environments
        self.journal = journal
        self.clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(ADMIN_PREFIX):
            await self.app(scope, receive, send)
            return

        started = self.clock.now()
        kind = endpoint_kind(scope["path"])
        state = scope.setdefault("state", {})
        body = b""
        if (kind in CREDENTIAL_ENDPOINTS or (kind == "authorize" and scope["method"] == "POST")) and _fits(scope):
            body, receive = await read_ahead(receive)
        exchange = _Exchange(capture_body=kind == "token")
        recorded = False

        def record() -> None:
            nonlocal recorded
            if not recorded:
                recorded = True
                self.journal.append(self._entry(scope, state, kind, started, exchange, body))

        # The entry is appended before the last byte goes out, so a test that
        # reads the journal right after its client returns sees the request.
        # The fault injector calls record() before it drops a connection.
        state["journal_record"] = record

        async def watch(message: Message) -> None:
            if message["type"] == "http.response.start":
                exchange.status = message["status"]
                if exchange.status >= 300:
                    _watch_headers(exchange, message.get("headers", ()))
            elif message["type"] == "http.response.body":
                if exchange.body is not None:
                    exchange.body.append(message.get("body", b""))
                if not message.get("more_body", False):
                    record()
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            record()

    def _entry(self, scope: Scope, state: dict[str, Any], kind: str, started: float,
               exchange: _Exchange, body: bytes) -> dict[str, Any]:
        now = self.clock.now()
        status = exchange.status
        if status is None or state.get("dropped"):
            status = None
            outcome = "dropped"
        elif state.get("fault_response"):
            outcome = "fault"
        else:
            outcome = "ok" if status < 400 else "rejected"
        entry: dict[str, Any] = {
            "t": started,
            "t_end": now,
            "environment": self.environment.name,
            "method": scope["method"],
            "path": redact_path(scope["path"]),
            "endpoint": kind,
            "status": status,
            "outcome": outcome,
            "error": state.get("error_code"),
            "reason": state.get("error_reason"),
            "retry_after": parse_retry_after(exchange.retry_after, now) if exchange.retry_after else None,
            "fault": state.get("fault"),
            "request_id": state.get("request_id"),
            "client_id": None,
            "secret_in_url": (),
        }
        query = scope.get("query_string", b"")
        if kind == "api":
            self._describe_api(entry, scope, state, query)
        elif kind in CREDENTIAL_ENDPOINTS:
            parsed = None if state.get("body_rewritten") else state.get("form_params")
            self._describe_credentials(entry, scope, query, parsed or _parse_body(scope, body), exchange)
        elif kind == "authorize":
            self._describe_authorize(entry, scope, query, body, exchange)
        return entry

    def _describe_api(self, entry: dict[str, Any], scope: Scope, state: dict[str, Any], query: bytes) -> None:
        principal = state.get("principal")
        operation = state.get("operation")
        api = state.get("api")
        if operation is None:
            # Rejected before routing set it (bad token, injected fault): find it by path.
            entry["operation"] = operation_for(scope["method"], scope["path"])
        else:
            entry["operation"] = operation.id
        entry["api"] = api.id if api is not None else None
        if principal is not None:
            entry["token"] = summarize_principal(principal, self.environment.name)
        else:
            token = _bearer_token(scope)
            entry["token"] = summarize_jwt(token, self.environments.values()) if token else None
        if entry["token"]:
            entry["client_id"] = entry["token"]["client_id"]
        entry["secret_in_url"] = _secret_names(query) if query else ()

    def _describe_credentials(self, entry: dict[str, Any], scope: Scope, query: bytes, params: dict[str, str],
                              exchange: _Exchange) -> None:
        # `params` comes from the endpoint when it parsed the body, so the
        # token path parses it once; a body it rejected is parsed here.
        basic_client = basic_client_id(_header(scope, b"authorization"))
        in_body = "client_secret" in params
        if basic_client is not None:
            entry["auth_method"] = "both" if in_body else "basic"
        else:
            entry["auth_method"] = "post" if in_body else None
        client_id = basic_client or params.get("client_id")
        entry["client_id"] = client_id
        entry["secret_in_url"] = _secret_names(query) if query else ()
        entry["grant_type"] = params.get("grant_type")
        entry["audience"] = params.get("audience")
        entry["scope"] = _scope_set(params.get("scope"))
        entry["redirect_uri"] = _clip(params.get("redirect_uri"))
        entry["redirect_uri_registered"] = self._redirect_registered(client_id, params.get("redirect_uri"))
        refresh = params.get("refresh_token") if params.get("grant_type") == "refresh_token" else None
        entry["refresh_presented"] = fingerprint(refresh) if refresh else None
        entry["code_verifier"] = "code_verifier" in params
        entry["token_type_hint"] = params.get("token_type_hint")
        if entry["endpoint"] == "token":
            self._describe_token_response(entry, exchange)

    def _describe_token_response(self, entry: dict[str, Any], exchange: _Exchange) -> None:
        entry["issued"] = None
        entry["refresh_issued"] = None
        entry["granted_scope"] = None
        if exchange.status != 200 or not exchange.body:
            if exchange.status is not None and exchange.status >= 400 and entry["error"] is None:
                entry["error"] = _error_code(b"".join(exchange.body or ()))
            return
        try:
            body = json.loads(b"".join(exchange.body))
        except ValueError:
            return
        if not isinstance(body, dict):
            return
        access = body.get("access_token")
        if isinstance(access, str):
            entry["issued"] = summarize_jwt(access, self.environments.values())
        refresh = body.get("refresh_token")
        if isinstance(refresh, str):
            entry["refresh_issued"] = fingerprint(refresh)
        entry["granted_scope"] = _scope_set(body.get("scope")) if isinstance(body.get("scope"), str) else None
        if entry["client_id"] is None and entry["issued"]:
            entry["client_id"] = entry["issued"]["client_id"]

    def _describe_authorize(self, entry: dict[str, Any], scope: Scope, query: bytes, body: bytes,
                            exchange: _Exchange) -> None:
        params = dict(parse_qsl(query.decode("latin-1"), keep_blank_values=True))
        if body:
            params.update(_parse_body(scope, body))
        client_id = params.get("client_id")
        entry["client_id"] = client_id
        entry["secret_in_url"] = _secret_names(query) if query else ()
        entry["response_type"] = params.get("response_type")
        entry["scope"] = _scope_set(params.get("scope"))
        entry["state"] = bool(params.get("state"))
        challenge = params.get("code_challenge")
        entry["pkce"] = (params.get("code_challenge_method") or "plain") if challenge else None
        entry["redirect_uri"] = _clip(params.get("redirect_uri"))
        entry["redirect_uri_registered"] = self._redirect_registered(client_id, params.get("redirect_uri"))
        if exchange.location and entry["error"] is None:
            # RFC 6749 4.1.2.1: once the redirect URI is known good, errors travel in its query.
            redirect_query = dict(parse_qsl(urlsplit(exchange.location).query))
            entry["error"] = redirect_query.get("error")

    def _redirect_registered(self, client_id: str | None, redirect_uri: str | None) -> bool | None:
        if not client_id or not redirect_uri:
            return None
        app = self.environment.clients.get(client_id)
        if app is None:
            return None
        return redirect_uri in app.redirect_uris


def _fits(scope: Scope) -> bool:
    """Tell whether a declared body is small enough to read ahead.

    A body declared larger is left to the endpoint, which rejects it with
    413 from the header alone instead of waiting for bytes that may never come.
    """
    declared = _header(scope, b"content-length")
    return declared is None or not declared.isdigit() or int(declared) <= MAX_CAPTURED_BODY


async def read_ahead(receive: Receive) -> tuple[bytes, Receive]:
    """Read the request body (up to MAX_CAPTURED_BODY) and return it with a receive that replays it."""
    chunks: list[bytes] = []
    size = 0
    more_body = True
    pending: list[Message] = []
    while more_body and size < MAX_CAPTURED_BODY:
        message = await receive()
        if message["type"] != "http.request":
            pending.append(message)
            break
        chunk = message.get("body", b"")
        chunks.append(chunk)
        size += len(chunk)
        more_body = message.get("more_body", False)
    body = b"".join(chunks)
    if not pending:
        pending.append({"type": "http.request", "body": body, "more_body": more_body})

    async def replay() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    # Lets the fault injector reach the server's own receive (and its connection).
    replay.__wrapped__ = receive  # type: ignore[attr-defined]
    return (body if size < MAX_CAPTURED_BODY else b""), replay


def _watch_headers(exchange: _Exchange, headers: Iterable[tuple[bytes, bytes]]) -> None:
    for name, value in headers:
        lowered = name.lower()
        if lowered == b"retry-after":
            exchange.retry_after = value.decode("latin-1")
        elif lowered == b"location":
            exchange.location = value.decode("latin-1")


def _parse_body(scope: Scope, body: bytes) -> dict[str, str]:
    """Parse a form or JSON body leniently: the endpoint reports malformed bodies, not the journal."""
    if not body:
        return {}
    content_type = _header(scope, b"content-type") or ""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return {}
    if "json" in content_type.lower():
        try:
            value = parse_json(text)
        except ValueError:
            return {}
        return {str(k): v for k, v in value.items() if isinstance(v, str)} if isinstance(value, dict) else {}
    try:
        return dict(parse_qsl(text, keep_blank_values=True, max_num_fields=200))
    except ValueError:
        return {}


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def _bearer_token(scope: Scope) -> str | None:
    header = _header(scope, b"authorization")
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


def basic_client_id(header: str | None) -> str | None:
    """Return the client id of a Basic Authorization header, "" if it is garbled, None without one."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return ""
    return unquote_plus(decoded.partition(":")[0])


def _secret_names(query: bytes) -> tuple[str, ...]:
    try:
        names = {name for name, _ in parse_qsl(query.decode("latin-1"), keep_blank_values=True)}
    except ValueError:
        return ()
    return tuple(sorted(names & SECRET_PARAMETERS))


def _scope_set(value: Any) -> frozenset[str] | None:
    if not isinstance(value, str) or not value.strip():
        return None
    return frozenset(value.split())


def _clip(value: str | None, limit: int = 200) -> str | None:
    return value if value is None or len(value) <= limit else value[:limit] + "..."


def _error_code(body: bytes) -> str | None:
    try:
        value = json.loads(body)
    except ValueError:
        return None
    error = value.get("error") if isinstance(value, dict) else None
    return error if isinstance(error, str) else None
