"""Invoices and payments: checkout issues the first invoice of a paid subscription, a payment settles an invoice
(a bank transfer the operator records, or a Stripe payment seen by a webhook) and activates or renews the
subscription in the same transaction; renewals are invoiced before a period ends, and unpaid ones turn the
subscription past due with the plan's grace period.

Reads are scoped: a buyer sees its own invoices and payments, an operator those of its products, the owner those
under its licences, regulators all; an auditor only the invoices its firm's engagements in force cover (the
invoice's operator is covered and it was issued within the engagement's period, UTC days inclusive) and the
payments of those invoices. An auditor without an engagement in force is refused these reads (403
``outside_engagement``, recorded), and one invoice outside its engagements is refused (403, recorded) when it
exists, 404 otherwise.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, TypeVar

from sqlalchemy.exc import IntegrityError
from sqlmodel import col, func, select
from sqlmodel.ext.asyncio.session import AsyncSession
from sqlmodel.sql.expression import SelectOfScalar

import supervision.services as ledger
from billing.models import Gateway, Invoice, InvoiceKind, InvoiceStatus, Payment
from billing.services.money import to_decimal, to_minor
from licensing.models import Licence, PlanType
from marketplace.catalog.models import Plan, Product
from marketplace.core.errors import Conflict, Forbidden, InvalidInput, NotFound
from marketplace.core.events import Actor, DomainEvent
from marketplace.core.principal import OrgKind, Principal, Role
from marketplace.core.settings import Settings
from marketplace.core.types import utcnow
from marketplace.subscriptions import auditing
from marketplace.subscriptions import services as subscriptions
from marketplace.subscriptions.models import Subscription, SubscriptionStatus
from supervision.engagements import spans_in_force

T = TypeVar("T")

#: Parties that read every invoice and payment (read-only); auditors read those their engagements cover.
READS_ALL = frozenset({OrgKind.regulator})


@dataclass(frozen=True)
class InvoiceLine:
    """One line of an invoice (amounts in minor units)."""

    description: str
    description_zh: str
    quantity: int
    unit_minor: int
    amount_minor: int


def invoice_lines(invoice: Invoice) -> list[InvoiceLine]:
    """The lines of an invoice."""
    return [InvoiceLine(**line) for line in json.loads(invoice.lines_json)]


# --- scoping ---------------------------------------------------------------------------------------------------------


def covered_invoice_ids(principal: Principal) -> Any:
    """A select of the ids of the invoices the auditor's engagements in force cover: the invoice's operator is
    covered and it was issued (UTC day) within the engagement's period."""
    spans = spans_in_force(principal.org_id)
    issued_on = auditing.utc_day(col(Invoice.issued_at))
    return (
        select(Invoice.id)
        .join(spans, col(spans.c.operator_id) == col(Invoice.operator_id))
        .where(issued_on >= spans.c.period_start, issued_on <= spans.c.period_end)
    )


def scoped_billing(stmt: SelectOfScalar[T], principal: Principal, model: Any) -> SelectOfScalar[T]:
    """Invoices or payments the caller may see: a buyer its own, an operator those of its products, the owner those
    under its licences, regulators all, an auditor the invoices its engagements in force cover and their payments."""
    if principal.org_kind is OrgKind.buyer:
        return stmt.where(model.buyer_org_id == principal.org_id)
    if principal.org_kind is OrgKind.operator:
        return stmt.where(model.operator_id == principal.org_id)
    if principal.org_kind is OrgKind.owner:
        return stmt.where(model.owner_org_id == principal.org_id)
    if auditing.is_auditor(principal):
        covered = covered_invoice_ids(principal)
        return stmt.where(col(Invoice.id if model is Invoice else model.invoice_id).in_(covered))
    if principal.org_kind in READS_ALL:
        return stmt
    raise Forbidden("Not allowed.", code="party_not_allowed")


async def get_invoice(session: AsyncSession, principal: Principal, invoice_id: uuid.UUID) -> Invoice:
    """One invoice the caller may see (404 ``invoice_not_found`` otherwise: nothing is revealed; an auditor asking
    for one outside its engagements, or without an engagement in force: 403 ``outside_engagement``, recorded)."""
    found = (await session.exec(scoped_billing(select(Invoice).where(Invoice.id == invoice_id), principal, Invoice))).first()
    if found is None:
        exists = auditing.is_auditor(principal) and await session.get(Invoice, invoice_id) is not None
        await auditing.refuse_record(session, principal, auditing.record_path("billing/invoices", invoice_id), exists)
        raise NotFound("No such invoice.", code="invoice_not_found")
    return found


async def list_invoices(
    session: AsyncSession,
    principal: Principal,
    *,
    status: InvoiceStatus | None = None,
    subscription_id: uuid.UUID | None = None,
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[Invoice], int]:
    """Invoices the caller may see, newest first, with the total count (an auditor without an engagement in force:
    403 ``outside_engagement``, recorded)."""
    await auditing.require_engagement(session, principal, "/api/billing/invoices")
    stmt = scoped_billing(select(Invoice), principal, Invoice)
    if status is not None:
        stmt = stmt.where(Invoice.status == status)
    if subscription_id is not None:
        stmt = stmt.where(Invoice.subscription_id == subscription_id)
    total = (await session.exec(select(func.count()).select_from(stmt.subquery()))).one()
    rows = (
        await session.exec(stmt.order_by(col(Invoice.issued_at).desc(), col(Invoice.number).desc()).offset(offset).limit(limit))
    ).all()
    return list(rows), int(total)


async def payment_of(session: AsyncSession, invoice_id: uuid.UUID) -> Payment | None:
    """The payment that settled an invoice, if any."""
    return (await session.exec(select(Payment).where(Payment.invoice_id == invoice_id))).first()


# --- events ----------------------------------------------------------------------------------------------------------


def _orgs(record: Invoice | Payment) -> tuple[uuid.UUID, ...]:
    return (record.buyer_org_id, record.operator_id, record.owner_org_id)


async def record_invoice_event(session: AsyncSession, type_: str, actor: Actor, invoice: Invoice, **payload: Any) -> int:
    """Append an ``invoice.*`` event to the ledger in the caller's transaction; returns its index."""
    return await ledger.record(
        session,
        DomainEvent(
            type_,
            actor,
            orgs=_orgs(invoice),
            subjects={
                "invoice": str(invoice.id),
                "subscription": str(invoice.subscription_id),
                "product": str(invoice.product_id),
                "licence": str(invoice.licence_id),
            },
            payload={
                "number": invoice.number,
                "kind": invoice.kind.value,
                "gateway": invoice.gateway.value,
                "status": invoice.status.value,
                "amount": to_decimal(invoice.amount_minor, invoice.currency),
                "currency": invoice.currency,
                **payload,
            },
        ),
    )


# --- issuing ---------------------------------------------------------------------------------------------------------


async def _next_number(session: AsyncSession, prefix: str, column: Any) -> str:
    """``<prefix><six digits>``: one more than the highest with that prefix (fixed width, so text order is numeric)."""
    highest = (await session.exec(select(func.max(column)).where(col(column).startswith(prefix)))).one()
    tail = str(highest).removeprefix(prefix) if highest else "0"
    return f"{prefix}{(int(tail) if tail.isdigit() else 0) + 1:06d}"


#: ", renewal" in Chinese, written with escapes: the full-width comma looks like an ASCII one in code.
RENEWAL_ZH = "\uff0c续期"


def period_lines(plan: Plan, subscription: Subscription, kind: InvoiceKind) -> list[InvoiceLine]:
    """What a subscription's period costs: its (reduced) price, one line."""
    amount = to_minor(subscription.price, subscription.currency)
    label = {
        PlanType.one_off: ("one-off", "一次性"),
        PlanType.monthly: ("monthly", "按月"),
        PlanType.metered: ("monthly fee", "月费"),
    }.get(plan.type, (plan.type.value, plan.type.value))
    renewal = kind is InvoiceKind.renewal
    return [
        InvoiceLine(
            description=f"{plan.name} ({label[0]}{', renewal' if renewal else ''}) — subscription {subscription.number}",
            description_zh=f"{plan.name_zh}\uff08{label[1]}{RENEWAL_ZH if renewal else ''}\uff09— 订阅 {subscription.number}",
            quantity=1,
            unit_minor=amount,
            amount_minor=amount,
        )
    ]


async def issue_invoice(
    session: AsyncSession,
    subscription: Subscription,
    *,
    kind: InvoiceKind,
    gateway: Gateway,
    lines: Sequence[InvoiceLine],
    period_start: datetime,
    period_end: datetime,
    due_at: datetime,
    actor: Actor,
    created_by: uuid.UUID | None = None,
) -> Invoice:
    """Number and store an invoice for ``subscription`` and record ``invoice.issued`` (the caller commits)."""
    licence = await session.get(Licence, subscription.licence_id)
    assert licence is not None
    now = utcnow()
    invoice = Invoice(
        number=await _next_number(session, f"INV-{now.year}-", Invoice.number),
        gateway=gateway,
        kind=kind,
        buyer_org_id=subscription.buyer_org_id,
        operator_id=subscription.operator_id,
        owner_org_id=licence.owner_org_id,
        subscription_id=subscription.id,
        product_id=subscription.product_id,
        plan_id=subscription.plan_id,
        licence_id=subscription.licence_id,
        currency=subscription.currency,
        amount_minor=sum(line.amount_minor for line in lines),
        lines_json=json.dumps([asdict(line) for line in lines], ensure_ascii=False),
        period_start=period_start,
        period_end=period_end,
        issued_at=now,
        due_at=due_at,
        created_by=created_by,
    )
    session.add(invoice)
    await session.flush()
    invoice.ledger_index = await record_invoice_event(
        session,
        "invoice.issued",
        actor,
        invoice,
        due_at=due_at.isoformat(),
        period_start=period_start.isoformat(),
        period_end=period_end.isoformat(),
    )
    return invoice


async def issue_first_invoice(
    session: AsyncSession,
    subscription: Subscription,
    gateway: Gateway,
    *,
    due_in: timedelta,
    actor: Actor,
    created_by: uuid.UUID | None,
) -> Invoice:
    """The first invoice of a subscription: its (reduced) price for the plan's first period from now (the caller
    commits)."""
    _product, plan, _licence = await subscriptions.subscription_context(session, subscription)
    now = utcnow()
    return await issue_invoice(
        session,
        subscription,
        kind=InvoiceKind.subscription,
        gateway=gateway,
        lines=period_lines(plan, subscription, InvoiceKind.subscription),
        period_start=now,
        period_end=subscriptions.entitlement_until(plan, now),
        due_at=now + due_in,
        actor=actor,
        created_by=created_by,
    )


def _require_buyer_person(principal: Principal) -> None:
    if principal.org_kind is not OrgKind.buyer or principal.is_program:
        raise Forbidden("A person of the buyer organisation checks out.", code="party_not_allowed")


async def open_first_invoice(session: AsyncSession, subscription_id: uuid.UUID) -> Invoice | None:
    """The subscription's first invoice still to pay, if one was issued."""
    return (
        await session.exec(
            select(Invoice).where(
                Invoice.subscription_id == subscription_id,
                Invoice.kind == InvoiceKind.subscription,
                col(Invoice.status).in_([InvoiceStatus.open, InvoiceStatus.overdue]),
            )
        )
    ).first()


async def checkout_by_invoice(
    session: AsyncSession, principal: Principal, settings: Settings, subscription_id: uuid.UUID
) -> Invoice:
    """The buyer chooses to pay a ``pending_payment`` subscription by bank transfer: its first invoice is issued
    (due in ``settings.invoice_due_days``). Asking again answers the invoice already issued; an open invoice of
    another method is voided first. Refusals: ``subscription_not_found`` (404), ``subscription_not_payable`` (409)."""
    _require_buyer_person(principal)
    subscription = await _payable_subscription(session, principal, subscription_id)
    existing = await open_first_invoice(session, subscription.id)
    if existing is not None and existing.gateway is Gateway.invoice:
        return existing
    if existing is not None:
        await void_invoice(session, existing, Actor.of(principal), "The buyer chose to pay by bank transfer instead.")
    for attempt in range(5):
        try:
            invoice = await issue_first_invoice(
                session,
                subscription,
                Gateway.invoice,
                due_in=timedelta(days=settings.invoice_due_days),
                actor=Actor.of(principal),
                created_by=principal.user_id,
            )
            await session.commit()
            return invoice
        except IntegrityError:
            # Another invoice took the number at once (or a concurrent checkout issued this one): check again.
            await session.rollback()
            existing = await open_first_invoice(session, subscription.id)
            if existing is not None and existing.gateway is Gateway.invoice:
                return existing
            if attempt == 4:
                raise Conflict("Could not number the invoice; try again.", code="invoice_number_taken") from None
    raise AssertionError("unreachable")


async def _payable_subscription(session: AsyncSession, principal: Principal, subscription_id: uuid.UUID) -> Subscription:
    subscription: Subscription = await subscriptions.find_scoped(session, principal, subscription_id, lock=True)
    if subscription.status is not SubscriptionStatus.pending_payment:
        raise Conflict(
            f"Subscription {subscription.number} is {subscription.status.value}; only one pending payment is checked out.",
            code="subscription_not_payable",
            subscription_status=subscription.status.value,
        )
    return subscription


async def void_invoice(session: AsyncSession, invoice: Invoice, actor: Actor, reason: str) -> None:
    """Void an unpaid invoice (the caller commits)."""
    invoice.status = InvoiceStatus.void
    invoice.voided_at = utcnow()
    session.add(invoice)
    await record_invoice_event(session, "invoice.voided", actor, invoice, reason=reason)


# --- settling --------------------------------------------------------------------------------------------------------


async def settle_invoice(
    session: AsyncSession,
    invoice: Invoice,
    *,
    amount_minor: int,
    reference: str,
    received_at: datetime,
    actor: Actor,
    fee_minor: int | None = None,
    recorded_by: uuid.UUID | None = None,
    keep_past_due: bool = False,
) -> Payment:
    """Record the payment of ``invoice`` and give what it pays for, in the caller's transaction: the invoice is paid,
    the subscription activated (first invoice) or renewed to the invoice's period end, ``payment.received`` in
    the ledger. The caller commits. Refusals: ``invoice_not_payable`` (409: paid or void),
    ``amount_mismatch`` (400), ``payment_reference_used`` (409)."""
    if invoice.status not in (InvoiceStatus.open, InvoiceStatus.overdue):
        raise Conflict(
            f"Invoice {invoice.number} is {invoice.status.value}.",
            code="invoice_not_payable",
            invoice_status=invoice.status.value,
        )
    if amount_minor != invoice.amount_minor:
        raise InvalidInput(
            f"Invoice {invoice.number} is for {to_decimal(invoice.amount_minor, invoice.currency)} {invoice.currency}, "
            f"not {to_decimal(amount_minor, invoice.currency)}.",
            code="amount_mismatch",
            field="amount",
        )
    used = (
        await session.exec(select(Payment.id).where(Payment.gateway == invoice.gateway, Payment.reference == reference))
    ).first()
    if used is not None:
        raise Conflict("A payment with this reference is already recorded.", code="payment_reference_used", field="reference")
    invoice.status = InvoiceStatus.paid
    invoice.paid_at = received_at
    payment = Payment(
        invoice_id=invoice.id,
        subscription_id=invoice.subscription_id,
        buyer_org_id=invoice.buyer_org_id,
        operator_id=invoice.operator_id,
        owner_org_id=invoice.owner_org_id,
        licence_id=invoice.licence_id,
        gateway=invoice.gateway,
        currency=invoice.currency,
        amount_minor=amount_minor,
        fee_minor=fee_minor,
        reference=reference,
        received_at=received_at,
        recorded_by=recorded_by,
    )
    session.add_all([invoice, payment])
    await session.flush()
    if invoice.kind in (InvoiceKind.subscription, InvoiceKind.renewal):
        # A first payment starts the plan's period now; a renewal pays for the period it was issued for.
        paid_until = invoice.period_end if invoice.kind is InvoiceKind.renewal else None
        await subscriptions.activate_subscription(
            session, invoice.subscription_id, actor, paid_until=paid_until, commit=False, keep_past_due=keep_past_due
        )
    payment.ledger_index = await ledger.record(
        session,
        DomainEvent(
            "payment.received",
            actor,
            orgs=_orgs(payment),
            subjects={
                "payment": str(payment.id),
                "invoice": str(invoice.id),
                "subscription": str(invoice.subscription_id),
                "product": str(invoice.product_id),
                "licence": str(invoice.licence_id),
            },
            payload={
                "invoice_number": invoice.number,
                "gateway": payment.gateway.value,
                "amount": to_decimal(amount_minor, payment.currency),
                "currency": payment.currency,
                "fee": None if fee_minor is None else to_decimal(fee_minor, payment.currency),
                "reference": reference,
                "received_at": received_at.isoformat(),
            },
        ),
    )
    session.add(payment)
    return payment


def _require_operator_person(principal: Principal) -> None:
    if principal.org_kind is not OrgKind.operator or principal.is_program:
        raise Forbidden("A person of the operator records payments.", code="party_not_allowed")
    if principal.role not in (Role.admin, Role.member):
        raise Forbidden("Your role may not record payments.", code="role_not_allowed")


async def record_transfer(
    session: AsyncSession,
    principal: Principal,
    invoice_id: uuid.UUID,
    *,
    amount: str,
    reference: str,
    received_on: date | None = None,
) -> Payment:
    """The operator records a bank transfer received for one of its invoices: see :func:`settle_invoice`. Also
    ``invoice_not_found`` (404), ``not_a_transfer`` (409: a Stripe invoice is settled by Stripe), ``received_in_future``
    (400)."""
    _require_operator_person(principal)
    invoice = (
        await session.exec(scoped_billing(select(Invoice).where(Invoice.id == invoice_id), principal, Invoice).with_for_update())
    ).first()
    if invoice is None:
        raise NotFound("No such invoice.", code="invoice_not_found")
    if invoice.gateway is not Gateway.invoice:
        raise Conflict(f"Invoice {invoice.number} is paid through Stripe, not by transfer.", code="not_a_transfer")
    now = utcnow()
    received_at = now if received_on is None or received_on == now.date() else datetime.combine(received_on, time(12), UTC)
    if received_at > now:
        raise InvalidInput(
            "The transfer cannot have been received in the future.", code="received_in_future", field="received_on"
        )
    reference = reference.strip()
    if not reference:
        raise InvalidInput("Give the transfer's bank reference.", code="reference_required", field="reference")
    try:
        payment = await settle_invoice(
            session,
            invoice,
            amount_minor=to_minor(amount, invoice.currency),
            reference=reference,
            received_at=received_at,
            actor=Actor.of(principal),
            recorded_by=principal.user_id,
        )
        await session.commit()
    except IntegrityError:
        await session.rollback()
        raise Conflict("This invoice was settled at the same time; reload it.", code="invoice_not_payable") from None
    await session.refresh(payment)
    return payment


# --- renewals and overdue invoices (periodic) ------------------------------------------------------------------------


async def issue_renewals(session: AsyncSession, settings: Settings, now: datetime) -> list[uuid.UUID]:
    """Issue the renewal invoice of every active monthly or metered subscription paid by invoice whose period ends
    within ``settings.renewal_notice_days`` (due when the period ends). Idempotent: one invoice per subscription and
    period (a unique key), so a re-run issues nothing new."""
    horizon = now + timedelta(days=settings.renewal_notice_days)
    candidates = (
        await session.exec(
            select(Subscription, Plan)
            .join(Plan, col(Plan.id) == Subscription.plan_id)
            .where(
                Subscription.status == SubscriptionStatus.active,
                col(Plan.type).in_([PlanType.monthly, PlanType.metered]),
                col(Subscription.valid_until).is_not(None),
                col(Subscription.valid_until) <= horizon,
            )
            .order_by(col(Subscription.number))
        )
    ).all()
    issued: list[uuid.UUID] = []
    for subscription, plan in candidates:
        assert subscription.valid_until is not None
        last = (
            await session.exec(
                select(Invoice)
                .where(
                    Invoice.subscription_id == subscription.id,
                    col(Invoice.kind).in_([InvoiceKind.subscription, InvoiceKind.renewal]),
                )
                .order_by(col(Invoice.period_end).desc())
            )
        ).first()
        if last is None or last.gateway is not Gateway.invoice or last.period_end > subscription.valid_until:
            continue  # Stripe renews its own subscriptions; a later period is already invoiced
        start = subscription.valid_until
        invoice = await issue_invoice(
            session,
            subscription,
            kind=InvoiceKind.renewal,
            gateway=Gateway.invoice,
            lines=period_lines(plan, subscription, InvoiceKind.renewal),
            period_start=start,
            period_end=subscriptions.add_month(start),
            due_at=start,
            actor=Actor.of(None),
        )
        await session.commit()
        issued.append(invoice.id)
    return issued


async def mark_overdue(session: AsyncSession, now: datetime) -> list[uuid.UUID]:
    """Open invoices past their due date become ``overdue``; a renewal's subscription turns ``past_due`` with the
    plan's grace period (access until then). Idempotent."""
    due = (
        await session.exec(
            select(Invoice).where(Invoice.status == InvoiceStatus.open, Invoice.due_at < now).order_by(col(Invoice.number))
        )
    ).all()
    marked: list[uuid.UUID] = []
    for invoice in due:
        invoice.status = InvoiceStatus.overdue
        session.add(invoice)
        await record_invoice_event(session, "invoice.overdue", Actor.of(None), invoice, due_at=invoice.due_at.isoformat())
        if invoice.kind is InvoiceKind.renewal:
            await past_due_for(session, invoice.subscription_id, invoice.due_at, f"Invoice {invoice.number} is overdue.")
        await session.commit()
        marked.append(invoice.id)
    return marked


async def past_due_for(session: AsyncSession, subscription_id: uuid.UUID, since: datetime, reason: str) -> None:
    """Turn an active subscription past due with its plan's grace period counted from ``since`` (the caller commits)."""
    subscription = await session.get(Subscription, subscription_id)
    if subscription is None or subscription.status is not SubscriptionStatus.active:
        return
    plan = await session.get(Plan, subscription.plan_id)
    assert plan is not None
    await subscriptions.mark_past_due(
        session, subscription_id, Actor.of(None), grace_until=since + timedelta(days=plan.grace_days), reason=reason
    )


async def product_names(session: AsyncSession, product_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Product]:
    """Products by id (for invoice pages)."""
    if not product_ids:
        return {}
    rows = (await session.exec(select(Product).where(col(Product.id).in_(list(set(product_ids)))))).all()
    return {p.id: p for p in rows}
