"""`mockflock verify` after a curl client ran against `mockflock serve`, as a CI job in any language would."""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

MOCKFLOCK = [sys.executable, "-m", "mockflock"]
SCRIPT = Path(__file__).resolve().parent.parent / "examples" / "curl" / "list_hotlists.sh"
PRODUCTION = "com.flocksafety.integrations"
DEVELOPMENT = "com.flocksafety.integrations.dev"
LISTENING = re.compile(r"(production|development) environment at (http://127\.0\.0\.1:\d+)")

pytestmark = pytest.mark.skipif(shutil.which("curl") is None and os.environ.get("CI") != "true",
                                reason="needs curl (CI installs it)")


def read_urls(process: subprocess.Popen[str], lines: queue.Queue[str], timeout: float = 30) -> dict[str, str]:
    """Read the start-up log until it names both environments' URLs."""
    urls: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    while len(urls) < 2:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise AssertionError(f"mockflock serve named no URLs within {timeout} s (exit code {process.poll()})") from None
        match = LISTENING.search(line)
        if match:
            urls[match.group(1)] = match.group(2)
    return urls


@pytest.fixture(scope="module")
def served() -> Iterator[dict[str, str]]:
    process = subprocess.Popen(
        [*MOCKFLOCK, "serve", "--production-port", "0", "--development-port", "0", "--signing-workers", "0"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    assert process.stderr is not None
    # The log is drained until the server exits, so that it never blocks on a full pipe.
    reader = threading.Thread(target=lambda: [lines.put(line) for line in process.stderr], daemon=True)
    reader.start()
    try:
        urls = read_urls(process, lines)
        for url in urls.values():
            httpx.get(url + "/healthz", timeout=5).raise_for_status()
        yield urls
    finally:
        process.terminate()
        process.wait(timeout=10)
        reader.join(timeout=5)
        process.stderr.close()


def run_client(base_url: str, audience: str) -> str:
    result = subprocess.run(["bash", str(SCRIPT), base_url, audience], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def verify(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*MOCKFLOCK, "verify", *args], capture_output=True, text=True, timeout=60)


def reset(base_url: str) -> None:
    httpx.post(base_url + "/_mockflock/reset", timeout=5).raise_for_status()


def test_wrong_audience_fails_verify(served: dict[str, str]) -> None:
    production = served["production"]
    reset(production)
    assert run_client(production, DEVELOPMENT) == "401"
    result = verify("--url", production)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "[wrong-audience]" in result.stdout
    assert f"Fix: Send audience={PRODUCTION} to the production token endpoint" in result.stdout


def test_corrected_client_passes_verify(served: dict[str, str]) -> None:
    production = served["production"]
    reset(production)
    assert run_client(production, PRODUCTION) == "200"
    result = verify("--url", production)
    assert result.returncode == 0, result.stdout
    assert "no violations" in result.stdout


def test_verify_sees_both_environments(served: dict[str, str]) -> None:
    reset(served["production"])
    assert run_client(served["development"], PRODUCTION) == "401"
    result = verify("--url", served["production"], "--json")
    report = json.loads(result.stdout)
    assert result.returncode == 1
    assert [violation["environment"] for violation in report["violations"]] == ["development"]


def test_verify_can_ignore_a_rule(served: dict[str, str]) -> None:
    reset(served["production"])
    run_client(served["production"], DEVELOPMENT)
    assert verify("--url", served["production"], "--ignore", "wrong-audience").returncode == 0


def test_verify_exits_2_when_unreachable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = verify("--url", f"http://127.0.0.1:{port}", "--timeout", "2")
    assert result.returncode == 2
    assert "cannot reach" in result.stderr


def test_verify_exits_2_on_unknown_rule(served: dict[str, str]) -> None:
    result = verify("--url", served["production"], "--ignore", "no-such-rule")
    assert result.returncode == 2
    assert "no-such-rule" in result.stderr
