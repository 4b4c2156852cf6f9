"""Reads for the billing pages: the payments the caller may see (with their invoices), the payments of given
invoices, money received and refunded per month, the franchise fee income per operator and month (from the
settlement statements), the operators an owner licenses, and organisation names.

Nothing here writes. Invoices, payments and refunds are scoped like every billing read
(:func:`billing.services.invoices.scoped_billing`), statements like :func:`billing.services.settlement.scoped_statements`.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from billing.models import Invoice, Payment, Refund, SettlementStatement, StatementStatus
from billing.services.invoices import scoped_billing
from billing.services.settlement import CLOSED, scoped_statements
from licensing.models import Licence
from marketplace.core.errors import Forbidden
from marketplace.core.identity.models import Organisation
from marketplace.core.principal import OrgKind, Principal
from marketplace.core.types import utcnow

#: The currency shown when nothing was received yet (plans are priced in CNY unless they say otherwise).
DEFAULT_CURRENCY = "CNY"


def month_labels(months: int, now: datetime | None = None) -> list[str]:
    """``YYYY-MM`` of the last ``months`` months (1 to 36), oldest first, the current month last."""
    months = max(1, min(months, 36))
    now = now or utcnow()
    year, month = now.year, now.month
    labels = []
    for _ in range(months):
        labels.append(f"{year:04d}-{month:02d}")
        year, month = (year - 1, 12) if month == 1 else (year, month - 1)
    return list(reversed(labels))


def _label(moment: datetime) -> str:
    return f"{moment.year:04d}-{moment.month:02d}"


def _month_start(label: str) -> datetime:
    year, month = (int(part) for part in label.split("-"))
    return utcnow().replace(year=year, month=month, day=1, hour=0, minute=0, second=0, microsecond=0)


# --- payments --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PaymentRow:
    """A payment with the invoice it settled."""

    payment: Payment
    invoice: Invoice

    @property
    def refundable_minor(self) -> int:
        """What is left to refund (minor units)."""
        return self.payment.amount_minor - self.payment.refunded_minor


async def list_payments(
    session: AsyncSession, principal: Principal, *, limit: int = 20, offset: int = 0
) -> tuple[list[PaymentRow], int]:
    """Payments the caller may see, newest received first, each with its invoice, and how many there are."""
    counted: Any = scoped_billing(select(Payment.id), principal, Payment)
    total = (await session.exec(select(func.count()).select_from(counted.subquery()))).one()
    columns: Any = select(Payment, Invoice).join(Invoice, col(Invoice.id) == Payment.invoice_id)
    stmt = (
        scoped_billing(columns, principal, Payment)
        .order_by(col(Payment.received_at).desc(), col(Payment.id))
        .offset(max(offset, 0))
        .limit(max(1, min(limit, 200)))
    )
    rows = (await session.exec(stmt)).all()
    return [PaymentRow(payment, invoice) for payment, invoice in rows], int(total)


async def payments_of_invoices(
    session: AsyncSession, principal: Principal, invoice_ids: Collection[uuid.UUID]
) -> dict[uuid.UUID, Payment]:
    """The payments (that the caller may see) settling the given invoices, by invoice id."""
    if not invoice_ids:
        return {}
    stmt = scoped_billing(select(Payment).where(col(Payment.invoice_id).in_(list(invoice_ids))), principal, Payment)
    return {payment.invoice_id: payment for payment in (await session.exec(stmt)).all()}


# --- money received per month ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MonthlyMoney:
    """Money received and refunded per month in one currency (minor units, aligned with ``months``)."""

    currency: str
    months: list[str]
    received_minor: list[int]
    refunded_minor: list[int]
    payments: list[int]

    @property
    def net_minor(self) -> list[int]:
        """Received less refunded, per month."""
        return [r - f for r, f in zip(self.received_minor, self.refunded_minor, strict=True)]


async def money_by_month(
    session: AsyncSession, principal: Principal, months: int = 6, *, now: datetime | None = None
) -> list[MonthlyMoney]:
    """Payments received (by the month they were received) and refunds (by the month they were made) over the last
    ``months`` months, the current one included, per currency, as far as the caller may see. At least one currency
    is answered (CNY, all zero, when nothing was received)."""
    labels = month_labels(months, now)
    index = {label: i for i, label in enumerate(labels)}
    start = _month_start(labels[0])
    received: Any = select(Payment.received_at, Payment.currency, Payment.amount_minor)
    received = scoped_billing(received, principal, Payment).where(col(Payment.received_at) >= start)
    refunded: Any = select(Refund.created_at, Refund.currency, Refund.amount_minor).join(
        Payment, col(Payment.id) == Refund.payment_id
    )
    refunded = scoped_billing(refunded, principal, Payment).where(col(Refund.created_at) >= start)
    sums: dict[str, dict[str, list[int]]] = defaultdict(
        lambda: {"received": [0] * len(labels), "refunded": [0] * len(labels), "payments": [0] * len(labels)}
    )
    for moment, currency, amount in (await session.exec(received)).all():
        if (i := index.get(_label(moment))) is not None:
            sums[currency]["received"][i] += int(amount)
            sums[currency]["payments"][i] += 1
    for moment, currency, amount in (await session.exec(refunded)).all():
        if (i := index.get(_label(moment))) is not None:
            sums[currency]["refunded"][i] += int(amount)
    if not sums:
        return [MonthlyMoney(DEFAULT_CURRENCY, labels, [0] * len(labels), [0] * len(labels), [0] * len(labels))]
    return [
        MonthlyMoney(currency, labels, figures["received"], figures["refunded"], figures["payments"])
        for currency, figures in sorted(sums.items())
    ]


# --- franchise fee income --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OperatorFees:
    """One operator's franchise fees per month (minor units, aligned with ``FeeIncome.months``)."""

    operator_id: uuid.UUID
    amounts_minor: list[int]
    statements: int


@dataclass(frozen=True)
class FeeIncome:
    """Franchise fees per operator and month in one currency, from the statements, with the monthly totals."""

    currency: str
    months: list[str]
    operators: list[OperatorFees]

    @property
    def totals_minor(self) -> list[int]:
        """Every operator's fees per month."""
        return [sum(o.amounts_minor[i] for o in self.operators) for i in range(len(self.months))]


async def fee_income_by_month(
    session: AsyncSession,
    principal: Principal,
    months: int = 6,
    *,
    statuses: Collection[StatementStatus] = CLOSED,
    now: datetime | None = None,
) -> list[FeeIncome]:
    """The franchise fee of each statement the caller may see (the owner: those owed to it) whose status is one of
    ``statuses`` (issued and acknowledged by default: drafts still change), by operator and statement period, over the
    last ``months`` months, per currency. At least one currency is answered (CNY, no operator, when none)."""
    labels = month_labels(months, now)
    index = {label: i for i, label in enumerate(labels)}
    columns: Any = select(
        SettlementStatement.operator_id,
        SettlementStatement.period,
        SettlementStatement.currency,
        SettlementStatement.franchise_fee_minor,
    )
    stmt = scoped_statements(columns, principal).where(
        col(SettlementStatement.period) >= labels[0], col(SettlementStatement.status).in_(list(statuses))
    )
    sums: dict[str, dict[uuid.UUID, list[int]]] = defaultdict(dict)
    counts: dict[tuple[str, uuid.UUID], int] = defaultdict(int)
    for operator_id, period, currency, fee in (await session.exec(stmt)).all():
        if (i := index.get(period)) is None:
            continue
        sums[currency].setdefault(operator_id, [0] * len(labels))[i] += int(fee)
        counts[(currency, operator_id)] += 1
    if not sums:
        return [FeeIncome(DEFAULT_CURRENCY, labels, [])]
    return [
        FeeIncome(
            currency,
            labels,
            [OperatorFees(operator_id, amounts, counts[(currency, operator_id)]) for operator_id, amounts in by_operator.items()],
        )
        for currency, by_operator in sorted(sums.items())
    ]


# --- organisations ---------------------------------------------------------------------------------------------------


async def licensed_operators(session: AsyncSession, principal: Principal) -> list[Organisation]:
    """The operators the caller settles with: the owner's licensees, the operator itself, every licensed operator
    for regulators and auditors. Buyers: 403 ``party_not_allowed``. Ordered by name."""
    if principal.org_kind is OrgKind.buyer:
        raise Forbidden("Buyers take no part in settlements.", code="party_not_allowed")
    licensed = select(Licence.operator_id)
    if principal.org_kind is OrgKind.owner:
        licensed = licensed.where(Licence.owner_org_id == principal.org_id)
    elif principal.org_kind is OrgKind.operator:
        licensed = licensed.where(Licence.operator_id == principal.org_id)
    stmt = select(Organisation).where(col(Organisation.id).in_(licensed)).order_by(col(Organisation.name))
    return list((await session.exec(stmt)).all())


async def organisations(session: AsyncSession, ids: Sequence[uuid.UUID] | set[uuid.UUID]) -> dict[uuid.UUID, Organisation]:
    """Organisations by id (the names of the counterparts of records the caller already holds)."""
    if not ids:
        return {}
    rows = (await session.exec(select(Organisation).where(col(Organisation.id).in_(list(set(ids)))))).all()
    return {org.id: org for org in rows}
