"""C2SP signed notes (c2sp.org/signed-note) with Ed25519, and tlog checkpoints (c2sp.org/tlog-checkpoint).

Standard library and ``cryptography`` only: the offline verifier uses it too.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

ED25519_ALGORITHM = 0x01
SIGNATURE_PREFIX = "\u2014 "  # em dash and space


class NoteError(ValueError):
    """A note, key or checkpoint that is malformed or whose signature does not verify."""


def _b64decode(text: str, what: str) -> bytes:
    """Strict base64: valid characters and the one canonical encoding of the bytes (no spare bits set)."""
    try:
        raw = base64.b64decode(text, validate=True)
    except binascii.Error as exc:
        raise NoteError(f"{what} is not base64") from exc
    if base64.b64encode(raw).decode() != text:
        raise NoteError(f"{what} is not canonically encoded")
    return raw


def _check_name(name: str) -> None:
    if not name or any(c.isspace() for c in name) or "+" in name:
        raise NoteError(f"invalid key name {name!r}: no spaces and no '+'")


def key_id(name: str, public_key: bytes) -> bytes:
    """The 4-byte key hash of an Ed25519 verifier key: SHA-256(name || 0x0A || 0x01 || key)[:4]."""
    return hashlib.sha256(name.encode() + b"\n" + bytes([ED25519_ALGORITHM]) + public_key).digest()[:4]


def raw_public_key(private_key: Ed25519PrivateKey) -> bytes:
    """The 32 raw bytes of the public half."""
    return private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def vkey(name: str, public_key: bytes) -> str:
    """The verifier key string ``<name>+<key hash hex>+<base64(0x01 || public key)>``."""
    _check_name(name)
    encoded = base64.b64encode(bytes([ED25519_ALGORITHM]) + public_key).decode()
    return f"{name}+{key_id(name, public_key).hex()}+{encoded}"


@dataclass(frozen=True)
class Verifier:
    """A parsed verifier key."""

    name: str
    key_id: bytes
    public_key: Ed25519PublicKey


def parse_vkey(text: str) -> Verifier:
    """Parse a verifier key, checking its key hash."""
    parts = text.strip().split("+", 2)
    if len(parts) != 3:
        raise NoteError("a verifier key has three '+'-separated parts")
    name, hash_hex, encoded = parts
    _check_name(name)
    key = _b64decode(encoded, "verifier key")
    try:
        claimed = bytes.fromhex(hash_hex)
    except ValueError as exc:
        raise NoteError("verifier key hash is not hex") from exc
    if len(key) != 33 or key[0] != ED25519_ALGORITHM:
        raise NoteError("only Ed25519 verifier keys are supported")
    if claimed != key_id(name, key[1:]):
        raise NoteError("verifier key hash does not match the key")
    return Verifier(name=name, key_id=claimed, public_key=Ed25519PublicKey.from_public_bytes(key[1:]))


def sign_note(body: str, name: str, private_key: Ed25519PrivateKey) -> str:
    """Sign ``body`` (text ending in a newline) and return the whole signed note."""
    _check_name(name)
    if not body.endswith("\n") or "\n\n" in body:
        raise NoteError("a note body ends with a newline and holds no blank line")
    signature = private_key.sign(body.encode())
    stamp = base64.b64encode(key_id(name, raw_public_key(private_key)) + signature).decode()
    return f"{body}\n{SIGNATURE_PREFIX}{name} {stamp}\n"


def open_note(note: str, verifier: Verifier) -> str:
    """The body of ``note`` if it carries a valid signature by ``verifier``; :class:`NoteError` otherwise."""
    body, separator, signatures = note.rpartition("\n\n")
    if not separator or not signatures.endswith("\n"):
        raise NoteError("malformed note: no signature block")
    body += "\n"
    found = False
    for line in signatures[:-1].split("\n"):
        if not line.startswith(SIGNATURE_PREFIX):
            raise NoteError("malformed signature line")
        name, _, stamp = line[len(SIGNATURE_PREFIX) :].partition(" ")
        raw = _b64decode(stamp, "signature")
        if name != verifier.name or raw[:4] != verifier.key_id:
            continue
        try:
            verifier.public_key.verify(raw[4:], body.encode())
        except InvalidSignature as exc:
            raise NoteError(f"signature by {name} does not verify") from exc
        found = True
    if not found:
        raise NoteError(f"note carries no signature by {verifier.name}")
    return body


@dataclass(frozen=True)
class Checkpoint:
    """A tree head: origin, size and root hash (c2sp.org/tlog-checkpoint)."""

    origin: str
    size: int
    root: bytes

    def body(self) -> str:
        """The checkpoint as note text."""
        return f"{self.origin}\n{self.size}\n{base64.b64encode(self.root).decode()}\n"


def parse_checkpoint(body: str) -> Checkpoint:
    """Parse the body of a checkpoint note (extension lines after the root are allowed)."""
    lines = body.split("\n")
    if len(lines) < 4 or lines[-1] != "":
        raise NoteError("a checkpoint has an origin, a size and a root hash, each on its own line")
    origin, size_text, root_text = lines[0], lines[1], lines[2]
    if not origin or not size_text.isdigit() or (size_text != "0" and size_text.startswith("0")):
        raise NoteError("malformed checkpoint origin or size")
    root = _b64decode(root_text, "checkpoint root hash")
    if len(root) != 32:
        raise NoteError("checkpoint root hash is not 32 bytes")
    return Checkpoint(origin=origin, size=int(size_text), root=root)


def open_checkpoint(note: str, verifier: Verifier, origin: str | None = None) -> Checkpoint:
    """Verify a signed checkpoint note and parse it; the origin must match when given."""
    checkpoint = parse_checkpoint(open_note(note, verifier))
    if origin is not None and checkpoint.origin != origin:
        raise NoteError(f"checkpoint is for origin {checkpoint.origin!r}, not {origin!r}")
    return checkpoint
