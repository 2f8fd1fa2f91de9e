"""Third-party OAuth clients get tokens from both environments and call an API."""

from __future__ import annotations

import json
import shutil
import subprocess

import jwt
import pytest
import requests
from authlib.integrations.httpx_client import OAuth2Client
from oauthlib.oauth2 import BackendApplicationClient
from requests.auth import HTTPBasicAuth
from requests_oauthlib import OAuth2Session

from mockflock.server import MockServer
from tests.conftest import AUDIENCES

ENVIRONMENTS = ["production", "development"]


@pytest.mark.parametrize("environment", ENVIRONMENTS)
@pytest.mark.parametrize("auth_method", ["client_secret_post", "client_secret_basic"])
def test_authlib_client_credentials(server: MockServer, environment: str, auth_method: str) -> None:
    base = server.url(environment)
    with OAuth2Client("demo-machine", "demo-machine-secret", token_endpoint_auth_method=auth_method) as client:
        token = client.fetch_token(f"{base}/oauth/token", grant_type="client_credentials", audience=AUDIENCES[environment])
        response = client.get(f"{base}/api/v3/devices")
    assert token["token_type"] == "Bearer"
    assert response.status_code == 200


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_requests_oauthlib_backend_client_with_basic_auth(
    server: MockServer, environment: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # oauthlib rejects plain HTTP unless OAUTHLIB_INSECURE_TRANSPORT marks a local test.
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")
    base = server.url(environment)
    session = OAuth2Session(client=BackendApplicationClient(client_id="demo-machine"))
    token = session.fetch_token(
        f"{base}/oauth/token",
        auth=HTTPBasicAuth("demo-machine", "demo-machine-secret"),
        audience=AUDIENCES[environment],
        include_client_id=False,
    )
    response = session.get(f"{base}/api/v3/devices")
    assert token["expires_in"] == 86400
    assert response.status_code == 200


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_documented_curl_command(server: MockServer, environment: str) -> None:
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed")
    base = server.url(environment)
    output = subprocess.run(
        [curl, "-sS", "--request", "POST", "--url", f"{base}/oauth/token",
         "--header", "content-type: application/x-www-form-urlencoded",
         "--data", "grant_type=client_credentials",
         "--data", "client_id=demo-machine",
         "--data", "client_secret=demo-machine-secret",
         "--data", f"audience={AUDIENCES[environment]}"],
        capture_output=True, text=True, check=True, timeout=30,
    ).stdout
    token = json.loads(output)["access_token"]
    status = subprocess.run(
        [curl, "-sS", "-o", "/dev/null", "-w", "%{http_code}", f"{base}/api/v3/devices",
         "--header", f"Authorization: Bearer {token}"],
        capture_output=True, text=True, check=True, timeout=30,
    ).stdout
    assert status == "200"


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_tokens_verify_with_pyjwkclient(server: MockServer, environment: str) -> None:
    base = server.url(environment)
    discovery = requests.get(f"{base}/.well-known/openid-configuration", timeout=10).json()
    token = requests.post(
        discovery["token_endpoint"],
        data={"grant_type": "client_credentials", "client_id": "demo-machine",
              "client_secret": "demo-machine-secret", "audience": AUDIENCES[environment]},
        timeout=10,
    ).json()["access_token"]
    signing_key = jwt.PyJWKClient(discovery["jwks_uri"]).get_signing_key_from_jwt(token)
    claims = jwt.decode(token, signing_key.key, algorithms=["RS256"], audience=AUDIENCES[environment], issuer=discovery["issuer"])
    assert claims["client_id"] == "demo-machine"


@pytest.mark.parametrize("document", ["openid-configuration", "oauth-authorization-server"])
def test_discovery_points_at_its_own_environment(server: MockServer, document: str) -> None:
    for environment in ENVIRONMENTS:
        base = server.url(environment)
        metadata = requests.get(f"{base}/.well-known/{document}", timeout=10).json()
        assert metadata["issuer"] == base
        assert metadata["token_endpoint"] == f"{base}/oauth/token"
        assert metadata["jwks_uri"] == f"{base}/.well-known/jwks.json"
        assert "client_credentials" in metadata["grant_types_supported"]


def test_environments_sign_with_different_keys(server: MockServer) -> None:
    production = requests.get(server.url("production") + "/.well-known/jwks.json", timeout=10).json()
    development = requests.get(server.url("development") + "/.well-known/jwks.json", timeout=10).json()
    assert {key["kid"] for key in production["keys"]}.isdisjoint({key["kid"] for key in development["keys"]})
