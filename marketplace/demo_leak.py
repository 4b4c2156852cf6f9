"""The leak-tracing part of the demo: a file export made for a demo buyer, built as the export task builds it
(fingerprinted for its subscription, ``export.ready`` in the ledger), and a copy of it left beside the demo accounts
as "a file found on the internet" (``var/demo-leaked-export.csv``), for the regulator to trace on the console."""

from __future__ import annotations

import shutil
from pathlib import Path

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from licensing.models import DeliveryMode
from marketplace.core.settings import Settings
from marketplace.delivery.models import Export, ExportFormat, ExportStatus
from marketplace.delivery.services.exports import build_export
from marketplace.subscriptions.models import Entitlement, Subscription, SubscriptionStatus

LEAKED_FILE = "demo-leaked-export.csv"


async def seed_leaked_export(session: AsyncSession, settings: Settings) -> Path | None:
    """Export a file for the first active file-mode subscription and copy it to ``var/``; None when the demo has
    no such subscription or the export could not be built."""
    found = (
        await session.exec(
            select(Entitlement, Subscription)
            .join(Subscription, col(Subscription.id) == col(Entitlement.subscription_id))
            .where(
                col(Entitlement.mode) == DeliveryMode.file,
                col(Entitlement.ended_at).is_(None),
                col(Subscription.status) == SubscriptionStatus.active,
            )
            .order_by(col(Subscription.created_at), col(Subscription.id))
        )
    ).first()
    if found is None:
        return None
    entitlement, subscription = found
    export = Export(
        entitlement_id=entitlement.id,
        subscription_id=subscription.id,
        buyer_org_id=subscription.buyer_org_id,
        product_id=subscription.product_id,
        format=ExportFormat.csv,
        requested_by="demo",
    )
    session.add(export)
    await session.commit()
    built = await build_export(session, settings, export.id)
    if built is None or built.status is not ExportStatus.ready or built.location is None:
        return None
    target = settings.var_dir / LEAKED_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(settings.resolved_data_dir / built.location, target)
    return target
