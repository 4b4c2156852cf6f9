"""Proofs of a reduced purpose (public welfare, research): the buyer uploads a PDF, PNG or JPEG while its
subscription awaits approval; the operator downloads and checks it, then approves or rejects the subscription.

The kind of file is decided by its first bytes, never by its name or declared type. Files are stored under
``<data folder>/proofs/<subscription id>/<sha256>.<ext>``; the event carries the SHA-256 and size only.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from dataclasses import dataclass
from pathlib import Path

import anyio.to_thread
from sqlmodel.ext.asyncio.session import AsyncSession

from licensing.storage import local_store
from marketplace.core.errors import Conflict, DomainError, Forbidden, InvalidInput, NotFound
from marketplace.core.events import Actor
from marketplace.core.principal import OrgKind, Principal
from marketplace.core.settings import Settings
from marketplace.core.types import utcnow
from marketplace.subscriptions.models import Subscription, SubscriptionStatus
from marketplace.subscriptions.services.subscriptions import find_scoped, publish_subscription_event, subscription_context

#: Accepted kinds of proof: leading bytes -> (media type, file extension).
PROOF_KINDS: tuple[tuple[bytes, str, str], ...] = (
    (b"%PDF-", "application/pdf", "pdf"),
    (b"\x89PNG\r\n\x1a\n", "image/png", "png"),
    (b"\xff\xd8\xff", "image/jpeg", "jpg"),
)
_UNSAFE_NAME = re.compile(r"[^\w.\- ()\[\]]+", re.UNICODE)


class ProofTooLarge(DomainError):
    """The proof is larger than ``settings.max_proof_bytes``."""

    status, code, title = 413, "proof_too_large", "Proof too large"


@dataclass(frozen=True)
class ProofFile:
    """A stored proof, for download."""

    path: Path
    name: str
    media_type: str
    sha256: str


def proof_kind(content: bytes) -> tuple[str, str] | None:
    """The media type and extension of a PDF, PNG or JPEG file, judged by its leading bytes; None otherwise."""
    for magic, media_type, extension in PROOF_KINDS:
        if content.startswith(magic):
            return media_type, extension
    return None


def _safe_name(filename: str, extension: str) -> str:
    name = _UNSAFE_NAME.sub("_", Path(filename.replace("\\", "/")).name).strip(" ._") or "proof"
    return name[:200] if name.lower().endswith(f".{extension}") else f"{name[: 200 - len(extension) - 1]}.{extension}"


def _write(path: Path, content: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(path.suffix + ".part")
    partial.write_bytes(content)
    partial.replace(path)


async def upload_proof(
    session: AsyncSession,
    principal: Principal,
    settings: Settings,
    subscription_id: uuid.UUID,
    *,
    filename: str,
    content: bytes,
) -> Subscription:
    """The buyer uploads the proof of its purpose to a subscription awaiting approval (``subscription.proof_uploaded``);
    a new upload replaces the previous one until the operator decides.

    Refused: not the subscribing buyer (403/404), not awaiting approval (409 ``subscription_not_awaiting_approval``),
    empty (400 ``proof_empty``), larger than ``settings.max_proof_bytes`` (413 ``proof_too_large``), not a PDF, PNG or
    JPEG by its leading bytes (400 ``proof_type_not_accepted``)."""
    if principal.org_kind is not OrgKind.buyer or principal.is_program:
        raise Forbidden("Only a person of the subscribing buyer uploads a proof.", code="party_not_allowed")
    subscription = await find_scoped(session, principal, subscription_id, lock=True)
    if subscription.status is not SubscriptionStatus.awaiting_approval:
        raise Conflict(
            f"Subscription {subscription.number} is {subscription.status.value}; a proof is uploaded while it awaits approval.",
            code="subscription_not_awaiting_approval",
        )
    if not content:
        raise InvalidInput("The proof file is empty.", code="proof_empty")
    if len(content) > settings.max_proof_bytes:
        raise ProofTooLarge(
            f"The proof is larger than the limit of {settings.max_proof_bytes} bytes.", limit=settings.max_proof_bytes
        )
    kind = proof_kind(content)
    if kind is None:
        raise InvalidInput("A proof is a PDF, PNG or JPEG file.", code="proof_type_not_accepted")
    media_type, extension = kind
    digest = hashlib.sha256(content).hexdigest()
    location = f"proofs/{subscription.id}/{digest}.{extension}"
    await anyio.to_thread.run_sync(_write, local_store(settings.resolved_data_dir).path_for(location), content)
    subscription.proof_location = location
    subscription.proof_name = _safe_name(filename, extension)
    subscription.proof_sha256 = digest
    subscription.proof_checked = False
    subscription.updated_at = utcnow()
    session.add(subscription)
    _product, plan, licence = await subscription_context(session, subscription)
    await publish_subscription_event(
        session,
        "subscription.proof_uploaded",
        Actor.of(principal),
        subscription,
        licence.owner_org_id,
        plan.type,
        proof_sha256=digest,
        proof_bytes=len(content),
        media_type=media_type,
    )
    await session.commit()
    await session.refresh(subscription)
    return subscription


async def read_proof(session: AsyncSession, principal: Principal, settings: Settings, subscription_id: uuid.UUID) -> ProofFile:
    """The uploaded proof of a subscription, for its buyer and its operator only (404 ``proof_not_found`` when none)."""
    if principal.org_kind not in (OrgKind.buyer, OrgKind.operator):
        raise Forbidden("Only the buyer and the operator read a proof.", code="party_not_allowed")
    subscription = await find_scoped(session, principal, subscription_id)
    if subscription.proof_location is None or subscription.proof_sha256 is None:
        raise NotFound("No proof was uploaded for this subscription.", code="proof_not_found")
    path = local_store(settings.resolved_data_dir).path_for(subscription.proof_location)
    if not path.is_file():
        raise NotFound("The proof file is missing from the store.", code="proof_not_found")
    extension = path.suffix.removeprefix(".")
    media_type = next((m for _magic, m, ext in PROOF_KINDS if ext == extension), "application/octet-stream")
    return ProofFile(
        path=path, name=subscription.proof_name or path.name, media_type=media_type, sha256=subscription.proof_sha256
    )
