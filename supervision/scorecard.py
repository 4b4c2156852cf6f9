"""Operators' scorecards: per operator and period, revenue (gross, refunds, net), distinct buyers, usage (API calls,
deliveries and rows by mode), the public-welfare share of its new subscriptions, refunds, alerts (open and total),
findings (raised, open, closed) and how fast the operator answered findings (hours from raised to responded:
median and max).

Ledger figures come from the rollups (``supervision/rollup.py``), with the dashboard's definitions
(``supervision/dashboard.py``); alerts (``SupervisionAlert.operator_id``, when their evidence happened) and findings
(raised in the period) from supervision's own tables. An auditor sees the operators and periods of its engagement:
another operator's scorecard is 403 ``outside_engagement`` (the attempt recorded).
"""

from __future__ import annotations

import statistics
import uuid
from datetime import date
from typing import Any

from sqlalchemy import select as sa_select
from sqlmodel import col, func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from marketplace.core.errors import NotFound
from marketplace.core.identity.models import Organisation
from marketplace.core.principal import OrgKind, Principal
from supervision.dashboard import (
    ACTIVATION,
    DELIVERY,
    PAYMENT,
    REFUND,
    Period,
    add_money,
    amounts,
    fetch,
    resolve_period,
    rollup_filter,
    spans,
    timed_filter,
    welfare,
)
from supervision.engagements import Scope, read_scope, refuse_outside
from supervision.explorer import index_new_events
from supervision.findings import Finding, FindingStatus
from supervision.models import SupervisionAlert
from supervision.rollup import EventRollup, EventRollupBuyer


def _empty() -> dict[str, Any]:
    return {
        "payments": 0,
        "gross": {},
        "refund_count": 0,
        "refunds": {},
        "modes": {},
        "purposes": {},
        "buyers": 0,
        "alerts": {"open": 0, "total": 0},
        "findings": {"raised": 0, "open": 0, "closed": 0},
        "hours": [],
    }


async def _figures(
    session: AsyncSession, scope: Scope | None, period: Period, operators: list[Organisation]
) -> dict[str, dict[str, Any]]:
    """The raw figures of each of ``operators`` over ``period``, inside ``scope``."""
    await index_new_events(session)
    ids = [str(o.id) for o in operators]
    figures = {key: _empty() for key in ids}
    if not ids:
        return figures
    # Each operator's own rows: with no scope, every operator's whole period; for an auditor, its covered days.
    if scope is None:
        allowed: list[tuple[str | None, date, date]] = (
            [(ids[0], period.start, period.end)] if len(ids) == 1 else [(None, period.start, period.end)]
        )
    else:
        allowed = [span for span in spans(scope, period) if span[0] in figures]
    r = EventRollup
    for operator, kind, mode, currency, purpose, count, amount, delivered_rows, delivered_bytes in await fetch(
        session,
        sa_select(
            col(r.operator_id),
            col(r.event_type),
            col(r.mode),
            col(r.currency),
            col(r.purpose),
            func.sum(r.count),
            func.sum(r.amount_minor),
            func.sum(r.rows),
            func.sum(r.bytes),
        )
        .where(col(r.event_type).in_((PAYMENT, REFUND, DELIVERY, ACTIVATION)), rollup_filter(allowed))
        .group_by(col(r.operator_id), col(r.event_type), col(r.mode), col(r.currency), col(r.purpose)),
    ):
        entry = figures.get(operator)
        if entry is None:
            continue
        if kind == PAYMENT:
            entry["payments"] += int(count)
            add_money(entry["gross"], currency, amount)
        elif kind == REFUND:
            entry["refund_count"] += int(count)
            add_money(entry["refunds"], currency, amount)
        elif kind == DELIVERY:
            totals = entry["modes"].setdefault(mode or "unknown", {"deliveries": 0, "rows": 0, "bytes": 0})
            totals["deliveries"] += int(count)
            totals["rows"] += int(delivered_rows or 0)
            totals["bytes"] += int(delivered_bytes or 0)
        else:
            entry["purposes"][purpose or "unknown"] = entry["purposes"].get(purpose or "unknown", 0) + int(count)
    b = EventRollupBuyer
    for operator, buyers in await fetch(
        session,
        sa_select(col(b.operator_id), func.count(func.distinct(col(b.buyer_id))))
        .where(rollup_filter(allowed, EventRollupBuyer))
        .group_by(col(b.operator_id)),
    ):
        if operator in figures:
            figures[operator]["buyers"] = int(buyers)
    moment = func.coalesce(SupervisionAlert.occurred_at, SupervisionAlert.created_at)
    for operator_id, state, count in (
        await session.exec(
            select(SupervisionAlert.operator_id, SupervisionAlert.state, func.count())
            .where(timed_filter(SupervisionAlert.operator_id, moment, allowed))
            .group_by(col(SupervisionAlert.operator_id), col(SupervisionAlert.state))
        )
    ).all():
        if str(operator_id) not in figures:
            continue
        alerts = figures[str(operator_id)]["alerts"]
        alerts["total"] += int(count)
        alerts["open"] += int(count) if state == "open" else 0
    for finding in (
        await session.exec(select(Finding).where(timed_filter(Finding.operator_id, Finding.raised_at, allowed)))
    ).all():
        entry = figures.get(str(finding.operator_id))
        if entry is None:
            continue
        entry["findings"]["raised"] += 1
        entry["findings"]["closed" if finding.status is FindingStatus.closed else "open"] += 1
        if finding.responded_at is not None:
            entry["hours"].append((finding.responded_at - finding.raised_at).total_seconds() / 3600)
    return figures


def _card(operator: Organisation, entry: dict[str, Any], period: Period) -> dict[str, Any]:
    gross, refunds = entry["gross"], entry["refunds"]
    hours = entry["hours"]
    return {
        "operator_id": str(operator.id),
        "name": operator.name,
        "period": {"start": period.start.isoformat(), "end": period.end.isoformat()},
        "revenue": {
            "gross": amounts(gross),
            "refunds": amounts(refunds),
            "net": amounts({c: gross.get(c, 0) - refunds.get(c, 0) for c in set(gross) | set(refunds)}),
        },
        "payments": entry["payments"],
        "refunds": {"count": entry["refund_count"], "amount": amounts(refunds)},
        "buyers": entry["buyers"],
        "usage": {
            "api_calls": entry["modes"].get("api", {}).get("deliveries", 0),
            "by_mode": dict(sorted(entry["modes"].items())),
        },
        "public_welfare": welfare(entry["purposes"]),
        "alerts": entry["alerts"],
        "findings": entry["findings"],
        "response_hours": {
            "responded": len(hours),
            "median": None if not hours else round(statistics.median(hours), 1),
            "max": None if not hours else round(max(hours), 1),
        },
    }


async def scorecards(session: AsyncSession, scope: Scope | None, period: Period) -> list[dict[str, Any]]:
    """Every operator's scorecard (an auditor: its engagement's operators), by name."""
    stmt = select(Organisation).where(Organisation.kind == OrgKind.operator)
    if scope is not None:
        stmt = stmt.where(col(Organisation.id).in_(list(scope.operator_ids)))
    operators = list((await session.exec(stmt.order_by(col(Organisation.name), col(Organisation.id)))).all())
    figures = await _figures(session, scope, period, operators)
    return [_card(operator, figures[str(operator.id)], period) for operator in operators]


async def scorecard(session: AsyncSession, scope: Scope | None, period: Period, operator_id: uuid.UUID) -> dict[str, Any]:
    """One operator's scorecard (404 ``operator_not_found``)."""
    operator = await session.get(Organisation, operator_id)
    if operator is None or operator.kind != OrgKind.operator:
        raise NotFound("No such operator.", code="operator_not_found")
    figures = await _figures(session, scope, period, [operator])
    return _card(operator, figures[str(operator.id)], period)


async def read_scorecards(
    session: AsyncSession, principal: Principal, start: date | None, end: date | None, *, path: str, query: str = ""
) -> list[dict[str, Any]]:
    """The scorecards the caller may see (see :func:`supervision.dashboard.read_dashboard` for who and how)."""
    period = resolve_period(start, end)
    scope = await read_scope(session, principal, path=path, query=query)
    return await scorecards(session, scope, period)


async def read_scorecard(
    session: AsyncSession,
    principal: Principal,
    operator_id: uuid.UUID,
    start: date | None,
    end: date | None,
    *,
    path: str,
    query: str = "",
) -> dict[str, Any]:
    """One operator's scorecard for the caller; an auditor asking for an operator outside its engagement is refused
    with 403 ``outside_engagement`` and the attempt recorded (``records.read_refused``)."""
    period = resolve_period(start, end)
    scope = await read_scope(session, principal, path=path, query=query)
    if scope is not None and operator_id not in scope.operator_ids:
        await refuse_outside(
            session, principal, path=path, query=query, detail="Your firm's engagements in force do not cover this operator."
        )
    return await scorecard(session, scope, period, operator_id)
