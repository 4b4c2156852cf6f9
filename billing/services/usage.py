"""Usage billing of metered plans: deliveries are claimed per subscription and month and turned into charges,
exactly once, respecting the plan's free calls and its monthly maximum charge; charges go to Stripe's meter (a
subscription paid through Stripe) or onto a usage invoice once the month is over (bank transfer).

Exactly once: a run claims a month's unbilled deliveries with one UPDATE (``delivery.billed_at``) and stores their
charge and its ``usage.billed`` ledger event in the same transaction. A run stopped anywhere leaves either both or
neither; the next run carries on. Reports to Stripe follow the commit and carry the charge's id as the meter event's
identifier (Stripe keeps one event per identifier), and are retried until ``reported_at`` is set.

The charge of a month after ``n`` calls: ``units(n) = max(0, n - free_calls)``, capped so that the monthly fee plus
``units * per_call_price`` never exceeds the monthly maximum; ``amount(n) = round_half_up(units(n) * per_call_price)``
in minor units. The subscription's reduction (public welfare, research) applies to the per-call price and the
maximum as it does to the fee. A run charges ``amount(before + new) - amount(before)``.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_FLOOR, ROUND_HALF_UP, Decimal
from typing import Protocol

from sqlmodel import col, func, select
from sqlmodel.ext.asyncio.session import AsyncSession

import supervision.services as ledger
from billing.models import Gateway, GatewayObject, Invoice, InvoiceKind, UsageCharge
from billing.services.invoices import InvoiceLine, issue_invoice
from billing.services.money import minor_fraction, to_decimal, to_minor
from billing.stripe_gateway import StripeGateway
from licensing.models import Licence, PlanType
from marketplace.catalog.models import Plan
from marketplace.core.events import Actor, DomainEvent
from marketplace.core.settings import Settings
from marketplace.subscriptions.models import Subscription

#: How long after a month ends its usage is invoiced.
SETTLE_DELAY = timedelta(days=1)


class UsageSource(Protocol):
    """Where metered deliveries come from (delivery's ``DeliveryUsage``, wired in by the app)."""

    async def unbilled_ranges(
        self, session: AsyncSession, subscription_ids: Sequence[uuid.UUID]
    ) -> dict[uuid.UUID, tuple[datetime, datetime]]: ...

    async def claim(
        self, session: AsyncSession, subscription_id: uuid.UUID, start: datetime, end: datetime, at: datetime
    ) -> int: ...


_sources: list[UsageSource] = []


def use_source(source: UsageSource) -> None:
    """Set where usage comes from (the composition root calls this once)."""
    _sources[:] = [source]


def usage_source() -> UsageSource:
    """The usage source set by the app."""
    if not _sources:
        raise RuntimeError("no usage source: marketplace.app.connect_domains() wires delivery in")
    return _sources[0]


@dataclass(frozen=True)
class Pricing:
    """A metered plan's usage price for one subscription (minor units; the per-call price may have fractions)."""

    free_calls: int
    per_call: Decimal
    fee: int
    cap: Decimal | None

    def units(self, calls: int) -> int:
        """Calls charged for ``calls`` calls in a month."""
        units = max(0, calls - self.free_calls)
        if self.cap is not None and self.per_call > 0:
            room = max(Decimal(0), self.cap - self.fee)
            units = min(units, int((room / self.per_call).to_integral_value(rounding=ROUND_FLOOR)))
        return units

    def amount(self, calls: int) -> int:
        """The month's usage charge for ``calls`` calls."""
        return int((self.units(calls) * self.per_call).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def pricing(plan: Plan, subscription: Subscription) -> Pricing:
    """The usage price of a metered subscription, its reduction applied."""
    keep = Decimal(100 - subscription.reduction_percent) / 100
    currency = subscription.currency
    per_call = minor_fraction(plan.per_call_price or "0", currency) * keep
    cap = minor_fraction(plan.monthly_cap, currency) * keep if plan.monthly_cap else None
    return Pricing(free_calls=plan.free_calls, per_call=per_call, fee=to_minor(subscription.price, currency), cap=cap)


def _months(first: datetime, last: datetime) -> list[tuple[datetime, datetime]]:
    start = datetime(first.year, first.month, 1, tzinfo=UTC)
    months = []
    while start <= last:
        end = (
            datetime(start.year + 1, 1, 1, tzinfo=UTC)
            if start.month == 12
            else datetime(start.year, start.month + 1, 1, tzinfo=UTC)
        )
        months.append((start, end))
        start = end
    return months


async def _stripe_subscription(session: AsyncSession, subscription_id: uuid.UUID) -> str | None:
    found = (
        await session.exec(
            select(GatewayObject.external_id).where(
                GatewayObject.gateway == Gateway.stripe,
                GatewayObject.kind == "subscription",
                GatewayObject.local_key == str(subscription_id),
            )
        )
    ).first()
    return found


@dataclass
class UsageRun:
    """What one run did."""

    charges: int = 0
    calls: int = 0
    amount_minor: int = 0
    reported: int = 0
    invoices: int = 0


async def bill_usage(
    session: AsyncSession,
    now: datetime,
    settings: Settings,
    gateway: StripeGateway | None = None,
    *,
    after_commit: Callable[[UsageCharge], None] | None = None,
) -> UsageRun:
    """Charge every metered subscription's unbilled deliveries (up to ``now``), report Stripe charges, and invoice
    the usage of finished months paid by transfer. Safe to run again at any time (see the module docstring).
    ``after_commit`` is called after each charge is committed (tests stop a run there)."""
    run = UsageRun()
    if gateway is not None:
        run.reported += await report_pending(session, gateway, now)
    source = usage_source()
    metered = (
        await session.exec(
            select(Subscription, Plan)
            .join(Plan, col(Plan.id) == Subscription.plan_id)
            .where(Plan.type == PlanType.metered)
            .order_by(col(Subscription.number))
        )
    ).all()
    ranges = await source.unbilled_ranges(session, [s.id for s, _ in metered])
    for subscription, plan in metered:
        if subscription.id not in ranges:
            continue
        price = pricing(plan, subscription)
        stripe_subscription = await _stripe_subscription(session, subscription.id)
        for start, end in _months(*ranges[subscription.id]):
            calls = await source.claim(session, subscription.id, start, min(end, now + timedelta(microseconds=1)), now)
            if calls == 0:
                await session.rollback()
                continue
            month = f"{start.year:04d}-{start.month:02d}"
            before = int(
                (
                    await session.exec(
                        select(func.coalesce(func.sum(UsageCharge.calls), 0)).where(
                            UsageCharge.subscription_id == subscription.id, UsageCharge.month == month
                        )
                    )
                ).one()
            )
            charge = UsageCharge(
                subscription_id=subscription.id,
                month=month,
                calls=calls,
                billable_calls=price.units(before + calls) - price.units(before),
                currency=subscription.currency,
                amount_minor=price.amount(before + calls) - price.amount(before),
                gateway=Gateway.stripe if stripe_subscription else Gateway.invoice,
                reported_at=None,
                created_at=now,
            )
            charge.meter_event_identifier = f"usage-{charge.id}" if stripe_subscription else None
            session.add(charge)
            await session.flush()
            licence = await session.get(Licence, subscription.licence_id)
            assert licence is not None
            await ledger.record(
                session,
                DomainEvent(
                    "usage.billed",
                    Actor.of(None),
                    orgs=(subscription.buyer_org_id, subscription.operator_id, licence.owner_org_id),
                    subjects={"usage_charge": str(charge.id), "subscription": str(subscription.id), "licence": str(licence.id)},
                    payload={
                        "month": month,
                        "calls": calls,
                        "calls_before": before,
                        "billable_calls": charge.billable_calls,
                        "amount": to_decimal(charge.amount_minor, charge.currency),
                        "currency": charge.currency,
                        "gateway": charge.gateway.value,
                    },
                ),
            )
            await session.commit()
            run.charges += 1
            run.calls += calls
            run.amount_minor += charge.amount_minor
            if after_commit is not None:
                after_commit(charge)
    if gateway is not None:
        run.reported += await report_pending(session, gateway, now)
    run.invoices += await invoice_finished_months(session, settings, now)
    return run


async def report_pending(session: AsyncSession, gateway: StripeGateway, now: datetime) -> int:
    """Report every Stripe charge not reported yet to the meter (identifier = the charge's), then mark it."""
    from billing.services.stripe_checkout import METER_EVENT, customer_of

    pending = (
        await session.exec(
            select(UsageCharge, Subscription)
            .join(Subscription, col(Subscription.id) == UsageCharge.subscription_id)
            .where(UsageCharge.gateway == Gateway.stripe, col(UsageCharge.reported_at).is_(None))
            .order_by(col(UsageCharge.created_at))
        )
    ).all()
    reported = 0
    for charge, subscription in pending:
        if charge.billable_calls > 0:
            customer = await customer_of(session, gateway, subscription.buyer_org_id)
            await asyncio.to_thread(
                gateway.report_usage,
                event_name=METER_EVENT,
                customer_id=customer,
                value=charge.billable_calls,
                identifier=str(charge.meter_event_identifier),
                timestamp=int(now.timestamp()),
            )
        charge.reported_at = now
        session.add(charge)
        await session.commit()
        reported += 1
    return reported


async def invoice_finished_months(session: AsyncSession, settings: Settings, now: datetime) -> int:
    """Issue one usage invoice per subscription for each finished month whose charges (by transfer) are not invoiced
    yet; a month with nothing to pay is closed without an invoice. Idempotent (one usage invoice per month)."""
    # A month is invoiced a day after it ends, when the last meter flushes of its deliveries are long committed.
    settled = now - SETTLE_DELAY
    current = f"{settled.year:04d}-{settled.month:02d}"
    open_charges = (
        await session.exec(
            select(UsageCharge)
            .where(
                UsageCharge.gateway == Gateway.invoice,
                col(UsageCharge.invoice_id).is_(None),
                col(UsageCharge.reported_at).is_(None),
                UsageCharge.month < current,
            )
            .order_by(col(UsageCharge.subscription_id), col(UsageCharge.month))
        )
    ).all()
    groups: dict[tuple[uuid.UUID, str], list[UsageCharge]] = {}
    for charge in open_charges:
        groups.setdefault((charge.subscription_id, charge.month), []).append(charge)
    issued = 0
    for (subscription_id, month), charges in groups.items():
        subscription = await session.get(Subscription, subscription_id)
        assert subscription is not None
        plan = await session.get(Plan, subscription.plan_id)
        assert plan is not None
        amount = sum(c.amount_minor for c in charges)
        calls = sum(c.calls for c in charges)
        units = sum(c.billable_calls for c in charges)
        year, month_number = (int(part) for part in month.split("-"))
        start = datetime(year, month_number, 1, tzinfo=UTC)
        end = datetime(year + 1, 1, 1, tzinfo=UTC) if month_number == 12 else datetime(year, month_number + 1, 1, tzinfo=UTC)
        invoice_id = None
        late = (
            await session.exec(
                select(Invoice.id).where(
                    Invoice.subscription_id == subscription_id, Invoice.kind == InvoiceKind.usage, Invoice.period_start == start
                )
            )
        ).first()
        if late is not None:
            # Charges of a month already invoiced (deliveries that reached the ledger after the month was closed):
            # their own invoice, its period starting when they were charged.
            start = min(c.created_at for c in charges)
        if amount > 0:
            invoice = await issue_invoice(
                session,
                subscription,
                kind=InvoiceKind.usage,
                gateway=Gateway.invoice,
                lines=[
                    InvoiceLine(
                        description=f"{plan.name}: {calls} calls in {month}, {plan.free_calls} included, {units} charged",
                        description_zh=f"{plan.name_zh}\uff1a{month} 调用 {calls} 次\uff0c含 {plan.free_calls} 次\uff0c计费 {units} 次",
                        quantity=units,
                        unit_minor=int(pricing(plan, subscription).per_call.quantize(Decimal(1), rounding=ROUND_HALF_UP)),
                        amount_minor=amount,
                    )
                ],
                period_start=start,
                period_end=end,
                due_at=now + timedelta(days=settings.invoice_due_days),
                actor=Actor.of(None),
            )
            invoice_id = invoice.id
            issued += 1
        for charge in charges:
            charge.invoice_id = invoice_id
            charge.reported_at = now
            session.add(charge)
        await session.commit()
    return issued
