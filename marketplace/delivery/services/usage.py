"""Reads of delivery usage: the caller's running entitlements with this month's use, and deliveries by day and by
mode for the consoles' charts (from the daily usage the meter keeps). One scoping helper: a buyer sees its own
deliveries, an operator those of its products, the owner those under its licences, regulators all of them, an
auditor those of the operators its engagements in force cover.
"""

from __future__ import annotations

import json
import uuid
from datetime import date, timedelta
from typing import Any, NamedTuple

from sqlalchemy import false, func, select
from sqlmodel import col
from sqlmodel import select as sqlmodel_select
from sqlmodel.ext.asyncio.session import AsyncSession

from licensing.models import DeliveryMode, Licence
from marketplace.catalog.models import Product
from marketplace.core.principal import OrgKind, Principal
from marketplace.core.types import utcnow
from marketplace.delivery.models import UsageCounter, UsageDay
from marketplace.delivery.schemas import EntitlementView, Quota, Usage
from marketplace.delivery.services.metering import Meter, month_of
from marketplace.subscriptions.models import Entitlement, Subscription, SubscriptionStatus
from supervision.engagements import spans_in_force

#: Subscription statuses whose entitlements are listed (a past-due one is listed, and refused at the call).
RUNNING = (SubscriptionStatus.active, SubscriptionStatus.past_due)


class DayUsage(NamedTuple):
    """Deliveries of one product on one day (UTC)."""

    day: date
    product_id: uuid.UUID
    calls: int
    rows: int
    bytes: int


class ModeUsage(NamedTuple):
    """Deliveries by mode."""

    mode: DeliveryMode
    calls: int
    rows: int
    bytes: int


def scoped_usage(statement: Any, principal: Principal) -> Any:
    """Restrict a query over ``UsageDay`` to what the caller may see."""
    if principal.org_kind is OrgKind.buyer:
        return statement.where(col(UsageDay.buyer_org_id) == principal.org_id)
    if principal.org_kind is OrgKind.operator:
        return statement.where(col(UsageDay.operator_id) == principal.org_id)
    if principal.org_kind is OrgKind.owner:
        return (
            statement.join(Product, col(Product.id) == col(UsageDay.product_id))
            .join(Licence, col(Licence.id) == col(Product.licence_id))
            .where(col(Licence.owner_org_id) == principal.org_id)
        )
    if principal.org_kind is OrgKind.auditor:  # the operators its engagements in force cover
        spans = spans_in_force(principal.org_id)
        return statement.where(col(UsageDay.operator_id).in_(select(spans.c.operator_id)))
    if principal.org_kind is OrgKind.regulator:
        return statement
    return statement.where(false())


def _first_day(days: int) -> date:
    return utcnow().date() - timedelta(days=max(days, 1) - 1)


def _totals() -> tuple[Any, Any, Any]:
    return (
        func.coalesce(func.sum(col(UsageDay.calls)), 0),
        func.coalesce(func.sum(col(UsageDay.rows)), 0),
        func.coalesce(func.sum(col(UsageDay.bytes)), 0),
    )


async def usage_by_day(
    session: AsyncSession, principal: Principal, *, days: int = 30, product_id: uuid.UUID | None = None
) -> list[DayUsage]:
    """Calls, rows and bytes delivered per day and product over the last ``days`` days (today included), oldest
    first, within the caller's scope; days without deliveries are absent."""
    statement = select(col(UsageDay.day), col(UsageDay.product_id), *_totals()).where(col(UsageDay.day) >= _first_day(days))
    if product_id is not None:
        statement = statement.where(col(UsageDay.product_id) == product_id)
    statement = (
        scoped_usage(statement, principal)
        .group_by(col(UsageDay.day), col(UsageDay.product_id))
        .order_by(col(UsageDay.day), col(UsageDay.product_id))
    )
    rows = (await session.exec(statement)).all()  # type: ignore[call-overload]
    return [DayUsage(d, p, int(c), int(r), int(b)) for d, p, c, r, b in rows]


async def usage_by_mode(
    session: AsyncSession, principal: Principal, *, days: int = 30, product_id: uuid.UUID | None = None
) -> list[ModeUsage]:
    """Calls, rows and bytes delivered per mode over the last ``days`` days, within the caller's scope."""
    statement = select(col(UsageDay.mode), *_totals()).where(col(UsageDay.day) >= _first_day(days))
    if product_id is not None:
        statement = statement.where(col(UsageDay.product_id) == product_id)
    statement = scoped_usage(statement, principal).group_by(col(UsageDay.mode)).order_by(col(UsageDay.mode))
    rows = (await session.exec(statement)).all()  # type: ignore[call-overload]
    return [ModeUsage(DeliveryMode(m), int(c), int(r), int(b)) for m, c, r, b in rows]


async def list_entitlements(session: AsyncSession, principal: Principal, meter: Meter | None = None) -> list[EntitlementView]:
    """The caller's organisation's running entitlements (not ended, not expired, subscription active or past due),
    with this month's use (deliveries still being metered included when ``meter`` is given)."""
    now = utcnow()
    month = month_of(now)
    statement = (
        sqlmodel_select(Entitlement, Subscription, Product, UsageCounter)
        .join(Subscription, col(Subscription.id) == col(Entitlement.subscription_id))
        .join(Product, col(Product.id) == col(Entitlement.product_id))
        .outerjoin(UsageCounter, (col(UsageCounter.entitlement_id) == col(Entitlement.id)) & (col(UsageCounter.month) == month))
        .where(
            col(Entitlement.buyer_org_id) == principal.org_id,
            col(Entitlement.ended_at).is_(None),
            col(Entitlement.valid_until) > now,
            col(Subscription.status).in_(RUNNING),
        )
        .order_by(col(Product.name), col(Entitlement.valid_until))
    )
    while True:
        epoch = meter.epoch if meter is not None else 0
        found = (await session.exec(statement)).all()
        if meter is None or meter.stable(epoch):
            break
        await meter.settled()
        # A new snapshot for the next read (SQLite keeps one per transaction).
        await session.rollback()
    views = []
    for entitlement, subscription, product, counter in found:
        pending = meter.pending(entitlement.id, month) if meter is not None else None
        views.append(
            EntitlementView(
                entitlement_id=entitlement.id,
                product_id=entitlement.product_id,
                product_name=product.name,
                product_name_zh=product.name_zh,
                mode=entitlement.mode,
                fields=json.loads(entitlement.fields_json),
                quota=Quota(calls=entitlement.quota_calls, rows=entitlement.quota_rows),
                used=Usage(
                    month=month,
                    calls=(counter.calls if counter else 0) + (pending.calls if pending else 0),
                    rows=(counter.rows if counter else 0) + (pending.rows if pending else 0),
                    bytes=(counter.bytes if counter else 0) + (pending.bytes if pending else 0),
                ),
                valid_until=entitlement.valid_until,
                subscription_id=entitlement.subscription_id,
                subscription_status=subscription.status,
            )
        )
    return views
