"""The billing part of the demo: six months of invoices and payments by bank transfer and (as recorded from Stripe's
webhooks) by card, a refund, a renewal left unpaid (past due, in its grace period), metered usage charged and
invoiced, and settlement statements (older months acknowledged by the owner, last month issued, this month a draft).

Records are made through billing's services and then dated back to when they would have happened, as the delivery
history is; the ledger events are those the services record.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from billing import services as billing
from billing.models import Gateway, Invoice, InvoiceKind, InvoiceStatus, Payment
from billing.services.invoices import issue_first_invoice, issue_invoice, period_lines, settle_invoice
from billing.services.usage import bill_usage
from licensing.models import PlanType
from marketplace.catalog.models import Plan
from marketplace.core.events import Actor
from marketplace.core.principal import Principal
from marketplace.core.settings import Settings
from marketplace.subscriptions import services as subscriptions
from marketplace.subscriptions.models import Subscription

#: Buyers whose payments come through Stripe (card); the others pay invoices by bank transfer.
CARD_BUYERS = frozenset({"eastgate"})
STRIPE = Actor("system", "stripe")


@dataclass(frozen=True)
class PaidSubscription:
    """A demo subscription with a price, who took it and whose product it is."""

    subscription_id: uuid.UUID
    buyer: str
    operator: str


async def pay_first_invoice(
    session: AsyncSession,
    settings: Settings,
    people: dict[str, Principal],
    subscription_id: uuid.UUID,
    buyer: str,
    operator: str,
    paid_at: datetime | None = None,
) -> None:
    """The first payment of a subscription waiting for it (the subscription becomes active): by card as Stripe's
    webhook records it, or by bank transfer (checkout by invoice, the operator records the transfer). ``paid_at``:
    when the money arrived (the subscription's start in the demo's history), so the ledger's payment agrees with the
    settlement statements computed from it."""
    if buyer not in CARD_BUYERS:
        invoice = await billing.checkout(session, people[buyer], settings, None, subscription_id, Gateway.invoice)
        await billing.record_transfer(
            session,
            people[operator],
            invoice.id,
            amount=billing.to_decimal(invoice.amount_minor, invoice.currency),
            reference=f"DEMO-{invoice.number}",
            received_on=paid_at.date() if paid_at is not None else None,
        )
        return
    sub = await session.get(Subscription, subscription_id)
    assert sub is not None
    now = datetime.now(UTC)
    invoice = await issue_first_invoice(
        session, sub, Gateway.stripe, due_in=timedelta(days=1), actor=Actor.of(people[buyer]), created_by=None
    )
    await settle_invoice(
        session,
        invoice,
        amount_minor=invoice.amount_minor,
        reference=f"pi_demo_{uuid.uuid5(uuid.NAMESPACE_URL, str(subscription_id)).hex[:16]}",
        received_at=paid_at or now,
        actor=STRIPE,
        fee_minor=_card_fee(invoice.amount_minor),
    )
    await session.commit()


def _card_fee(amount_minor: int) -> int:
    # What a card acquirer might keep: 2.9% + 0.30.
    return round(amount_minor * 0.029) + 30


async def _date_back(session: AsyncSession, invoice: Invoice, issued: datetime, paid: datetime | None) -> None:
    invoice.issued_at = issued
    invoice.due_at = max(invoice.due_at, issued) if paid is None else issued + timedelta(days=14)
    if paid is not None:
        invoice.paid_at = paid
        payment = (await session.exec(select(Payment).where(Payment.invoice_id == invoice.id))).one()
        payment.received_at = payment.recorded_at = paid
        session.add(payment)
    session.add(invoice)


async def seed_billing(
    session: AsyncSession, settings: Settings, people: dict[str, Principal], paid: list[PaidSubscription], seed: int
) -> dict[str, Any]:
    """Date the first payments back, add the renewals of monthly plans since, a refund, an unpaid renewal, usage and
    statements (runs once, after the delivery history)."""
    rng = random.Random(seed + 11)  # noqa: S311 - the demo is deliberately reproducible
    now = datetime.now(UTC).replace(microsecond=0)
    failing: uuid.UUID | None = None
    for item in paid:
        if item.buyer not in CARD_BUYERS and await _plan_type(session, item.subscription_id) is PlanType.monthly:
            failing = item.subscription_id  # the last one paying monthly by transfer

    refund_candidates: list[tuple[int, uuid.UUID]] = []
    for item in paid:
        sub = await session.get(Subscription, item.subscription_id)
        assert sub is not None
        assert sub.starts_at is not None
        plan = await session.get(Plan, sub.plan_id)
        assert plan is not None
        began = sub.starts_at
        first = (
            await session.exec(select(Invoice).where(Invoice.subscription_id == sub.id, Invoice.kind == InvoiceKind.subscription))
        ).one()
        first.period_start, first.period_end = began, subscriptions.entitlement_until(plan, began)
        await _date_back(session, first, began - timedelta(days=2), began)
        await session.commit()
        if plan.type not in (PlanType.monthly, PlanType.metered) or sub.price in ("0.00", "0"):
            continue
        start = first.period_end
        while start < now:
            end = subscriptions.add_month(start)
            gateway = Gateway.stripe if item.buyer in CARD_BUYERS else Gateway.invoice
            invoice = await issue_invoice(
                session,
                sub,
                kind=InvoiceKind.renewal,
                gateway=gateway,
                lines=period_lines(plan, sub, InvoiceKind.renewal),
                period_start=start,
                period_end=end,
                due_at=start,
                actor=Actor.of(None),
            )
            if item.subscription_id == failing and end > now:
                # The last renewal of this one is not paid: it fell due two days ago.
                invoice.issued_at, invoice.due_at = now - timedelta(days=9), now - timedelta(days=2)
                session.add(invoice)
                await session.commit()
                break
            received = start - timedelta(days=rng.randint(0, 5), hours=rng.randint(1, 9))
            reference = f"pi_demo_{rng.getrandbits(64):016x}" if gateway is Gateway.stripe else f"DEMO-{invoice.number}"
            actor = STRIPE if gateway is Gateway.stripe else Actor.of(people[item.operator])
            fee = _card_fee(invoice.amount_minor) if gateway is Gateway.stripe else None
            await settle_invoice(
                session,
                invoice,
                amount_minor=invoice.amount_minor,
                reference=reference,
                received_at=received,
                actor=actor,
                fee_minor=fee,
            )
            await _date_back(session, invoice, start - timedelta(days=7), received)
            await session.commit()
            if gateway is Gateway.invoice and item.subscription_id != failing:
                refund_candidates.append((invoice.amount_minor, invoice.id))
            start = end
    overdue = await billing.mark_overdue(session, now)
    refunds = 0
    refund_target = None
    if refund_candidates:  # the largest renewal paid by transfer gets a partial refund
        invoice_id = max(refund_candidates, key=lambda c: c[0])[1]
        refund_target = (await session.exec(select(Payment.id).where(Payment.invoice_id == invoice_id))).one()
    if refund_target is not None:
        payment = await session.get(Payment, refund_target)
        assert payment is not None
        await billing.refund_payment(
            session,
            people["harbour"] if payment.operator_id == people["harbour"].org_id else people["summit"],
            refund_target,
            amount=billing.to_decimal(payment.amount_minor // 5, payment.currency),
            reason="Two days of delayed updates in the month: one fifth refunded",
            end_access=False,
            request_key="demo-refund-1",
        )
        refunds = 1
    usage = await bill_usage(session, now, settings)
    await _pay_usage_invoices(session, people, rng, now)
    statements = await _statements(session, people, now)
    return {"overdue": len(overdue), "refunds": refunds, "usage_charges": usage.charges, "statements": statements}


async def _plan_type(session: AsyncSession, subscription_id: uuid.UUID) -> PlanType | None:
    sub = await session.get(Subscription, subscription_id)
    plan = await session.get(Plan, sub.plan_id) if sub is not None else None
    return plan.type if plan is not None else None


async def _pay_usage_invoices(session: AsyncSession, people: dict[str, Principal], rng: random.Random, now: datetime) -> None:
    """Usage invoices of finished months, dated to the day after their month; all but last month's are paid."""
    last_month = datetime(now.year, now.month, 1, tzinfo=UTC) - timedelta(days=1)
    invoices = (
        await session.exec(select(Invoice).where(Invoice.kind == InvoiceKind.usage).order_by(col(Invoice.period_start)))
    ).all()
    operators = {p.org_id: p for p in people.values()}
    for invoice in invoices:
        issued = invoice.period_end + timedelta(days=1)
        if invoice.period_start.year == last_month.year and invoice.period_start.month == last_month.month:
            invoice.issued_at, invoice.due_at = issued, issued + timedelta(days=14)
            session.add(invoice)
            await session.commit()
            continue
        received = issued + timedelta(days=rng.randint(3, 9))
        await settle_invoice(
            session,
            invoice,
            amount_minor=invoice.amount_minor,
            reference=f"DEMO-{invoice.number}",
            received_at=received,
            actor=Actor.of(operators.get(invoice.operator_id)),
        )
        await _date_back(session, invoice, issued, received)
        await session.commit()


async def _statements(session: AsyncSession, people: dict[str, Principal], now: datetime) -> int:
    """Each operator's months since its first payment: acknowledged up to two months ago, last month issued, this
    month a draft."""
    owner = people["authority"]
    count = 0
    this_month = f"{now.year:04d}-{now.month:02d}"
    previous = datetime(now.year, now.month, 1, tzinfo=UTC) - timedelta(days=1)
    last_month = f"{previous.year:04d}-{previous.month:02d}"
    for key in ("harbour", "summit"):
        operator = people[key]
        first = (
            await session.exec(
                select(Payment.received_at).where(Payment.operator_id == operator.org_id).order_by(col(Payment.received_at))
            )
        ).first()
        if first is None:
            continue
        month = datetime(first.year, first.month, 1, tzinfo=UTC)
        while True:
            period = f"{month.year:04d}-{month.month:02d}"
            statements = await billing.run_settlement(session, operator.org_id, period, Actor.of(operator))
            for statement in statements:
                count += 1
                if period != this_month:
                    await billing.issue_statement(session, operator, statement.id)
                    if period != last_month:
                        await billing.acknowledge_statement(session, owner, statement.id)
            if period == this_month:
                break
            month = subscriptions.add_month(month)
    return count


async def open_invoices(session: AsyncSession) -> int:
    """How many invoices wait for payment (for the demo's summary)."""
    rows = (
        await session.exec(select(Invoice.id).where(col(Invoice.status).in_([InvoiceStatus.open, InvoiceStatus.overdue])))
    ).all()
    return len(rows)
