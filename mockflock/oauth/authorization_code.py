"""The authorization code grant: exchange a code from /authorize for user tokens (RFC 6749 4.1.3).

A code is single-use and short-lived (tokens.authorization_code seconds).
A second use is `invalid_grant` and revokes every token issued from the
code (RFC 6749 4.1.2). The exchange checks the client, the redirect_uri
of the authorization request and the PKCE verifier (RFC 7636 4.6). A
failed check leaves the code usable until it expires.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re

from mockflock.environments import Environment
from mockflock.errors import InvalidGrant, InvalidRequest
from mockflock.oauth.client_credentials import check_audience
from mockflock.oauth.clients import ClientAuthentication
from mockflock.oauth.endpoints import GRANTS
from mockflock.oauth.grants import AuthorizationCode, issue_user_tokens
from mockflock.oauth.tokens import format_time
from mockflock.users import load_user_oauth_contract

logger = logging.getLogger(__name__)

GRANT_TYPE = "authorization_code"
VERIFIER = re.compile(load_user_oauth_contract()["pkce"]["verifier_pattern"]["value"])


def exchange(
    env: Environment,
    params: dict[str, str],
    auth: ClientAuthentication,
    others: dict[str, Environment],
) -> dict[str, object]:
    """Issue a user access token and a refresh token for a valid, unused code."""
    code = params.get("code")
    if not code:
        raise InvalidRequest(
            "code is missing; send the code that /authorize returned to the redirect URI."
        )
    if "audience" in params:
        check_audience(env, params, others)

    with env.grants.lock:
        record = env.grants.codes.get(code)
        if record is None:
            raise _unknown_code(env, code, others)
        if record.client_id != auth.app.client_id:
            raise InvalidGrant(
                f"The code was issued to another app, not to client_id={auth.app.client_id!r}. Exchange a code "
                f"with the app that requested it.",
                reason="code_other_client",
            )
        if record.used_at is not None:
            raise _reused(env, record)
        now = env.clock.now()
        if record.expires_at <= now:
            raise InvalidGrant(
                f"The code expired at {format_time(record.expires_at)}: codes are valid for "
                f"{env.config.lifetimes.authorization_code} s. Send the user through /authorize again.",
                reason="code_expired",
            )
        _check_redirect_uri(record, params.get("redirect_uri"))
        _check_verifier(record, params.get("code_verifier"))

        record.used_at = now
        user = env.users.get(record.user_id)
        if user is None:
            raise InvalidGrant(
                f"The user {record.user_id!r} who approved this code no longer exists in the {env.name} environment.",
                reason="unknown_user",
            )
        family = env.grants.start_family(record, env.config.refresh.family_lifetime)
        record.family_id = family.id
        logger.info(
            "Code exchanged by %s for user %s in %s (grant %s)",
            record.client_id,
            user.id,
            env.name,
            family.id,
        )
        return issue_user_tokens(env, family, user, record.scopes)


def _unknown_code(env: Environment, code: str, others: dict[str, Environment]) -> InvalidGrant:
    for other in others.values():
        if code in other.grants.codes:
            return InvalidGrant(
                f"The code was issued by the {other.name} environment; exchange it at {other.token_url}.",
                reason="code_other_environment",
            )
    return InvalidGrant(
        "The code is not valid: it was never issued here, or the mock was reset. "
        "Send the code exactly as the redirect delivered it.",
        reason="code_unknown",
    )


def _reused(env: Environment, record: AuthorizationCode) -> InvalidGrant:
    # RFC 6749 4.1.2: a reused code should revoke what it issued, as the
    # first use may have been an attacker's.
    if record.family_id is not None:
        env.grants.revoke_family(env, record.family_id, "its authorization code was used twice")
    logger.warning(
        "Authorization code of %s used twice in %s; its tokens are revoked",
        record.client_id,
        env.name,
    )
    return InvalidGrant(
        f"The code was already used at {format_time(record.used_at or 0)}. Codes are single-use, so every token "
        f"issued from it is now revoked. Send the user through /authorize again.",
        reason="code_reused",
    )


def _check_redirect_uri(record: AuthorizationCode, redirect_uri: str | None) -> None:
    # RFC 6749 4.1.3: required and identical when the authorization request had one.
    if record.redirect_uri is not None and redirect_uri is None:
        raise InvalidRequest(
            f"redirect_uri is missing; send the same redirect_uri as the authorization request: {record.redirect_uri}.",
            reason="redirect_uri_missing",
        )
    if redirect_uri is not None and redirect_uri != record.effective_redirect_uri:
        raise InvalidGrant(
            f"redirect_uri={redirect_uri[:200]!r} differs from the authorization request's "
            f"{record.effective_redirect_uri!r}; send the identical value.",
            reason="redirect_uri_mismatch",
        )


def _check_verifier(record: AuthorizationCode, verifier: str | None) -> None:
    if record.code_challenge is None:
        if verifier is not None:
            # RFC 9700 2.1.1: a verifier without a challenge is a PKCE downgrade attempt.
            raise InvalidGrant(
                "code_verifier is sent, but the authorization request had no code_challenge. Send "
                "code_challenge with code_challenge_method=S256 to /authorize, or leave the verifier out.",
                reason="pkce_unexpected_verifier",
            )
        return
    if verifier is None:
        raise InvalidRequest(
            "code_verifier is missing; the authorization request had a code_challenge, so send its verifier.",
            reason="pkce_verifier_missing",
        )
    if not VERIFIER.fullmatch(verifier):
        raise InvalidRequest(
            "code_verifier must be 43 to 128 characters of A-Z, a-z, 0-9, '-', '.', '_' and '~' (RFC 7636 4.1).",
            reason="pkce_verifier_malformed",
        )
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    computed = base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
    if not hmac.compare_digest(computed, record.code_challenge):
        raise InvalidGrant(
            "code_verifier does not match the code_challenge: BASE64URL(SHA256(code_verifier)) must equal it. "
            "Send the verifier generated with this authorization request.",
            reason="pkce_mismatch",
        )


GRANTS[GRANT_TYPE] = exchange
