"""RSA signing keys of an environment, their key ids and the JWKS."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import threading
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from mockflock.errors import ConfigError

logger = logging.getLogger(__name__)

KEY_SIZE = 2048


@dataclass(frozen=True)
class SigningKey:
    kid: str
    private_key: rsa.RSAPrivateKey

    @property
    def public_key(self) -> rsa.RSAPublicKey:
        return self.private_key.public_key()

    def public_jwk(self) -> dict[str, Any]:
        jwk = json.loads(RSAAlgorithm.to_jwk(self.public_key))
        return {**jwk, "kid": self.kid, "use": "sig", "alg": "RS256"}

    def private_pem(self) -> str:
        return self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode("ascii")

    def __repr__(self) -> str:
        return f"SigningKey(kid={self.kid!r})"


def generate_key(kid: str | None = None) -> SigningKey:
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_SIZE)
    return SigningKey(kid=kid or thumbprint(private_key.public_key()), private_key=private_key)


def load_key(pem: str, kid: str | None = None) -> SigningKey:
    """Load a PEM RSA private key; raise `ConfigError` naming the problem."""
    try:
        private_key = serialization.load_pem_private_key(pem.encode("ascii"), password=None)
    except (ValueError, TypeError, UnicodeEncodeError) as exc:
        raise ConfigError(f"The signing key is not an unencrypted PEM private key: {exc}") from None
    if not isinstance(private_key, rsa.RSAPrivateKey) or private_key.key_size < KEY_SIZE:
        raise ConfigError(f"The signing key must be an RSA key of at least {KEY_SIZE} bits for RS256")
    return SigningKey(kid=kid or thumbprint(private_key.public_key()), private_key=private_key)


def thumbprint(public_key: rsa.RSAPublicKey) -> str:
    """Return the RFC 7638 JWK thumbprint of an RSA key, the default key id."""
    numbers = public_key.public_numbers()
    members = {"e": _b64_int(numbers.e), "kty": "RSA", "n": _b64_int(numbers.n)}
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(hashlib.sha256(canonical).digest()).rstrip(b"=").decode()


def _b64_int(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class KeySet:
    """The active signing key of an environment plus the keys it retired.

    Retired keys stay in the JWKS and keep verifying the tokens they signed
    until those expire, as a real rotation would, unless they are dropped.
    """

    def __init__(self, active: SigningKey) -> None:
        self._lock = threading.Lock()
        self._initial = active
        self.active = active
        self.retired: list[SigningKey] = []

    def get(self, kid: str) -> SigningKey | None:
        if kid == self.active.kid:
            return self.active
        return next((key for key in self.retired if key.kid == kid), None)

    def rotate(self, new_key: SigningKey | None = None, *, keep_old: bool = True) -> SigningKey:
        """Make a new key active; the old one stays published unless `keep_old` is false."""
        new_key = new_key or generate_key()
        with self._lock:
            old = self.active
            self.retired = [*self.retired, old] if keep_old else []
            self.active = new_key
        logger.info("Rotated signing key %s -> %s (old key kept: %s)", old.kid, new_key.kid, keep_old)
        return new_key

    def reset(self) -> None:
        with self._lock:
            self.active = self._initial
            self.retired = []

    def jwks(self) -> dict[str, Any]:
        return {"keys": [key.public_jwk() for key in [self.active, *self.retired]]}
