"""Refunds: the operator gives back part or all of a payment; a full refund may end the buyer's access."""

from __future__ import annotations

import asyncio
import uuid
from typing import Protocol

from sqlalchemy.exc import IntegrityError
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

import supervision.services as ledger
from billing.models import Gateway, Payment, Refund
from billing.services.invoices import scoped_billing
from billing.services.money import to_decimal, to_minor
from marketplace.core.errors import Conflict, Forbidden, InvalidInput, NotFound
from marketplace.core.events import Actor, DomainEvent
from marketplace.core.principal import OrgKind, Principal, Role
from marketplace.subscriptions import auditing
from marketplace.subscriptions import services as subscriptions


class RefundGateway(Protocol):
    """Gives money back through the gateway a payment came by (Stripe); None for bank transfers."""

    def refund(self, payment_reference: str, amount_minor: int, idempotency_key: str, reason: str) -> str:
        """Refund ``amount_minor`` of the payment ``payment_reference``; returns the gateway's refund id."""
        ...


async def get_payment(session: AsyncSession, principal: Principal, payment_id: uuid.UUID) -> Payment:
    """One payment the caller may see (404 ``payment_not_found``; an auditor asking for one whose invoice its
    engagements do not cover, or without an engagement in force: 403 ``outside_engagement``, recorded)."""
    found = (await session.exec(scoped_billing(select(Payment).where(Payment.id == payment_id), principal, Payment))).first()
    if found is None:
        exists = auditing.is_auditor(principal) and await session.get(Payment, payment_id) is not None
        await auditing.refuse_record(session, principal, auditing.record_path("billing/payments", payment_id), exists)
        raise NotFound("No such payment.", code="payment_not_found")
    return found


async def list_refunds(session: AsyncSession, payment: Payment) -> list[Refund]:
    """The refunds of a payment, oldest first."""
    rows = (await session.exec(select(Refund).where(Refund.payment_id == payment.id).order_by(Refund.created_at))).all()  # type: ignore[arg-type]
    return list(rows)


async def refund_payment(
    session: AsyncSession,
    principal: Principal,
    payment_id: uuid.UUID,
    *,
    amount: str | None,
    reason: str,
    end_access: bool,
    request_key: str,
    gateway: RefundGateway | None = None,
) -> Refund:
    """The operator refunds ``amount`` (all that is left when None) of one of its payments, with a reason.

    The same ``request_key`` again answers the refund already made (nothing new). Refusals: ``payment_not_found``
    (404), ``reason_required`` / ``invalid_amount`` (400), ``refund_exceeds_payment`` (409: more than was paid and
    not yet refunded), ``end_access_needs_full_refund`` (400), ``gateway_unavailable`` (409: Stripe not configured).
    ``end_access`` with a full refund revokes the subscription in the same transaction."""
    if principal.org_kind is not OrgKind.operator or principal.is_program or principal.role is not Role.admin:
        raise Forbidden("An administrator of the operator refunds payments.", code="role_not_allowed")
    payment = (
        await session.exec(scoped_billing(select(Payment).where(Payment.id == payment_id), principal, Payment).with_for_update())
    ).first()
    if payment is None:
        raise NotFound("No such payment.", code="payment_not_found")
    earlier = (
        await session.exec(select(Refund).where(Refund.payment_id == payment.id, Refund.request_key == request_key))
    ).first()
    if earlier is not None:
        return earlier
    reason = reason.strip()
    if not reason:
        raise InvalidInput("Give the reason for the refund.", code="reason_required", field="reason")
    left = payment.amount_minor - payment.refunded_minor
    amount_minor = left if amount is None else to_minor(amount, payment.currency)
    if amount_minor <= 0:
        raise InvalidInput("A refund is a positive amount.", code="invalid_amount", field="amount")
    if amount_minor > left:
        raise Conflict(
            f"Only {to_decimal(left, payment.currency)} {payment.currency} of this payment is left to refund.",
            code="refund_exceeds_payment",
            refundable=to_decimal(left, payment.currency),
        )
    full = amount_minor == left and payment.refunded_minor == 0
    if end_access and amount_minor != left:
        raise InvalidInput("Access ends only with a refund of everything left.", code="end_access_needs_full_refund")
    if payment.gateway is Gateway.stripe and gateway is None:
        raise Conflict("Stripe is not configured: this payment cannot be refunded now.", code="gateway_unavailable")
    refund = Refund(
        payment_id=payment.id,
        operator_id=payment.operator_id,
        currency=payment.currency,
        amount_minor=amount_minor,
        reason=reason,
        ends_access=end_access,
        request_key=request_key,
        created_by=principal.user_id,
    )
    payment.refunded_minor += amount_minor
    session.add_all([payment, refund])
    try:
        await session.flush()
    except IntegrityError:
        await session.rollback()
        raise Conflict("This refund was requested at the same time; reload the payment.", code="refund_in_progress") from None
    actor = Actor.of(principal)
    if end_access:
        await subscriptions.end_for_refund(session, payment.subscription_id, actor, f"Refunded: {reason}")
    if gateway is not None and payment.gateway is Gateway.stripe:
        # Last before the commit, keyed by the payment and the caller's request key: a retry after a failed commit
        # gets Stripe's first answer instead of a second refund.
        refund.external_id = await asyncio.to_thread(
            gateway.refund, payment.reference, amount_minor, f"refund-{payment.id}-{request_key}", reason
        )
    refund.ledger_index = await ledger.record(
        session,
        DomainEvent(
            "payment.refunded",
            actor,
            orgs=(payment.buyer_org_id, payment.operator_id, payment.owner_org_id),
            subjects={
                "refund": str(refund.id),
                "payment": str(payment.id),
                "invoice": str(payment.invoice_id),
                "subscription": str(payment.subscription_id),
                "licence": str(payment.licence_id),
            },
            payload={
                "amount": to_decimal(amount_minor, payment.currency),
                "currency": payment.currency,
                "full": full,
                "ends_access": end_access,
                "reason": reason,
                "gateway": payment.gateway.value,
            },
        ),
    )
    session.add(refund)
    await session.commit()
    await session.refresh(refund)
    return refund
