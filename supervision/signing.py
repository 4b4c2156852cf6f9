"""The Ed25519 key that signs ledger checkpoints: generated on first run, or given in production."""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from marketplace.core.keys import load_or_create_pem
from marketplace.core.settings import Settings
from supervision.note import Checkpoint, Verifier, parse_vkey, raw_public_key, sign_note, vkey


def _new_ed25519_pem() -> bytes:
    return Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@dataclass(frozen=True)
class LedgerSigner:
    """Signs checkpoints as C2SP signed notes; the key name is the log's origin."""

    origin: str
    private_key: Ed25519PrivateKey

    @property
    def vkey(self) -> str:
        """The public verifier key, in signed-note vkey form."""
        return vkey(self.origin, raw_public_key(self.private_key))

    @property
    def verifier(self) -> Verifier:
        """The parsed verifier key."""
        return parse_vkey(self.vkey)

    def sign(self, checkpoint: Checkpoint) -> str:
        """The checkpoint as a signed note."""
        return sign_note(checkpoint.body(), self.origin, self.private_key)


def load_ledger_signer(settings: Settings) -> LedgerSigner:
    """The configured checkpoint key, or the one under ``var/keys`` (created on first run)."""
    pem = load_or_create_pem(settings, settings.ledger_private_key, "ledger-signing-key.pem", _new_ed25519_pem)
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError("the ledger signing key must be an Ed25519 private key")
    return LedgerSigner(origin=settings.checkpoint_origin, private_key=key)
