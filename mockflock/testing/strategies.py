"""Hypothesis strategies for Flock integrations.

Every factory is a plural noun for what it generates, takes keyword-only
arguments, and checks them when it is called, raising
`hypothesis.errors.InvalidArgument` that names the wrong one. Names of
APIs, levels and scopes come from contracts/matrix.yaml.

- `environments()`: "production" or "development".
- `token_levels()`: "machine" or "user", optionally only those an API accepts.
- `scope_sets()`: sets of scopes of one API, usable at one level.
- `apps()`: `AppSpec`s to register with `Control.register_app`.
- `users()`: `UserSpec`s to register with `Control.register_user`.
- `access_tokens()`: signed `AccessToken`s that are valid, or invalid in
  exactly one way (`INVALIDITIES`), with the rejection to expect.
"""

from __future__ import annotations

import base64
import functools
import json
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from mockflock.contracts import LEVELS, load_matrix

if TYPE_CHECKING:
    from mockflock.control import Control
    from mockflock.oauth.keys import SigningKey

__all__ = [
    "AccessToken",
    "AppSpec",
    "INVALIDITIES",
    "UserSpec",
    "access_tokens",
    "apps",
    "environments",
    "scope_sets",
    "token_levels",
    "users",
]

ENVIRONMENTS = ("production", "development")
# The ways `access_tokens` can make a token invalid, and the rejection each gets.
INVALIDITIES: dict[str, tuple[int, str, str]] = {
    "expired": (401, "invalid_token", "expired"),
    "not_yet_valid": (401, "invalid_token", "not_yet_valid"),
    "wrong_audience": (401, "invalid_token", "wrong_audience"),
    "wrong_environment": (401, "invalid_token", "wrong_environment"),
    "tampered": (401, "invalid_token", "bad_signature"),
    "revoked": (401, "invalid_token", "revoked"),
    "wrong_level": (403, "insufficient_token_level", "wrong_level"),
    "unknown_key": (401, "invalid_token", "unknown_key"),
}
# Claims that `tampered` tokens change, in shrinking order.
TAMPERED_CLAIMS = ("scope", "exp", "sub", "token_level")
MAX_OFFSET_SECONDS = 10**6
ROLES = ("administrator", "investigator", "viewer")


@dataclass(frozen=True)
class AppSpec:
    """An app to register: the arguments of `Control.register_app`."""

    client_id: str
    secret: str
    grants: tuple[str, ...]
    scopes: frozenset[str]
    environments: tuple[str, ...]
    redirect_uris: tuple[str, ...] = ()
    auto_consent: bool = False

    def register(self, control: Control) -> Any:
        return control.register_app(
            self.client_id, secret=self.secret, grants=self.grants, scopes=sorted(self.scopes),
            environments=self.environments, redirect_uris=self.redirect_uris, auto_consent=self.auto_consent,
        )

    def __repr__(self) -> str:
        return (f"AppSpec(client_id={self.client_id!r}, grants={self.grants!r}, scopes={sorted(self.scopes)!r}, "
                f"environments={self.environments!r})")


@dataclass(frozen=True)
class UserSpec:
    """A user to register: the arguments of `Control.register_user`."""

    user_id: str
    password: str
    roles: tuple[str, ...]
    networks: tuple[str, ...] = ("*",)

    def register(self, control: Control) -> Any:
        return control.register_user(self.user_id, password=self.password, roles=self.roles, networks=self.networks)

    def __repr__(self) -> str:
        return f"UserSpec(user_id={self.user_id!r}, roles={self.roles!r}, networks={self.networks!r})"


@dataclass(frozen=True)
class AccessToken:
    """A signed token, the way it is meant to be valid or invalid, and the response an API must give to it."""

    token: str = field(repr=False)
    claims: dict[str, Any] = field(repr=False)
    environment: str
    level: str
    validity: str  # "valid" or a key of INVALIDITIES
    detail: str = ""

    @property
    def expected_status(self) -> int:
        return 200 if self.validity == "valid" else INVALIDITIES[self.validity][0]

    @property
    def expected_error(self) -> str | None:
        return None if self.validity == "valid" else INVALIDITIES[self.validity][1]

    @property
    def expected_reason(self) -> str | None:
        return None if self.validity == "valid" else INVALIDITIES[self.validity][2]

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def _check_choice(name: str, value: Any, choices: Collection[str]) -> None:
    if value not in choices:
        raise InvalidArgument(f"{name}={value!r} must be one of {', '.join(map(repr, choices))}")


def _check_api(api: str | None) -> None:
    if api is not None:
        _check_choice("api", api, load_matrix().apis)


def environments(*, only: Iterable[str] | None = None) -> st.SearchStrategy[str]:
    """Generate Flock environment names; `only` restricts them. Shrinks towards "production"."""
    names = list(ENVIRONMENTS if only is None else only)
    if not names:
        raise InvalidArgument("only=[] leaves no environment to generate")
    for name in names:
        _check_choice("only", name, ENVIRONMENTS)
    return st.sampled_from(names)


def token_levels(*, api: str | None = None) -> st.SearchStrategy[str]:
    """Generate token levels, "machine" or "user"; with `api`, only the levels it accepts.

    Shrinks towards "machine".
    """
    _check_api(api)
    levels = list(LEVELS) if api is None else load_matrix().apis[api].accepted_levels()
    if not levels:
        raise InvalidArgument(f"api={api!r} accepts no token level yet")
    return st.sampled_from(levels)


def _usable_scopes(api: str | None, level: str | None) -> list[str]:
    matrix = load_matrix()
    selected = [matrix.apis[api]] if api else list(matrix.apis.values())
    names: list[str] = []
    for candidate in selected:
        if level is not None and not candidate.accepts(level):
            continue
        for op in candidate.operations:
            if op.scope not in names:
                names.append(op.scope)
    return names


def scope_sets(
    *, api: str | None = None, level: str | None = None, min_size: int = 0, max_size: int | None = None
) -> st.SearchStrategy[frozenset[str]]:
    """Generate frozensets of scopes that `api` (every API by default) requires, usable at `level`.

    Shrinks towards fewer scopes, and towards scopes listed earlier in the matrix.
    """
    _check_api(api)
    if level is not None:
        _check_choice("level", level, LEVELS)
    names = _usable_scopes(api, level)
    if isinstance(min_size, bool) or not isinstance(min_size, int) or min_size < 0:
        raise InvalidArgument(f"min_size={min_size!r} must be a whole number of at least 0")
    if max_size is not None and (isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < min_size):
        raise InvalidArgument(f"max_size={max_size!r} must be a whole number of at least min_size={min_size}")
    if min_size > len(names):
        where = f"the {api} API" if api else "the matrix"
        raise InvalidArgument(f"min_size={min_size} is more than the {len(names)} scopes of {where} at level={level!r}")
    return st.frozensets(st.sampled_from(names), min_size=min_size, max_size=max_size) if names else st.just(frozenset())


_IDENTIFIER = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=12)


def apps(
    *, level: str | None = None, environments: Iterable[str] | None = None, scopes: Iterable[str] | None = None,
    redirect_uri: str = "http://127.0.0.1:8400/callback",
) -> st.SearchStrategy[AppSpec]:
    """Generate apps to register: a client id, a secret, grants of one level, scopes and environments.

    `level` fixes the level ("machine": client credentials; "user":
    authorization code and refresh token, with `redirect_uri` and
    auto-consent). `scopes` fixes the registered scopes; otherwise a
    non-empty set usable at the level is drawn. Shrinks towards a machine
    app with one scope, registered in both environments.
    """
    if level is not None:
        _check_choice("level", level, LEVELS)
    fixed_envs = None
    if environments is not None:
        fixed_envs = tuple(environments)
        if not fixed_envs:
            raise InvalidArgument("environments=[] would register the app nowhere")
        for name in fixed_envs:
            _check_choice("environments", name, ENVIRONMENTS)
    fixed_scopes = None
    if scopes is not None:
        fixed_scopes = frozenset(scopes)
        unknown = sorted(fixed_scopes - set(load_matrix().scopes))
        if unknown:
            raise InvalidArgument(f"scopes has {unknown}, which contracts/matrix.yaml does not define")

    @st.composite
    def build(draw: st.DrawFn) -> AppSpec:
        chosen = level or draw(st.sampled_from(LEVELS))
        client_id = "app-" + draw(_IDENTIFIER)
        registered = fixed_scopes if fixed_scopes is not None else draw(scope_sets(level=chosen, min_size=1))
        envs = fixed_envs or draw(st.sampled_from([ENVIRONMENTS, ("production",), ("development",)]))
        user = chosen == "user"
        return AppSpec(
            client_id=client_id,
            secret=draw(st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=16, max_size=40)),
            grants=("authorization_code", "refresh_token") if user else ("client_credentials",),
            scopes=registered,
            environments=envs,
            redirect_uris=(redirect_uri,) if user else (),
            auto_consent=user,
        )

    return build()


def users(*, roles: Iterable[str] | None = None, networks: Iterable[str] = ("*",)) -> st.SearchStrategy[UserSpec]:
    """Generate users to register: an id, a password and one or more roles of the catalogue.

    `roles` limits the roles drawn from. Shrinks towards one administrator.
    """
    pool = list(ROLES if roles is None else roles)
    if not pool:
        raise InvalidArgument("roles=[] leaves no role to give a user")
    for role in pool:
        if not isinstance(role, str) or not role:
            raise InvalidArgument(f"roles has {role!r}; each role must be a non-empty string")
    fixed_networks = tuple(networks)
    return st.builds(
        UserSpec,
        user_id=_IDENTIFIER.map(lambda text: "user-" + text),
        password=st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=8, max_size=24),
        roles=st.lists(st.sampled_from(pool), min_size=1, max_size=len(pool), unique=True).map(tuple),
        networks=st.just(fixed_networks),
    )


@functools.cache
def _unknown_key() -> SigningKey:
    # Generating an RSA key takes tens of milliseconds; one per process is enough.
    from mockflock.oauth.keys import generate_key

    return generate_key("unknown-" + "0" * 8)


def access_tokens(
    control: Control,
    *,
    validity: str | Iterable[str] | None = None,
    environment: str | None = None,
    level: str | None = None,
    api: str | None = None,
    scopes: Iterable[str] | None = None,
    client_id: str | None = None,
    subject: str | None = None,
) -> st.SearchStrategy[AccessToken]:
    """Generate access tokens signed by the mock behind `control`, valid or invalid in one way.

    `validity` is "valid", one of `INVALIDITIES` (expired, not_yet_valid,
    wrong_audience, wrong_environment, tampered, revoked, wrong_level,
    unknown_key) or a collection of them. By default it is every one of
    them, with wrong_level only when `api` rejects some level.
    The token's level is one that `api` accepts (or `level`), except for
    wrong_level, which takes one the API rejects. Scopes default to every
    scope of `api` (or of the level). `client_id` defaults to demo-machine
    for machine tokens and demo-user-app for user tokens, and `subject`
    (the user of a user token) to demo-admin.

    Shrinks towards the first validity named, the production environment,
    and the smallest time offsets (1 s past expiry, 1 s before nbf).
    Revoked tokens stay revoked across resets of the mock.
    """
    matrix = load_matrix()
    _check_api(api)
    kinds = _validities(validity)
    if validity is None and (api is None or len(matrix.apis[api].accepted_levels()) == len(LEVELS)):
        kinds.remove("wrong_level")  # No level is wrong for such an API; only asking for it explicitly is an error.
    if environment is not None:
        _check_choice("environment", environment, control.environments)
    if level is not None:
        _check_choice("level", level, LEVELS)
    if "wrong_level" in kinds:
        if api is None:
            raise InvalidArgument("validity wrong_level needs api=, the API whose level the token must miss")
        if len(matrix.apis[api].accepted_levels()) == len(LEVELS):
            raise InvalidArgument(f"api={api!r} accepts every token level, so no token has the wrong level for it")
    if api is not None and level is not None and not matrix.apis[api].accepts(level) and kinds != ["wrong_level"]:
        raise InvalidArgument(f"api={api!r} does not accept level={level!r} tokens; choose another level or api")
    fixed_scopes = None if scopes is None else frozenset(scopes)
    if fixed_scopes is not None and fixed_scopes - set(matrix.scopes):
        raise InvalidArgument(f"scopes has {sorted(fixed_scopes - set(matrix.scopes))}, which the matrix does not define")
    if "wrong_environment" in kinds and len(control.environments) < 2:
        raise InvalidArgument("validity wrong_environment needs a mock that serves both environments")

    @st.composite
    def build(draw: st.DrawFn) -> AccessToken:
        kind = draw(st.sampled_from(kinds))
        env = environment or draw(st.sampled_from(control.environments))
        token_level = _token_level(draw, kind, level, api)
        token_scopes = fixed_scopes if fixed_scopes is not None else frozenset(_usable_scopes(api, token_level))
        client = client_id or ("demo-user-app" if token_level == "user" else "demo-machine")
        user = subject or "demo-admin"
        return _make_token(draw, control, kind, env, token_level, token_scopes, client, user)

    return build()


def _validities(validity: str | Iterable[str] | None) -> list[str]:
    everything = ["valid", *INVALIDITIES]
    if validity is None:
        return everything
    kinds = [validity] if isinstance(validity, str) else list(validity)
    if not kinds:
        raise InvalidArgument("validity=[] leaves nothing to generate")
    for kind in kinds:
        _check_choice("validity", kind, everything)
    return kinds


def _token_level(draw: st.DrawFn, kind: str, level: str | None, api: str | None) -> str:
    if kind == "wrong_level":
        assert api is not None
        rejected = [lvl for lvl in LEVELS if not load_matrix().apis[api].accepts(lvl)]
        return draw(st.sampled_from(rejected))
    if level is not None:
        return level
    return draw(token_levels(api=api))


def _make_token(draw: st.DrawFn, control: Control, kind: str, env: str, level: str,
                scopes: frozenset[str], client_id: str, subject: str) -> AccessToken:
    now = int(control.now())
    mint = functools.partial(
        control.mint_token, client_id=client_id, level=level, scopes=scopes,
        subject=subject if level == "user" else None,
    )
    detail = ""
    if kind == "expired":
        offset = draw(st.integers(1, MAX_OFFSET_SECONDS))
        token, claims = mint(env, claims={"iat": now - offset - 60, "nbf": now - offset - 60, "exp": now - offset})
        detail = f"expired {offset} s ago"
    elif kind == "not_yet_valid":
        offset = draw(st.integers(1, MAX_OFFSET_SECONDS))
        token, claims = mint(env, claims={"iat": now + offset, "nbf": now + offset, "exp": now + offset + 3600})
        detail = f"valid from {offset} s on"
    elif kind == "wrong_audience":
        audience = draw(st.sampled_from(["com.flocksafety.integrations.staging", "https://api.flocksafety.com", "flock"]))
        token, claims = mint(env, claims={"aud": audience})
        detail = f"aud={audience}"
    elif kind == "wrong_environment":
        other = next(name for name in control.environments if name != env)
        token, claims = mint(other)
        detail = f"issued by {other}"
    elif kind == "tampered":
        claim = draw(st.sampled_from(TAMPERED_CLAIMS))
        token, claims = _tamper(*mint(env), claim)
        detail = f"{claim} changed after signing"
    elif kind == "revoked":
        token, claims = mint(env, revoked=True)
    elif kind == "unknown_key":
        token, claims = mint(env, signing_key=_unknown_key())
    else:
        token, claims = mint(env)
    return AccessToken(token=token, claims=claims, environment=env, level=level, validity=kind, detail=detail)


def _tamper(token: str, claims: dict[str, Any], claim: str) -> tuple[str, dict[str, Any]]:
    """Change one claim of a signed token and keep the old signature."""
    changed = dict(claims)
    if claim == "scope":
        changed["scope"] = " ".join(sorted(load_matrix().scopes))
    elif claim == "exp":
        changed["exp"] = claims["exp"] + 86400
    elif claim == "sub":
        changed["sub"] = claims["sub"] + "-other"
    else:
        changed["token_level"] = "user" if claims["token_level"] == "machine" else "machine"
    header, _, signature = token.split(".")
    payload = base64.urlsafe_b64encode(json.dumps(changed, separators=(",", ":")).encode()).rstrip(b"=").decode()
    return f"{header}.{payload}.{signature}", changed
