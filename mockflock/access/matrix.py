"""Token level and scope checks, decided by contracts/matrix.yaml."""

from __future__ import annotations

from mockflock.access.bearer import Principal, challenge
from mockflock.config import load_oauth_contract
from mockflock.contracts import Api, Operation
from mockflock.errors import BearerError

WRONG_LEVEL = load_oauth_contract()["resource_apis"]["wrong_token_level"]
HOW_TO_GET = {
    "machine": "a machine-level token from the client credentials grant",
    "user": "a user-level token from the authorization code flow",
}


def check_level(principal: Principal, api: Api) -> None:
    """Reject a token whose level the API does not accept (modeled as 403)."""
    availability = api.levels.get(principal.level, "not-available")
    if availability == "supported":
        return
    accepted = api.accepted_levels()
    when = "is planned but not available yet" if availability == "planned" else "is not available"
    fix = " or ".join(HOW_TO_GET[level] for level in accepted) or "no token: the API accepts none yet"
    description = (
        f"The {api.name} does not accept {principal.level}-level tokens: {principal.level}-level access "
        f"{when}. It accepts {', '.join(accepted) or 'no'}-level tokens; use {fix}."
    )
    raise BearerError(
        description,
        status=WRONG_LEVEL["status"],
        error=WRONG_LEVEL["error"],
        extra={
            "api": api.name,
            "token_level": principal.level,
            "required_token_levels": accepted,
            "token_level_availability": availability,
        },
        reason="wrong_level",
    )


def check_scope(principal: Principal, operation: Operation, client_name: str | None = None) -> None:
    """Reject a token without the operation's scope: 403 insufficient_scope (RFC 6750 3.1)."""
    if operation.scope in principal.scopes:
        return
    held = " ".join(sorted(principal.scopes)) or "(none)"
    description = (
        f"The token lacks scope {operation.scope}, which {operation.method} /api/v3{operation.path} requires. "
        f"The token has: {held}. Request scope={operation.scope} in the token request, or have it "
        f"registered for client_id={principal.client_id}."
    )
    raise BearerError(
        description,
        status=403,
        error="insufficient_scope",
        headers=challenge("insufficient_scope", description, operation.scope),
        extra={"scope": operation.scope},
        reason="insufficient_scope",
    )
