"""Drive a running mock from Python: the control interface of the test harness.

`Control` wraps a `MockServer` in the same process and changes it the way
a test needs. It registers apps and users, shortens token lifetimes,
advances the clock, revokes tokens, rotates signing keys, injects faults
and narrows granted scopes. It also reads the journal, the audit trail and
the violation report. The admin HTTP API under /_mockflock offers the same
operations to tests written in other languages.

`HarnessState` is the part of this that a `MockServer` carries itself:
the journal, the fault plan, and what a reset must restore.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import jwt

from mockflock import violations as rules
from mockflock.config import AppConfig, Lifetimes, parse_config
from mockflock.errors import ConfigError
from mockflock.faults import Fault, FaultMiddleware, FaultPlan, make_fault
from mockflock.journal import DEFAULT_MAX_ENTRIES, Journal, JournalMiddleware
from mockflock.oauth.keys import SigningKey, generate_key
from mockflock.oauth.tokens import ALGORITHM

if TYPE_CHECKING:
    from starlette.types import ASGIApp

    from mockflock.environments import Environment
    from mockflock.server import MockServer

logger = logging.getLogger(__name__)

LIFETIME_NAMES = tuple(field.name for field in dataclasses.fields(Lifetimes))
# Generating a 2048-bit RSA key takes tens of milliseconds, so rotations
# reuse keys made earlier in the process. `_fresh_key` picks one that the
# environment has not published since its last reset.
_KEY_POOL: list[SigningKey] = []
# Tokens minted by `Control.mint_token(revoked=True)` stay revoked across
# resets, up to this many; their ids are random, so no other token is affected.
MAX_BORN_REVOKED = 10_000
# The clock may run at most this far ahead of real time, so every date the
# mock writes stays a valid timestamp (year 9999 is the limit of most).
MAX_CLOCK_OFFSET = 100 * 365 * 86400
MAX_CLOCK_OFFSET_TEXT = "100 years"
# A token lifetime may be at most this long.
MAX_LIFETIME = 10 * 365 * 86400
MAX_LIFETIME_TEXT = "10 years"


class AppExists(ValueError):
    """`Control.register_app` was given a client_id that an environment already has."""


class HarnessState:
    """The journal, the fault plan and the revocations that outlive a reset."""

    def __init__(self, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        self.journal = Journal(max_entries)
        self.faults = FaultPlan()
        self.born_revoked: dict[str, list[str]] = {}
        # Key ids each environment has published since the last reset; a
        # rotation never brings one of them back.
        self.used_kids: dict[str, set[str]] = {}
        self._lock = threading.Lock()

    def wrap(self, app: ASGIApp, env: Environment, server: MockServer) -> ASGIApp:
        """Return `app` with fault injection inside and the journal outside."""
        faulted = FaultMiddleware(app, environment=env, plan=self.faults)
        return JournalMiddleware(
            faulted, environment=env, environments=server.environments, journal=self.journal, clock=server.clock
        )

    def remember_revoked(self, environment: str, jti: str) -> None:
        with self._lock:
            kept = self.born_revoked.setdefault(environment, [])
            kept.append(jti)
            del kept[:-MAX_BORN_REVOKED]

    def reset(self, server: MockServer) -> None:
        """Forget the journal, faults and changed lifetimes; keep born-revoked tokens revoked."""
        self.journal.clear()
        self.faults.clear()
        self.used_kids.clear()
        for env in server.environments.values():
            env.config = server.config
            env.revoked.update(self.born_revoked.get(env.name, ()))


class Control:
    """The test harness's handle on one running `MockServer`.

    Every method is safe to call from the test's thread while the server
    runs in its own. Arguments are checked before anything changes: a
    wrong one raises `ValueError` (or `KeyError` for an unknown app or
    user) that names it.
    """

    def __init__(self, server: MockServer) -> None:
        self.server = server

    # -- where things are --------------------------------------------------

    @property
    def environments(self) -> tuple[str, ...]:
        return tuple(self.server.environments)

    def environment(self, name: str = "production") -> Environment:
        try:
            return self.server.environments[name]
        except KeyError:
            raise ValueError(f"environment={name!r} is not served; use one of {', '.join(self.environments)}") from None

    def url(self, environment: str = "production") -> str:
        """Return the base URL of an environment, e.g. http://127.0.0.1:40123."""
        return self.environment(environment).base_url

    def api_url(self, environment: str = "production") -> str:
        return self.url(environment) + "/api/v3"

    def token_url(self, environment: str = "production") -> str:
        return self.environment(environment).token_url

    def authorize_url(self, environment: str = "production") -> str:
        return self.url(environment) + "/authorize"

    def audience(self, environment: str = "production") -> str:
        return self.environment(environment).audience

    # -- apps and users ----------------------------------------------------

    def register_app(
        self,
        client_id: str,
        *,
        secret: str,
        organization: str | None = None,
        grants: Iterable[str] = ("client_credentials",),
        scopes: Iterable[str] = ("*",),
        environments: Iterable[str] | None = None,
        redirect_uris: Iterable[str] = (),
        auto_consent: bool = False,
        require_pkce: bool = False,
        name: str | None = None,
        replace: bool = False,
    ) -> AppConfig:
        """Register an app (OAuth client) in the given environments, or in all of them.

        The arguments mean what the configuration file's `apps` entries
        mean; scopes may contain "*" for every scope the grants can use.
        Redirect URIs must be absolute http or https URLs. A client_id that
        is already registered raises `AppExists` unless `replace` is true.
        A reset removes the app again (and restores a replaced one).
        """
        if not isinstance(client_id, str) or not client_id.strip():
            raise ValueError(f"client_id={client_id!r} must be a non-empty string")
        if not isinstance(secret, str) or not secret:
            raise ValueError(f"secret for client_id={client_id!r} must be a non-empty string")
        grants = _string_list("grants", grants)
        scopes = _string_list("scopes", scopes)
        redirect_uris = _string_list("redirect_uris", redirect_uris)
        if environments is not None:
            environments = _string_list("environments", environments)
        for field_name, flag in (("auto_consent", auto_consent), ("require_pkce", require_pkce), ("replace", replace)):
            if not isinstance(flag, bool):
                raise ValueError(f"{field_name}={flag!r} must be true or false")
        for field_name, text in (("organization", organization), ("name", name)):
            if text is not None and not isinstance(text, str):
                raise ValueError(f"{field_name}={text!r} must be a string or null")
        for uri in redirect_uris:
            _check_redirect_uri(uri)
        organization = organization or next(iter(self.server.config.organizations), "")
        body: dict[str, Any] = {
            "secret": secret,
            "name": name or client_id,
            "organization": organization,
            "grants": list(grants),
            "scopes": list(scopes),
            "environments": list(environments) if environments is not None else list(self.environments),
            "redirect_uris": list(redirect_uris),
            "auto_consent": auto_consent,
            "require_pkce": require_pkce,
        }
        app = self._parse_app(client_id, body)
        taken = [env_name for env_name in app.environments
                 if env_name in self.server.environments and self.server.environments[env_name].clients.get(client_id)]
        if taken and not replace:
            raise AppExists(
                f"client_id={client_id!r} is already registered in {', '.join(taken)}; "
                "choose another client_id, or set replace to true to replace that app"
            )
        for env_name in app.environments:
            if env_name in self.server.environments:
                self.server.environments[env_name].clients.register(app)
        logger.info("Registered app %s in %s", client_id, ", ".join(app.environments))
        return app

    def _parse_app(self, client_id: str, body: dict[str, Any]) -> AppConfig:
        raw = {
            "organizations": {org_id: {"name": org_name} for org_id, org_name in self.server.config.organizations.items()},
            "apps": {client_id: body},
        }
        try:
            return parse_config(raw, source="register_app").apps[client_id]
        except ConfigError as exc:
            # The message names the field; to the caller it is a bad argument.
            raise ValueError(str(exc).replace(f"apps.{client_id} in register_app", f"app {client_id!r}")) from None

    def app(self, client_id: str, environment: str = "production") -> AppConfig:
        app = self.environment(environment).clients.get(client_id)
        if app is None:
            raise KeyError(f"client_id={client_id!r} is not registered in the {environment} environment")
        return app

    def set_app_scopes(self, client_id: str, scopes: Iterable[str], *, environment: str | None = None) -> None:
        """Change the scopes registered for an app, as Flock would after a change of its settings."""
        scopes = frozenset(scopes)
        for env in self._environments(environment):
            app = env.clients.get(client_id)
            if app is None:
                raise KeyError(f"client_id={client_id!r} is not registered in the {env.name} environment")
            checked = self._parse_app(client_id, {
                "secret": app.secret, "organization": app.organization, "grants": list(app.grants),
                "scopes": sorted(scopes), "environments": [env.name],
            })
            env.clients.update(client_id, scopes=checked.scopes)

    def register_user(
        self,
        user_id: str,
        *,
        password: str,
        organization: str | None = None,
        roles: Iterable[str] = ("administrator",),
        networks: Iterable[str] = ("*",),
        name: str | None = None,
        requests_per_window: int | None = None,
        environments: Iterable[str] | None = None,
    ) -> Any:
        """Register a Flock user who can sign in on the login page; a reset removes them again."""
        from mockflock.users import parse_directory

        if not isinstance(user_id, str) or not user_id.strip():
            raise ValueError(f"id={user_id!r} must be a non-empty string")
        config = self.server.config
        body: dict[str, Any] = {
            "password": password,
            "name": name or user_id,
            "organization": organization or next(iter(config.organizations), ""),
            "roles": list(roles),
            "networks": list(networks),
        }
        if requests_per_window is not None:
            body["requests_per_window"] = requests_per_window
        raw = {"networks": config.raw.get("networks") or {}, "roles": config.raw.get("roles") or {}, "users": {user_id: body}}
        try:
            user = parse_directory(raw, config.organizations, "register_user").users[user_id]
        except ConfigError as exc:
            raise ValueError(str(exc).replace(f"users.{user_id} in register_user", f"user {user_id!r}")) from None
        for env in self._environments(None):
            if environments is None or env.name in set(environments):
                env.users.add(user)
        logger.info("Registered user %s", user_id)
        return user

    # -- time and lifetimes ------------------------------------------------

    def now(self) -> float:
        """Return the mock's clock: seconds since the epoch."""
        return self.server.clock.now()

    def advance_clock(self, seconds: float) -> float:
        """Move the mock's clock forward; tokens, codes and quotas expire as if time had passed."""
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 <= seconds < math.inf:
            raise ValueError(f"seconds={seconds!r} must be a finite number of seconds of at least 0")
        offset = self.now() - time.time()
        if offset + seconds > MAX_CLOCK_OFFSET:
            raise ValueError(
                f"seconds={seconds!r} would move the clock more than {MAX_CLOCK_OFFSET_TEXT} "
                f"({MAX_CLOCK_OFFSET} s) past real time; it is already {offset:.0f} s ahead, "
                "so advance it less or reset the mock"
            )
        self.server.clock.advance(seconds)
        now = self.now()
        self.journal_state.record_event("advance_clock", time=now, seconds=seconds)
        return now

    def sleep(self, seconds: float) -> None:
        """Advance the mock's clock instead of waiting: a drop-in for `time.sleep` in a client under test."""
        self.advance_clock(max(0.0, float(seconds)))

    def set_token_lifetimes(self, *, environment: str | None = None, **seconds: int) -> Lifetimes:
        """Change token lifetimes (machine_access, user_access, user_refresh, authorization_code) in seconds.

        New tokens get the new lifetimes; tokens already issued keep theirs.
        A reset restores the configured lifetimes.
        """
        unknown = sorted(set(seconds) - set(LIFETIME_NAMES))
        if unknown:
            raise ValueError(f"{', '.join(unknown)} is not a token lifetime; use some of {', '.join(LIFETIME_NAMES)}")
        for name, value in seconds.items():
            if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_LIFETIME:
                raise ValueError(
                    f"{name}={value!r} must be a whole number of seconds from 1 to {MAX_LIFETIME} ({MAX_LIFETIME_TEXT})"
                )
        lifetimes = None
        for env in self._environments(environment):
            lifetimes = dataclasses.replace(env.config.lifetimes, **seconds)
            env.config = dataclasses.replace(env.config, lifetimes=lifetimes)
        self.journal_state.record_event("set_token_lifetimes", time=self.now(), environment=environment, **seconds)
        assert lifetimes is not None
        return lifetimes

    # -- keys and tokens ---------------------------------------------------

    def rotate_keys(self, *, environment: str | None = None, keep_old: bool = True) -> dict[str, str]:
        """Make a new signing key active; return the new key id per environment.

        With keep_old the old key stays in the JWKS and its tokens keep
        working until they expire. Without it they are rejected at once
        (unknown key id), as after an emergency rotation.
        """
        rotated = {}
        for env in self._environments(environment):
            old = env.keys.active.kid
            new = env.keys.rotate(self._fresh_key(env), keep_old=keep_old)
            if not keep_old:
                env.tokens.forget_verified()
            rotated[env.name] = new.kid
            self.journal_state.record_event(
                "rotate_keys", time=self.now(), environment=env.name, old_kid=old, new_kid=new.kid, keep_old=keep_old
            )
        return rotated

    def _fresh_key(self, env: Environment) -> SigningKey:
        """Return a key this environment has not published since the last reset."""
        with self.server.harness._lock:
            used = self.server.harness.used_kids.setdefault(env.name, set())
            used.update(key.kid for key in (env.keys.active, *env.keys.retired))
            key = next((key for key in _KEY_POOL if key.kid not in used), None)
            if key is None:
                key = generate_key()
                _KEY_POOL.append(key)
            used.add(key.kid)
        return key

    def revoke(
        self,
        *,
        jti: str | None = None,
        client_id: str | None = None,
        subject: str | None = None,
        environment: str | None = None,
    ) -> list[str]:
        """Revoke access tokens by id, or every token issued to a client or user.

        A `jti` goes on the deny list of each environment named (or of
        all), whether or not the mock issued it, so a token minted some
        other way with that id is rejected too. For a client or user, the
        access tokens are those the journal saw issued, plus every token
        of their user-level token families, whose refresh tokens are
        revoked too; a client or user with no tokens revokes nothing.
        Returns the revoked token ids, each once.
        """
        for field_name, value in (("jti", jti), ("client_id", client_id), ("subject", subject)):
            if value is not None and (not isinstance(value, str) or not value):
                raise ValueError(f"{field_name}={value!r} must be a non-empty string or null")
        if not (jti or client_id or subject):
            raise ValueError("Name what to revoke: jti, client_id or subject")
        revoked: dict[str, None] = {}
        for env in self._environments(environment):
            jtis = {jti} if jti else set()
            for entry in self.journal_state.entries():
                issued = entry.get("issued")
                if entry.get("environment") != env.name or not issued:
                    continue
                if (client_id and issued["client_id"] == client_id) or (subject and issued["subject"] == subject):
                    jtis.add(issued["jti"])
            jtis |= _revoke_families(env, client_id=client_id, subject=subject)
            jtis.discard(None)  # type: ignore[arg-type]
            env.revoked.update(jtis)
            revoked.update(dict.fromkeys(sorted(jtis)))
            self.journal_state.record_event(
                "revoke", time=self.now(), environment=env.name, jtis=sorted(jtis), client_id=client_id, subject=subject
            )
        return list(revoked)

    def mint_token(
        self,
        environment: str = "production",
        *,
        client_id: str,
        level: str = "machine",
        scopes: Iterable[str] | None = None,
        lifetime: int | None = None,
        subject: str | None = None,
        organization: str | None = None,
        claims: Mapping[str, Any] | None = None,
        signing_key: SigningKey | None = None,
        revoked: bool = False,
    ) -> tuple[str, dict[str, Any]]:
        """Sign a token as the environment would, without a token request; return (token, claims).

        `claims` overrides claims (for example exp, nbf or aud), and
        `signing_key` signs with a key the environment does not publish.
        Strategies use this to make tokens that are invalid in one way.
        """
        env = self.environment(environment)
        app = env.clients.get(client_id)
        if scopes is None:
            scopes = app.scopes if app else frozenset()
        if lifetime is None:
            lifetimes = env.config.lifetimes
            lifetime = lifetimes.user_access if level == "user" else lifetimes.machine_access
        issued = env.tokens.mint(
            subject=subject or client_id,
            client_id=client_id,
            organization=organization or (app.organization if app else next(iter(self.server.config.organizations), "")),
            level=level,
            scopes=frozenset(scopes),
            lifetime=lifetime,
            extra=dict(claims or {}),
        )
        token, token_claims = issued.token, issued.claims
        if signing_key is not None:
            token = jwt.encode(token_claims, signing_key.private_key, algorithm=ALGORITHM, headers={"kid": signing_key.kid})
        if revoked:
            env.revoked.add(token_claims["jti"])
            self.server.harness.remember_revoked(env.name, token_claims["jti"])
        return token, dict(token_claims)

    # -- faults ------------------------------------------------------------

    def inject_fault(
        self,
        kind: str,
        *,
        target: str = "api",
        environment: str | None = None,
        times: int | None = 1,
        status: int | None = None,
        retry_after: float | None = None,
        latency: float | None = None,
    ) -> Fault:
        """Make the next `times` matching requests fail in one way (None: until `clear_faults`).

        kind is latency (the request waits `latency` seconds, then runs),
        error (a 5xx `status`, 503 by default), rate_limit (429 with
        Retry-After, 1 s by default) or drop (the connection closes with no
        response). target is token, api, authorize, revoke, introspect,
        any, or an operation id such as listHotlists.
        """
        fault = make_fault(
            kind, target=target, environment=environment, times=times, status=status,
            retry_after=retry_after, latency=latency, environments=self.environments,
        )
        self.server.harness.faults.add(fault)
        self.journal_state.record_event("inject_fault", time=self.now(), environment=environment, fault=fault.describe())
        return fault

    def faults(self) -> list[Fault]:
        return list(self.server.harness.faults.faults)

    def clear_faults(self) -> None:
        """Remove every fault and scope narrowing."""
        self.server.harness.faults.clear()
        self.journal_state.record_event("clear_faults", time=self.now())

    def narrow_scopes(self, drop: Iterable[str], *, client_id: str | None = None, environment: str | None = None) -> None:
        """Grant fewer scopes than requested: leave `drop` out of client credentials and refresh grants.

        The token response then carries the granted `scope` (RFC 6749 5.1).
        A request that would be left with no scope is granted unchanged.
        """
        drop = frozenset(drop)
        if not drop:
            raise ValueError("drop must name at least one scope to leave out")
        from mockflock.contracts import load_matrix

        unknown = sorted(drop - set(load_matrix().scopes))
        if unknown:
            raise ValueError(f"{', '.join(unknown)} is not a scope of contracts/matrix.yaml")
        if environment is not None:
            self.environment(environment)
        self.server.harness.faults.narrow(drop, client_id=client_id, environment=environment)
        self.journal_state.record_event(
            "narrow_scopes", time=self.now(), environment=environment, client_id=client_id, drop=sorted(drop)
        )

    # -- journal, audit and violations -------------------------------------

    @property
    def journal_state(self) -> Journal:
        return self.server.harness.journal

    def journal(self, *, since: int = 0) -> list[dict[str, Any]]:
        """Return the journal's entries after `since`, oldest first; see `mockflock.journal`."""
        return self.journal_state.entries(since=since)

    def journal_summary(self) -> dict[str, int]:
        return self.journal_state.summary()

    def begin_step(self, label: str = "") -> int:
        """Start a new step: retry rules never join requests of two steps."""
        return self.journal_state.begin_step(label, time=self.now())

    def audit(self, environment: str | None = None, **filters: str | None) -> list[dict[str, Any]]:
        """Return the audit trail of API calls, oldest first, from one or every environment.

        Filters (actor, user, app, api, operation, decision) keep only the
        records whose field equals the value given.
        """
        from mockflock.access.audit import audit_records

        if environment is not None:
            self.environment(environment)
        return [
            record.as_dict()
            for record in audit_records(self.server, **filters)
            if environment is None or record.environment == environment
        ]

    def violations(self, *, ignore: Iterable[str] = (), needed_scopes: Mapping[str, Iterable[str]] | None = None
                   ) -> list[rules.Violation]:
        """Evaluate every violation rule over the journal; `ignore` lists rule ids to skip."""
        context = rules.build_context(self.server, needed_scopes=needed_scopes)
        return rules.evaluate(self.journal(), context, ignore=ignore)

    def report(self, *, ignore: Iterable[str] = (), needed_scopes: Mapping[str, Iterable[str]] | None = None) -> str:
        """Return the violation report as text, one paragraph per violation."""
        found = self.violations(ignore=ignore, needed_scopes=needed_scopes)
        return rules.format_report(found, self.journal(), self.journal_summary())

    def assert_no_violations(self, *, ignore: Iterable[str] = (),
                             needed_scopes: Mapping[str, Iterable[str]] | None = None) -> None:
        """Raise AssertionError with the readable report if the client broke any rule."""
        found = self.violations(ignore=ignore, needed_scopes=needed_scopes)
        if found:
            raise AssertionError(rules.format_report(found, self.journal(), self.journal_summary()))

    # -- state -------------------------------------------------------------

    def reset(self) -> None:
        """Return the whole mock to its state at start: data, apps, users, keys, clock, journal, faults."""
        self.server.reset()

    def _environments(self, environment: str | None) -> list[Environment]:
        if environment is None:
            return list(self.server.environments.values())
        return [self.environment(environment)]


def _string_list(field_name: str, values: Iterable[str]) -> list[str]:
    """Return `values` as a list, or raise ValueError naming the field unless it is an iterable of strings."""
    if isinstance(values, (str, bytes, Mapping)) or not isinstance(values, Iterable):
        raise ValueError(f"{field_name}={values!r} must be a list of strings")
    listed = list(values)
    if not all(isinstance(value, str) for value in listed):
        raise ValueError(f"{field_name}={listed!r} must be a list of strings")
    return listed


def _check_redirect_uri(uri: str) -> None:
    """Raise ValueError unless `uri` is an absolute http(s) URL with a host and no fragment (RFC 6749 3.1.2)."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        parts = urlsplit("")
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.fragment:
        raise ValueError(
            f"redirect_uris has {uri[:200]!r}; each redirect URI must be an absolute http or https URL "
            "with a host and no fragment, such as https://app.example/callback"
        )


def _revoke_families(env: Environment, *, client_id: str | None, subject: str | None) -> set[str]:
    """Revoke the user-level token families of a client or user; return the access token ids they held."""
    if not (client_id or subject):
        return set()
    with env.grants.lock:
        families = [
            family for family in env.grants.families.values()
            if (client_id and family.client_id == client_id) or (subject and family.user_id == subject)
        ]
    jtis: set[str] = set()
    for family in families:
        env.grants.revoke_family(env, family.id, "revoked through the mockflock control interface")
        jtis.update(family.access_jtis)
    return jtis
