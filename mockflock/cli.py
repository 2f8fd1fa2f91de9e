"""The `mockflock` command: serve the mock, fetch a token, make signing keys."""

from __future__ import annotations

import logging
import os
import sys

import click

from mockflock.config import load_config, load_environment_specs
from mockflock.errors import ConfigError, MockflockError
from mockflock.server import ENVIRONMENT_NAMES, MockServer, ServerOptions

logger = logging.getLogger(__name__)

ENVIRONMENT_CHOICES = click.Choice([*ENVIRONMENT_NAMES, "both"])


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # httpx logs each webhook delivery's full URL at INFO, and a subscriber's
    # URL may carry credentials.
    logging.getLogger("httpx").setLevel(logging.WARNING)


def default_signing_workers() -> int:
    """Return one signing process per CPU this process may use, or none on a single CPU."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return cpus if cpus > 1 else 0


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mockflock")
def main() -> None:
    """Offline stand-in for the Flock Safety API Platform."""


@main.command()
@click.option("--host", envvar="MOCKFLOCK_HOST", default="127.0.0.1", show_default=True,
              help="Address to listen on. Anything but loopback puts the admin API behind --admin-token.")
@click.option("--production-port", envvar="MOCKFLOCK_PRODUCTION_PORT", type=click.IntRange(0, 65535),
              default=8080, show_default=True, help="Port of the production environment (0 picks a free one).")
@click.option("--development-port", envvar="MOCKFLOCK_DEVELOPMENT_PORT", type=click.IntRange(0, 65535),
              default=8081, show_default=True, help="Port of the development environment (0 picks a free one).")
@click.option("--environments", envvar="MOCKFLOCK_ENVIRONMENTS", type=ENVIRONMENT_CHOICES, default="both",
              show_default=True, help="Which environments to serve.")
@click.option("--config", "config_path", envvar="MOCKFLOCK_CONFIG", type=click.Path(dir_okay=False),
              help="YAML configuration file; without it the embedded demo configuration is used.")
@click.option("--production-public-url", envvar="MOCKFLOCK_PRODUCTION_PUBLIC_URL",
              help="Base URL clients use for production (issuer and discovery), e.g. behind Docker or a proxy.")
@click.option("--development-public-url", envvar="MOCKFLOCK_DEVELOPMENT_PUBLIC_URL",
              help="Base URL clients use for development (issuer and discovery).")
@click.option("--admin-token", envvar="MOCKFLOCK_ADMIN_TOKEN",
              help="Bearer token the admin API requires; needed for the admin API on a non-loopback host.")
@click.option("--signing-workers", envvar="MOCKFLOCK_SIGNING_WORKERS", type=click.IntRange(0, 64),
              default=None, help="Processes that sign tokens [default: one per CPU when there are several, else 0]; "
              "0 signs in the server process.")
@click.option("--journal-size", envvar="MOCKFLOCK_JOURNAL_SIZE", type=click.IntRange(1, 10_000_000), default=10_000,
              show_default=True, help="Requests the journal keeps before it drops the oldest (counted as dropped).")
@click.option("--log-level", envvar="MOCKFLOCK_LOG_LEVEL", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]), help="Log verbosity.")
def serve(
    host: str,
    production_port: int,
    development_port: int,
    environments: str,
    config_path: str | None,
    production_public_url: str | None,
    development_public_url: str | None,
    admin_token: str | None,
    signing_workers: int | None,
    journal_size: int,
    log_level: str,
) -> None:
    """Serve production on 127.0.0.1:8080 and development on 127.0.0.1:8081."""
    _configure_logging(log_level)
    options = ServerOptions(
        host=host,
        ports={"production": production_port, "development": development_port},
        environments=ENVIRONMENT_NAMES if environments == "both" else (environments,),
        public_urls={
            name: url
            for name, url in (("production", production_public_url), ("development", development_public_url))
            if url
        },
        admin_token=admin_token,
        log_level=log_level,
        signing_workers=default_signing_workers() if signing_workers is None else signing_workers,
        journal_size=journal_size,
    )
    try:
        server = MockServer(load_config(config_path), options)
    except MockflockError as exc:
        raise click.ClickException(str(exc)) from None
    server.serve()


@main.command()
@click.option("--environment", "-e", type=click.Choice(ENVIRONMENT_NAMES), default="production", show_default=True,
              help="Environment to fetch the token from.")
@click.option("--url", help="Base URL of that environment [default: http://127.0.0.1:8080 or :8081].")
@click.option("--client-id", default="demo-machine", show_default=True, help="App (OAuth client) id.")
@click.option("--client-secret", default="demo-machine-secret", show_default=True,
              help="App secret; MOCKFLOCK_CLIENT_SECRET overrides it.", envvar="MOCKFLOCK_CLIENT_SECRET")
@click.option("--scope", default=None, help="Space-separated scopes; omit for every scope of the app.")
def token(environment: str, url: str | None, client_id: str, client_secret: str, scope: str | None) -> None:
    """Print a machine token from a running mock, for use with curl."""
    import httpx

    spec = load_environment_specs()[environment]
    base = (url or f"http://127.0.0.1:{spec.default_port}").rstrip("/")
    form = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": client_secret,
            "audience": spec.audience}
    if scope is not None:
        form["scope"] = scope
    try:
        response = httpx.post(f"{base}/oauth/token", data=form, timeout=10)
    except httpx.HTTPError as exc:
        raise click.ClickException(f"Cannot reach {base}/oauth/token: {exc}. Is `mockflock serve` running?") from None
    if response.status_code != 200:
        raise click.ClickException(f"{base}/oauth/token returned {response.status_code}: {response.text}")
    click.echo(response.json()["access_token"])


@main.command()
@click.option("--environment", "-e", type=click.Choice(ENVIRONMENT_NAMES), multiple=True,
              help="Environment to make a key for (repeatable) [default: both].")
def keys(environment: tuple[str, ...]) -> None:
    """Print new RSA signing keys as a configuration snippet for reproducible tokens."""
    from mockflock.oauth.keys import generate_key

    click.echo("environments:")
    for name in environment or ENVIRONMENT_NAMES:
        key = generate_key()
        pem = "\n".join("      " + line for line in key.private_pem().strip().splitlines())
        click.echo(f"  {name}:\n    key_id: {key.kid}\n    signing_key: |\n{pem}")


# -- test harness: `mockflock verify` ------------------------------------------

@main.command()
@click.option("--url", required=True, help="Base URL of a running mock environment, e.g. http://127.0.0.1:8080.")
@click.option("--admin-token", envvar="MOCKFLOCK_ADMIN_TOKEN",
              help="Admin token of a mock that listens on a non-loopback address.")
@click.option("--ignore", multiple=True, metavar="RULE", help="Rule id to leave out of the check (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON instead of text.")
@click.option("--timeout", type=click.FloatRange(0.1, 300), default=10.0, show_default=True,
              help="Seconds to wait for the mock's response.")
def verify(url: str, admin_token: str | None, ignore: tuple[str, ...], as_json: bool, timeout: float) -> None:
    """Check what a client did against a running mock, and print the violation report.

    Exits 1 when the client broke a rule, 0 when it broke none, and 2 when
    the mock cannot be reached or refuses the admin request.
    """
    import json

    import httpx

    endpoint = url.rstrip("/") + "/_mockflock/violations"
    headers = {"Authorization": f"Bearer {admin_token}"} if admin_token else {}
    params = {"ignore": ",".join(ignore)} if ignore else {}
    try:
        response = httpx.get(endpoint, headers=headers, params=params, timeout=timeout)
    except httpx.HTTPError as exc:
        click.echo(f"Error: cannot reach {endpoint}: {exc}. Is `mockflock serve` running there?", err=True)
        sys.exit(2)
    if response.status_code != 200:
        try:
            detail = response.json().get("error_description", response.text)
        except ValueError:
            detail = response.text[:500]
        click.echo(f"Error: {endpoint} returned {response.status_code}: {detail}", err=True)
        sys.exit(2)
    result = response.json()
    click.echo(json.dumps(result, indent=2) if as_json else result["report"])
    sys.exit(1 if result["count"] else 0)


def run() -> None:
    try:
        main()
    except ConfigError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(2)
