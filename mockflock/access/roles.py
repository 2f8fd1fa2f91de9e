"""Role and device-network checks for user tokens (modeled: Flock publishes no roles).

A user token may call an operation only when one of the user's current
roles permits it. The user is read from the environment's registry on
every request, so a change of roles or networks applies to the next
request. The check also sets `request.state.allowed_networks`, the ids of
the device networks whose data the request may see: the user's networks
for a user token, every network of the organization for a machine token.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from mockflock.access.bearer import challenge
from mockflock.errors import BearerError, ProtocolError
from mockflock.users import User, load_user_oauth_contract

if TYPE_CHECKING:
    from starlette.requests import Request

    from mockflock.access.bearer import Principal
    from mockflock.contracts import Api, Operation
    from mockflock.environments import Environment

logger = logging.getLogger(__name__)


def check_roles(request: Request, principal: Principal, api: Api, operation: Operation) -> None:
    """Reject a user whose roles do not permit the operation; set the request's allowed networks."""
    env: Environment = request.app.state.environment
    if principal.level != "user":
        request.state.allowed_networks = organization_networks(request, principal.organization)
        return

    user = env.users.get(principal.subject)
    if user is None:
        description = (
            f"The user {principal.subject!r} of this token no longer exists in the {env.name} environment. "
            f"Sign in again as an existing user."
        )
        raise BearerError(
            description, headers=challenge("invalid_token", description), reason="unknown_user"
        )
    permitting = [
        name
        for name in user.roles
        if name in env.users.roles and env.users.roles[name].permits(operation.id)
    ]
    if not permitting:
        raise _not_permitted(env, user, operation)

    request.state.user = user
    request.state.permitting_roles = permitting
    request.state.allowed_networks = user_networks(request, user)


def user_networks(request: Request, user: User) -> set[str]:
    """Return the network ids a user may see now."""
    if user.all_networks:
        return organization_networks(request, user.organization)
    return set(user.networks)


def organization_networks(request: Request, organization: str) -> set[str]:
    """Return every network id of an organization: the seeded ones and the configured ones."""
    env: Environment = request.app.state.environment
    data = request.app.state.store.org(env.name, organization)
    configured = {
        network.id
        for network in env.users.networks.values()
        if network.organization == organization
    }
    return set(data.collection("networks")) | configured


def _not_permitted(env: Environment, user: User, operation: Operation) -> ProtocolError:
    rejection = load_user_oauth_contract()["roles"]["rejection"]
    permitting = env.users.roles_permitting(operation.id)
    role_list = ", ".join(user.roles) or "no roles"
    return ProtocolError(
        f"User {user.id!r} has {role_list}, and none permits {operation.method} /api/v3{operation.path} "
        f"({operation.id}). Roles that permit it: {', '.join(permitting) or 'none'}. Ask an administrator "
        f"to grant one of them, or sign in as a user who has one.",
        status=rejection["status"],
        error=rejection["error"],
        extra={
            "user": user.id,
            "roles": list(user.roles),
            "operation": operation.id,
            "permitting_roles": permitting,
        },
        reason="role_not_permitted",
    )
