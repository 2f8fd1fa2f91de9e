"""Users, roles and device networks for user-level OAuth.

The configuration's `users`, `roles` and `networks` sections become a
`Directory`. Each environment keeps a `UserRegistry` made from it, which
tests and the admin API may change while the server runs. Every resource
request reads the user from the registry, so a change of roles or networks
applies to the user's next request, even with a token issued before.
"""

from __future__ import annotations

import functools
import hmac
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import yaml
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from mockflock.admin import admin_route, environment_of
from mockflock.contracts import contracts_dir, load_matrix
from mockflock.errors import ConfigError, ContractError, ProtocolError
from mockflock.jsonbody import parse_json

logger = logging.getLogger(__name__)

ALL = "*"


@functools.cache
def load_user_oauth_contract() -> dict[str, Any]:
    """Return contracts/user-oauth.yaml: the modeled values of user-level OAuth."""
    path = contracts_dir() / "user-oauth.yaml"
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ContractError(f"Cannot read {path}: {exc}") from exc
    if not isinstance(raw, dict):
        raise ContractError(f"{path} must be a YAML mapping")
    return raw


@dataclass(frozen=True)
class Network:
    """A device network: the devices whose reads a user may be allowed to see."""

    id: str
    name: str
    organization: str


@dataclass(frozen=True)
class Role:
    """A named set of permitted actions, resolved to matrix operation ids.

    `operations` is None for a role that permits every operation.
    """

    name: str
    description: str
    actions: tuple[str, ...]
    operations: frozenset[str] | None

    def permits(self, operation_id: str) -> bool:
        return self.operations is None or operation_id in self.operations


@dataclass(frozen=True)
class User:
    """A Flock user who can sign in on the login page and authorize apps."""

    id: str
    name: str
    password: str
    organization: str
    roles: tuple[str, ...]
    networks: frozenset[str]
    all_networks: bool = False
    # Overrides quotas.user_requests_per_window for this user when set.
    requests_per_window: int | None = None

    def __repr__(self) -> str:
        return f"User(id={self.id!r}, organization={self.organization!r}, roles={self.roles!r})"

    def describe(self) -> dict[str, Any]:
        """Return the user as the admin API shows it, without the password."""
        return {
            "id": self.id,
            "name": self.name,
            "organization": self.organization,
            "roles": list(self.roles),
            "networks": [ALL] if self.all_networks else sorted(self.networks),
            "requests_per_window": self.requests_per_window,
        }


@dataclass(frozen=True)
class Directory:
    """The configured networks, roles and users."""

    networks: dict[str, Network]
    roles: dict[str, Role]
    users: dict[str, User]


def default_directory() -> Directory:
    """Return the contract's role catalogue with no users and no networks."""
    return Directory(networks={}, roles=_catalogue_roles(), users={})


def parse_directory(raw: dict[str, Any], organizations: dict[str, str], source: str) -> Directory:
    """Check the `networks`, `roles` and `users` sections of a configuration."""
    networks = {
        str(network_id): _parse_network(str(network_id), body or {}, organizations, source)
        for network_id, body in _section(raw, "networks", source).items()
    }
    roles = _catalogue_roles()
    for name, body in _section(raw, "roles", source).items():
        roles[str(name)] = _parse_role(str(name), body or {}, f"roles.{name} in {source}")
    users = {
        str(user_id): _parse_user(str(user_id), body or {}, organizations, networks, roles, source)
        for user_id, body in _section(raw, "users", source).items()
    }
    return Directory(networks=networks, roles=roles, users=users)


def _section(raw: dict[str, Any], key: str, source: str) -> dict[str, Any]:
    value = raw.get(key) or {}
    if not isinstance(value, dict):
        raise ConfigError(
            f"{key} in {source} must be a mapping keyed by id, not {type(value).__name__}"
        )
    return value


def _catalogue_roles() -> dict[str, Role]:
    catalogue = load_user_oauth_contract()["roles"]["catalogue"]["value"]
    return {
        name: _parse_role(name, body, f"roles.catalogue.{name} in contracts/user-oauth.yaml")
        for name, body in catalogue.items()
    }


def _parse_network(
    network_id: str, body: dict[str, Any], organizations: dict[str, str], source: str
) -> Network:
    where = f"networks.{network_id} in {source}"
    organization = str(body.get("organization", ""))
    if organization not in organizations:
        raise ConfigError(
            f"{where} has organization={organization!r}; define it under organizations: {sorted(organizations)}"
        )
    return Network(id=network_id, name=str(body.get("name", network_id)), organization=organization)


def _parse_role(name: str, body: dict[str, Any], where: str) -> Role:
    actions = body.get("actions")
    if not isinstance(actions, list) or not actions:
        raise ConfigError(
            f"{where} needs a non-empty list 'actions' of scopes, operation ids or \"*\""
        )
    return Role(
        name=name,
        description=str(body.get("description", "")),
        actions=tuple(str(action) for action in actions),
        operations=resolve_actions([str(action) for action in actions], where),
    )


def resolve_actions(actions: list[str], where: str) -> frozenset[str] | None:
    """Return the operation ids that `actions` permit, or None for every operation."""
    matrix = load_matrix()
    operation_ids = {op.id for op in matrix.operations}
    permitted: set[str] = set()
    for action in actions:
        if action == ALL:
            return None
        if action in matrix.scopes:
            permitted |= {op.id for op in matrix.operations if op.scope == action}
        elif action in operation_ids:
            permitted.add(action)
        else:
            raise ConfigError(
                f"{where} lists action {action!r}, which is neither a scope nor an operation id of "
                f"contracts/matrix.yaml. Use a scope such as custom-hotlists:read, an operation id "
                f'such as searchReads, or "*" for every operation.'
            )
    return frozenset(permitted)


def _parse_user(
    user_id: str,
    body: dict[str, Any],
    organizations: dict[str, str],
    networks: dict[str, Network],
    roles: dict[str, Role],
    source: str,
) -> User:
    where = f"users.{user_id} in {source}"
    password = body.get("password")
    if not isinstance(password, str) or not password:
        raise ConfigError(f"{where} needs a non-empty string 'password' for the login page")
    organization = str(body.get("organization", ""))
    if organization not in organizations:
        raise ConfigError(
            f"{where} has organization={organization!r}; define it under organizations: {sorted(organizations)}"
        )

    user_roles = tuple(str(role) for role in body.get("roles") or [])
    check_roles(user_roles, roles, where)
    network_ids = [str(network) for network in body.get("networks") or []]
    all_networks = ALL in network_ids
    if not all_networks:
        check_networks(network_ids, organization, networks, where)

    quota = body.get("requests_per_window")
    if quota is not None and (not isinstance(quota, int) or isinstance(quota, bool) or quota <= 0):
        raise ConfigError(
            f"{where} has requests_per_window={quota!r}; expected a positive whole number"
        )
    return User(
        id=user_id,
        name=str(body.get("name", user_id)),
        password=password,
        organization=organization,
        roles=user_roles,
        networks=frozenset() if all_networks else frozenset(network_ids),
        all_networks=all_networks,
        requests_per_window=quota,
    )


def check_roles(names: tuple[str, ...] | list[str], roles: dict[str, Role], where: str) -> None:
    unknown = sorted(set(names) - set(roles))
    if unknown:
        raise ConfigError(f"{where} has unknown roles {unknown}; defined roles are {sorted(roles)}")


def check_networks(
    network_ids: list[str], organization: str, networks: dict[str, Network], where: str
) -> None:
    for network_id in network_ids:
        network = networks.get(network_id)
        if network is None:
            raise ConfigError(
                f"{where} lists network {network_id!r}, which the networks section does not define; "
                f'defined networks are {sorted(networks)}, or use "*" for every network'
            )
        if network.organization != organization:
            raise ConfigError(
                f"{where} lists network {network_id!r} of organization {network.organization!r}, "
                f"but the user belongs to {organization!r}"
            )


class UserRegistry:
    """The users of one environment, changeable while the server runs."""

    def __init__(self, directory: Directory) -> None:
        self.roles = directory.roles
        self.networks = directory.networks
        self._initial = dict(directory.users)
        self._users = dict(self._initial)
        self._lock = threading.Lock()

    def get(self, user_id: str) -> User | None:
        return self._users.get(user_id)

    def all(self, organization: str | None = None) -> list[User]:
        users = list(self._users.values())
        return [user for user in users if organization is None or user.organization == organization]

    def authenticate(self, user_id: str, password: str) -> User | None:
        """Return the user when the password is theirs, otherwise None."""
        user = self._users.get(user_id)
        if user is None or not hmac.compare_digest(user.password.encode(), password.encode()):
            return None
        return user

    def set_roles(self, user_id: str, roles: list[str]) -> User:
        """Replace a user's roles; the next request of any of their tokens uses them."""
        check_roles(roles, self.roles, f"roles of user {user_id!r}")
        return self._change(user_id, roles=tuple(roles))

    def set_networks(self, user_id: str, network_ids: list[str]) -> User:
        """Replace a user's device networks; ["*"] grants every network of their organization."""
        user = self._require(user_id)
        if ALL in network_ids:
            return self._change(user_id, networks=frozenset(), all_networks=True)
        check_networks(
            network_ids, user.organization, self.networks, f"networks of user {user_id!r}"
        )
        return self._change(user_id, networks=frozenset(network_ids), all_networks=False)

    def add(self, user: User) -> None:
        check_roles(user.roles, self.roles, f"user {user.id!r}")
        with self._lock:
            self._users[user.id] = user

    def remove(self, user_id: str) -> None:
        """Delete a user: their tokens stop working and their refresh tokens are rejected."""
        with self._lock:
            self._users.pop(user_id, None)

    def reset(self) -> None:
        with self._lock:
            self._users = dict(self._initial)

    def roles_permitting(self, operation_id: str) -> list[str]:
        return sorted(name for name, role in self.roles.items() if role.permits(operation_id))

    def _require(self, user_id: str) -> User:
        user = self._users.get(user_id)
        if user is None:
            raise ConfigError(
                f"No user has id {user_id!r}; configured users are {sorted(self._users)}"
            )
        return user

    def _change(self, user_id: str, **changes: Any) -> User:
        with self._lock:
            user = replace(self._require(user_id), **changes)
            self._users[user_id] = user
        logger.info("Changed user %s: %s", user_id, ", ".join(sorted(changes)))
        return user


@admin_route("/users", ["GET"])
async def list_users(request: Request) -> Response:
    """List the environment's users with their roles and networks; passwords are left out."""
    registry = environment_of(request).users
    return JSONResponse({"users": [user.describe() for user in registry.all()]})


@admin_route("/users/{user_id}/roles", ["PUT"])
async def put_roles(request: Request) -> Response:
    """Replace a user's roles with the JSON body {"roles": [...]}."""
    registry = environment_of(request).users
    user_id = _existing_user(registry, request)
    roles = await _string_list(request, "roles")
    return JSONResponse(_admin_change(lambda: registry.set_roles(user_id, roles)))


@admin_route("/users/{user_id}/networks", ["PUT"])
async def put_networks(request: Request) -> Response:
    """Replace a user's networks with the JSON body {"networks": [...]}."""
    registry = environment_of(request).users
    user_id = _existing_user(registry, request)
    networks = await _string_list(request, "networks")
    return JSONResponse(_admin_change(lambda: registry.set_networks(user_id, networks)))


def _existing_user(registry: UserRegistry, request: Request) -> str:
    user_id = request.path_params["user_id"]
    if registry.get(user_id) is None:
        known = ", ".join(user.id for user in registry.all()) or "(none)"
        raise ProtocolError(
            f"No user has id {user_id[:80]!r}; the users are: {known}.",
            status=404,
            error="not_found",
        )
    return user_id


async def _string_list(request: Request, key: str) -> list[str]:
    body = await request.body()
    try:
        value = parse_json(body).get(key)
    except (ValueError, AttributeError):
        value = None
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ProtocolError(
            f'Send a JSON object {{"{key}": [...]}} whose {key} is a list of strings.'
        )
    return value


def _admin_change(change: Callable[[], User]) -> dict[str, Any]:
    try:
        user = change()
    except ConfigError as exc:
        raise ProtocolError(f"{exc}.") from None
    return user.describe()
