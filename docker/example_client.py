"""Example machine client for the compose file: get a token from each environment and call an API.

It follows what a real integration does: read the OpenID discovery document,
request a token with the client credentials grant at its `token_endpoint`,
then call GET /api/v3/devices with the token. It exits 1 on the first failure.

Environment:
    PRODUCTION_URL, DEVELOPMENT_URL   base URLs of the two environments
    CLIENT_ID, CLIENT_SECRET          client credentials (default: the demo client of the embedded configuration)
"""

import os
import sys
import time

import httpx

# Compose implementations that ignore `condition: service_healthy` may start
# this client before the mock listens, so it waits for /healthz first.
READY_TIMEOUT_SECONDS = 30.0

AUDIENCES = {
    "production": "com.flocksafety.integrations",
    "development": "com.flocksafety.integrations.dev",
}


def wait_until_ready(base_url: str) -> None:
    """Poll GET /healthz until it returns 200, raising httpx.HTTPError after READY_TIMEOUT_SECONDS."""
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while True:
        try:
            httpx.get(f"{base_url}/healthz", timeout=2.0).raise_for_status()
            return
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def call_environment(name: str, base_url: str, client_id: str, client_secret: str) -> None:
    """Fetch discovery and a token from one environment, then list its devices."""
    with httpx.Client(base_url=base_url, timeout=10.0) as client:
        discovery = client.get("/.well-known/openid-configuration")
        discovery.raise_for_status()
        token_endpoint = discovery.json()["token_endpoint"]

        token_response = client.post(
            token_endpoint,
            data={
                "grant_type": "client_credentials",
                "client_id": client_id,
                "client_secret": client_secret,
                "audience": AUDIENCES[name],
            },
        )
        token_response.raise_for_status()
        access_token = token_response.json()["access_token"]

        devices = client.get(
            "/api/v3/devices", headers={"Authorization": f"Bearer {access_token}"}
        )
        devices.raise_for_status()

    device_ids = [device["id"] for device in devices.json()["results"]]
    print(f"{name}: issuer {discovery.json()['issuer']}, {len(device_ids)} devices: {', '.join(device_ids)}")


def main() -> int:
    client_id = os.environ.get("CLIENT_ID", "demo-machine")
    client_secret = os.environ.get("CLIENT_SECRET", "demo-machine-secret")
    base_urls = {
        "production": os.environ.get("PRODUCTION_URL", "http://mockflock:8080"),
        "development": os.environ.get("DEVELOPMENT_URL", "http://mockflock:8081"),
    }
    for name, base_url in base_urls.items():
        try:
            wait_until_ready(base_url)
            call_environment(name, base_url, client_id, client_secret)
        except (httpx.HTTPError, KeyError, ValueError) as error:
            print(f"{name}: request to {base_url} failed: {error!r}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
