"""Daily rollups of the ledger for the dashboard and the operators' scorecards: a read model kept in step by
:func:`supervision.explorer.index_new_events`, in the same transaction as the index rows of the same entries (so a
batch is counted once or not at all: a batch another indexer finished first is rolled back whole).

``event_rollup``: per UTC day, event type and operator (the event's organisation of kind operator, from the
identity tables of ``marketplace.core``), with the product (money events only), the delivery mode (deliveries), the
currency and the declared purpose (subscription events): how many events, their amount in minor units (payments,
refunds, usage charges; for ``settlement.*`` the franchise fee), rows and bytes delivered.
``event_rollup_buyer``: per day, operator and buyer, how many events (distinct buyers of a period).

Every figure is kept twice, by ``span``: ``"d"`` rows per day and ``"m"`` rows per month (``day`` is then the
month's first day), so that a six-month question reads whole months from the ``"m"`` rows and only its partial
months' days from the ``"d"`` rows (:func:`span_clauses`). Empty dimensions are ``""`` (they are part of the
primary key).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from babel.numbers import get_currency_precision
from sqlalchemy import BigInteger, Column, Date, Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Field, SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from marketplace.core.identity.models import Organisation
from marketplace.core.principal import OrgKind

#: Events whose product the rollup keeps (revenue by product); for others the product is left out (fewer rows).
PRODUCT_TYPES = frozenset({"payment.received", "payment.refunded", "usage.billed", "invoice.issued"})
#: Purposes that count as public-welfare or research use.
WELFARE_PURPOSES = frozenset({"public_welfare", "academic_research"})


class EventRollup(SQLModel, table=True):
    """Counts and sums of a day's events of one type, operator, product, mode, currency and purpose."""

    __tablename__ = "event_rollup"

    span: str = Field(max_length=1, primary_key=True)
    day: date = Field(sa_column=Column(Date, primary_key=True))
    event_type: str = Field(max_length=80, primary_key=True)
    operator_id: str = Field(default="", max_length=36, primary_key=True)
    product_id: str = Field(default="", max_length=36, primary_key=True)
    mode: str = Field(default="", max_length=16, primary_key=True)
    currency: str = Field(default="", max_length=3, primary_key=True)
    purpose: str = Field(default="", max_length=40, primary_key=True)
    count: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    amount_minor: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    rows: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    bytes: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))


class EventRollupBuyer(SQLModel, table=True):
    """How many of a day's events of an operator concern a buyer (distinct buyers over a period)."""

    __tablename__ = "event_rollup_buyer"

    span: str = Field(max_length=1, primary_key=True)
    day: date = Field(sa_column=Column(Date, primary_key=True))
    operator_id: str = Field(max_length=36, primary_key=True)
    buyer_id: str = Field(max_length=36, primary_key=True)
    count: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))


KEY = ("span", "day", "event_type", "operator_id", "product_id", "mode", "currency", "purpose")
SUMS = ("count", "amount_minor", "rows", "bytes")


def to_minor(amount: Any, currency: str) -> int | None:
    """A decimal string of ``currency`` as an integer of minor units (None when it is not one)."""
    if not isinstance(amount, str):
        return None
    try:
        return int(Decimal(amount).scaleb(int(get_currency_precision(currency))).to_integral_value())
    except (InvalidOperation, ValueError, TypeError):
        return None


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


async def org_kinds(session: AsyncSession, ids: Iterable[str]) -> dict[str, str]:
    """The kinds of the organisations named (by their ids' text) that exist."""
    wanted: dict[uuid.UUID, str] = {}
    for text in ids:
        try:
            wanted[uuid.UUID(text)] = text
        except (ValueError, TypeError, AttributeError):
            continue
    if not wanted:
        return {}
    rows = (await session.exec(select(Organisation.id, Organisation.kind).where(col(Organisation.id).in_(list(wanted))))).all()
    return {wanted[org_id]: OrgKind(kind).value for org_id, kind in rows}


def _business_day(kind: str, payload: Mapping[str, Any]) -> date | None:
    """The day money arrived, for a payment recorded later than it was received (a bank transfer entered days
    after it reached the account): revenue over time is counted when it was received."""
    stated = payload.get("received_at") if kind == "payment.received" else None
    if not isinstance(stated, str):
        return None
    try:
        return datetime.fromisoformat(stated.replace("Z", "+00:00")).astimezone(UTC).date()
    except ValueError:
        return None


def rollup(events: Iterable[Mapping[str, Any]], kinds: Mapping[str, str]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The rollup rows of decoded ledger events (each with its ``occurred_at`` datetime), summed per key, by day and
    by month: rows of ``event_rollup`` and of ``event_rollup_buyer``. A payment counts on the day it was received
    (its ``received_at``), other events on the day they were recorded."""
    totals: dict[tuple[Any, ...], list[int]] = {}
    buyers: dict[tuple[Any, ...], int] = {}
    for event in events:
        kind = str(event["type"])
        orgs = [str(o) for o in event.get("orgs") or ()]
        operator = next((o for o in orgs if kinds.get(o) == OrgKind.operator.value), "")
        payload = event.get("payload") or {}
        subjects = event.get("subjects") or {}
        stated = payload.get("currency")
        currency = stated if isinstance(stated, str) and len(stated) == 3 else ""
        field = "franchise_fee" if kind.startswith("settlement.") else "amount"
        amount = (to_minor(payload.get(field), currency) if currency else None) or 0
        product = subjects.get("product") if kind in PRODUCT_TYPES else None
        mode = payload.get("mode") if kind.startswith("delivery.") else None
        purpose = payload.get("purpose") if kind.startswith("subscription.") else None
        day = _business_day(kind, payload) or event["occurred_at"].date()
        key = (
            day,
            kind[:80],
            operator,
            str(product)[:36] if product else "",
            str(mode)[:16] if mode else "",
            currency,
            str(purpose)[:40] if purpose else "",
        )
        sums = totals.setdefault(key, [0, 0, 0, 0])
        sums[0] += 1
        sums[1] += amount
        sums[2] += _count(payload.get("rows")) if mode else 0
        sums[3] += _count(payload.get("bytes")) if mode else 0
        if operator:
            for org in dict.fromkeys(orgs):
                if kinds.get(org) == OrgKind.buyer.value:
                    buyers[(day, operator, org)] = buyers.get((day, operator, org), 0) + 1
    monthly: dict[tuple[Any, ...], list[int]] = {}
    for key, sums in totals.items():
        into = monthly.setdefault((key[0].replace(day=1), *key[1:]), [0, 0, 0, 0])
        for n, value in enumerate(sums):
            into[n] += value
    monthly_buyers: dict[tuple[Any, ...], int] = {}
    for (day, operator, buyer), n in buyers.items():
        monthly_buyers[(day.replace(day=1), operator, buyer)] = monthly_buyers.get((day.replace(day=1), operator, buyer), 0) + n
    return (
        [
            dict(zip(KEY + SUMS, (span, *key, *sums), strict=True))
            for span, rows in (("d", totals), ("m", monthly))
            for key, sums in rows.items()
        ],
        [
            {"span": span, "day": d, "operator_id": o, "buyer_id": b, "count": n}
            for span, rows in (("d", buyers), ("m", monthly_buyers))
            for (d, o, b), n in rows.items()
        ],
    )


async def _upsert(session: AsyncSession, table: Table, rows: list[dict[str, Any]], keys: tuple[str, ...]) -> None:
    if not rows:
        return
    connection = await session.connection()
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(table)
    sums = [name for name in rows[0] if name not in keys]
    stmt = stmt.on_conflict_do_update(
        index_elements=list(keys), set_={name: table.c[name] + stmt.excluded[name] for name in sums}
    )
    await connection.execute(stmt, rows)


async def add_to_rollup(session: AsyncSession, events: list[dict[str, Any]]) -> None:
    """Add decoded ledger events (with ``occurred_at``) to the rollups, in the session's transaction."""
    ids = {str(o) for event in events for o in event.get("orgs") or ()}
    totals, buyers = rollup(events, await org_kinds(session, ids))
    await _upsert(session, EventRollup.__table__, totals, KEY)  # type: ignore[attr-defined]
    await _upsert(session, EventRollupBuyer.__table__, buyers, ("span", "day", "operator_id", "buyer_id"))  # type: ignore[attr-defined]


def _next_month(day: date) -> date:
    return date(day.year + day.month // 12, day.month % 12 + 1, 1)


def span_clauses(first: date, last: date, *, monthly: bool = True) -> list[tuple[str, date, date]]:
    """The days ``first``..``last`` as the fewest rollup rows: ``("m", first month, last month)`` for the whole
    months inside (when ``monthly``), ``("d", first day, last day)`` for the days of partial months."""
    if not monthly:
        return [("d", first, last)] if first <= last else []
    found: list[tuple[str, date, date]] = []
    cursor = first
    if cursor.day != 1:
        head_end = min(last, _next_month(cursor) - timedelta(days=1))
        found.append(("d", cursor, head_end))
        cursor = _next_month(cursor)
    months_from = cursor
    while cursor <= last and _next_month(cursor) - timedelta(days=1) <= last:
        cursor = _next_month(cursor)
    if cursor > months_from:
        found.append(("m", months_from, _previous_month(cursor)))
    if cursor <= last:
        found.append(("d", cursor, last))
    return found


def _previous_month(first_of_month: date) -> date:
    return (first_of_month - timedelta(days=1)).replace(day=1)
