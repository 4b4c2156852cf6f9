"""Settlement with the owner: per operator, month and currency, what was received (gross), given back (refunds),
charged by the gateway (payment fees, where known), the franchise fee owed to the owner at each licence's rate,
and the operator's net. Statements are ``draft -> issued -> acknowledged``; a draft is computed again on each run,
an issued month is closed.

The franchise fee of a licence is ``round_half_up((gross - refunds) * fee_rate)`` in minor units, per licence, and
the statement's fee is their sum. A payment counts in the month it was received, a refund in the month it was made.

Statements are read by their operator, the owner they are owed to and regulators; an auditor reads only the
statements its firm's engagements in force cover: the statement's operator is covered and its month overlaps the
engagement's period. An auditor without an engagement in force is refused these reads (403 ``outside_engagement``,
recorded), and one statement outside its engagements is refused (403, recorded) when it exists, 404 otherwise.
"""

from __future__ import annotations

import csv
import io
import json
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession
from sqlmodel.sql.expression import SelectOfScalar

import supervision.services as ledger
from billing.models import Invoice, InvoiceStatus, Payment, Refund, SettlementStatement, StatementStatus
from billing.services.money import share, to_decimal
from licensing.models import Licence
from marketplace.core.errors import Conflict, Forbidden, InvalidInput, NotFound
from marketplace.core.events import Actor, DomainEvent
from marketplace.core.identity.models import Organisation
from marketplace.core.principal import OrgKind, Principal, Role
from marketplace.core.types import utcnow
from marketplace.subscriptions import auditing
from supervision.engagements import spans_in_force

T = TypeVar("T")

CLOSED = frozenset({StatementStatus.issued, StatementStatus.acknowledged})


@dataclass
class LicenceFigures:
    """One licence's part of a statement (minor units)."""

    licence_id: str
    licence_number: str
    fee_rate: str
    gross_minor: int = 0
    refunds_minor: int = 0
    fees_minor: int = 0
    franchise_fee_minor: int = 0
    payments: int = 0
    refunds: int = 0


@dataclass
class Figures:
    """A statement's figures before they are stored."""

    operator_id: uuid.UUID
    owner_org_id: uuid.UUID
    period: str
    currency: str
    lines: list[LicenceFigures] = field(default_factory=list)
    mismatches: list[dict[str, Any]] = field(default_factory=list)

    @property
    def gross_minor(self) -> int:
        return sum(line.gross_minor for line in self.lines)

    @property
    def refunds_minor(self) -> int:
        return sum(line.refunds_minor for line in self.lines)

    @property
    def fees_minor(self) -> int:
        return sum(line.fees_minor for line in self.lines)

    @property
    def franchise_fee_minor(self) -> int:
        return sum(line.franchise_fee_minor for line in self.lines)

    @property
    def net_minor(self) -> int:
        return self.gross_minor - self.refunds_minor - self.fees_minor - self.franchise_fee_minor


def month_bounds(period: str) -> tuple[datetime, datetime]:
    """The first instant of ``YYYY-MM`` and of the month after (UTC); 400 ``invalid_period`` otherwise."""
    try:
        year, month = (int(part) for part in period.split("-"))
        start = datetime(year, month, 1, tzinfo=UTC)
    except (ValueError, TypeError):
        raise InvalidInput(f"{period!r} is not a month (YYYY-MM).", code="invalid_period", field="period") from None
    if len(period) != 7:
        raise InvalidInput(f"{period!r} is not a month (YYYY-MM).", code="invalid_period", field="period")
    end = datetime(year + 1, 1, 1, tzinfo=UTC) if month == 12 else datetime(year, month + 1, 1, tzinfo=UTC)
    return start, end


#: Reconciliation against the gateway's own records: given the payments of a statement, the differences found.
Reconciler = Callable[[Sequence[Payment]], Awaitable[list[dict[str, Any]]]]


async def compute(
    session: AsyncSession, operator_id: uuid.UUID, period: str, reconcile: Reconciler | None = None
) -> list[Figures]:
    """The figures of every currency an operator received money in during ``period`` (nothing written)."""
    start, end = month_bounds(period)
    payments = (
        await session.exec(
            select(Payment)
            .where(Payment.operator_id == operator_id, Payment.received_at >= start, Payment.received_at < end)
            .order_by(col(Payment.received_at))
        )
    ).all()
    refunds = (
        await session.exec(
            select(Refund, Payment)
            .join(Payment, col(Payment.id) == Refund.payment_id)
            .where(Refund.operator_id == operator_id, Refund.created_at >= start, Refund.created_at < end)
        )
    ).all()
    licence_ids = {p.licence_id for p in payments} | {p.licence_id for _, p in refunds}
    licences = {lic.id: lic for lic in (await session.exec(select(Licence).where(col(Licence.id).in_(list(licence_ids))))).all()}
    by_currency: dict[str, dict[uuid.UUID, LicenceFigures]] = defaultdict(dict)

    def line(currency: str, licence_id: uuid.UUID) -> LicenceFigures:
        lines = by_currency[currency]
        if licence_id not in lines:
            licence = licences[licence_id]
            lines[licence_id] = LicenceFigures(str(licence.id), licence.number, licence.fee_rate)
        return lines[licence_id]

    for payment in payments:
        figures = line(payment.currency, payment.licence_id)
        figures.gross_minor += payment.amount_minor
        figures.fees_minor += payment.fee_minor or 0
        figures.payments += 1
    for refund, payment in refunds:
        figures = line(refund.currency, payment.licence_id)
        figures.refunds_minor += refund.amount_minor
        figures.refunds += 1
    owner_of = {lic.id: lic.owner_org_id for lic in licences.values()}
    result = []
    for currency, lines in sorted(by_currency.items()):
        for figures in lines.values():
            figures.franchise_fee_minor = share(figures.gross_minor - figures.refunds_minor, figures.fee_rate)
        owners = {owner_of[uuid.UUID(f.licence_id)] for f in lines.values()}
        statement = Figures(
            operator_id=operator_id,
            owner_org_id=sorted(owners, key=str)[0],
            period=period,
            currency=currency,
            lines=sorted(lines.values(), key=lambda f: f.licence_number),
        )
        currency_payments = [p for p in payments if p.currency == currency]
        statement.mismatches = await _reconcile_invoices(session, currency_payments, start, end, operator_id, currency)
        if reconcile is not None:
            statement.mismatches += await reconcile(currency_payments)
        result.append(statement)
    return result


async def _reconcile_invoices(
    session: AsyncSession, payments: Sequence[Payment], start: datetime, end: datetime, operator_id: uuid.UUID, currency: str
) -> list[dict[str, Any]]:
    """Every payment settles a paid invoice of the same amount, and every invoice paid in the month has its payment."""
    mismatches: list[dict[str, Any]] = []
    invoices = {
        inv.id: inv
        for inv in (
            await session.exec(
                select(Invoice).where(
                    Invoice.operator_id == operator_id,
                    Invoice.currency == currency,
                    Invoice.status == InvoiceStatus.paid,
                    col(Invoice.paid_at) >= start,
                    col(Invoice.paid_at) < end,
                )
            )
        ).all()
    }
    paid_invoice_ids = set()
    for payment in payments:
        paid_invoice_ids.add(payment.invoice_id)
        invoice = invoices.get(payment.invoice_id) or await session.get(Invoice, payment.invoice_id)
        if invoice is None or invoice.status is not InvoiceStatus.paid:
            mismatches.append(
                {"kind": "payment_without_paid_invoice", "payment": str(payment.id), "reference": payment.reference}
            )
        elif invoice.amount_minor != payment.amount_minor:
            mismatches.append(
                {
                    "kind": "amount_differs",
                    "payment": str(payment.id),
                    "invoice": invoice.number,
                    "invoice_amount": to_decimal(invoice.amount_minor, currency),
                    "payment_amount": to_decimal(payment.amount_minor, currency),
                }
            )
    for invoice in invoices.values():
        if invoice.id not in paid_invoice_ids:
            mismatches.append({"kind": "paid_invoice_without_payment_in_month", "invoice": invoice.number})
    return mismatches


# --- statements ------------------------------------------------------------------------------------------------------


def covered_statement_ids(principal: Principal) -> Any:
    """A select of the ids of the statements the auditor's engagements in force cover: the statement's operator is
    covered and its month (``YYYY-MM``) overlaps the engagement's period."""
    spans = spans_in_force(principal.org_id)
    return (
        select(SettlementStatement.id)
        .join(spans, col(spans.c.operator_id) == col(SettlementStatement.operator_id))
        .where(
            col(SettlementStatement.period) >= auditing.year_month(spans.c.period_start),
            col(SettlementStatement.period) <= auditing.year_month(spans.c.period_end),
        )
    )


def scoped_statements(stmt: SelectOfScalar[T], principal: Principal) -> SelectOfScalar[T]:
    """Statements the caller may see: an operator its own, the owner those owed to it, regulators all, an auditor
    those its engagements in force cover."""
    if principal.org_kind is OrgKind.operator:
        return stmt.where(SettlementStatement.operator_id == principal.org_id)
    if principal.org_kind is OrgKind.owner:
        return stmt.where(SettlementStatement.owner_org_id == principal.org_id)
    if auditing.is_auditor(principal):
        return stmt.where(col(SettlementStatement.id).in_(covered_statement_ids(principal)))
    if principal.org_kind is OrgKind.regulator:
        return stmt
    raise Forbidden("Not allowed.", code="party_not_allowed")


async def operator_names(session: AsyncSession, statements: Sequence[SettlementStatement]) -> dict[uuid.UUID, str]:
    """The names of the statements' operators."""
    ids = list({s.operator_id for s in statements})
    if not ids:
        return {}
    rows = (await session.exec(select(Organisation).where(col(Organisation.id).in_(ids)))).all()
    return {org.id: org.name for org in rows}


async def list_statements(
    session: AsyncSession, principal: Principal, *, period: str | None = None, status: StatementStatus | None = None
) -> list[SettlementStatement]:
    """Statements the caller may see, newest period first (an auditor without an engagement in force: 403
    ``outside_engagement``, recorded)."""
    await auditing.require_engagement(session, principal, "/api/billing/settlements")
    stmt = scoped_statements(select(SettlementStatement), principal)
    if period is not None:
        month_bounds(period)
        stmt = stmt.where(SettlementStatement.period == period)
    if status is not None:
        stmt = stmt.where(SettlementStatement.status == status)
    rows = (
        await session.exec(stmt.order_by(col(SettlementStatement.period).desc(), col(SettlementStatement.number)).limit(500))
    ).all()
    return list(rows)


async def get_statement(session: AsyncSession, principal: Principal, statement_id: uuid.UUID) -> SettlementStatement:
    """One statement the caller may see (404 ``statement_not_found``; an auditor asking for one outside its
    engagements, or without an engagement in force: 403 ``outside_engagement``, recorded)."""
    found = (
        await session.exec(
            scoped_statements(select(SettlementStatement).where(SettlementStatement.id == statement_id), principal)
        )
    ).first()
    if found is None:
        exists = auditing.is_auditor(principal) and await session.get(SettlementStatement, statement_id) is not None
        await auditing.refuse_record(session, principal, auditing.record_path("billing/settlements", statement_id), exists)
        raise NotFound("No such settlement statement.", code="statement_not_found")
    return found


def _statement_event(type_: str, actor: Actor, statement: SettlementStatement, **payload: Any) -> DomainEvent:
    return DomainEvent(
        type_,
        actor,
        orgs=(statement.operator_id, statement.owner_org_id),
        subjects={"statement": str(statement.id)},
        payload={
            "number": statement.number,
            "period": statement.period,
            "currency": statement.currency,
            "gross": to_decimal(statement.gross_minor, statement.currency),
            "refunds": to_decimal(statement.refunds_minor, statement.currency),
            "payment_fees": to_decimal(statement.fees_minor, statement.currency),
            "franchise_fee": to_decimal(statement.franchise_fee_minor, statement.currency),
            "net": to_decimal(statement.net_minor, statement.currency),
            "status": statement.status.value,
            **payload,
        },
    )


async def run_settlement(
    session: AsyncSession, operator_id: uuid.UUID, period: str, actor: Actor, reconcile: Reconciler | None = None
) -> list[SettlementStatement]:
    """Compute (or compute again) the draft statements of an operator's month. Refused with 409 ``period_closed``
    when a statement of that month is already issued; a draft whose figures did not change is left as it is (so a
    re-run records nothing new)."""
    existing = {
        s.currency: s
        for s in (
            await session.exec(
                select(SettlementStatement)
                .where(SettlementStatement.operator_id == operator_id, SettlementStatement.period == period)
                .with_for_update()
            )
        ).all()
    }
    closed = [s for s in existing.values() if s.status in CLOSED]
    if closed:
        raise Conflict(
            f"The statement {closed[0].number} of {period} is {closed[0].status.value}: the month is closed.",
            code="period_closed",
        )
    start, _end = month_bounds(period)
    if start >= utcnow():
        raise InvalidInput(f"{period} has not started yet.", code="invalid_period", field="period")
    results = []
    for figures in await compute(session, operator_id, period, reconcile):
        values: dict[str, Any] = {
            "owner_org_id": figures.owner_org_id,
            "gross_minor": figures.gross_minor,
            "refunds_minor": figures.refunds_minor,
            "fees_minor": figures.fees_minor,
            "franchise_fee_minor": figures.franchise_fee_minor,
            "net_minor": figures.net_minor,
            "payments": sum(line.payments for line in figures.lines),
            "refunds": sum(line.refunds for line in figures.lines),
            "lines_json": json.dumps([asdict(line) for line in figures.lines]),
            "mismatches_json": json.dumps(figures.mismatches),
        }
        statement = existing.get(figures.currency)
        if statement is not None and all(getattr(statement, key) == value for key, value in values.items()):
            results.append(statement)
            continue
        if statement is None:
            statement = SettlementStatement(
                number=f"STM-{period}-{str(operator_id)[:8].upper()}-{figures.currency}",
                operator_id=operator_id,
                period=period,
                currency=figures.currency,
                **values,
            )
        else:
            for key, value in values.items():
                setattr(statement, key, value)
        statement.computed_at = utcnow()
        session.add(statement)
        await session.flush()
        statement.ledger_index = await ledger.record(
            session, _statement_event("settlement.computed", actor, statement, mismatches=len(figures.mismatches))
        )
        results.append(statement)
    try:
        await session.commit()
    except IntegrityError:
        await session.rollback()
        raise Conflict("The month was settled at the same time; reload.", code="settlement_in_progress") from None
    return results


async def settle_operator_month(
    session: AsyncSession,
    principal: Principal,
    period: str,
    operator_id: uuid.UUID | None = None,
    reconcile: Reconciler | None = None,
) -> list[SettlementStatement]:
    """An operator (its own) or the owner (any operator under its licences) computes a month's drafts."""
    if principal.is_program or principal.role is not Role.admin:
        raise Forbidden("An administrator computes settlements.", code="role_not_allowed")
    if principal.org_kind is OrgKind.operator:
        target = principal.org_id
    elif principal.org_kind is OrgKind.owner:
        if operator_id is None:
            raise InvalidInput("Name the operator to settle.", code="operator_required", field="operator_id")
        licensed = (
            await session.exec(
                select(Licence.id).where(Licence.owner_org_id == principal.org_id, Licence.operator_id == operator_id)
            )
        ).first()
        if licensed is None:
            raise NotFound("No operator of yours has this id.", code="operator_not_found")
        target = operator_id
    else:
        raise Forbidden("Only the operator or the owner settles.", code="party_not_allowed")
    return await run_settlement(session, target, period, Actor.of(principal), reconcile)


async def issue_statement(session: AsyncSession, principal: Principal, statement_id: uuid.UUID) -> SettlementStatement:
    """The operator's administrator issues a draft to the owner (``issued``; the month is closed)."""
    if principal.org_kind is not OrgKind.operator or principal.is_program or principal.role is not Role.admin:
        raise Forbidden("An administrator of the operator issues statements.", code="role_not_allowed")
    return await _move(session, principal, statement_id, StatementStatus.draft, StatementStatus.issued, "settlement.issued")


async def acknowledge_statement(session: AsyncSession, principal: Principal, statement_id: uuid.UUID) -> SettlementStatement:
    """The owner's administrator acknowledges an issued statement."""
    if principal.org_kind is not OrgKind.owner or principal.is_program or principal.role is not Role.admin:
        raise Forbidden("An administrator of the owner acknowledges statements.", code="role_not_allowed")
    return await _move(
        session, principal, statement_id, StatementStatus.issued, StatementStatus.acknowledged, "settlement.acknowledged"
    )


async def _move(
    session: AsyncSession,
    principal: Principal,
    statement_id: uuid.UUID,
    source: StatementStatus,
    target: StatementStatus,
    event_type: str,
) -> SettlementStatement:
    statement = (
        await session.exec(
            scoped_statements(
                select(SettlementStatement).where(SettlementStatement.id == statement_id), principal
            ).with_for_update()
        )
    ).first()
    if statement is None:
        raise NotFound("No such settlement statement.", code="statement_not_found")
    if statement.status is not source:
        raise Conflict(
            f"Statement {statement.number} is {statement.status.value}, not {source.value}.",
            code="statement_not_" + source.value,
        )
    now = utcnow()
    statement.status = target
    if target is StatementStatus.issued:
        statement.issued_at, statement.issued_by = now, principal.user_id
    else:
        statement.acknowledged_at, statement.acknowledged_by = now, principal.user_id
    session.add(statement)
    await session.flush()
    await ledger.record(session, _statement_event(event_type, Actor.of(principal), statement))
    await session.commit()
    await session.refresh(statement)
    return statement


async def settle_last_month(session: AsyncSession, now: datetime, reconcile: Reconciler | None = None) -> int:
    """Periodic: draft statements of the month before ``now`` for every operator that received or refunded money;
    closed months are left alone. Returns how many statements were computed or confirmed."""
    first = datetime(now.year, now.month, 1, tzinfo=UTC)
    previous = (
        datetime(first.year - 1, 12, 1, tzinfo=UTC) if first.month == 1 else datetime(first.year, first.month - 1, 1, tzinfo=UTC)
    )
    period = f"{previous.year:04d}-{previous.month:02d}"
    operators = (
        await session.exec(select(Organisation.id).where(Organisation.kind == OrgKind.operator).order_by(col(Organisation.id)))
    ).all()
    count = 0
    for operator_id in operators:
        try:
            count += len(await run_settlement(session, operator_id, period, Actor.of(None), reconcile))
        except Conflict:
            await session.rollback()
    return count


# --- exports ---------------------------------------------------------------------------------------------------------


def statement_csv(statement: SettlementStatement, operator_name: str) -> str:
    """The statement as CSV: one row per licence and a total row (amounts as decimal strings)."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(
        [
            "statement",
            "operator",
            "period",
            "currency",
            "licence",
            "fee_rate",
            "payments",
            "gross",
            "refunds",
            "payment_fees",
            "franchise_fee",
            "net",
        ]
    )
    c = statement.currency
    for line in json.loads(statement.lines_json):
        net = line["gross_minor"] - line["refunds_minor"] - line["fees_minor"] - line["franchise_fee_minor"]
        writer.writerow(
            [
                statement.number,
                operator_name,
                statement.period,
                c,
                line["licence_number"],
                line["fee_rate"],
                line["payments"],
                to_decimal(line["gross_minor"], c),
                to_decimal(line["refunds_minor"], c),
                to_decimal(line["fees_minor"], c),
                to_decimal(line["franchise_fee_minor"], c),
                to_decimal(net, c),
            ]
        )
    writer.writerow(
        [
            statement.number,
            operator_name,
            statement.period,
            c,
            "TOTAL",
            "",
            statement.payments,
            to_decimal(statement.gross_minor, c),
            to_decimal(statement.refunds_minor, c),
            to_decimal(statement.fees_minor, c),
            to_decimal(statement.franchise_fee_minor, c),
            to_decimal(statement.net_minor, c),
        ]
    )
    return out.getvalue()
