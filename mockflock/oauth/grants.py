"""Records of user-level grants: login pages, authorization codes and refresh tokens.

One authorization (a code exchanged for tokens) starts a token family.
The family contains every refresh token and access token issued from that
code and from each rotation after it. Reuse of the code or of a rotated
refresh token revokes all of them at once (RFC 9700 4.14.2).

Codes and refresh tokens are opaque random strings kept only in memory.
The grant modules take `GrantStore.lock` around each check-and-change, so
that two concurrent requests with the same code or refresh token are
decided one after the other.
"""

from __future__ import annotations

import logging
import secrets
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mockflock.errors import BearerError, ConfigError
from mockflock.users import User, load_user_oauth_contract

if TYPE_CHECKING:
    from mockflock.clock import Clock
    from mockflock.environments import Environment

logger = logging.getLogger(__name__)

CONCURRENCY_RULES = ("strict", "grace")

ACTIVE = "active"
ROTATED = "rotated"
REVOKED = "revoked"


@dataclass(frozen=True)
class RefreshSettings:
    """The configuration's `refresh` section: what a repeated refresh token does, and family limits."""

    concurrency: str
    grace_seconds: float
    family_lifetime: int | None


def default_refresh_settings() -> RefreshSettings:
    return parse_refresh_settings({}, "the defaults")


def parse_refresh_settings(body: Any, source: str) -> RefreshSettings:
    """Check the `refresh` section; missing values come from contracts/user-oauth.yaml."""
    if not isinstance(body, dict):
        raise ConfigError(f"refresh in {source} must be a mapping, not {type(body).__name__}")
    names = ("concurrency", "grace_seconds", "family_lifetime")
    unknown = set(body) - set(names)
    if unknown:
        raise ConfigError(
            f"refresh has {sorted(unknown)} in {source}; expected some of {list(names)}"
        )
    contract = load_user_oauth_contract()["refresh"]
    concurrency = body.get("concurrency", contract["concurrency"]["value"])
    if concurrency not in CONCURRENCY_RULES:
        raise ConfigError(
            f"refresh.concurrency={concurrency!r} in {source}; expected one of {list(CONCURRENCY_RULES)}"
        )
    grace = body.get("grace_seconds", contract["grace_seconds"]["value"])
    if isinstance(grace, bool) or not isinstance(grace, (int, float)) or grace < 0:
        raise ConfigError(
            f"refresh.grace_seconds={grace!r} in {source} must be a number of seconds, 0 or more"
        )
    family = body.get("family_lifetime", contract["family_lifetime"]["value"])
    if family is not None and (
        isinstance(family, bool) or not isinstance(family, int) or family <= 0
    ):
        raise ConfigError(
            f"refresh.family_lifetime={family!r} in {source} must be a positive whole number of seconds, or null"
        )
    return RefreshSettings(
        concurrency=concurrency, grace_seconds=float(grace), family_lifetime=family
    )


@dataclass
class PendingAuthorization:
    """An authorization request whose login and consent page awaits the user's decision."""

    id: str
    client_id: str
    redirect_uri: str
    redirect_uri_given: bool
    scopes: frozenset[str]
    state: str | None
    code_challenge: str | None
    audience: str
    login_hint: str | None
    expires_at: float


@dataclass
class AuthorizationCode:
    client_id: str
    user_id: str
    organization: str
    # The redirect_uri of the authorization request, or None when it had none
    # and the app's only registered URI was used (RFC 6749 4.1.3).
    redirect_uri: str | None
    effective_redirect_uri: str
    scopes: frozenset[str]
    code_challenge: str | None
    audience: str
    issued_at: float
    expires_at: float
    used_at: float | None = None
    family_id: str | None = None

    def __repr__(self) -> str:
        return f"AuthorizationCode(client_id={self.client_id!r}, user_id={self.user_id!r}, used={self.used_at is not None})"


@dataclass
class RefreshToken:
    family_id: str
    client_id: str
    issued_at: float
    expires_at: float
    status: str = ACTIVE
    rotated_at: float | None = None
    successor: str | None = None

    def __repr__(self) -> str:
        return f"RefreshToken(family_id={self.family_id!r}, status={self.status!r})"


@dataclass
class TokenFamily:
    """Every token that descends from one exchanged authorization code."""

    id: str
    client_id: str
    user_id: str
    organization: str
    # The scopes the user granted; refreshes may narrow an access token's scopes but never widen these.
    scopes: frozenset[str]
    audience: str
    created_at: float
    expires_at: float | None
    access_jtis: list[str] = field(default_factory=list)
    refresh_tokens: list[str] = field(default_factory=list, repr=False)
    revoked_at: float | None = None
    revoked_reason: str | None = None


class GrantStore:
    """The login pages, codes, refresh tokens and token families of one environment."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.lock = threading.RLock()
        self.pending: dict[str, PendingAuthorization] = {}
        self.codes: dict[str, AuthorizationCode] = {}
        self.refresh_tokens: dict[str, RefreshToken] = {}
        self.families: dict[str, TokenFamily] = {}

    def add_pending(self, pending: PendingAuthorization) -> None:
        with self.lock:
            self._forget_expired_pending()
            self.pending[pending.id] = pending

    def issue_code(self, record: AuthorizationCode) -> str:
        code = secrets.token_urlsafe(32)
        with self.lock:
            self.codes[code] = record
        return code

    def start_family(self, code: AuthorizationCode, family_lifetime: int | None) -> TokenFamily:
        """Start the token family of an exchanged code; it ends after `family_lifetime` seconds when set."""
        now = self.clock.now()
        family = TokenFamily(
            id="fam-" + secrets.token_hex(8),
            client_id=code.client_id,
            user_id=code.user_id,
            organization=code.organization,
            scopes=code.scopes,
            audience=code.audience,
            created_at=now,
            expires_at=None if family_lifetime is None else now + family_lifetime,
        )
        with self.lock:
            self.families[family.id] = family
        return family

    def issue_refresh_token(self, family: TokenFamily, lifetime: int) -> str:
        now = self.clock.now()
        token = secrets.token_urlsafe(32)
        expires_at = now + lifetime
        if family.expires_at is not None:
            expires_at = min(expires_at, family.expires_at)
        with self.lock:
            self.refresh_tokens[token] = RefreshToken(
                family_id=family.id,
                client_id=family.client_id,
                issued_at=now,
                expires_at=expires_at,
            )
            family.refresh_tokens.append(token)
        return token

    def revoke_family(self, env: Environment, family_id: str, reason: str) -> TokenFamily:
        """Revoke every refresh and access token of a family; the reason goes into later error messages."""
        with self.lock:
            family = self.families[family_id]
            if family.revoked_at is None:
                family.revoked_at = self.clock.now()
                family.revoked_reason = reason
            for token in family.refresh_tokens:
                self.refresh_tokens[token].status = REVOKED
            env.revoked.update(family.access_jtis)
        logger.info(
            "Revoked token family %s of user %s in %s: %s",
            family_id,
            family.user_id,
            env.name,
            reason,
        )
        return family

    def reset(self) -> None:
        with self.lock:
            self.pending.clear()
            self.codes.clear()
            self.refresh_tokens.clear()
            self.families.clear()

    def _forget_expired_pending(self) -> None:
        now = self.clock.now()
        for pending_id in [pid for pid, p in self.pending.items() if p.expires_at <= now]:
            del self.pending[pending_id]


def user_claims(user: User, family: TokenFamily) -> dict[str, Any]:
    """Return the claims a user token adds to those of every token.

    `roles` and `networks` record the user's access when the token was
    issued, for the client's information. Resource requests check the
    user's current roles and networks instead.
    """
    return {
        "name": user.name,
        "roles": list(user.roles),
        "networks": ["*"] if user.all_networks else sorted(user.networks),
        "grant_id": family.id,
    }


def issue_user_tokens(
    env: Environment,
    family: TokenFamily,
    user: User,
    scopes: frozenset[str],
    refresh_token: str | None = None,
) -> dict[str, object]:
    """Mint an access token for `user` and return the token response.

    A new refresh token is issued unless `refresh_token` is given. The
    grace rule of concurrent refreshes passes the successor it already
    issued, so that a repeated refresh returns the same refresh token.
    """
    issued = env.tokens.mint(
        subject=user.id,
        client_id=family.client_id,
        organization=family.organization,
        level="user",
        scopes=scopes,
        lifetime=env.config.lifetimes.user_access,
        extra=user_claims(user, family),
    )
    with env.grants.lock:
        family.access_jtis.append(issued.claims["jti"])
        if refresh_token is None:
            refresh_token = env.grants.issue_refresh_token(
                family, env.config.lifetimes.user_refresh
            )
    logger.debug(
        "Issued user token jti=%s for %s to %s in %s",
        issued.claims["jti"],
        user.id,
        family.client_id,
        env.name,
    )
    return {
        "access_token": issued.token,
        "token_type": "Bearer",
        "expires_in": issued.expires_in,
        "refresh_token": refresh_token,
        "scope": issued.claims["scope"],
    }


@dataclass(frozen=True)
class FoundToken:
    """A token that revocation or introspection located: a valid access token or a known refresh token."""

    kind: str  # "access_token" or "refresh_token"
    client_id: str
    claims: dict[str, Any] | None = None
    refresh: RefreshToken | None = None
    family: TokenFamily | None = None


def find_token(env: Environment, token: str, hint: str | None) -> FoundToken | None:
    """Locate `token` as an access token of `env` or one of its refresh tokens.

    The hint only decides which kind is tried first (RFC 7009 2.1). An
    access token is found only while its signature and times are valid.
    """
    order = (
        ("refresh_token", "access_token")
        if hint == "refresh_token"
        else ("access_token", "refresh_token")
    )
    for kind in order:
        found = _find_refresh(env, token) if kind == "refresh_token" else _find_access(env, token)
        if found is not None:
            return found
    return None


def _find_access(env: Environment, token: str) -> FoundToken | None:
    try:
        claims = env.tokens.verify(token).claims
    except BearerError:
        return None
    return FoundToken(kind="access_token", client_id=claims["client_id"], claims=claims)


def _find_refresh(env: Environment, token: str) -> FoundToken | None:
    with env.grants.lock:
        record = env.grants.refresh_tokens.get(token)
        if record is None:
            return None
        return FoundToken(
            kind="refresh_token",
            client_id=record.client_id,
            refresh=record,
            family=env.grants.families[record.family_id],
        )
