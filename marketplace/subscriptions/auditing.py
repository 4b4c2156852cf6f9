"""What an auditor may read of subscriptions and buyer qualifications: only inside its firm's engagements in force
(DESIGN.md §2), as :mod:`licensing.auditing` does for licensing records.

- A subscription is covered when its operator is covered by an engagement in force and its life overlaps that
  engagement's period (UTC days, inclusive): it was created on or before the period's end, and it is still open
  (awaiting approval, pending payment, active, past due) or it ended (its ``valid_until``, else its last change) on
  or after the period's start.
- A buyer qualification is covered when its operator (the one that decides it) is covered by an engagement in force,
  whatever the period.

An auditor with no engagement in force is refused every such read, and an auditor asking for one record outside its
engagements is refused when the record exists (403 ``outside_engagement``); both refusals are recorded in the ledger
(``records.read_refused``) by :mod:`supervision.engagements`. Lists leave out what is outside.

:func:`utc_day` and :func:`year_month` compare timestamps and months with the engagements' dates in SQL, the same on
SQLite and PostgreSQL (billing scopes invoices and settlement statements with them).
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import Date, String
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement
from sqlmodel import and_, col, func, or_, select
from sqlmodel.ext.asyncio.session import AsyncSession

from marketplace.core.principal import OrgKind, Principal
from marketplace.subscriptions.models import OPEN_STATUSES, BuyerQualification, Subscription
from supervision.engagements import read_scope, refuse_outside, spans_in_force


class utc_day(FunctionElement[Any]):
    """The UTC day of a timestamp column, as a date comparable with a Date column on SQLite and PostgreSQL."""

    type = Date()
    inherit_cache = True


@compiles(utc_day)
def _utc_day_default(element: utc_day, compiler: SQLCompiler, **kw: Any) -> str:
    # SQLite keeps UTC timestamps as text: date() gives 'YYYY-MM-DD', as a Date column is stored.
    return f"date({compiler.process(element.clauses, **kw)})"


@compiles(utc_day, "postgresql")
def _utc_day_postgresql(element: utc_day, compiler: SQLCompiler, **kw: Any) -> str:
    # Whatever the session's time zone.
    return f"date(timezone('UTC', {compiler.process(element.clauses, **kw)}))"


class year_month(FunctionElement[Any]):
    """The ``YYYY-MM`` text of a Date column, on SQLite and PostgreSQL."""

    type = String()
    inherit_cache = True


@compiles(year_month)
def _year_month_default(element: year_month, compiler: SQLCompiler, **kw: Any) -> str:
    return f"strftime('%Y-%m', {compiler.process(element.clauses, **kw)})"


@compiles(year_month, "postgresql")
def _year_month_postgresql(element: year_month, compiler: SQLCompiler, **kw: Any) -> str:
    return f"to_char({compiler.process(element.clauses, **kw)}, 'YYYY-MM')"


def is_auditor(principal: Principal) -> bool:
    """Whether ``principal``'s reads are narrowed to engagements."""
    return principal.org_kind is OrgKind.auditor


def covered_subscription_ids(principal: Principal) -> Any:
    """A select of the ids of the subscriptions the auditor's engagements in force cover."""
    spans = spans_in_force(principal.org_id)
    ended_on = utc_day(func.coalesce(col(Subscription.valid_until), col(Subscription.updated_at)))
    return (
        select(Subscription.id)
        .join(spans, col(spans.c.operator_id) == col(Subscription.operator_id))
        .where(
            and_(
                utc_day(col(Subscription.created_at)) <= spans.c.period_end,
                or_(col(Subscription.status).in_(sorted(OPEN_STATUSES)), ended_on >= spans.c.period_start),
            )
        )
    )


def covered_qualification_ids(principal: Principal) -> Any:
    """A select of the ids of the qualifications decided by operators the auditor's engagements in force cover."""
    spans = spans_in_force(principal.org_id)
    return select(BuyerQualification.id).join(spans, col(spans.c.operator_id) == col(BuyerQualification.operator_id))


async def require_engagement(session: AsyncSession, principal: Principal, path: str) -> None:
    """For an auditor: refuse (and record) a read when no engagement of its firm is in force."""
    if is_auditor(principal):
        await read_scope(session, principal, path=path)


async def refuse_record(session: AsyncSession, principal: Principal, path: str, exists: bool) -> None:
    """An auditor asked for one record it may not see: when no engagement is in force, or when the record exists,
    the refusal is 403 ``outside_engagement``, recorded; otherwise the caller answers 404 as for anyone."""
    if not is_auditor(principal):
        return
    await read_scope(session, principal, path=path)
    if exists:
        await refuse_outside(session, principal, path=path, detail="Your firm's engagements in force do not cover this record.")


def record_path(kind: str, record_id: uuid.UUID) -> str:
    """How a refused read of one record is named in the ledger (``kind``: e.g. ``subscriptions``)."""
    return f"/api/{kind}/{record_id}"
