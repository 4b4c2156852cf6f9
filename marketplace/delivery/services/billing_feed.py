"""What delivery tells billing about metered use (wired in by ``marketplace.app.connect_domains``: delivery does not
know billing, billing does not import delivery): which subscriptions have deliveries not billed yet, and claiming a
month's unbilled deliveries for a charge (one UPDATE, so a delivery is claimed by exactly one charge)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import func, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from marketplace.delivery.models import Delivery


class DeliveryUsage:
    """Delivery's side of usage billing."""

    async def unbilled_ranges(
        self, session: AsyncSession, subscription_ids: Sequence[uuid.UUID]
    ) -> dict[uuid.UUID, tuple[datetime, datetime]]:
        """For each of ``subscription_ids`` with unbilled deliveries, the first and last time among them."""
        if not subscription_ids:
            return {}
        rows = (
            await session.exec(
                select(Delivery.subscription_id, func.min(Delivery.occurred_at), func.max(Delivery.occurred_at))
                .where(col(Delivery.subscription_id).in_(list(subscription_ids)), col(Delivery.billed_at).is_(None))
                .group_by(col(Delivery.subscription_id))
            )
        ).all()
        return {row[0]: (row[1], row[2]) for row in rows}

    async def claim(self, session: AsyncSession, subscription_id: uuid.UUID, start: datetime, end: datetime, at: datetime) -> int:
        """Mark the subscription's unbilled deliveries of ``[start, end)`` billed at ``at`` in the caller's
        transaction; returns how many (each delivery is claimed once: the row count of this one statement)."""
        result = await session.exec(
            update(Delivery)
            .where(
                col(Delivery.subscription_id) == subscription_id,
                col(Delivery.billed_at).is_(None),
                col(Delivery.occurred_at) >= start,
                col(Delivery.occurred_at) < end,
            )
            .values(billed_at=at)
        )  # type: ignore[call-overload]
        return int(result.rowcount or 0)
