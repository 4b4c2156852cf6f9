"""The asymmetric key that signs access tokens: generated on first run, or given in production."""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from joserfc.jwk import ECKey
from pydantic import SecretStr

from marketplace.core.settings import Settings

TOKEN_ALGORITHM = "ES256"  # noqa: S105 - an algorithm name, not a secret


@dataclass(frozen=True)
class SigningKey:
    """The token signing key with its key id (RFC 7638 thumbprint)."""

    key: ECKey
    kid: str

    def private_jwks(self) -> dict[str, Any]:
        """The private key set, for signing."""
        data = self.key.as_dict(private=True)
        data.update(kid=self.kid, alg=TOKEN_ALGORITHM, use="sig")
        return {"keys": [data]}

    def public_jwks(self) -> dict[str, Any]:
        """The public key set published at ``/.well-known/jwks.json``."""
        data = self.key.as_dict(private=False)
        data.update(kid=self.kid, alg=TOKEN_ALGORITHM, use="sig")
        return {"keys": [data]}


def _new_ec_pem() -> bytes:
    return ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def load_signing_key(settings: Settings) -> SigningKey:
    """The configured key, or the one under ``var/keys`` (created on first run)."""
    pem = load_or_create_pem(settings, settings.jwt_private_key, "token-signing-key.pem", _new_ec_pem)
    key = ECKey.import_key(pem)
    if key.as_dict().get("crv") != "P-256":
        raise ValueError("the token signing key must be an EC P-256 key (ES256)")
    return SigningKey(key=key, kid=key.thumbprint())


def load_or_create_pem(settings: Settings, configured: SecretStr | None, filename: str, generate: Callable[[], bytes]) -> bytes:
    """A PEM key from settings, or the one under ``var/keys`` (created on first run, readable by us only)."""
    if configured is not None:
        return configured.get_secret_value().encode()
    path = settings.var_dir / "keys" / filename
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    pem = generate()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process created it first
        return path.read_bytes()
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    return pem


def derived_key(settings: Settings, purpose: str) -> bytes:
    """A key for one purpose of delivery (export links, cursors, fingerprints), derived from ``settings.secret_key``."""
    secret = settings.secret_key.get_secret_value().encode()
    return hmac.new(secret, f"market.delivery.{purpose}".encode(), hashlib.sha256).digest()


def fingerprint_key(settings: Settings) -> bytes:
    """The key of the per-subscription fingerprints of file exports: delivery writes them, supervision traces leaked
    copies with it (``marketplace.core.fingerprint``)."""
    return derived_key(settings, "export-fingerprint")
