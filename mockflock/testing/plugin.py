"""pytest plugin: a mockflock server for the test session, reset before each test.

Fixtures (all from this plugin, loaded through the `pytest11` entry point):

- `mockflock_server` (session): a `Control` for one `MockServer` that
  serves both environments on free loopback ports. Not reset by itself.
- `mockflock` (function): the same `Control`, reset before the test and
  configured by the test's `mockflock` marker.
- `mockflock_reset` (session): a callable that resets the server and
  reapplies the current test's marker. Being session-scoped, it is safe
  to call at the start of a Hypothesis `@given` body.
- `mockflock_config` and `mockflock_server_options` (session): override
  them in a conftest.py to change the configuration or how the server
  listens.

The marker configures one test:

    @pytest.mark.mockflock(lifetimes={"machine_access": 60}, check=True)
    def test_client_renews_tokens(mockflock): ...

Its keyword arguments are `lifetimes` (seconds by lifetime name), `apps`
and `users` (lists of keyword dicts for `register_app` and
`register_user`), `faults` (keyword dicts for `inject_fault`),
`narrow_scopes` (a keyword dict for `narrow_scopes`), `check` (assert no
violations when the test ends), `ignore` (rule ids the check skips) and
`needed_scopes` (client id to the scopes its app needs, which the
scope-not-needed rule then compares requests with, instead of the
operations this one test happened to call).
The ini option `mockflock_check_violations = true` turns `check` on for
every test that uses `mockflock`.

Heavy imports wait until a fixture is used, so having mockflock installed
costs other test suites nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from mockflock.config import MockConfig
    from mockflock.control import Control
    from mockflock.server import ServerOptions

MARKER_OPTIONS = ("lifetimes", "apps", "users", "faults", "narrow_scopes", "check", "ignore", "needed_scopes")
_CURRENT_MARKER = pytest.StashKey[dict[str, Any]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        "mockflock_config",
        "YAML configuration file for the mockflock server of the test session (default: the embedded demo).",
    )
    parser.addini(
        "mockflock_check_violations",
        "Fail every test that uses the mockflock fixture when its client broke a rule.",
        type="bool",
        default=False,
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "mockflock(lifetimes=None, apps=(), users=(), faults=(), narrow_scopes=None, check=None, ignore=(), "
        "needed_scopes=None): "
        "configure the mockflock server for one test; see docs/testing-guide.md.",
    )


def pytest_runtest_setup(item: pytest.Item) -> None:
    # Remembered for mockflock_reset, which is session-scoped and so cannot read the marker itself.
    marker = item.get_closest_marker("mockflock")
    item.config.stash[_CURRENT_MARKER] = _marker_options(marker, item.nodeid) if marker else {}


def _marker_options(marker: pytest.Mark, nodeid: str) -> dict[str, Any]:
    if marker.args:
        pytest.fail(f"{nodeid}: @pytest.mark.mockflock takes keyword arguments only, not {marker.args!r}", pytrace=False)
    unknown = sorted(set(marker.kwargs) - set(MARKER_OPTIONS))
    if unknown:
        pytest.fail(
            f"{nodeid}: @pytest.mark.mockflock has unknown arguments {unknown}; use some of {', '.join(MARKER_OPTIONS)}",
            pytrace=False,
        )
    return dict(marker.kwargs)


@pytest.fixture(scope="session")
def mockflock_config(pytestconfig: pytest.Config) -> MockConfig:
    """Return the server's configuration: the file named by the ini option `mockflock_config`, or the embedded demo."""
    from mockflock.config import load_config

    path = pytestconfig.getini("mockflock_config") or None
    if path:
        path = str(pytestconfig.rootpath / path)
    return load_config(path)


@pytest.fixture(scope="session")
def mockflock_server_options() -> ServerOptions:
    """Return how the session's server listens: both environments on free loopback ports."""
    from mockflock.server import ServerOptions

    return ServerOptions(host="127.0.0.1", ports={"production": 0, "development": 0}, log_level="warning")


@pytest.fixture(scope="session")
def mockflock_server(mockflock_config: MockConfig, mockflock_server_options: ServerOptions) -> Iterator[Control]:
    """Start the session's server and yield a `Control` for it; the plugin never resets it by itself."""
    from mockflock.control import Control
    from mockflock.server import MockServer

    server = MockServer(mockflock_config, mockflock_server_options).start()
    try:
        yield Control(server)
    finally:
        server.stop()


@pytest.fixture(scope="session")
def mockflock_reset(mockflock_server: Control, pytestconfig: pytest.Config) -> Callable[[], None]:
    """Return a callable that resets all server state and applies the current test's marker."""

    def reset() -> None:
        mockflock_server.reset()
        _apply(mockflock_server, pytestconfig.stash.get(_CURRENT_MARKER, {}))

    return reset


@pytest.fixture
def mockflock(mockflock_server: Control, mockflock_reset: Callable[[], None], pytestconfig: pytest.Config
              ) -> Iterator[Control]:
    """Reset the session's server, configure it for this test, and yield its `Control`."""
    mockflock_reset()
    yield mockflock_server
    options = pytestconfig.stash.get(_CURRENT_MARKER, {})
    check = options.get("check")
    if check is None:
        check = pytestconfig.getini("mockflock_check_violations")
    if check:
        mockflock_server.assert_no_violations(
            ignore=options.get("ignore", ()), needed_scopes=options.get("needed_scopes")
        )


def _apply(control: Control, options: dict[str, Any]) -> None:
    """Apply a marker's configuration to a freshly reset server."""
    try:
        if options.get("lifetimes"):
            control.set_token_lifetimes(**options["lifetimes"])
        for app in options.get("apps", ()):
            app = dict(app)
            control.register_app(app.pop("client_id"), **app)
        for user in options.get("users", ()):
            user = dict(user)
            control.register_user(user.pop("user_id"), **user)
        for fault in options.get("faults", ()):
            fault = dict(fault)
            control.inject_fault(fault.pop("kind"), **fault)
        if options.get("narrow_scopes"):
            narrowing = dict(options["narrow_scopes"])
            control.narrow_scopes(narrowing.pop("drop"), **narrowing)
    except (KeyError, TypeError, ValueError) as exc:
        pytest.fail(f"@pytest.mark.mockflock: {exc}", pytrace=False)
    # The set-up is not the client's doing: each test's journal starts empty.
    control.journal_state.clear()
