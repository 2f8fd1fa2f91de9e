"""The mock server: one Starlette app per environment, served on its own port.

A single uvicorn server listens on every environment's socket; a small
dispatcher hands each connection to the app of the port it arrived on.
`MockServer` runs it in the foreground (the CLI) or in a thread (tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mockflock import admin
from mockflock.apis import routing as api_routing
from mockflock.clock import Clock
from mockflock.config import MockConfig, load_config, load_environment_specs
from mockflock.contracts import load_matrix
from mockflock.environments import Environment, build_environments
from mockflock.errors import ConfigError, ProtocolError
from mockflock.oauth import endpoints as oauth_endpoints
from mockflock.oauth.signing import SigningPool
from mockflock.openapi import load_openapi
from mockflock.responses import error_response
from mockflock.seed import seed_organization
from mockflock.store import Store
# Test harness: request journal, fault injection and control state, and
# the control interface's admin endpoints (registered on import).
from mockflock import control_api  # noqa: F401
from mockflock.control import HarnessState
from mockflock.journal import DEFAULT_MAX_ENTRIES

logger = logging.getLogger(__name__)

ENVIRONMENT_NAMES = ("production", "development")
MAX_HEADER_BYTES = 64 * 1024


@dataclass
class ServerOptions:
    """Listening address, ports, public URLs and admin access; see `mockflock serve --help`."""

    host: str = "127.0.0.1"
    ports: dict[str, int] = field(default_factory=lambda: {"production": 8080, "development": 8081})
    environments: tuple[str, ...] = ENVIRONMENT_NAMES
    public_urls: dict[str, str] = field(default_factory=dict)
    admin_token: str | None = None
    log_level: str = "info"
    # Worker processes that sign tokens; 0 signs on the event loop.
    signing_workers: int = 0
    # Test harness: most requests the journal keeps before dropping the oldest.
    journal_size: int = DEFAULT_MAX_ENTRIES

    @property
    def loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


class RequestIds:
    """ASGI middleware: give every request an id, echo it as X-Request-Id."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = uuid.uuid4().hex[:16]
        scope.setdefault("state", {})["request_id"] = request_id
        header = (b"x-request-id", request_id.encode())
        size = sum(len(name) + len(value) for name, value in scope["headers"])
        if size > MAX_HEADER_BYTES:
            # httptools sets no limit of its own on header size.
            response = JSONResponse(
                {"error": "invalid_request",
                 "error_description": f"The request headers total {size} bytes; at most {MAX_HEADER_BYTES} are accepted."},
                status_code=431, headers={"X-Request-Id": request_id},
            )
            await response(scope, receive, send)
            return

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        await self.app(scope, receive, send_with_id)


async def _protocol_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ProtocolError)
    # Test harness: the request journal records the rejection's code and cause.
    request.state.error_code = exc.error
    request.state.error_reason = exc.reason
    logger.debug(
        "Rejected %s %s with %s %s (request %s)",
        request.method, request.url.path, exc.status, exc.error, getattr(request.state, "request_id", "-"),
    )
    return error_response(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        allowed = (exc.headers or {}).get("Allow", "")
        error = ProtocolError(
            f"{request.method} is not allowed on {request.url.path}; allowed methods: {allowed or 'none'}.",
            status=405, error="method_not_allowed", headers=dict(exc.headers or {}),
        )
    elif exc.status_code == 404:
        error = ProtocolError(
            f"No operation at {request.url.path}. The v3 APIs live under /api/v3 and the token endpoint "
            f"at /oauth/token; GET /openapi.json lists every path.",
            status=404, error="not_found",
        )
    else:
        error = ProtocolError(str(exc.detail), status=exc.status_code, error="invalid_request")
    return error_response(error)


async def _client_disconnect(request: Request, exc: Exception) -> Response:
    # The client closed the connection while sending its body, so no response
    # can reach it, and it is not a server failure.
    logger.info("Client disconnected during %s %s (request %s)", request.method, request.url.path,
                getattr(request.state, "request_id", "-"))
    request.state.error_code = "client_disconnected"
    return JSONResponse({"error": "client_disconnected", "error_description": "The client closed the connection before its body arrived."}, status_code=400)


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    request_id = getattr(request.state, "request_id", "-")
    logger.exception("Unexpected error on %s %s (request %s)", request.method, request.url.path, request_id)
    return JSONResponse(
        {"error": "server_error", "error_description": f"mockflock failed on this request; its log has request {request_id}."},
        status_code=500,
    )


async def _health(request: Request) -> Response:
    env: Environment = request.app.state.environment
    return JSONResponse({"status": "ok", "environment": env.name, "audience": env.audience})


async def _openapi(request: Request) -> Response:
    """Serve the merged contract with this environment's own base URL as its server."""
    env: Environment = request.app.state.environment
    document = request.app.state.openapi
    if document is None:
        server = {"url": env.base_url, "description": f"mockflock's {env.name} environment (audience {env.audience})"}
        document = request.app.state.openapi = load_openapi([server])
    return JSONResponse(document)


def build_app(env: Environment, mock: MockServer) -> Starlette:
    """Return the Starlette app of one environment."""
    # The v3 APIs come first: Starlette tries routes in order, and they carry most traffic.
    routes: list[Any] = [
        *api_routing.routes(load_matrix()),
        Route("/healthz", _health, methods=["GET"]),
        Route("/openapi.json", _openapi, methods=["GET"]),
        *oauth_endpoints.routes(),
        *admin.routes(),
    ]
    for extension in mock.route_extensions:
        routes.extend(extension(env, mock))
    app = Starlette(
        routes=routes,
        middleware=[Middleware(RequestIds)],
        exception_handlers={
            ProtocolError: _protocol_error,
            HTTPException: _http_error,
            ClientDisconnect: _client_disconnect,
            Exception: _unexpected_error,
        },
    )
    app.state.environment = env
    app.state.openapi = None
    app.state.environments = mock.environments
    app.state.others = {name: other for name, other in mock.environments.items() if name != env.name}
    app.state.store = mock.store
    app.state.mock = mock
    return app


class Dispatcher:
    """ASGI app that routes each request to the environment of its local port."""

    def __init__(self, apps: dict[int, ASGIApp], mock: MockServer) -> None:
        self.apps = apps
        self.mock = mock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        server = scope.get("server") or (None, None)
        app = self.apps.get(server[1])
        if app is None:
            # A single app means no choice to make (for example behind a UNIX socket).
            app = next(iter(self.apps.values()))
        await app(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.mock.loop = asyncio.get_running_loop()
                self.mock.start_signing_pool(self.mock.loop)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.mock.stop_signing_pool()
                await send({"type": "lifespan.shutdown.complete"})
                return


class _Server(uvicorn.Server):
    """uvicorn's server, but a stop by SIGINT or SIGTERM ends with exit status 0.

    uvicorn re-raises the captured signal after its graceful shutdown, which
    kills the process before `serve()` can log that it stopped. For
    `mockflock serve` a signal is the normal way to stop, not a failure.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        with super().capture_signals():
            yield
            # NOTE: _captured_signals is uvicorn's own list (0.29 and later).
            getattr(self, "_captured_signals", []).clear()


class MockServer:
    """Both Flock environments, served over real sockets.

    `serve()` blocks and stops on SIGINT or SIGTERM; `start()` runs the
    server in a background thread and returns once it accepts connections.
    """

    def __init__(self, config: MockConfig | None = None, options: ServerOptions | None = None) -> None:
        self.config = config or load_config()
        self.options = options or ServerOptions()
        self.clock = Clock()
        self.store = Store(seeders=[seed_organization])
        # Callables (env, mock) -> routes, for parts that mount extra routes.
        self.route_extensions: list[Any] = []
        # Test harness: the request journal, injected faults, born-revoked tokens.
        self.harness = HarnessState(self.options.journal_size)
        self._sockets = self._bind()
        self.ports = {name: sock.getsockname()[1] for name, sock in self._sockets.items()}
        self.environments = build_environments(self.config, self._base_urls(), self.clock)
        # The server's event loop, set once it runs; background work
        # (webhook deliveries) is scheduled on it.
        self.loop: asyncio.AbstractEventLoop | None = None
        self._server: uvicorn.Server | None = None
        self._pool: SigningPool | None = None
        self._thread: threading.Thread | None = None

    def _bind(self) -> dict[str, socket.socket]:
        specs = load_environment_specs()
        sockets = {}
        for name in self.options.environments:
            if name not in specs:
                raise ConfigError(f"environment {name!r} is unknown; expected one of {sorted(specs)}")
            port = self.options.ports.get(name, specs[name].default_port)
            family = socket.AF_INET6 if ":" in self.options.host else socket.AF_INET
            # IPPROTO_TCP explicitly, because asyncio sets TCP_NODELAY only on sockets whose
            # proto is TCP. Without it, keep-alive responses stall about 40 ms on delayed ACKs.
            sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((self.options.host, port))
            except OSError as exc:
                sock.close()
                for opened in sockets.values():
                    opened.close()
                raise ConfigError(
                    f"Cannot listen on {self.options.host}:{port} for the {name} environment: {exc.strerror}. "
                    f"Choose another port with --{name}-port."
                ) from None
            sock.listen(1024)
            sock.set_inheritable(True)
            sockets[name] = sock
        return sockets

    def _base_urls(self) -> dict[str, str]:
        urls = {}
        for name, port in self.ports.items():
            public = self.options.public_urls.get(name)
            if public:
                urls[name] = public.rstrip("/")
                continue
            host = self.options.host
            if host in ("0.0.0.0", "::", ""):
                host = "127.0.0.1"
            if ":" in host:
                host = f"[{host}]"
            urls[name] = f"http://{host}:{port}"
        return urls

    def start_signing_pool(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.options.signing_workers <= 0:
            return
        self._pool = SigningPool(self.options.signing_workers)
        self._pool.start(loop)
        for env in self.environments.values():
            env.tokens.pool = self._pool

    def stop_signing_pool(self) -> None:
        if self._pool is None:
            return
        for env in self.environments.values():
            env.tokens.pool = None
        self._pool.close()
        self._pool = None

    def url(self, environment: str) -> str:
        return self.environments[environment].base_url

    def asgi_app(self) -> Dispatcher:
        apps = {
            # Test harness: journal and fault injection wrap each environment's app.
            self.ports[name]: self.harness.wrap(build_app(env, self), env, self)
            for name, env in self.environments.items()
        }
        return Dispatcher(apps, self)

    def reset(self) -> None:
        """Return every environment and all API data to their state at start."""
        self.clock.reset()
        self.store.reset()
        for env in self.environments.values():
            env.reset()
        # Test harness: forget the journal, faults and changed lifetimes.
        self.harness.reset(self)
        deliveries = getattr(self, "webhooks", None)
        if deliveries is not None:
            deliveries.clear()

    def _uvicorn(self) -> uvicorn.Server:
        config = uvicorn.Config(
            self.asgi_app(),
            lifespan="on",
            log_level=self.options.log_level,
            access_log=False,
            timeout_graceful_shutdown=1,
            timeout_keep_alive=5,
            limit_concurrency=2000,
            h11_max_incomplete_event_size=64 * 1024,
        )
        return _Server(config)

    def log_start(self) -> None:
        logger.info("Configuration: %s (%d apps)", self.config.source, len(self.config.apps))
        for env in self.environments.values():
            logger.info(
                "%s environment at %s (listening on %s:%d): audience %s, token URL %s, JWKS URL %s",
                env.name, env.base_url, self.options.host, self.ports[env.name], env.audience,
                env.token_url, env.jwks_url,
            )
        logger.info("%s", admin.describe_access(self))

    def serve(self) -> None:
        """Serve in the foreground until SIGINT or SIGTERM."""
        self._server = self._uvicorn()
        self.log_start()
        try:
            self._server.run(sockets=list(self._sockets.values()))
        finally:
            self._close_sockets()
            logger.info("mockflock stopped")

    def start(self, timeout: float = 10.0) -> MockServer:
        """Serve in a daemon thread; return once the server accepts connections."""
        self._server = self._uvicorn()
        self.log_start()
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self._server.serve(sockets=list(self._sockets.values()))),
            name="mockflock-server",
            daemon=True,
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"mockflock failed to start within {timeout} s; the log above has the cause")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)
        self._close_sockets()
        logger.info("mockflock stopped")

    def _close_sockets(self) -> None:
        for sock in self._sockets.values():
            sock.close()

    def __enter__(self) -> MockServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
