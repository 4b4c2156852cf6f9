"""The supervision dashboard: transactions and revenue over time, by operator and by product; deliveries by mode;
franchise fee income; the share of public-welfare and research use; open alerts; the ledger's size and last
checkpoint.

Figures come from the daily rollups of ``supervision/rollup.py`` (kept in step with the ledger by
``index_new_events``, which every dashboard read first runs), never from other domains' tables. Definitions:

- a transaction is a payment received (``payment.received``); revenue is what they carry (gross), less refunds
  (``payment.refunded``) for the net; money is per currency, as decimal strings;
- deliveries are ``delivery.recorded`` events, by mode (api, file, sandbox), with the rows and bytes delivered;
- franchise fee income is the ``franchise_fee`` of settlement statements issued (``settlement.issued``) in the period;
- public-welfare share: of the subscriptions activated in the period, those whose declared purpose is public welfare
  or academic research;
- open alerts: alerts whose state is ``open`` now (an auditor: of its operators, evidence within its periods).

An auditor sees its engagement only: its operators' figures, on the days of its periods (``rollup.operator_id`` is
the event's organisation of kind operator).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from babel.numbers import get_currency_precision
from sqlalchemy import ColumnElement, and_, false, or_, true
from sqlalchemy import select as sa_select
from sqlmodel import col, func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from marketplace.core.errors import InvalidInput
from marketplace.core.identity.models import Organisation
from marketplace.core.principal import Principal
from marketplace.core.types import utcnow
from supervision import services as ledger
from supervision.engagements import Scope, read_scope
from supervision.explorer import index_new_events
from supervision.models import SupervisionAlert
from supervision.rollup import WELFARE_PURPOSES, EventRollup, span_clauses

#: The longest period asked at once (days), and the longest shown day by day.
MAX_DAYS = 366
MAX_DAILY = 62
#: How many products the dashboard ranks.
TOP_PRODUCTS = 20
PAYMENT, REFUND, DELIVERY = "payment.received", "payment.refunded", "delivery.recorded"
SETTLEMENT, ACTIVATION = "settlement.issued", "subscription.activated"


@dataclass(frozen=True)
class Period:
    """Days ``start``..``end`` (UTC, inclusive), shown by ``bucket`` (``month`` or ``day``)."""

    start: date
    end: date
    bucket: str = "month"

    def buckets(self) -> list[date]:
        """The first day of every bucket of the period (the first one is the period's start)."""
        if self.bucket == "day":
            return [self.start + timedelta(days=n) for n in range((self.end - self.start).days + 1)]
        firsts, day = [self.start], _next_month(self.start)
        while day <= self.end:
            firsts.append(day)
            day = _next_month(day)
        return firsts

    def bucket_of(self, day: date) -> date:
        """The first day of the bucket ``day`` falls in."""
        if self.bucket == "day":
            return day
        return max(self.start, day.replace(day=1))


def _next_month(day: date) -> date:
    return date(day.year + day.month // 12, day.month % 12 + 1, 1)


def resolve_period(start: date | None, end: date | None, bucket: str | None = None, today: date | None = None) -> Period:
    """The period asked for; by default the last six months (this one and the five before), month by month.
    Refused: 400 ``period_reversed``, ``period_too_long`` (over 366 days, or over 62 days day by day)."""
    last = end or today or utcnow().date()
    first = start
    if first is None:
        month = last.month - 5
        first = date(last.year - (month <= 0), (month - 1) % 12 + 1, 1)
    if last < first:
        raise InvalidInput(f"The period ends ({last}) before it starts ({first}).", code="period_reversed")
    days = (last - first).days + 1
    if days > MAX_DAYS:
        raise InvalidInput(f"A period is at most {MAX_DAYS} days (asked: {days}).", code="period_too_long")
    chosen = bucket or "month"
    if chosen not in ("month", "day"):
        raise InvalidInput("bucket is month or day.", code="invalid_input", field="bucket")
    if chosen == "day" and days > MAX_DAILY:
        raise InvalidInput(f"Day by day, a period is at most {MAX_DAILY} days (asked: {days}).", code="period_too_long")
    return Period(first, last, chosen)


# --- scope -----------------------------------------------------------------------------------------------------------


def spans(scope: Scope | None, period: Period | None) -> list[tuple[str | None, date, date]]:
    """What may be read, as (operator or None for every one, first day, last day), clipped to ``period``."""
    if scope is None:
        return [(None, period.start, period.end)] if period else [(None, date.min, date.max)]
    found: list[tuple[str | None, date, date]] = []
    for operator, periods in scope.periods.items():
        for first, last in periods:
            if period is not None:
                first, last = max(first, period.start), min(last, period.end)
            if first <= last:
                found.append((str(operator), first, last))
    return found


def rollup_filter(
    allowed: list[tuple[str | None, date, date]], table: Any = EventRollup, *, monthly: bool = True
) -> ColumnElement[bool]:
    """The rollup rows (of ``event_rollup`` or ``event_rollup_buyer``) that add up to the days ``allowed``: whole
    months from the monthly rows (when ``monthly``), the other days from the daily ones."""
    clauses = [
        and_(
            true() if operator is None else col(table.operator_id) == operator,
            col(table.span) == span,
            col(table.day) >= first,
            col(table.day) <= last,
        )
        for operator, start, end in allowed
        for span, first, last in span_clauses(start, end, monthly=monthly)
    ]
    return or_(*clauses) if clauses else false()


def timed_filter(operator_column: Any, time_column: Any, allowed: list[tuple[str | None, date, date]]) -> ColumnElement[bool]:
    """Rows of a table with an operator id and a time inside ``allowed``."""
    if not allowed:
        return false()
    clauses = []
    for operator, first, last in allowed:
        parts = [] if operator is None else [operator_column == uuid.UUID(operator)]
        if first > date.min:
            parts.append(time_column >= day_start(first))
        if last < date.max - timedelta(days=1):
            parts.append(time_column < day_start(last + timedelta(days=1)))
        clauses.append(and_(true(), *parts))
    return or_(*clauses)


def day_start(day: date) -> datetime:
    """Midnight UTC at the start of ``day``."""
    return datetime.combine(day, time(), UTC)


# --- money -----------------------------------------------------------------------------------------------------------


def money(minor: int, currency: str) -> str:
    """Minor units as a decimal string with the currency's digits."""
    try:
        digits = int(get_currency_precision(currency))
    except (ValueError, TypeError):
        digits = 2
    return str(Decimal(minor).scaleb(-digits).quantize(Decimal(1).scaleb(-digits)))


def amounts(by_currency: dict[str, int]) -> dict[str, str]:
    """Per currency, decimal strings (currencies sorted)."""
    return {currency: money(minor, currency) for currency, minor in sorted(by_currency.items()) if currency}


def add_money(into: dict[str, int], currency: str, minor: int) -> None:
    """Add ``minor`` units of ``currency`` to a per-currency sum."""
    into[currency] = into.get(currency, 0) + int(minor or 0)


def welfare(by_purpose: dict[str, int]) -> dict[str, Any]:
    """Subscriptions activated by declared purpose, and the share of public-welfare and research ones."""
    total = sum(by_purpose.values())
    kept = sum(n for purpose, n in by_purpose.items() if purpose in WELFARE_PURPOSES)
    return {
        "subscriptions": total,
        "public_welfare_or_research": kept,
        "share": None if not total else str((Decimal(kept) / Decimal(total)).quantize(Decimal("0.0001"))),
        "by_purpose": dict(sorted(by_purpose.items())),
    }


async def operator_names(session: AsyncSession, ids: Iterable[str]) -> dict[str, str]:
    """Names of the organisations named by their ids' text."""
    wanted = []
    for text in ids:
        try:
            wanted.append(uuid.UUID(text))
        except ValueError:
            continue
    if not wanted:
        return {}
    rows = (await session.exec(select(Organisation.id, Organisation.name).where(col(Organisation.id).in_(wanted)))).all()
    return {str(org_id): name for org_id, name in rows}


async def fetch(session: AsyncSession, statement: Any) -> list[Any]:
    """The rows of a plain SQLAlchemy select (any number of columns), in the session's transaction."""
    result = await (await session.connection()).execute(statement)
    return list(result.all())


# --- the dashboard ---------------------------------------------------------------------------------------------------


async def dashboard(session: AsyncSession, scope: Scope | None, period: Period) -> dict[str, Any]:
    """The dashboard of ``period`` as ``scope`` lets its reader see it (None: everything)."""
    await index_new_events(session)
    allowed = spans(scope, period)
    # Day by day, only the daily rows fall in their day's bucket.
    where = rollup_filter(allowed, monthly=period.bucket == "month")
    r = EventRollup

    # Over time (and the period's totals, and deliveries by mode).
    rows = await fetch(
        session,
        sa_select(
            col(r.day),
            col(r.event_type),
            col(r.mode),
            col(r.currency),
            func.sum(r.count),
            func.sum(r.amount_minor),
            func.sum(r.rows),
            func.sum(r.bytes),
        )
        .where(col(r.event_type).in_((PAYMENT, REFUND, DELIVERY)), where)
        .group_by(col(r.day), col(r.event_type), col(r.mode), col(r.currency)),
    )
    series: dict[date, dict[str, Any]] = {
        first: {"transactions": 0, "gross": {}, "refunds": {}, "deliveries": {}} for first in period.buckets()
    }
    gross: dict[str, int] = {}
    refunds: dict[str, int] = {}
    transactions = refund_count = 0
    modes: dict[str, dict[str, int]] = {}
    for day, kind, mode, currency, count, amount, delivered_rows, delivered_bytes in rows:
        slot = series[period.bucket_of(day)]
        if kind == PAYMENT:
            slot["transactions"] += int(count)
            transactions += int(count)
            add_money(slot["gross"], currency, amount)
            add_money(gross, currency, amount)
        elif kind == REFUND:
            refund_count += int(count)
            add_money(slot["refunds"], currency, amount)
            add_money(refunds, currency, amount)
        else:
            name = mode or "unknown"
            slot["deliveries"][name] = slot["deliveries"].get(name, 0) + int(count)
            totals = modes.setdefault(name, {"deliveries": 0, "rows": 0, "bytes": 0})
            totals["deliveries"] += int(count)
            totals["rows"] += int(delivered_rows or 0)
            totals["bytes"] += int(delivered_bytes or 0)

    # By operator.
    per_operator: dict[str, dict[str, Any]] = {}
    for operator, kind, currency, count, amount in await fetch(
        session,
        sa_select(col(r.operator_id), col(r.event_type), col(r.currency), func.sum(r.count), func.sum(r.amount_minor))
        .where(col(r.event_type).in_((PAYMENT, REFUND, DELIVERY)), col(r.operator_id) != "", where)
        .group_by(col(r.operator_id), col(r.event_type), col(r.currency)),
    ):
        entry = per_operator.setdefault(operator, {"transactions": 0, "gross": {}, "refunds": {}, "deliveries": 0})
        if kind == PAYMENT:
            entry["transactions"] += int(count)
            add_money(entry["gross"], currency, amount)
        elif kind == REFUND:
            add_money(entry["refunds"], currency, amount)
        else:
            entry["deliveries"] += int(count)

    # By product (payments).
    per_product: dict[str, dict[str, Any]] = {}
    for product, currency, count, amount in await fetch(
        session,
        sa_select(col(r.product_id), col(r.currency), func.sum(r.count), func.sum(r.amount_minor))
        .where(col(r.event_type) == PAYMENT, col(r.product_id) != "", where)
        .group_by(col(r.product_id), col(r.currency)),
    ):
        entry = per_product.setdefault(product, {"transactions": 0, "gross": {}})
        entry["transactions"] += int(count)
        add_money(entry["gross"], currency, amount)
    ranked = sorted(per_product.items(), key=lambda item: (-item[1]["transactions"], item[0]))[:TOP_PRODUCTS]

    # Franchise fees and declared purposes.
    fees: dict[str, int] = {}
    purposes: dict[str, int] = {}
    for kind, currency, purpose, count, amount in await fetch(
        session,
        sa_select(col(r.event_type), col(r.currency), col(r.purpose), func.sum(r.count), func.sum(r.amount_minor))
        .where(col(r.event_type).in_((SETTLEMENT, ACTIVATION)), where)
        .group_by(col(r.event_type), col(r.currency), col(r.purpose)),
    ):
        if kind == SETTLEMENT:
            add_money(fees, currency, amount)
        else:
            purposes[purpose or "unknown"] = purposes.get(purpose or "unknown", 0) + int(count)

    # Open alerts, now.
    alert_filter = timed_filter(
        SupervisionAlert.operator_id, func.coalesce(SupervisionAlert.occurred_at, SupervisionAlert.created_at), spans(scope, None)
    )
    severities = dict(
        (
            await session.exec(
                select(SupervisionAlert.severity, func.count())
                .where(SupervisionAlert.state == "open", alert_filter)
                .group_by(SupervisionAlert.severity)
            )
        ).all()
    )

    size, root = await ledger.head(session)
    checkpoint = await ledger.latest_checkpoint(session)
    names = await operator_names(session, per_operator)
    return {
        "period": {"start": period.start.isoformat(), "end": period.end.isoformat(), "bucket": period.bucket},
        "scope": None if scope is None else scope.describe(),
        "totals": {
            "transactions": transactions,
            "gross": amounts(gross),
            "refunds": amounts(refunds),
            "refund_count": refund_count,
            "net": amounts({c: gross.get(c, 0) - refunds.get(c, 0) for c in set(gross) | set(refunds)}),
            "deliveries": sum(m["deliveries"] for m in modes.values()),
        },
        "series": [
            {
                "bucket": first.isoformat()[: 7 if period.bucket == "month" else 10],
                "start": first.isoformat(),
                "transactions": slot["transactions"],
                "gross": amounts(slot["gross"]),
                "refunds": amounts(slot["refunds"]),
                "deliveries": dict(sorted(slot["deliveries"].items())),
            }
            for first, slot in series.items()
        ],
        "by_operator": [
            {
                "operator_id": operator,
                "name": names.get(operator),
                "transactions": entry["transactions"],
                "gross": amounts(entry["gross"]),
                "refunds": amounts(entry["refunds"]),
                "deliveries": entry["deliveries"],
            }
            for operator, entry in sorted(per_operator.items(), key=lambda item: (-item[1]["transactions"], item[0]))
        ],
        "by_product": [
            {"product_id": product, "transactions": entry["transactions"], "gross": amounts(entry["gross"])}
            for product, entry in ranked
        ],
        "deliveries_by_mode": [{"mode": mode, **figures} for mode, figures in sorted(modes.items())],
        "franchise_fees": amounts(fees),
        "public_welfare": welfare(purposes),
        "alerts": {
            "open": sum(int(n) for n in severities.values()),
            "by_severity": {k: int(v) for k, v in sorted(severities.items())},
        },
        "ledger": {
            "size": size,
            "root": root.hex(),
            "checkpoint": None
            if checkpoint is None
            else {"size": checkpoint.size, "root": checkpoint.root_hash.hex(), "created_at": checkpoint.created_at.isoformat()},
        },
    }


async def read_dashboard(
    session: AsyncSession,
    principal: Principal,
    start: date | None,
    end: date | None,
    bucket: str | None,
    *,
    path: str,
    query: str = "",
) -> dict[str, Any]:
    """The dashboard for the caller: the owner and regulators see everything, an auditor its engagement (403
    ``outside_engagement``, recorded, without one); others 403. Bad periods: 400, nothing recorded."""
    period = resolve_period(start, end, bucket)
    scope = await read_scope(session, principal, path=path, query=query)
    return await dashboard(session, scope, period)
