"""The client checker: Hypothesis drives your client through hostile scenarios.

`check_client` builds a `RuleBasedStateMachine` around a factory for the
integrator's client and the operations their app performs. Each scenario
registers a fresh app (and user), then interleaves calls of those
operations with what a real Flock deployment does to a client. Tokens
expire mid-run, signing keys rotate, tokens are revoked, the token
endpoint and the APIs fail (5xx, 429 with Retry-After, dropped
connections, latency), and token responses narrow the granted scopes. After
every step the violation rules run over the journal; the first violation
fails the scenario, and Hypothesis shrinks it to the fewest steps before
reporting it together with the violation report.

    from mockflock.testing.checker import check_client, operation

    def test_client_follows_the_rules(mockflock_server):
        check_client(
            mockflock_server,
            lambda target: MyClient(target.base_url, target.audience, target.client_id,
                                    target.client_secret, sleep=target.sleep),
            [operation("list hotlists", lambda client: client.list_hotlists(), "listHotlists")],
        )
"""

from __future__ import annotations

import html
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
from hypothesis import HealthCheck, Phase
from hypothesis import settings as Settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from mockflock.contracts import LEVELS, load_matrix

if TYPE_CHECKING:
    from mockflock.control import Control

__all__ = ["VARIATIONS", "AppOperation", "ClientTarget", "SignInFailed", "check_client", "operation"]

logger = logging.getLogger(__name__)

CLIENT_ID = "checker-app"
CLIENT_SECRET = "checker-app-secret"
USER_ID = "checker-user"
USER_PASSWORD = "checker-user-password"
REDIRECT_URI = "http://127.0.0.1:8400/callback"
# Changes a scenario may make besides calling operations; `vary=` chooses among them.
VARIATIONS = ("scopes", "lifetimes", "expiry", "rotation", "revocation", "token_faults", "api_faults", "narrowing")
LIFETIMES = (60, 300, 1800, 86400)
LATENCY_SECONDS = 0.02
DEFAULT_SETTINGS = Settings(
    max_examples=25,
    stateful_step_count=12,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    # The explain phase traces every line, the server thread's too, which
    # makes a failing run many times slower for a note the report already gives.
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
)


class SignInFailed(Exception):
    """The mock's /authorize did not redirect back with a code; the message gives the reason."""


@dataclass(frozen=True)
class AppOperation:
    """One thing the integrator's app does: a name, a call on the client, the Flock operations it uses."""

    name: str
    call: Callable[[Any], object]
    operation_ids: tuple[str, ...] = ()


def operation(name: str, call: Callable[[Any], object], *operation_ids: str) -> AppOperation:
    """Describe an app operation; its `operation_ids` (matrix ids) determine the scopes it needs."""
    known = {op.id for op in load_matrix().operations}
    unknown = [op_id for op_id in operation_ids if op_id not in known]
    if unknown:
        raise InvalidArgument(f"operation {name!r} names {unknown}, which contracts/matrix.yaml does not define")
    return AppOperation(name=name, call=call, operation_ids=tuple(operation_ids))


@dataclass(frozen=True)
class ClientTarget:
    """The values the client factory receives: the mock environment's URLs and the app's (and user's) identity."""

    environment: str
    base_url: str
    api_url: str
    token_url: str
    authorize_url: str
    audience: str
    client_id: str
    client_secret: str
    scopes: tuple[str, ...]
    redirect_uri: str | None
    user: str | None
    control: Control = field(repr=False)
    # The HTTP client that `sign_in` plays the browser with; None makes a new one per sign-in.
    browser: httpx.Client | None = field(default=None, repr=False)

    def clock(self) -> float:
        """Return the mock's clock, for a client that takes a clock callable."""
        return self.control.now()

    def sleep(self, seconds: float) -> None:
        """Advance the mock's clock instead of waiting: a drop-in for time.sleep."""
        self.control.sleep(seconds)

    @classmethod
    def create(
        cls,
        control: Control,
        *,
        environment: str = "production",
        level: str = "machine",
        registered: Iterable[str] = ("*",),
        requested: Iterable[str] = (),
        browser: httpx.Client | None = None,
    ) -> ClientTarget:
        """Register an app (and, for level="user", a user) and return the target to build a client for.

        The app is `checker-app` with the `registered` scopes, in one
        environment. A user-level app gets a redirect URI and auto-consent,
        and the user `checker-user` is an administrator of every network.
        `requested` becomes the target's `scopes`, what the client should ask for.
        """
        if level not in LEVELS:
            raise InvalidArgument(f"level={level!r} must be one of {', '.join(LEVELS)}")
        user = level == "user"
        control.register_app(
            CLIENT_ID,
            secret=CLIENT_SECRET,
            grants=("authorization_code", "refresh_token") if user else ("client_credentials",),
            scopes=sorted(registered),
            environments=[environment],
            redirect_uris=[REDIRECT_URI] if user else [],
            auto_consent=user,
        )
        if user:
            control.register_user(USER_ID, password=USER_PASSWORD, roles=["administrator"], networks=["*"])
        return cls(
            environment=environment,
            base_url=control.url(environment),
            api_url=control.api_url(environment),
            token_url=control.token_url(environment),
            authorize_url=control.authorize_url(environment),
            audience=control.audience(environment),
            client_id=CLIENT_ID,
            client_secret=CLIENT_SECRET,
            scopes=tuple(requested),
            redirect_uri=REDIRECT_URI if user else None,
            user=USER_ID if user else None,
            control=control,
            browser=browser,
        )

    def sign_in(self, authorization_url: str) -> str:
        """Play the user's browser: open `authorization_url`, sign in, return the redirect URL with the code.

        The checker's app has auto-consent, so a `login_hint` naming the
        checker's user (added when the URL has none) gets the code at once.
        """
        parts = urlsplit(authorization_url)
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        if self.user and "login_hint" not in query:
            query["login_hint"] = self.user
        url = urlunsplit(parts._replace(query=urlencode(query)))
        if self.browser is not None:
            response = self.browser.get(url, follow_redirects=False)
        else:
            with httpx.Client(timeout=10) as browser:
                response = browser.get(url, follow_redirects=False)
        location = response.headers.get("location")
        if response.status_code not in (302, 303) or not location:
            raise SignInFailed(
                f"Signing in at {parts.path} failed with {response.status_code} instead of a redirect: "
                f"{_page_error(response)}"
            )
        return location


def check_client(
    control: Control,
    client_factory: Callable[[ClientTarget], Any],
    operations: Sequence[AppOperation] | Mapping[str, Callable[[Any], object]],
    *,
    level: str = "machine",
    expected_errors: tuple[type[BaseException], ...] = (Exception,),
    environments: Iterable[str] | None = None,
    vary: Iterable[str] = VARIATIONS,
    ignore: Iterable[str] = (),
    settings: Settings | None = None,
) -> None:
    """Run Hypothesis scenarios against the client; raise with the smallest failing one.

    `client_factory(target)` returns a new client for a `ClientTarget`
    (for user-level apps, already signed in: see `ClientTarget.sign_in`).
    `operations` are the app's operations, as `operation(...)` values or a
    mapping of name to callable. An operation may raise one of
    `expected_errors` (the client reporting a failure is fine); anything
    else fails the scenario. `vary` picks from `VARIATIONS`, `ignore`
    names rules to skip, and `settings` replaces the Hypothesis settings
    (25 scenarios of up to 12 steps by default).
    """
    ops = _operations(operations)
    if level not in LEVELS:
        raise InvalidArgument(f"level={level!r} must be one of {', '.join(LEVELS)}")
    variations = set(vary)
    unknown = sorted(variations - set(VARIATIONS))
    if unknown:
        raise InvalidArgument(f"vary has {unknown}; choose from {', '.join(VARIATIONS)}")
    names = list(environments or control.environments)
    for name in names:
        if name not in control.environments:
            raise InvalidArgument(f"environments has {name!r}; the mock serves {', '.join(control.environments)}")
    ignored = tuple(ignore)
    from mockflock.violations import RULES

    bad_rules = sorted(set(ignored) - set(RULES))
    if bad_rules:
        raise InvalidArgument(f"ignore has {bad_rules}; the rules are {', '.join(RULES)}")

    needed = _needed_scopes(ops)
    # One browser for every sign-in: creating an HTTP client loads the CA bundle, which takes tens of milliseconds.
    with httpx.Client(timeout=10) as browser:
        machine = _machine_class(
            control, client_factory, ops, level, expected_errors, names, variations, ignored, needed, browser
        )
        run_state_machine_as_test(machine, settings=settings or DEFAULT_SETTINGS)


def _operations(operations: Sequence[AppOperation] | Mapping[str, Callable[[Any], object]]) -> list[AppOperation]:
    if isinstance(operations, Mapping):
        ops = [AppOperation(name=name, call=call) for name, call in operations.items()]
    else:
        ops = list(operations)
    if not ops:
        raise InvalidArgument("operations is empty: name at least one thing the app does")
    for op in ops:
        if not isinstance(op, AppOperation) or not callable(op.call):
            raise InvalidArgument(f"operations has {op!r}; use operation(name, call, *operation_ids)")
    return ops


def _needed_scopes(ops: list[AppOperation]) -> frozenset[str] | None:
    """Return the scopes the declared operation ids need, or None when no operation declares any."""
    matrix = load_matrix()
    ids = [op_id for op in ops for op_id in op.operation_ids]
    if not ids:
        return None
    return frozenset(matrix.operation(op_id).scope for op_id in ids)


def _machine_class(
    control: Control,
    client_factory: Callable[[ClientTarget], Any],
    ops: list[AppOperation],
    level: str,
    expected_errors: tuple[type[BaseException], ...],
    environment_names: list[str],
    variations: set[str],
    ignored: tuple[str, ...],
    needed: frozenset[str] | None,
    browser: httpx.Client,
) -> type[RuleBasedStateMachine]:
    """Build the state machine class for one `check_client` call."""
    matrix = load_matrix()
    usable = sorted(matrix.scopes_for_level(level))
    needed_list = sorted(needed) if needed is not None else usable
    extra_pool = [scope for scope in usable if scope not in needed_list]
    lifetime_name = "user_access" if level == "user" else "machine_access"
    fault_targets = ["token", "api"]
    by_name = {op.name: op for op in ops}
    operation_names = st.sampled_from(list(by_name))

    def draw_extra_scopes() -> st.SearchStrategy[frozenset[str]]:
        if "scopes" not in variations or not extra_pool:
            return st.just(frozenset())
        return st.frozensets(st.sampled_from(extra_pool), max_size=3)

    class ClientScenario(RuleBasedStateMachine):
        """One scenario: a fresh app, a client, and a sequence of steps."""

        client: Any = None

        @initialize(
            environment=st.sampled_from(environment_names),
            extra=draw_extra_scopes(),
            lifetime=st.sampled_from(LIFETIMES) if "lifetimes" in variations else st.just(None),
        )
        def start(self, environment: str, extra: frozenset[str], lifetime: int | None) -> None:
            control.reset()
            # The registration always covers what the operations need; the
            # scopes actually granted vary through extras and narrowing.
            registered = frozenset(needed_list) | extra
            target = ClientTarget.create(
                control, environment=environment, level=level, registered=registered,
                requested=needed_list if needed is not None else (), browser=browser,
            )
            if lifetime is not None:
                control.set_token_lifetimes(**{lifetime_name: lifetime})
            control.begin_step("create the client")
            self.environment = environment
            self.client = client_factory(target)

        def run(self, name: str) -> None:
            control.begin_step(name)
            try:
                by_name[name].call(self.client)
            except expected_errors as exc:
                logger.debug("Operation %s failed as the client reported: %s", name, exc)

        @rule(name=operation_names)
        def call(self, name: str) -> None:
            self.run(name)

        # Each change of the mock is followed by an operation (`then`), since
        # only a call shows how the client copes with it.
        if "expiry" in variations:
            @rule(share=st.sampled_from([0.5, 0.95, 1.01, 3.0]), then=operation_names)
            def advance_clock(self, share: float, then: str) -> None:
                """Move the clock by a share of the token lifetime: expiry mid-run."""
                lifetimes = control.environment(self.environment).config.lifetimes
                control.advance_clock(getattr(lifetimes, lifetime_name) * share)
                self.run(then)

        if "rotation" in variations:
            @rule(keep_old=st.booleans(), then=operation_names)
            def rotate_keys(self, keep_old: bool, then: str) -> None:
                control.rotate_keys(environment=self.environment, keep_old=keep_old)
                self.run(then)

        if "revocation" in variations:
            @rule(then=operation_names)
            def revoke(self, then: str) -> None:
                control.revoke(client_id=CLIENT_ID, environment=self.environment)
                self.run(then)

        if "token_faults" in variations or "api_faults" in variations:
            allowed_targets = [t for t in fault_targets if f"{t}_faults" in variations]

            @rule(
                kind=st.sampled_from(["error", "rate_limit", "drop", "latency"]),
                endpoint=st.sampled_from(allowed_targets),
                times=st.integers(1, 2),
                retry_after=st.sampled_from([None, 1, 5]),
                then=operation_names,
            )
            def inject_fault(self, kind: str, endpoint: str, times: int, retry_after: int | None, then: str) -> None:
                options: dict[str, Any] = {"target": endpoint, "environment": self.environment, "times": times}
                if kind == "latency":
                    # Short, so that scenarios stay fast; the point is a slow response, not a timeout.
                    options["latency"] = LATENCY_SECONDS
                elif kind in ("error", "rate_limit"):
                    options["retry_after"] = retry_after if kind == "error" else (retry_after or 1)
                control.inject_fault(kind, **options)
                self.run(then)

        if "narrowing" in variations and len(needed_list) > 1:
            @rule(drop=st.sampled_from(needed_list), then=operation_names)
            def narrow(self, drop: str, then: str) -> None:
                control.narrow_scopes([drop], client_id=CLIENT_ID, environment=self.environment)
                self.run(then)

        @invariant()
        def follows_the_rules(self) -> None:
            if self.client is None:
                return
            needed_map = {CLIENT_ID: needed} if needed is not None else None
            found = control.violations(ignore=ignored, needed_scopes=needed_map)
            if found:
                raise AssertionError(control.report(ignore=ignored, needed_scopes=needed_map))

        def teardown(self) -> None:
            close = getattr(self.client, "close", None)
            if callable(close):
                close()

    ClientScenario.__name__ = ClientScenario.__qualname__ = "ClientScenario"
    return ClientScenario


def _page_error(response: httpx.Response) -> str:
    """Return the error description of /authorize's error page, or the start of the body."""
    text = response.text
    start = text.find('id="error_description">')
    if start == -1:
        return text[:300]
    start += len('id="error_description">')
    return html.unescape(text[start:text.find("<", start)])
