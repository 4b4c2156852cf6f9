"""Receipts: a payment with the ledger index of its ``payment.received`` event and the inclusion proof of that
event, so the buyer (or anyone it shows the receipt to) can check it against a signed checkpoint."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlmodel.ext.asyncio.session import AsyncSession

import supervision.services as ledger
from billing.models import Invoice, Payment
from billing.services.refunds import get_payment
from marketplace.core.errors import Conflict
from marketplace.core.principal import Principal


@dataclass(frozen=True)
class Receipt:
    """A payment and the proof that its event is in the ledger."""

    payment: Payment
    invoice: Invoice
    ledger_index: int
    tree_size: int
    root_hash: bytes
    inclusion_proof: list[bytes]
    checkpoint_note: str | None


async def receipt(session: AsyncSession, principal: Principal, payment_id: uuid.UUID) -> Receipt:
    """The receipt of a payment the caller may see. The proof is against the latest signed checkpoint when it
    covers the event, else against the current tree (``checkpoint_note`` None)."""
    payment = await get_payment(session, principal, payment_id)
    if payment.ledger_index is None:
        raise Conflict("This payment has no ledger entry.", code="receipt_unavailable")
    invoice = await session.get(Invoice, payment.invoice_id)
    assert invoice is not None
    checkpoint = await ledger.latest_checkpoint(session)
    if checkpoint is not None and checkpoint.size > payment.ledger_index:
        size, root, note = checkpoint.size, checkpoint.root_hash, checkpoint.note
    else:
        size, root = await ledger.head(session)
        note = None
    proof = await ledger.inclusion_proof(session, payment.ledger_index, size)
    return Receipt(payment, invoice, payment.ledger_index, size, root, proof, note)
