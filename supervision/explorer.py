"""The transaction explorer: every ledger event, filterable by type, organisation, product, licence, subscription,
period and amount, newest first with keyset pagination; fast on millions of events.

It reads a read model of the ledger (DESIGN.md §3: supervision sees the other domains only through their events):
``event_index`` (one row per entry: type, time, the subjects it names, the amount it carries) and ``event_org``
(one row per organisation an event concerns), indexed for the filters; and the dashboard's daily rollups
(``supervision/rollup.py``), written in the same transaction. :func:`index_new_events` keeps them in step
with ``ledger_entry`` by index (idempotent, resumable); every explorer query first catches up, so an answer always
includes every event committed before it.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from babel.numbers import get_currency_precision
from sqlalchemy import BigInteger, Column, Index, and_, or_
from sqlalchemy.exc import IntegrityError
from sqlmodel import Field, SQLModel, col, func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from marketplace.core.db import insert_many
from marketplace.core.errors import Forbidden, InvalidInput
from marketplace.core.types import UTCDateTime
from supervision.engagements import Scope
from supervision.models import LedgerEntry
from supervision.rollup import add_to_rollup

#: Entries indexed per transaction while catching up.
BATCH = 5000
MAX_LIMIT = 200


class EventIndex(SQLModel, table=True):
    """One ledger entry, as the explorer filters it."""

    __tablename__ = "event_index"
    __table_args__ = (
        Index("ix_event_index_type_index", "event_type", "leaf_index"),
        Index("ix_event_index_time", "occurred_at"),
        Index("ix_event_index_product", "product_id", "leaf_index"),
        Index("ix_event_index_licence", "licence_id", "leaf_index"),
        Index("ix_event_index_subscription", "subscription_id", "leaf_index"),
    )

    leaf_index: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    event_type: str = Field(max_length=80)
    occurred_at: datetime = Field(sa_type=UTCDateTime)
    product_id: str | None = Field(default=None, max_length=36)
    licence_id: str | None = Field(default=None, max_length=36)
    subscription_id: str | None = Field(default=None, max_length=36)
    #: The event's ``amount`` in minor units of its ``currency`` (payments, invoices, refunds, usage), if any.
    amount_minor: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    currency: str | None = Field(default=None, max_length=3)


class EventOrg(SQLModel, table=True):
    """An organisation an indexed event concerns (with the event's time, so that "this organisation's events of
    this month" is one range of one index)."""

    __tablename__ = "event_org"
    __table_args__ = (
        Index("ix_event_org_org_index", "org_id", "leaf_index"),
        Index("ix_event_org_org_time", "org_id", "occurred_at"),
    )

    leaf_index: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    org_id: str = Field(max_length=36, primary_key=True)
    occurred_at: datetime = Field(sa_type=UTCDateTime)


def _amount(payload: dict[str, Any]) -> tuple[int | None, str | None]:
    currency = payload.get("currency")
    amount = payload.get("amount")
    if not isinstance(currency, str) or not isinstance(amount, str) or len(currency) != 3:
        return None, None
    try:
        digits = int(get_currency_precision(currency))
        return int(Decimal(amount).scaleb(digits).to_integral_value()), currency
    except (InvalidOperation, ValueError, TypeError):
        return None, None


async def index_new_events(session: AsyncSession, batch: int = BATCH) -> int:
    """Index the ledger entries not indexed yet, in batches of ``batch`` (each its own transaction). Returns how
    many were indexed. Safe to run at once from several places: a batch that another finished first is skipped."""
    done = 0
    while True:
        last = (await session.exec(select(func.max(EventIndex.leaf_index)))).one()
        start = -1 if last is None else int(last)
        rows = (
            await session.exec(
                select(LedgerEntry.leaf_index, LedgerEntry.leaf_input)
                .where(col(LedgerEntry.leaf_index) > start)
                .order_by(col(LedgerEntry.leaf_index))
                .limit(batch)
            )
        ).all()
        if not rows:
            return done
        events: list[dict[str, Any]] = []
        orgs: list[dict[str, Any]] = []
        decoded: list[dict[str, Any]] = []
        for index, leaf in rows:
            event = json.loads(leaf)
            decoded.append(event)
            subjects = event.get("subjects") or {}
            amount, currency = _amount(event.get("payload") or {})
            events.append(
                {
                    "leaf_index": index,
                    "event_type": event["type"],
                    "occurred_at": datetime.fromisoformat(event["time"].replace("Z", "+00:00")),
                    "product_id": subjects.get("product"),
                    "licence_id": subjects.get("licence"),
                    "subscription_id": subjects.get("subscription"),
                    "amount_minor": amount,
                    "currency": currency,
                }
            )
            moment = events[-1]["occurred_at"]
            event["occurred_at"] = moment
            orgs.extend(
                {"leaf_index": index, "org_id": org, "occurred_at": moment} for org in dict.fromkeys(event.get("orgs") or ())
            )
        try:
            await insert_many(session, EventIndex.__table__, events)  # type: ignore[attr-defined]
            await insert_many(session, EventOrg.__table__, orgs)  # type: ignore[attr-defined]
            await add_to_rollup(session, decoded)  # the dashboard's rollups, counted once with the index rows
            await session.commit()
        except IntegrityError:  # another indexer took this batch: carry on from what it wrote
            await session.rollback()
            continue
        done += len(rows)


@dataclass(frozen=True)
class EventFilter:
    """What the explorer is asked for (all optional)."""

    types: tuple[str, ...] = ()
    org: uuid.UUID | None = None
    product: uuid.UUID | None = None
    licence: uuid.UUID | None = None
    subscription: uuid.UUID | None = None
    start: date | None = None
    end: date | None = None
    min_amount: Decimal | None = None
    max_amount: Decimal | None = None
    currency: str = "CNY"


@dataclass(frozen=True)
class EventPage:
    """A page of events, newest first, and the cursor of the next (older) page."""

    items: list[dict[str, Any]]
    next_before: int | None


def _minor(amount: Decimal, currency: str) -> int:
    try:
        return int(amount.scaleb(int(get_currency_precision(currency))).to_integral_value())
    except (ValueError, TypeError):
        raise InvalidInput(f"Unknown currency {currency!r}.", code="invalid_input", field="currency") from None


async def explore(
    session: AsyncSession, scope: Scope | None, wanted: EventFilter, *, before: int | None = None, limit: int = 50
) -> EventPage:
    """One page of the events matching ``wanted`` (and, for an auditor, inside ``scope``), newest first, older than
    the ledger index ``before``. An organisation filter outside an auditor's scope is 403 ``outside_engagement``."""
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput(f"limit is between 1 and {MAX_LIMIT}.", code="invalid_input", field="limit")
    if wanted.start and wanted.end and wanted.end < wanted.start:
        raise InvalidInput("The period ends before it starts.", code="period_reversed")
    if scope is not None and wanted.org is not None and wanted.org not in scope.operator_ids:
        raise Forbidden("Your firm's engagements in force do not cover this organisation.", code="outside_engagement")
    await index_new_events(session)
    stmt = select(EventIndex.leaf_index)
    if wanted.org is not None:
        stmt = stmt.join(EventOrg, col(EventOrg.leaf_index) == EventIndex.leaf_index).where(EventOrg.org_id == str(wanted.org))
    if wanted.types:
        stmt = stmt.where(col(EventIndex.event_type).in_(wanted.types))
    for column, value in (
        (EventIndex.product_id, wanted.product),
        (EventIndex.licence_id, wanted.licence),
        (EventIndex.subscription_id, wanted.subscription),
    ):
        if value is not None:
            stmt = stmt.where(column == str(value))
    # With an organisation, the period is matched on event_org's own copy of the time (its index covers both).
    timed = EventOrg.occurred_at if wanted.org is not None else EventIndex.occurred_at
    if wanted.start is not None:
        stmt = stmt.where(timed >= _day_start(wanted.start))
    if wanted.end is not None:
        stmt = stmt.where(timed < _day_after(wanted.end))
    if wanted.min_amount is not None or wanted.max_amount is not None:
        stmt = stmt.where(EventIndex.currency == wanted.currency)
        if wanted.min_amount is not None:
            stmt = stmt.where(col(EventIndex.amount_minor) >= _minor(wanted.min_amount, wanted.currency))
        if wanted.max_amount is not None:
            stmt = stmt.where(col(EventIndex.amount_minor) <= _minor(wanted.max_amount, wanted.currency))
    if scope is not None:
        covered = [
            and_(
                col(EventOrg.org_id) == str(operator),
                col(EventIndex.occurred_at) >= _day_start(first),
                col(EventIndex.occurred_at) < _day_after(last),
            )
            for operator, periods in scope.periods.items()
            for first, last in periods
        ]
        in_scope = (
            select(EventOrg.leaf_index).join(EventIndex, col(EventIndex.leaf_index) == EventOrg.leaf_index).where(or_(*covered))
        )
        stmt = stmt.where(col(EventIndex.leaf_index).in_(in_scope))
    if before is not None:
        stmt = stmt.where(col(EventIndex.leaf_index) < before)
    indices = list((await session.exec(stmt.order_by(col(EventIndex.leaf_index).desc()).limit(limit + 1))).all())
    more = len(indices) > limit
    indices = indices[:limit]
    leaves = (
        dict(
            (
                await session.exec(
                    select(LedgerEntry.leaf_index, LedgerEntry.leaf_input).where(col(LedgerEntry.leaf_index).in_(indices))
                )
            ).all()
        )
        if indices
        else {}
    )
    return EventPage(items=[{**json.loads(leaves[i]), "index": i} for i in indices], next_before=indices[-1] if more else None)


def _day_start(day: date) -> datetime:
    return datetime.combine(day, time(), UTC)


def _day_after(day: date) -> datetime:
    return _day_start(day + timedelta(days=1))
