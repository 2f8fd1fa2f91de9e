"""The refresh token grant, with rotation and reuse detection (RFC 6749 6, RFC 9700 4.14.2).

Each refresh returns a new refresh token and retires the one presented.
Presenting a retired token again is reuse: `invalid_grant`, and the whole
token family is revoked. The configuration's `refresh.concurrency` decides
what a repeat that arrives while the first refresh has just happened
means. Under `strict` it is reuse like any other. Under `grace` a repeat
within `refresh.grace_seconds` gets the same successor refresh token and a
new access token, as long as the successor is unused.

`scope` may narrow the new access token to part of the original grant,
never widen it. The new refresh token keeps the whole original grant, as
RFC 6749 6 treats an omitted scope as the original one.
"""

from __future__ import annotations

import logging

from mockflock.environments import Environment
from mockflock.errors import InvalidGrant, InvalidRequest, InvalidScope
from mockflock.oauth.client_credentials import check_audience
from mockflock.oauth.clients import ClientAuthentication
from mockflock.oauth.endpoints import GRANTS
from mockflock.oauth.grants import ACTIVE, ROTATED, RefreshToken, TokenFamily, issue_user_tokens
from mockflock.oauth.tokens import format_time

logger = logging.getLogger(__name__)

GRANT_TYPE = "refresh_token"


def exchange(
    env: Environment,
    params: dict[str, str],
    auth: ClientAuthentication,
    others: dict[str, Environment],
) -> dict[str, object]:
    """Rotate a refresh token: return a new access token and a new refresh token."""
    token = params.get("refresh_token")
    if not token:
        raise InvalidRequest(
            "refresh_token is missing; send the refresh_token of the last token response."
        )
    if "audience" in params:
        check_audience(env, params, others)

    with env.grants.lock:
        record = env.grants.refresh_tokens.get(token)
        if record is None:
            raise _unknown_token(env, token, others)
        if record.client_id != auth.app.client_id:
            raise InvalidGrant(
                f"The refresh token was issued to another app, not to client_id={auth.app.client_id!r}.",
                reason="refresh_other_client",
            )
        family = env.grants.families[record.family_id]
        if family.revoked_at is not None:
            raise InvalidGrant(
                f"The refresh token was revoked at {format_time(family.revoked_at)} because "
                f"{family.revoked_reason}. Send the user through /authorize again.",
                reason="refresh_revoked",
            )
        if record.status == ROTATED:
            return _repeat(env, record, family, params.get("scope"))

        now = env.clock.now()
        if family.expires_at is not None and family.expires_at <= now:
            raise InvalidGrant(
                f"The refresh token's family ended at {format_time(family.expires_at)} "
                f"(refresh.family_lifetime). Send the user through /authorize again.",
                reason="family_expired",
            )
        if record.expires_at <= now:
            raise InvalidGrant(
                f"The refresh token expired at {format_time(record.expires_at)}: refresh tokens are valid for "
                f"{env.config.lifetimes.user_refresh} s. Send the user through /authorize again.",
                reason="refresh_expired",
            )
        scopes = narrowed_scopes(params.get("scope"), family)
        user = env.users.get(family.user_id)
        if user is None:
            env.grants.revoke_family(
                env, family.id, f"the user {family.user_id!r} no longer exists"
            )
            raise InvalidGrant(
                f"The user {family.user_id!r} of this refresh token no longer exists.",
                reason="unknown_user",
            )

        response = issue_user_tokens(env, family, user, scopes)
        record.status = ROTATED
        record.rotated_at = now
        record.successor = str(response["refresh_token"])
        logger.debug("Rotated a refresh token of grant %s in %s", family.id, env.name)
        return response


def narrowed_scopes(requested: str | None, family: TokenFamily) -> frozenset[str]:
    """Return the access token's scopes: the request's if within the original grant, else raise."""
    names = frozenset((requested or "").split())
    if not names:
        return family.scopes
    wider = names - family.scopes
    if wider:
        raise InvalidScope(
            f"scope {' '.join(sorted(wider))!r} was not granted by the user. A refresh may ask for part of the "
            f"original grant, {' '.join(sorted(family.scopes))!r}, never for more.",
            reason="scope_widened",
        )
    return names


def _repeat(
    env: Environment, record: RefreshToken, family: TokenFamily, scope: str | None
) -> dict[str, object]:
    """Respond to a rotated refresh token: a grace repeat, or reuse that revokes the family."""
    settings = env.config.refresh
    successor = env.grants.refresh_tokens.get(record.successor or "")
    within_grace = (
        settings.concurrency == "grace"
        and record.rotated_at is not None
        and env.clock.now() - record.rotated_at <= settings.grace_seconds
        and successor is not None
        and successor.status == ACTIVE
    )
    user = env.users.get(family.user_id)
    if within_grace and user is not None:
        logger.debug(
            "Repeated refresh within the grace period of grant %s in %s", family.id, env.name
        )
        return issue_user_tokens(
            env, family, user, narrowed_scopes(scope, family), refresh_token=record.successor
        )

    env.grants.revoke_family(env, family.id, "a rotated refresh token was used again")
    logger.warning(
        "Refresh token reuse for grant %s of user %s in %s", family.id, family.user_id, env.name
    )
    grace_note = ""
    if settings.concurrency == "grace":
        grace_note = (
            f" A repeat is accepted only within {settings.grace_seconds:g} s of the rotation and while the newer "
            f"token is unused."
        )
    raise InvalidGrant(
        f"The refresh token was already used at {format_time(record.rotated_at or 0)} and replaced by a newer "
        f"one.{grace_note} Reuse of a rotated refresh token revokes every token of its grant, so this grant's "
        f"tokens are now revoked. Keep only the newest refresh token, and send the user through /authorize again.",
        reason="refresh_reused",
    )


def _unknown_token(env: Environment, token: str, others: dict[str, Environment]) -> InvalidGrant:
    for other in others.values():
        if token in other.grants.refresh_tokens:
            return InvalidGrant(
                f"The refresh token was issued by the {other.name} environment; refresh it at {other.token_url}.",
                reason="refresh_other_environment",
            )
    return InvalidGrant(
        "The refresh token is not valid: it was never issued here, or the mock was reset.",
        reason="refresh_unknown",
    )


GRANTS[GRANT_TYPE] = exchange
