"""Load mockflock's configuration into frozen objects.

`MockConfig` describes what the mock contains: organizations, apps,
signing keys and token lifetimes, read from a YAML file or, by default,
the embedded demo configuration. Where the server listens is a separate
object, `mockflock.server.ServerOptions`.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mockflock.access.quotas import QuotaSettings, default_quota_settings, parse_quota_settings
from mockflock.contracts import contracts_dir, load_matrix
from mockflock.errors import ConfigError
from mockflock.oauth.grants import RefreshSettings, default_refresh_settings, parse_refresh_settings
from mockflock.users import Directory, default_directory, parse_directory

logger = logging.getLogger(__name__)

DEMO_CONFIG = Path(__file__).parent / "demo.yaml"
GRANT_LEVELS = {"client_credentials": "machine", "authorization_code": "user", "refresh_token": "user"}


@dataclass(frozen=True)
class EnvironmentSpec:
    """One Flock environment as the contracts describe it."""

    name: str
    audience: str
    flock_base_url: str
    default_port: int


@dataclass(frozen=True)
class KeyConfig:
    """A fixed RSA signing key for reproducible tokens, or none (generate one)."""

    private_key_pem: str | None = None
    key_id: str | None = None


@dataclass(frozen=True)
class AppConfig:
    """A registered Flock app (OAuth client)."""

    client_id: str
    secret: str
    name: str
    organization: str
    grants: tuple[str, ...]
    environments: tuple[str, ...]
    scopes: frozenset[str]
    redirect_uris: tuple[str, ...] = ()
    auto_consent: bool = False
    require_pkce: bool = False

    @property
    def levels(self) -> frozenset[str]:
        return frozenset(GRANT_LEVELS[grant] for grant in self.grants)

    def __repr__(self) -> str:
        return f"AppConfig(client_id={self.client_id!r}, grants={self.grants!r})"


@dataclass(frozen=True)
class Lifetimes:
    """Token lifetimes in seconds."""

    machine_access: int
    user_access: int
    user_refresh: int
    authorization_code: int


@dataclass(frozen=True)
class MockConfig:
    organizations: dict[str, str]
    apps: dict[str, AppConfig]
    keys: dict[str, KeyConfig]
    lifetimes: Lifetimes
    raw: dict[str, Any] = field(default_factory=dict, repr=False)
    source: str = "embedded demo configuration"
    # User-level OAuth: the `users`, `roles` and `networks` sections, and
    # the `quotas` and `refresh` sections, with contracts/user-oauth.yaml's defaults.
    directory: Directory = field(default_factory=default_directory)
    quotas: QuotaSettings = field(default_factory=default_quota_settings)
    refresh: RefreshSettings = field(default_factory=default_refresh_settings)


@functools.cache
def load_environment_specs() -> dict[str, EnvironmentSpec]:
    raw = _read_yaml(contracts_dir() / "environments.yaml")
    return {
        name: EnvironmentSpec(
            name=name,
            audience=str(body["audience"]),
            flock_base_url=str(body["flock_base_url"]),
            default_port=int(body["default_port"]),
        )
        for name, body in raw.items()
    }


@functools.cache
def load_oauth_contract() -> dict[str, Any]:
    return _read_yaml(contracts_dir() / "oauth.yaml")


def load_config(path: str | Path | None = None) -> MockConfig:
    """Read a YAML configuration file, or the embedded demo configuration."""
    source = Path(path) if path else DEMO_CONFIG
    raw = _read_yaml(source)
    return parse_config(raw, source="embedded demo configuration" if path is None else str(source))


def parse_config(raw: dict[str, Any], *, source: str = "a mapping") -> MockConfig:
    """Check a configuration mapping and return it as a `MockConfig`."""
    if not isinstance(raw, dict):
        raise ConfigError(f"The configuration in {source} must be a YAML mapping, not {type(raw).__name__}")
    unknown = set(raw) - {"organizations", "apps", "users", "environments", "tokens", "quotas", "roles", "networks", "seed", "refresh", "webhooks"}
    if unknown:
        raise ConfigError(f"Unknown top-level keys {sorted(unknown)} in {source}")

    organizations = {str(k): str((v or {}).get("name", k)) for k, v in (raw.get("organizations") or {}).items()}
    specs = load_environment_specs()
    apps = {
        str(client_id): _parse_app(str(client_id), body or {}, organizations, specs, source)
        for client_id, body in (raw.get("apps") or {}).items()
    }
    keys = {name: _parse_keys(name, (raw.get("environments") or {}).get(name) or {}, source) for name in specs}
    unknown_envs = set(raw.get("environments") or {}) - set(specs)
    if unknown_envs:
        raise ConfigError(f"environments has {sorted(unknown_envs)} in {source}; expected {sorted(specs)}")
    return MockConfig(
        organizations=organizations,
        apps=apps,
        keys=keys,
        lifetimes=_parse_lifetimes(raw.get("tokens") or {}, source),
        raw=raw,
        source=source,
        directory=parse_directory(raw, organizations, source),
        quotas=parse_quota_settings(raw.get("quotas") or {}, source),
        refresh=parse_refresh_settings(raw.get("refresh") or {}, source),
    )


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise ConfigError(f"Cannot read {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from exc


def _parse_app(
    client_id: str,
    body: dict[str, Any],
    organizations: dict[str, str],
    specs: dict[str, EnvironmentSpec],
    source: str,
) -> AppConfig:
    where = f"apps.{client_id} in {source}"
    secret = body.get("secret")
    if not isinstance(secret, str) or not secret:
        raise ConfigError(f"{where} needs a non-empty string 'secret'")
    organization = str(body.get("organization", ""))
    if organization not in organizations:
        raise ConfigError(f"{where} has organization={organization!r}; define it under organizations: {sorted(organizations)}")

    grants = tuple(body.get("grants") or ["client_credentials"])
    for grant in grants:
        if grant not in GRANT_LEVELS:
            raise ConfigError(f"{where} has grant {grant!r}; expected one of {sorted(GRANT_LEVELS)}")
    environments = tuple(body.get("environments") or list(specs))
    for env in environments:
        if env not in specs:
            raise ConfigError(f"{where} has environment {env!r}; expected one of {sorted(specs)}")

    levels = {GRANT_LEVELS[grant] for grant in grants}
    return AppConfig(
        client_id=client_id,
        secret=secret,
        name=str(body.get("name", client_id)),
        organization=organization,
        grants=grants,
        environments=environments,
        scopes=_parse_scopes(body.get("scopes") or ["*"], levels, where),
        redirect_uris=tuple(str(uri) for uri in body.get("redirect_uris") or ()),
        auto_consent=bool(body.get("auto_consent", False)),
        require_pkce=bool(body.get("require_pkce", False)),
    )


def _parse_scopes(values: list[Any], levels: set[str], where: str) -> frozenset[str]:
    matrix = load_matrix()
    usable = frozenset().union(*(matrix.scopes_for_level(level) for level in levels))
    scopes: set[str] = set()
    for value in values:
        if value == "*":
            scopes |= usable
        elif value not in matrix.scopes:
            raise ConfigError(f"{where} lists scope {value!r}, which contracts/matrix.yaml does not define")
        else:
            scopes.add(str(value))
    return frozenset(scopes)


def _parse_keys(name: str, body: dict[str, Any], source: str) -> KeyConfig:
    pem = body.get("signing_key")
    key_file = body.get("signing_key_file")
    if key_file:
        try:
            pem = Path(key_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"environments.{name}.signing_key_file={key_file!r} in {source}: {exc.strerror}") from exc
    if pem is not None and not isinstance(pem, str):
        raise ConfigError(f"environments.{name}.signing_key in {source} must be a PEM string")
    return KeyConfig(private_key_pem=pem, key_id=body.get("key_id"))


def _parse_lifetimes(body: dict[str, Any], source: str) -> Lifetimes:
    contract = load_oauth_contract()["token_lifetimes"]
    values = {}
    for name, entry in contract.items():
        value = body.get(name, entry["value"])
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ConfigError(f"tokens.{name}={value!r} in {source} must be a positive whole number of seconds")
        values[name] = value
    unknown = set(body) - set(contract)
    if unknown:
        raise ConfigError(f"tokens has {sorted(unknown)} in {source}; expected some of {sorted(contract)}")
    return Lifetimes(**values)
