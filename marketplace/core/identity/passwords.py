"""Password and secret hashing: argon2id for people's passwords, SHA-256 for random client secrets."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()
# Verified against when the e-mail is unknown, so a wrong address costs as long as a wrong password.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


def hash_password(password: str) -> str:
    """An argon2id hash of ``password``."""
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """Whether ``password`` matches; spends the same work when there is no hash to check."""
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def new_token(prefix: str, nbytes: int = 32) -> str:
    """A random URL-safe token with a readable prefix."""
    return prefix + secrets.token_urlsafe(nbytes)


def digest(token: str) -> str:
    """SHA-256 hex digest of a high-entropy token (session tokens, client secrets)."""
    return hashlib.sha256(token.encode()).hexdigest()


def digest_matches(token: str, expected_digest: str) -> bool:
    """Constant-time comparison of a token against a stored digest."""
    return hmac.compare_digest(digest(token), expected_digest)
