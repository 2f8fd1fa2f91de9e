"""Minting and verifying an environment's RS256 access tokens."""

from __future__ import annotations

import binascii
import logging
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import jwt
from jwt.utils import base64url_decode, base64url_encode

from mockflock.clock import Clock
from mockflock.errors import BearerError
from mockflock.oauth.keys import KeySet
from mockflock.oauth.signing import SigningPool

logger = logging.getLogger(__name__)

ALGORITHM = "RS256"
# Claims every mockflock token carries, in the order the README documents.
REQUIRED_CLAIMS = ("iss", "sub", "aud", "azp", "client_id", "iat", "nbf", "exp", "jti", "scope", "token_level", "org_id")
VERIFIED_CACHE_SIZE = 10_000


@dataclass(frozen=True)
class IssuedToken:
    token: str
    claims: dict[str, Any]

    @property
    def expires_in(self) -> int:
        return int(self.claims["exp"] - self.claims["iat"])


@dataclass(frozen=True)
class VerifiedToken:
    """A token whose signature, audience and issuer checked out."""

    claims: dict[str, Any]
    kid: str


def format_time(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _is_canonical(token: str) -> bool:
    """Check that every part is unpadded base64url that re-encodes to itself.

    Base64 ignores the spare low bits of a final character, so without this
    check two different strings could decode to the same signature.
    """
    parts = token.split(".")
    if len(parts) != 3:
        return False
    for part in parts:
        try:
            if base64url_encode(base64url_decode(part)).decode("ascii") != part:
                return False
        except (ValueError, binascii.Error):
            return False
    return True


class TokenService:
    """Signs tokens for one environment and verifies the ones it signed.

    Verified tokens are cached by their exact bytes, so a token that comes
    back is checked only for time and revocation, not signature again.
    """

    def __init__(self, *, environment: str, issuer: str, audience: str, keys: KeySet, clock: Clock) -> None:
        self.environment = environment
        self.issuer = issuer
        self.audience = audience
        self.keys = keys
        self.clock = clock
        self._verified: dict[str, VerifiedToken] = {}
        # Set by the server when tokens are signed in worker processes.
        self.pool: SigningPool | None = None

    def mint(
        self,
        *,
        subject: str,
        client_id: str,
        organization: str,
        level: str,
        scopes: frozenset[str] | set[str],
        lifetime: int,
        extra: dict[str, Any] | None = None,
    ) -> IssuedToken:
        """Sign a token in this thread; `mint_async` may use the signing pool."""
        claims = self._claims(subject, client_id, organization, level, scopes, lifetime, extra)
        key = self.keys.active
        token = jwt.encode(claims, key.private_key, algorithm=ALGORITHM, headers={"kid": key.kid})
        return IssuedToken(token=token, claims=claims)

    async def mint_async(
        self,
        *,
        subject: str,
        client_id: str,
        organization: str,
        level: str,
        scopes: frozenset[str] | set[str],
        lifetime: int,
        extra: dict[str, Any] | None = None,
    ) -> IssuedToken:
        """Sign a token, in a worker process when the server has a signing pool."""
        if self.pool is None:
            return self.mint(subject=subject, client_id=client_id, organization=organization, level=level,
                             scopes=scopes, lifetime=lifetime, extra=extra)
        claims = self._claims(subject, client_id, organization, level, scopes, lifetime, extra)
        return IssuedToken(token=await self.pool.sign(claims, self.keys.active), claims=claims)

    def _claims(
        self,
        subject: str,
        client_id: str,
        organization: str,
        level: str,
        scopes: frozenset[str] | set[str],
        lifetime: int,
        extra: dict[str, Any] | None,
    ) -> dict[str, Any]:
        now = int(self.clock.now())
        claims = {
            "iss": self.issuer,
            "sub": subject,
            "aud": self.audience,
            "azp": client_id,
            "client_id": client_id,
            "iat": now,
            "nbf": now,
            "exp": now + lifetime,
            "jti": secrets.token_hex(16),
            "scope": " ".join(sorted(scopes)),
            "token_level": level,
            "org_id": organization,
            **(extra or {}),
        }
        return claims

    def verify(self, token: str) -> VerifiedToken:
        """Return a token this environment signed and that is valid now.

        Raises `BearerError` whose description names the failed check.
        """
        verified = self._verified.get(token)
        if verified is None:
            verified = self._verify_signature(token)
            if len(self._verified) >= VERIFIED_CACHE_SIZE:
                self._verified.clear()
            self._verified[token] = verified
        self._check_times(verified.claims)
        return verified

    def forget_verified(self) -> None:
        """Drop the cache of verified tokens (after a key is dropped or a reset)."""
        self._verified.clear()

    def _verify_signature(self, token: str) -> VerifiedToken:
        if not _is_canonical(token):
            raise BearerError(
                "The token is not in canonical JWS compact form: one of its parts is not exactly the "
                "base64url text the token endpoint produced. Send the access_token unchanged.",
                reason="bad_signature",
            )
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise BearerError(
                "The bearer token is not a JWT. Send the access_token value from the token endpoint's response.",
                reason="malformed",
            ) from None
        if header.get("alg") != ALGORITHM:
            raise BearerError(
                f"The token's alg is {header.get('alg')!r}; this environment signs and accepts only {ALGORITHM}. "
                f"Send the access_token from {self.issuer}/oauth/token unchanged.",
                reason="bad_signature",
            )
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise BearerError(
                f"The token's header has no key id (kid); tokens from {self.issuer}/oauth/token always carry one.",
                reason="unknown_key",
            )
        key = self.keys.get(kid)
        if key is None:
            raise BearerError(
                f"The token was signed with key id {header.get('kid')!r}, which the {self.environment} "
                f"environment does not publish. The key was rotated or the token comes from another "
                f"issuer: fetch a new token from {self.issuer}/oauth/token.",
                reason="unknown_key",
            )
        try:
            claims = jwt.decode(
                token,
                key.public_key,
                algorithms=[ALGORITHM],
                audience=self.audience,
                issuer=self.issuer,
                options={"verify_exp": False, "verify_nbf": False, "verify_iat": False, "require": list(REQUIRED_CLAIMS)},
            )
        except jwt.InvalidSignatureError:
            raise BearerError(
                "The token's signature does not verify: it was changed after it was issued. "
                "Send the access_token exactly as the token endpoint returned it.",
                reason="bad_signature",
            ) from None
        except jwt.InvalidAudienceError:
            raise BearerError(
                f"The token's audience is not {self.audience!r}, the audience of the {self.environment} "
                f"environment. Request the token with audience={self.audience}.",
                reason="wrong_audience",
            ) from None
        except jwt.InvalidIssuerError:
            raise BearerError(
                f"The token's issuer is not {self.issuer!r}. Fetch tokens from {self.issuer}/oauth/token.",
                reason="wrong_issuer",
            ) from None
        except jwt.MissingRequiredClaimError as exc:
            raise BearerError(
                f"The token has no {exc.claim!r} claim; only tokens from {self.issuer}/oauth/token are accepted.",
                reason="malformed",
            ) from None
        except jwt.InvalidTokenError as exc:
            raise BearerError(f"The token is not a valid JWT ({exc}).", reason="malformed") from None
        return VerifiedToken(claims=claims, kid=key.kid)

    def _check_times(self, claims: dict[str, Any]) -> None:
        now = self.clock.now()
        if claims["exp"] <= now:
            raise BearerError(
                f"The token expired at {format_time(claims['exp'])}, {int(now - claims['exp'])} s ago. "
                f"Fetch a new token and retry the request once.",
                reason="expired",
            )
        if claims["nbf"] > now:
            raise BearerError(
                f"The token is not valid before {format_time(claims['nbf'])}, "
                f"{int(claims['nbf'] - now)} s from now. Check the client's clock.",
                reason="not_yet_valid",
            )
