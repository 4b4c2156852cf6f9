"""Stripe's webhook events: verified on the raw body, each stored once (``WebhookEvent``) in the transaction of its
effect, so an event delivered twice, concurrently, or out of order has its effect once. An event about an object of
ours not stored yet is answered 409 ``unknown_object`` (nothing stored) so that Stripe delivers it again later."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from billing.models import Gateway, GatewayObject, Invoice, InvoiceKind, InvoiceStatus, Payment, WebhookEvent
from billing.services.invoices import InvoiceLine, issue_invoice, past_due_for, settle_invoice
from billing.services.money import to_decimal
from billing.stripe_gateway import HANDLED_EVENTS, StripeGateway
from marketplace.core.errors import Conflict, DomainError, InvalidInput
from marketplace.core.events import Actor
from marketplace.core.settings import Settings
from marketplace.core.types import utcnow
from marketplace.subscriptions import services as subscriptions
from marketplace.subscriptions.models import OPEN_STATUSES, Subscription, SubscriptionStatus

log = logging.getLogger(__name__)

STRIPE = Actor("system", "stripe")


class UnknownObject(Conflict):
    """The event is about an object we do not know yet (409 ``unknown_object``: Stripe will deliver it again)."""


def _at(seconds: int | None) -> datetime:
    return datetime.fromtimestamp(seconds, UTC) if seconds else utcnow()


def _uuid(value: Any) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value))
    except (TypeError, ValueError):
        return None


async def _invoice_for_update(session: AsyncSession, invoice_id: uuid.UUID | None) -> Invoice | None:
    if invoice_id is None:
        return None
    found: Invoice | None = (await session.exec(select(Invoice).where(Invoice.id == invoice_id).with_for_update())).first()
    return found


async def _link_subscription(session: AsyncSession, subscription_id: uuid.UUID, stripe_subscription: str | None) -> None:
    if not stripe_subscription:
        return
    known = (
        await session.exec(
            select(GatewayObject).where(
                GatewayObject.gateway == Gateway.stripe,
                GatewayObject.kind == "subscription",
                GatewayObject.local_key == str(subscription_id),
            )
        )
    ).first()
    if known is None:
        session.add(
            GatewayObject(
                gateway=Gateway.stripe, kind="subscription", local_key=str(subscription_id), external_id=stripe_subscription
            )
        )


async def _on_checkout_completed(session: AsyncSession, gateway: StripeGateway, obj: dict[str, Any], created: int) -> str:
    metadata = obj.get("metadata") or {}
    invoice = await _invoice_for_update(session, _uuid(metadata.get("invoice_id")))
    if invoice is None:
        raise UnknownObject("The checkout's invoice is not known here yet.", code="unknown_object")
    subscription_id = _uuid(metadata.get("subscription_id")) or invoice.subscription_id
    if obj.get("mode") == "subscription":
        # The first payment comes with invoice.paid (before or after this event).
        await _link_subscription(session, subscription_id, obj.get("subscription"))
        return "linked"
    if obj.get("payment_status") != "paid":
        return "unpaid"
    if invoice.status is InvoiceStatus.paid:
        return "already_settled"
    intent = str(obj.get("payment_intent") or obj["id"])
    fee = await asyncio.to_thread(gateway.payment_fee, intent) if obj.get("payment_intent") else None
    await settle_invoice(
        session,
        invoice,
        amount_minor=int(obj.get("amount_total") or 0),
        reference=intent,
        received_at=_at(created),
        actor=STRIPE,
        fee_minor=fee,
    )
    return "settled"


def _subscription_details(obj: dict[str, Any]) -> dict[str, Any]:
    """A Stripe invoice's ``parent.subscription_details`` (its subscription's id and metadata), or nothing."""
    return dict((obj.get("parent") or {}).get("subscription_details") or {})


async def _stripe_status(gateway: StripeGateway, obj: dict[str, Any]) -> str | None:
    stripe_subscription = _subscription_details(obj).get("subscription")
    if not stripe_subscription:
        return None
    return await asyncio.to_thread(gateway.subscription_status, str(stripe_subscription))


def _subscription_metadata(obj: dict[str, Any]) -> dict[str, Any]:
    return dict(_subscription_details(obj).get("metadata") or {})


async def _payment_of_invoice(gateway: StripeGateway, obj: dict[str, Any]) -> tuple[str, int | None]:
    intent = await asyncio.to_thread(gateway.invoice_payment_intent, str(obj["id"]))
    if intent is None:
        return str(obj["id"]), None
    return intent, await asyncio.to_thread(gateway.payment_fee, intent)


async def _on_invoice_paid(session: AsyncSession, gateway: StripeGateway, obj: dict[str, Any], created: int) -> str:
    metadata = _subscription_metadata(obj)
    subscription_id = _uuid(metadata.get("subscription_id"))
    if subscription_id is None:
        return "not_ours"
    if obj.get("billing_reason") == "subscription_create":
        invoice = await _invoice_for_update(session, _uuid(metadata.get("invoice_id")))
        if invoice is None:
            raise UnknownObject("The subscription's first invoice is not known here yet.", code="unknown_object")
        await _link_subscription(session, subscription_id, _subscription_details(obj).get("subscription"))
        if invoice.status is InvoiceStatus.paid:
            return "already_settled"
        reference, fee = await _payment_of_invoice(gateway, obj)
        await settle_invoice(
            session,
            invoice,
            amount_minor=int(obj.get("amount_paid") or 0),
            reference=reference,
            received_at=_at(created),
            actor=STRIPE,
            fee_minor=fee,
        )
        return "settled"
    # A renewal (or any later invoice of the subscription): our renewal invoice is made from Stripe's, once.
    existing = (await session.exec(select(Invoice).where(Invoice.external_id == str(obj["id"])).with_for_update())).first()
    if existing is not None and existing.status is InvoiceStatus.paid:
        return "already_settled"
    subscription = (await session.exec(select(Subscription).where(Subscription.id == subscription_id).with_for_update())).first()
    if subscription is None:
        raise UnknownObject("The invoice's subscription is not known here.", code="unknown_object")
    if subscription.status is SubscriptionStatus.pending_payment:
        # Its first payment's event has not been applied yet: come back after it.
        raise UnknownObject("The subscription's first payment is not recorded yet.", code="unknown_object")
    if subscription.status not in (SubscriptionStatus.active, SubscriptionStatus.past_due):
        return f"subscription_{subscription.status.value}"
    lines = (obj.get("lines") or {}).get("data") or []
    periods = [line.get("period") or {} for line in lines]
    period_start = _at(min((p.get("start") or obj.get("period_end") or created) for p in periods) if periods else created)
    period_end = _at(max((p.get("end") or created) for p in periods) if periods else created)
    if existing is None:
        existing = await issue_invoice(
            session,
            subscription,
            kind=InvoiceKind.renewal,
            gateway=Gateway.stripe,
            lines=[
                InvoiceLine(
                    description=str(line.get("description") or "Stripe invoice line"),
                    description_zh=str(line.get("description") or "Stripe 账单行"),
                    quantity=int(line.get("quantity") or 1),
                    unit_minor=int(line.get("amount") or 0),
                    amount_minor=int(line.get("amount") or 0),
                )
                for line in lines
            ],
            period_start=period_start,
            period_end=period_end,
            due_at=_at(created),
            actor=STRIPE,
        )
        existing.external_id = str(obj["id"])
    reference, fee = await _payment_of_invoice(gateway, obj)
    # Stripe's current status decides whether a later period is still unpaid (events may come in any order).
    still_past_due = await _stripe_status(gateway, obj) == "past_due"
    await settle_invoice(
        session,
        existing,
        amount_minor=int(obj.get("amount_paid") or 0),
        reference=reference,
        received_at=_at(created),
        actor=STRIPE,
        fee_minor=fee,
        keep_past_due=still_past_due,
    )
    return "renewed"


async def _on_payment_failed(session: AsyncSession, gateway: StripeGateway, obj: dict[str, Any], created: int) -> str:
    subscription_id = _uuid(_subscription_metadata(obj).get("subscription_id"))
    if subscription_id is None:
        return "not_ours"
    subscription = await session.get(Subscription, subscription_id)
    if subscription is None:
        raise UnknownObject("The invoice's subscription is not known here.", code="unknown_object")
    if subscription.status is SubscriptionStatus.pending_payment:
        if obj.get("billing_reason") == "subscription_create":
            return "first_payment_failed"  # it stays waiting for payment; the buyer may check out again
        raise UnknownObject("The subscription's first payment is not recorded yet.", code="unknown_object")
    if subscription.status is not SubscriptionStatus.active:
        return f"subscription_{subscription.status.value}"
    if await _stripe_status(gateway, obj) != "past_due":
        return "recovered"  # paid since (its invoice.paid brings the renewal)
    await past_due_for(
        session, subscription_id, _at(created), f"Stripe could not collect invoice {obj.get('number') or obj['id']}."
    )
    return "past_due"


async def _on_subscription_deleted(session: AsyncSession, _gateway: StripeGateway, obj: dict[str, Any], created: int) -> str:
    """The Stripe subscription ended (cancelled in the customer portal, or after failed payments): ours ends too."""
    subscription_id = _uuid((obj.get("metadata") or {}).get("subscription_id"))
    if subscription_id is None:
        return "not_ours"
    if await session.get(Subscription, subscription_id) is None:
        raise UnknownObject("The subscription is not known here.", code="unknown_object")
    ended = await subscriptions.end_for_billing(
        session, subscription_id, STRIPE, SubscriptionStatus.cancelled, "Cancelled at Stripe (customer portal or unpaid)."
    )
    return "cancelled" if ended else "already_ended"


Handler = Callable[[AsyncSession, StripeGateway, dict[str, Any], int], Awaitable[str]]
HANDLERS: dict[str, Handler] = {
    "checkout.session.completed": _on_checkout_completed,
    "invoice.paid": _on_invoice_paid,
    "invoice.payment_failed": _on_payment_failed,
    "customer.subscription.deleted": _on_subscription_deleted,
}


async def process(session: AsyncSession, gateway: StripeGateway, event: dict[str, Any]) -> str:
    """Apply one verified event once: its effect and its ``WebhookEvent`` row commit together. Returns the outcome
    (``duplicate`` when it was processed before)."""
    event_id, event_type = str(event["id"]), str(event["type"])
    if await session.get(WebhookEvent, event_id) is not None:
        return "duplicate"
    handler = HANDLERS.get(event_type)
    created = int(event.get("created") or 0)
    if handler is None:
        outcome = "ignored"
    else:
        try:
            outcome = await handler(session, gateway, dict(event["data"]["object"]), created)
        except UnknownObject:
            await session.rollback()
            raise
        except DomainError as exc:
            # A payment we cannot apply (an amount that differs, a subscription no longer payable) is kept for the
            # settlement's reconciliation to show; Stripe is not asked to send it again.
            await session.rollback()
            log.warning("stripe event %s (%s) not applied: %s", event_id, event_type, exc.code)
            outcome = f"refused:{exc.code}"
    session.add(WebhookEvent(id=event_id, type=event_type, outcome=outcome, created_at=_at(created)))
    try:
        await session.commit()
    except IntegrityError:
        await session.rollback()
        if await session.get(WebhookEvent, event_id) is not None:
            return "duplicate"
        raise Conflict("The event met a concurrent change; deliver it again.", code="webhook_conflict") from None
    return outcome


async def receive(
    session: AsyncSession, settings: Settings, gateway: StripeGateway | None, payload: bytes, signature: str
) -> str:
    """Verify and process one delivery of a Stripe event (400 ``invalid_signature`` / ``webhook_not_configured``)."""
    if settings.stripe_webhook_secret is None or gateway is None:
        raise InvalidInput("Stripe is not configured on this platform.", code="webhook_not_configured")
    return await process(session, gateway, gateway.verify(payload, signature))


async def reconcile_events(session: AsyncSession, gateway: StripeGateway, now: datetime, days: int = 3) -> dict[str, int]:
    """List Stripe's recent events of the types we act on and process any we missed (idempotent)."""
    events = await asyncio.to_thread(gateway.recent_events, int((now - timedelta(days=days)).timestamp()), sorted(HANDLED_EVENTS))
    known = (
        set((await session.exec(select(WebhookEvent.id).where(col(WebhookEvent.id).in_([str(e["id"]) for e in events])))).all())
        if events
        else set()
    )
    outcomes: dict[str, int] = {}
    for event in events:
        if event["id"] in known:
            continue
        try:
            outcome = await process(session, gateway, event)
        except Conflict as exc:
            outcome = exc.code or "conflict"
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    return outcomes


async def cancel_ended_at_stripe(session: AsyncSession, gateway: StripeGateway) -> int:
    """Cancel at Stripe every Stripe subscription whose subscription here has ended (cancelled, revoked, expired), so
    that Stripe never charges for access that is over; each is cancelled once (a ``subscription_cancelled`` marker).
    Returns how many were cancelled."""
    links = (
        await session.exec(
            select(GatewayObject).where(GatewayObject.gateway == Gateway.stripe, GatewayObject.kind == "subscription")
        )
    ).all()
    ids = [i for i in (_uuid(link.local_key) for link in links) if i is not None]
    found = (
        {s.id: s for s in (await session.exec(select(Subscription).where(col(Subscription.id).in_(ids)))).all()} if ids else {}
    )
    linked = [(link, found[key]) for link in links if (key := _uuid(link.local_key)) is not None and key in found]
    done = set(
        (
            await session.exec(
                select(GatewayObject.local_key).where(
                    GatewayObject.gateway == Gateway.stripe, GatewayObject.kind == "subscription_cancelled"
                )
            )
        ).all()
    )
    cancelled = 0
    for link, subscription in linked:
        if subscription.status in OPEN_STATUSES or link.local_key in done:
            continue
        await asyncio.to_thread(gateway.cancel_subscription, link.external_id)
        session.add(
            GatewayObject(
                gateway=Gateway.stripe, kind="subscription_cancelled", local_key=link.local_key, external_id=link.external_id
            )
        )
        await session.commit()
        cancelled += 1
    return cancelled


def stripe_reconciler(gateway: StripeGateway) -> Callable[[Sequence[Payment]], Awaitable[list[dict[str, Any]]]]:
    """Settlement's check of Stripe payments against Stripe's own records: each payment intent exists, succeeded and
    received the amount and currency we recorded."""

    async def reconcile(payments: Sequence[Payment]) -> list[dict[str, Any]]:
        mismatches: list[dict[str, Any]] = []
        for payment in payments:
            if payment.gateway is not Gateway.stripe or not payment.reference.startswith("pi_"):
                continue
            found = await asyncio.to_thread(gateway.payment_received, payment.reference)
            if found is None:
                mismatches.append(
                    {"kind": "payment_unknown_at_stripe", "payment": str(payment.id), "reference": payment.reference}
                )
                continue
            amount, currency, status = found
            if (amount, currency) != (payment.amount_minor, payment.currency) or status != "succeeded":
                mismatches.append(
                    {
                        "kind": "differs_at_stripe",
                        "payment": str(payment.id),
                        "reference": payment.reference,
                        "recorded": to_decimal(payment.amount_minor, payment.currency),
                        "at_stripe": to_decimal(amount, currency) if currency == payment.currency else f"{amount} {currency}",
                        "stripe_status": status,
                    }
                )
        return mismatches

    return reconcile
