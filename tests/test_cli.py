"""The `mockflock` command: serve, token and keys, run as real processes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import jwt
import pytest
import yaml

MOCKFLOCK = [sys.executable, "-m", "mockflock"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_up(url: str, process: subprocess.Popen[str], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"mockflock exited with {process.returncode}: {process.stderr.read() if process.stderr else ''}")
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise AssertionError(f"mockflock did not answer at {url}")


def start(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*MOCKFLOCK, "serve", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_serve_starts_both_environments_and_stops_on_signal(stop_signal: signal.Signals) -> None:
    production, development = free_port(), free_port()
    process = start("--production-port", str(production), "--development-port", str(development))
    try:
        wait_until_up(f"http://127.0.0.1:{production}", process)
        wait_until_up(f"http://127.0.0.1:{development}", process)
        process.send_signal(stop_signal)
        _, log = process.communicate(timeout=10)
    finally:
        process.kill()
    assert process.returncode == 0
    for port, audience in ((production, "com.flocksafety.integrations"), (development, "com.flocksafety.integrations.dev")):
        assert f"http://127.0.0.1:{port}/oauth/token" in log
        assert f"http://127.0.0.1:{port}/.well-known/jwks.json" in log
        assert audience in log
    assert "mockflock stopped" in log


def test_serve_reads_options_from_environment_variables() -> None:
    port = free_port()
    process = start(env={
        "MOCKFLOCK_PRODUCTION_PORT": str(port),
        "MOCKFLOCK_ENVIRONMENTS": "production",
        "MOCKFLOCK_PRODUCTION_PUBLIC_URL": "http://mock.example.test:9000",
    })
    try:
        wait_until_up(f"http://127.0.0.1:{port}", process)
        metadata = httpx.get(f"http://127.0.0.1:{port}/.well-known/openid-configuration").json()
    finally:
        process.terminate()
        process.communicate(timeout=10)
    assert metadata["issuer"] == "http://mock.example.test:9000"
    assert metadata["token_endpoint"] == "http://mock.example.test:9000/oauth/token"


def test_token_command_prints_a_working_token() -> None:
    port = free_port()
    process = start("--production-port", str(port), "--environments", "production")
    try:
        wait_until_up(f"http://127.0.0.1:{port}", process)
        token = subprocess.run(
            [*MOCKFLOCK, "token", "--url", f"http://127.0.0.1:{port}", "--scope", "devices:read"],
            capture_output=True, text=True, check=True, timeout=30,
        ).stdout.strip()
        status = httpx.get(f"http://127.0.0.1:{port}/api/v3/devices", headers={"Authorization": f"Bearer {token}"}).status_code
    finally:
        process.terminate()
        process.communicate(timeout=10)
    assert jwt.decode(token, options={"verify_signature": False})["scope"] == "devices:read"
    assert status == 200


def test_token_command_explains_an_unreachable_server() -> None:
    result = subprocess.run([*MOCKFLOCK, "token", "--url", f"http://127.0.0.1:{free_port()}"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert "Is `mockflock serve` running?" in result.stderr


def test_configured_keys_make_tokens_reproducible(tmp_path: Path) -> None:
    snippet = subprocess.run([*MOCKFLOCK, "keys", "-e", "production"], capture_output=True, text=True, check=True, timeout=60).stdout
    config = yaml.safe_load((Path(__file__).parent.parent / "mockflock" / "demo.yaml").read_text())
    config["environments"] = yaml.safe_load(snippet)["environments"]
    config_file = tmp_path / "mockflock.yaml"
    config_file.write_text(yaml.safe_dump(config))
    kids = []
    for _ in range(2):
        port = free_port()
        process = start("--config", str(config_file), "--production-port", str(port), "--environments", "production")
        try:
            wait_until_up(f"http://127.0.0.1:{port}", process)
            kids.append(httpx.get(f"http://127.0.0.1:{port}/.well-known/jwks.json").json()["keys"][0]["kid"])
        finally:
            process.terminate()
            process.communicate(timeout=10)
    assert kids[0] == kids[1] == config["environments"]["production"]["key_id"]


def test_invalid_config_fails_with_the_key_named(tmp_path: Path) -> None:
    config_file = tmp_path / "bad.yaml"
    config_file.write_text("apps:\n  x:\n    secret: s\n    organization: nowhere\n")
    result = subprocess.run([*MOCKFLOCK, "serve", "--config", str(config_file)], capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert "apps.x" in result.stderr
    assert "organization='nowhere'" in result.stderr


def test_busy_port_fails_with_advice() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        result = subprocess.run([*MOCKFLOCK, "serve", "--production-port", str(port), "--environments", "production"],
                                capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert "--production-port" in result.stderr


def test_journal_size_option_bounds_the_journal() -> None:
    port = free_port()
    process = start("--production-port", str(port), "--environments", "production", "--journal-size", "2")
    try:
        wait_until_up(f"http://127.0.0.1:{port}", process)
        for _ in range(3):
            httpx.get(f"http://127.0.0.1:{port}/api/v3/devices")
        journal = httpx.get(f"http://127.0.0.1:{port}/_mockflock/journal").json()
    finally:
        process.terminate()
        process.communicate(timeout=10)
    assert len(journal["entries"]) == 2
    assert journal["dropped"] >= 1
