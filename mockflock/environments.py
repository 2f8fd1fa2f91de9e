"""The two Flock environments as they run: URLs, keys, tokens and apps."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from mockflock.access.audit import AuditLog
from mockflock.access.quotas import QuotaCounter
from mockflock.clock import Clock
from mockflock.config import EnvironmentSpec, MockConfig, load_environment_specs
from mockflock.oauth.clients import ClientRegistry
from mockflock.oauth.grants import GrantStore
from mockflock.oauth.keys import KeySet, generate_key, load_key
from mockflock.oauth.tokens import TokenService
from mockflock.users import UserRegistry

logger = logging.getLogger(__name__)


@dataclass
class Environment:
    """One environment: where clients reach it, who it trusts and what it signs."""

    spec: EnvironmentSpec
    base_url: str
    keys: KeySet
    tokens: TokenService
    clients: ClientRegistry
    config: MockConfig
    clock: Clock
    revoked: set[str] = field(default_factory=set)
    # User-level OAuth: users and their roles, codes and refresh tokens,
    # request quotas and the audit trail, made from config and clock.
    users: UserRegistry = field(init=False)
    grants: GrantStore = field(init=False)
    quotas: QuotaCounter = field(init=False)
    audit: AuditLog = field(init=False)

    def __post_init__(self) -> None:
        self.users = UserRegistry(self.config.directory)
        self.grants = GrantStore(self.clock)
        self.quotas = QuotaCounter(self.clock)
        self.audit = AuditLog()

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def audience(self) -> str:
        return self.spec.audience

    @property
    def issuer(self) -> str:
        return self.base_url

    @property
    def token_url(self) -> str:
        return f"{self.base_url}/oauth/token"

    @property
    def jwks_url(self) -> str:
        return f"{self.base_url}/.well-known/jwks.json"

    def reset(self) -> None:
        """Return to the state at start: initial apps, key and users; no tokens, codes, counts or records."""
        self.keys.reset()
        self.clients.reset()
        self.tokens.forget_verified()
        self.revoked.clear()
        self.users.reset()
        self.grants.reset()
        self.quotas.reset()
        self.audit.clear()


def build_environments(config: MockConfig, base_urls: dict[str, str], clock: Clock) -> dict[str, Environment]:
    """Create the environments named in `base_urls` (name -> public base URL)."""
    specs = load_environment_specs()
    environments = {}
    for name, base_url in base_urls.items():
        base_url = base_url.rstrip("/")
        key_config = config.keys.get(name)
        if key_config and key_config.private_key_pem:
            key = load_key(key_config.private_key_pem, key_config.key_id)
        else:
            key = generate_key(key_config.key_id if key_config else None)
        keys = KeySet(key)
        spec = specs[name]
        environments[name] = Environment(
            spec=spec,
            base_url=base_url,
            keys=keys,
            tokens=TokenService(environment=name, issuer=base_url, audience=spec.audience, keys=keys, clock=clock),
            clients=ClientRegistry(name, config.apps),
            config=config,
            clock=clock,
        )
    return environments
