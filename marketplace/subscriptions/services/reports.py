"""Reads for the operator console: subscribers per product, and contracted revenue per month and product (the
sum of the prices of subscriptions that started, by the month they started: what the charts show until billing
brings payments). Both are scoped like every subscription read.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import func, or_
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from marketplace.catalog.models import Product
from marketplace.core.identity.models import Organisation
from marketplace.core.principal import OrgKind, Principal
from marketplace.core.types import utcnow
from marketplace.subscriptions.models import BuyerQualification, Subscription, SubscriptionStatus
from marketplace.subscriptions.services.subscriptions import scoped_subscriptions

ACTIVE = frozenset({SubscriptionStatus.active, SubscriptionStatus.past_due})
PENDING = frozenset({SubscriptionStatus.awaiting_approval, SubscriptionStatus.pending_payment})
ENDED = frozenset({SubscriptionStatus.cancelled, SubscriptionStatus.expired, SubscriptionStatus.revoked})
#: Subscriptions whose price counts as contracted: they became active at some point.
CONTRACTED = ACTIVE | ENDED


@dataclass(frozen=True)
class ProductSubscribers:
    """How many subscriptions of each kind one product has."""

    product_id: uuid.UUID
    name: str
    name_zh: str
    active: int
    pending: int
    ended: int
    rejected: int

    @property
    def total(self) -> int:
        """Every subscription of the product, whatever its status."""
        return self.active + self.pending + self.ended + self.rejected


@dataclass(frozen=True)
class ProductRevenue:
    """One product's contracted revenue per month (decimal strings, aligned with ``ContractedRevenue.months``)."""

    product_id: uuid.UUID
    name: str
    name_zh: str
    amounts: list[str]


@dataclass(frozen=True)
class ContractedRevenue:
    """Contracted revenue by month (``YYYY-MM``, oldest first) and product, with the monthly totals."""

    months: list[str]
    products: list[ProductRevenue]
    totals: list[str]
    currency: str = "CNY"


async def products_by_id(session: AsyncSession, ids: set[uuid.UUID]) -> dict[uuid.UUID, Product]:
    """The products of subscriptions the caller already holds (names for lists and charts)."""
    if not ids:
        return {}
    return {p.id: p for p in (await session.exec(select(Product).where(col(Product.id).in_(ids)))).all()}


async def subscribers_by_product(session: AsyncSession, principal: Principal) -> list[ProductSubscribers]:
    """Subscriptions per product by kind (active, pending, ended, rejected), as far as the caller may see; an
    operator gets every product of its own, those without subscribers included. Ordered by name."""
    columns: Any = select(Subscription.product_id, Subscription.status, func.count())
    stmt = scoped_subscriptions(columns, principal).group_by(col(Subscription.product_id), col(Subscription.status))
    counts: dict[uuid.UUID, dict[SubscriptionStatus, int]] = defaultdict(dict)
    for product_id, status, count in (await session.exec(stmt)).all():
        counts[product_id][SubscriptionStatus(status)] = int(count)
    ids = set(counts)
    if principal.org_kind is OrgKind.operator:
        ids |= set((await session.exec(select(Product.id).where(Product.operator_id == principal.org_id))).all())
    products = await products_by_id(session, ids)
    rows = []
    for product_id in ids:
        product = products.get(product_id)
        by_status = counts.get(product_id, {})
        rows.append(
            ProductSubscribers(
                product_id=product_id,
                name=product.name if product else str(product_id),
                name_zh=product.name_zh if product else str(product_id),
                active=sum(n for s, n in by_status.items() if s in ACTIVE),
                pending=sum(n for s, n in by_status.items() if s in PENDING),
                ended=sum(n for s, n in by_status.items() if s in ENDED),
                rejected=by_status.get(SubscriptionStatus.rejected, 0),
            )
        )
    return sorted(rows, key=lambda r: (r.name, str(r.product_id)))


def _month_starts(now: datetime, months: int) -> list[datetime]:
    """The first instants of the last ``months`` months, the current one last."""
    starts = []
    year, month = now.year, now.month
    for _ in range(months):
        starts.append(now.replace(year=year, month=month, day=1, hour=0, minute=0, second=0, microsecond=0))
        year, month = (year - 1, 12) if month == 1 else (year, month - 1)
    return list(reversed(starts))


async def contracted_revenue_by_month(
    session: AsyncSession, principal: Principal, months: int = 6, *, now: datetime | None = None
) -> ContractedRevenue:
    """The sum of the prices of subscriptions that became active (active or since ended), by the month they started
    and product, over the last ``months`` months (the current one included), as far as the caller may see."""
    months = max(1, min(months, 36))
    starts = _month_starts(now or utcnow(), months)
    labels = [f"{s.year:04d}-{s.month:02d}" for s in starts]
    columns: Any = select(Subscription.product_id, Subscription.starts_at, Subscription.price)
    stmt = scoped_subscriptions(columns, principal).where(
        col(Subscription.status).in_(list(CONTRACTED)),
        col(Subscription.starts_at).is_not(None),
        col(Subscription.starts_at) >= starts[0],
    )
    sums: dict[uuid.UUID, list[Decimal]] = defaultdict(lambda: [Decimal(0)] * months)
    for product_id, starts_at, price in (await session.exec(stmt)).all():
        label = f"{starts_at.year:04d}-{starts_at.month:02d}"
        if label not in labels:
            continue
        try:
            amount = Decimal(price)
        except InvalidOperation:
            continue
        sums[product_id][labels.index(label)] += amount
    products = await products_by_id(session, set(sums))
    revenue = [
        ProductRevenue(
            product_id=product_id,
            name=products[product_id].name if product_id in products else str(product_id),
            name_zh=products[product_id].name_zh if product_id in products else str(product_id),
            amounts=[f"{a:.2f}" for a in amounts],
        )
        for product_id, amounts in sums.items()
    ]
    revenue.sort(key=lambda r: (r.name, str(r.product_id)))
    totals = [f"{sum((Decimal(r.amounts[i]) for r in revenue), Decimal(0)):.2f}" for i in range(months)]
    return ContractedRevenue(months=labels, products=revenue, totals=totals)


async def counterpart_buyers(session: AsyncSession, principal: Principal) -> list[Organisation]:
    """The buyer organisations the caller deals with: for an operator, those that submitted a qualification to it or
    subscribed to its products; for a buyer, itself; supervisors and the owner, every buyer. Ordered by name."""
    stmt = select(Organisation).where(Organisation.kind == OrgKind.buyer.value)
    if principal.org_kind is OrgKind.operator:
        qualified = select(BuyerQualification.buyer_org_id).where(BuyerQualification.operator_id == principal.org_id)
        subscribed = select(Subscription.buyer_org_id).where(Subscription.operator_id == principal.org_id)
        stmt = stmt.where(or_(col(Organisation.id).in_(qualified), col(Organisation.id).in_(subscribed)))
    elif principal.org_kind is OrgKind.buyer:
        stmt = stmt.where(Organisation.id == principal.org_id)
    return list((await session.exec(stmt.order_by(col(Organisation.name)))).all())
