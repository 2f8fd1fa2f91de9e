"""Measure the token endpoint and a protected GET against their baselines.

Prints, from one run on this machine:
  - pyjwt's RS256 signing rate on one core (the token endpoint's baseline);
  - the token endpoint's requests/s and latency;
  - a protected GET's requests/s against the same stack's bare endpoint
    (GET /healthz: same server, routing and middleware, no token checks).

The load comes from wrk (Debian package `wrk`). Every figure is taken
twice, from two servers:
  - one core: `mockflock serve --signing-workers 0` pinned to CPU 0 with
    taskset and wrk pinned to CPU 1, so the server has exactly one core;
  - signing pool: `mockflock serve` with its default signing workers (one
    per CPU) and nothing pinned, so server, workers and wrk share all CPUs.

Usage: python bench/core_bench.py [--seconds 10] [--connections 16]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import jwt
import yaml
from cryptography.hazmat.primitives.asymmetric import rsa

PRODUCTION_AUDIENCE = "com.flocksafety.integrations"
ROOT = Path(__file__).resolve().parent.parent


def signing_rate(seconds: float) -> float:
    """RS256 signatures per second that pyjwt makes on this core, with token-like claims."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    claims = {
        "iss": "http://127.0.0.1:8080", "sub": "demo-machine", "aud": PRODUCTION_AUDIENCE,
        "azp": "demo-machine", "client_id": "demo-machine", "iat": 0, "nbf": 0, "exp": 86400,
        "jti": "0" * 32, "scope": "devices:read devices:write", "token_level": "machine", "org_id": "demo-org",
    }
    # Pin this process to CPU 0 while it signs, so the figure is one core's.
    affinity = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {0})
    try:
        count = 0
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            jwt.encode(claims, key, algorithm="RS256", headers={"kid": "bench"})
            count += 1
    finally:
        os.sched_setaffinity(0, affinity)
    return count / seconds


def _sign_for(seconds: float, cpu: int, results: multiprocessing.Queue) -> None:
    os.sched_setaffinity(0, {cpu})
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    count = 0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        jwt.encode({"sub": "demo-machine", "jti": "0" * 32}, key, algorithm="RS256")
        count += 1
    results.put(count / seconds)


def parallel_signing_rate(seconds: float) -> float:
    """RS256 signatures per second of one process per CPU, all at once: the machine's capacity."""
    results: multiprocessing.Queue = multiprocessing.Queue()
    processes = [multiprocessing.Process(target=_sign_for, args=(seconds, cpu, results))
                 for cpu in sorted(os.sched_getaffinity(0))]
    for process in processes:
        process.start()
    rates = [results.get() for _ in processes]
    for process in processes:
        process.join()
    return sum(rates)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(port: int, config: Path, pinned: bool) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "mockflock", "serve", "--environments", "production",
               "--production-port", str(port), "--log-level", "warning", "--config", str(config)]
    if pinned:
        command = ["taskset", "-c", "0", *command, "--signing-workers", "0"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit(f"mockflock did not start: {process.stderr.read().decode() if process.stderr else ''}")


def bench_config(directory: Path) -> Path:
    """Write the demo configuration with quotas lifted, so the benchmark measures speed, not 429s."""
    config = yaml.safe_load((ROOT / "mockflock" / "demo.yaml").read_text())
    config["quotas"] = {**(config.get("quotas") or {}), "enabled": False}
    path = directory / "bench.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def wrk(url: str, seconds: int, connections: int, script: Path | None, pinned: bool) -> dict[str, float]:
    command = ["wrk", "-t", "1", "-c", str(connections), "-d", f"{seconds}s", "--latency"]
    if script:
        command += ["-s", str(script)]
    if pinned:
        command = ["taskset", "-c", "1", *command]
    output = subprocess.run([*command, url], capture_output=True, text=True, check=True).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    latency = {p: _millis(re.search(rf"\s{p}%\s+([\d.]+\w+)", output).group(1)) for p in ("50", "99")}
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return {"rps": rate, "p50_ms": latency["50"], "p99_ms": latency["99"], "non_2xx": int(non_2xx.group(1)) if non_2xx else 0}


def _millis(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(\w+)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def lua_post(body: str, directory: Path) -> Path:
    script = directory / "token.lua"
    script.write_text(
        'wrk.method = "POST"\n'
        f'wrk.body = "{body}"\n'
        'wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"\n'
    )
    return script


def lua_bearer(token: str, directory: Path) -> Path:
    script = directory / "bearer.lua"
    script.write_text(f'wrk.headers["Authorization"] = "Bearer {token}"\n')
    return script


def measure(args: argparse.Namespace, directory: Path, pinned: bool) -> dict[str, dict[str, float]]:
    """Start a server, then measure the token endpoint, the bare endpoint and the protected GET."""
    port = free_port()
    server = start_server(port, bench_config(directory), pinned)
    base = f"http://127.0.0.1:{port}"
    try:
        form = ("grant_type=client_credentials&client_id=demo-machine&client_secret=demo-machine-secret"
                f"&audience={PRODUCTION_AUDIENCE}")
        token = httpx.post(f"{base}/oauth/token", content=form,
                           headers={"Content-Type": "application/x-www-form-urlencoded"}).json()["access_token"]
        check = httpx.get(base + args.path, headers={"Authorization": f"Bearer {token}"})
        if check.status_code != 200:
            raise SystemExit(f"GET {args.path} returned {check.status_code}: {check.text}")
        return {
            "token": wrk(f"{base}/oauth/token", args.seconds, args.connections, lua_post(form, directory), pinned),
            "bare": wrk(f"{base}/healthz", args.seconds, args.connections, None, pinned),
            "protected": wrk(base + args.path, args.seconds, args.connections, lua_bearer(token, directory), pinned),
        }
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(10)


def report(label: str, figures: dict[str, dict[str, float]], signing: float, path: str) -> None:
    print(f"\n{label}")
    rows = (("POST /oauth/token", "token"), ("GET /healthz (bare)", "bare"), (f"GET {path} (protected)", "protected"))
    for name, key in rows:
        figure = figures[key]
        print(f"  {name:48} {figure['rps']:8.0f} req/s  p50 {figure['p50_ms']:6.2f} ms  "
              f"p99 {figure['p99_ms']:6.2f} ms  non-2xx {figure['non_2xx']:.0f}")
    print(f"  token endpoint / one-core signing rate:          {figures['token']['rps'] / signing:8.1%}  (target 90%)")
    print(f"  protected GET / bare endpoint:                    {figures['protected']['rps'] / figures['bare']['rps']:8.1%}  (target 80%)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=10, help="duration of each measurement")
    parser.add_argument("--connections", type=int, default=16, help="concurrent wrk connections")
    parser.add_argument("--path", default="/api/v3/devices/cam-downtown-01", help="protected GET path to measure")
    args = parser.parse_args()
    for tool in ("wrk", "taskset"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is not installed: apt-get install wrk util-linux")

    signing = signing_rate(args.seconds)
    capacity = parallel_signing_rate(args.seconds)
    with tempfile.TemporaryDirectory() as tmp:
        one_core = measure(args, Path(tmp), pinned=True)
        pool = measure(args, Path(tmp), pinned=False)

    print(f"machine: {os.cpu_count()} CPUs; {args.seconds} s per figure, {args.connections} wrk connections")
    print(f"pyjwt RS256 signing, one core, in this process: {signing:8.0f} signatures/s")
    print(f"pyjwt RS256 signing, one process per CPU at once: {capacity:6.0f} signatures/s "
          f"({capacity / signing:.2f} x one core)")
    report("one core (server pinned to CPU 0, --signing-workers 0; wrk on CPU 1):", one_core, signing, args.path)
    report("signing pool (default --signing-workers, nothing pinned):", pool, signing, args.path)


if __name__ == "__main__":
    main()
