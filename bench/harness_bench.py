"""Measure the test harness: checker scenarios per second, the cost of a reset, and the journal's cost.

Prints, from one run on this machine:
  - client-checker scenarios per second (and operation calls per second)
    on the example client of examples/flock_client.py, for the machine
    flow and the user flow, with the checker's default variations;
  - the cost of a per-test reset: `Control.reset()`, the reset that the
    pytest plugin does (reset plus a marker's configuration), and
    POST /_mockflock/reset over HTTP;
  - the journal's cost on the hot path: the median latency of a protected
    GET with the harness middleware against a server built without it.

Everything runs in this process against servers on free loopback ports,
the way the pytest plugin runs them. Scenario counts are fixed and the
Hypothesis seed is derandomized, so two runs execute the same scenarios.

Usage: python bench/harness_bench.py [--scenarios 200] [--resets 2000] [--requests 2000]
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from hypothesis import settings

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "examples"))

from flock_client import FlockError, FlockSettings, MachineClient, UserSession  # noqa: E402

from mockflock.control import Control  # noqa: E402
from mockflock.server import MockServer, ServerOptions  # noqa: E402
from mockflock.testing.checker import DEFAULT_SETTINGS, ClientTarget, check_client, operation  # noqa: E402

SEARCH = {"start": "2024-01-01T00:00:00Z", "end": "2024-03-01T00:00:00Z", "reason": "benchmark"}


def start_server(*, harness: bool = True) -> MockServer:
    server = MockServer(options=ServerOptions(ports={"production": 0, "development": 0}, log_level="warning"))
    if not harness:
        # The same server without the journal and fault middleware.
        server.harness.wrap = lambda app, env, mock: app  # type: ignore[method-assign]
    return server.start()


def settings_for(target: ClientTarget) -> FlockSettings:
    return FlockSettings(base_url=target.base_url, audience=target.audience, client_id=target.client_id,
                         client_secret=target.client_secret, scopes=target.scopes, redirect_uri=target.redirect_uri)


def checker_rate(control: Control, http: httpx.Client, level: str, scenarios: int) -> tuple[float, float, int]:
    """Run `scenarios` checker scenarios; return scenarios/s, operation calls/s and the calls made."""
    counts = {"scenarios": 0, "calls": 0}

    def counted(call: Callable[[object], object]) -> Callable[[object], object]:
        def run(client: object) -> object:
            counts["calls"] += 1
            return call(client)

        return run

    if level == "machine":
        def build(target: ClientTarget) -> MachineClient:
            counts["scenarios"] += 1
            return MachineClient(settings_for(target), http=http, clock=target.clock, sleep=target.sleep)

        ops = [
            operation("list hotlists", counted(lambda c: c.list_hotlists()), "listHotlists"),
            operation("list devices", counted(lambda c: c.list_devices()), "listDevices"),
        ]
    else:
        def build(target: ClientTarget) -> UserSession:
            counts["scenarios"] += 1
            session = UserSession(settings_for(target), http=http, clock=target.clock, sleep=target.sleep)
            session.finish_login(target.sign_in(session.authorization_url()))
            return session

        ops = [
            operation("search reads", counted(lambda s: s.search_reads("AB*", **SEARCH)), "searchReads"),
            operation("list hotlists", counted(lambda s: s.list_hotlists()), "listHotlists"),
        ]
    run_settings = settings(DEFAULT_SETTINGS, max_examples=scenarios, database=None, derandomize=True)
    started = time.perf_counter()
    check_client(control, build, ops, level=level, expected_errors=(FlockError,), settings=run_settings)
    elapsed = time.perf_counter() - started
    return counts["scenarios"] / elapsed, counts["calls"] / elapsed, counts["calls"]


def time_each(action: Callable[[], object], count: int) -> list[float]:
    timings = []
    for _ in range(count):
        started = time.perf_counter()
        action()
        timings.append(time.perf_counter() - started)
    return timings


def describe(timings: list[float]) -> str:
    ordered = sorted(timings)
    p95 = ordered[int(len(ordered) * 0.95) - 1]
    return f"median {statistics.median(timings) * 1e6:8.1f} us   p95 {p95 * 1e6:8.1f} us"


def reset_costs(control: Control, http: httpx.Client, count: int) -> None:
    # Dirty the state a little first, as a test would.
    for _ in range(20):
        http.get(control.url() + "/healthz")
    print(f"  Control.reset()                       {describe(time_each(control.reset, count))}")

    def plugin_reset() -> None:
        control.reset()
        control.set_token_lifetimes(machine_access=60)
        control.journal_state.clear()

    print(f"  plugin reset with a marker            {describe(time_each(plugin_reset, count))}")
    url = control.url() + "/_mockflock/reset"
    print(f"  POST /_mockflock/reset over HTTP      {describe(time_each(lambda: http.post(url), count))}")


def journal_cost(http: httpx.Client, count: int) -> None:
    """Compare protected GETs on a server with and without the harness middleware, interleaved."""
    servers = {"with journal": start_server(), "without journal": start_server(harness=False)}
    try:
        requests = {}
        for name, server in servers.items():
            control = Control(server)
            # No quota: this measures latency, not the rate limit.
            for env in server.environments.values():
                quotas = dataclasses.replace(env.config.quotas, enabled=False)
                env.config = dataclasses.replace(env.config, quotas=quotas)
            form = {"grant_type": "client_credentials", "audience": control.audience()}
            token = http.post(control.token_url(), data=form, auth=("demo-hotlists", "demo-hotlists-secret")).json()
            headers = {"Authorization": f"Bearer {token['access_token']}"}
            url = control.api_url() + "/hotlists"
            requests[name] = (url, headers)
            http.get(url, headers=headers)
        timings: dict[str, list[float]] = {name: [] for name in servers}
        for _ in range(count):
            for name, (url, headers) in requests.items():
                started = time.perf_counter()
                http.get(url, headers=headers)
                timings[name].append(time.perf_counter() - started)
        for name, values in timings.items():
            print(f"  GET /api/v3/hotlists {name:16}  {describe(values)}")
        difference = statistics.median(timings["with journal"]) - statistics.median(timings["without journal"])
        print(f"  median difference                     {difference * 1e6:8.1f} us per request")
    finally:
        for server in servers.values():
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenarios", type=int, default=200, help="checker scenarios per flow")
    parser.add_argument("--resets", type=int, default=2000, help="resets to time per kind")
    parser.add_argument("--requests", type=int, default=2000, help="protected GETs per server")
    options = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    server = start_server()
    control = Control(server)
    try:
        with httpx.Client(timeout=10) as http:
            print(f"Client checker on the example client ({options.scenarios} scenarios per flow, "
                  f"up to {DEFAULT_SETTINGS.stateful_step_count} steps each):")
            for level in ("machine", "user"):
                scenarios, calls, total = checker_rate(control, http, level, options.scenarios)
                print(f"  {level:8} flow   {scenarios:7.1f} scenarios/s   {calls:7.1f} operation calls/s   ({total} calls)")
            print(f"Cost of a per-test reset ({options.resets} each):")
            reset_costs(control, http, options.resets)
            print(f"Journal on the hot path ({options.requests} protected GETs per server, interleaved):")
            journal_cost(http, options.requests)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
