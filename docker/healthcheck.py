"""Container health check: exit 0 when every served environment returns 200 on /healthz.

The image's HEALTHCHECK runs this with the image's Python, because the base
image has no curl. It reads the same variables as `mockflock serve`.

NOTE: ports and environments given as `serve` options or in a config file are
not seen here. In the container, set them with MOCKFLOCK_PRODUCTION_PORT,
MOCKFLOCK_DEVELOPMENT_PORT and MOCKFLOCK_ENVIRONMENTS so the check probes the
ports the server listens on.
"""

import os
import sys
import urllib.error
import urllib.request

TIMEOUT_SECONDS = 2.0

DEFAULT_PORTS = {"production": "8080", "development": "8081"}


def served_environments() -> list[str]:
    """Return the environment names that MOCKFLOCK_ENVIRONMENTS selects."""
    selected = os.environ.get("MOCKFLOCK_ENVIRONMENTS", "both").strip().lower()
    if selected == "both":
        return ["production", "development"]
    return [selected]


def check(environment: str) -> bool:
    """Request /healthz of one environment over loopback and report the result."""
    variable = f"MOCKFLOCK_{environment.upper()}_PORT"
    port = os.environ.get(variable, DEFAULT_PORTS.get(environment, ""))
    url = f"http://127.0.0.1:{port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS) as response:
            status = response.status
    except (urllib.error.URLError, OSError, ValueError) as error:
        print(f"{environment}: GET {url} failed: {error}", file=sys.stderr)
        return False
    if status != 200:
        print(f"{environment}: GET {url} returned HTTP {status}, expected 200", file=sys.stderr)
        return False
    return True


def main() -> int:
    results = [check(environment) for environment in served_environments()]
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
