"""The supervision part of the demo: the audit firm's engagement (Harbour's transactions of the last six months,
for ninety days more), a finding in progress (raised by the regulator against Summit over the deliveries that
led to its licence's suspension, answered by Summit, not closed yet), and the alert rules run over the whole history
so the regulator finds open alerts. Two fabricated records give the rules something to find: an API call to a
Harbour product recorded while Harbour's licence was briefly suspended (a cached entitlement), and a burst of API
calls today by a Harbour buyer, far above its usual volume (both inside the audit firm's engagement)."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from typing import Any

from sqlmodel import col, func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from marketplace.core.events import Actor
from marketplace.core.principal import Principal
from marketplace.core.types import utcnow
from marketplace.delivery.models import Delivery
from marketplace.delivery.services.metering import MeteredDelivery, write_deliveries
from marketplace.subscriptions.models import Entitlement, Subscription, SubscriptionStatus
from supervision import alerts, findings
from supervision.engagements import grant_engagement
from supervision.models import LedgerEntry
from supervision.schemas import EngagementCreate


async def seed_supervision(
    session: AsyncSession, people: dict[str, Principal], supervisors: dict[str, Principal]
) -> dict[str, Any]:
    """Grant the engagement and open the finding (runs once, after the catalog and billing)."""
    now = utcnow()
    regulator, auditor = supervisors["supervision"], supervisors["clearview"]
    engagement = await grant_engagement(
        session,
        people["authority"],
        EngagementCreate(
            auditor_id=auditor.org_id,
            operator_ids=[people["harbour"].org_id],
            period_start=(now - timedelta(days=183)).date(),
            period_end=now.date(),
            expires_at=now + timedelta(days=90),
        ),
    )
    evidence = [
        index
        for index, leaf in (
            await session.exec(
                select(LedgerEntry.leaf_index, LedgerEntry.leaf_input)
                .where(col(LedgerEntry.event_type) == "licence.suspended")
                .order_by(col(LedgerEntry.leaf_index))
            )
        ).all()
        if str(people["summit"].org_id) in json.loads(leaf)["orgs"] or str(people["summit"].org_id) in json.loads(leaf)["orgs"]
    ]
    finding = await findings.raise_finding(
        session,
        regulator,
        findings.FindingCreate(
            operator_id=people["summit"].org_id,
            title="Volume cap exceeded three months running",
            description="The traffic licence's monthly volume cap was exceeded from August to October before the "
            "owner suspended it. Explain the controls that failed and how they are fixed.",
            severity=findings.Severity.high,
            evidence=evidence or [0],
        ),
    )
    await findings.respond(
        session,
        people["summit"],
        finding.id,
        "Our quota monitor counted calls per client instead of per licence. It now counts per licence and blocks at "
        "95% of the cap; the change was deployed on the 2nd.",
    )
    await _delivery_during_suspension(session, people)
    await _burst_of_calls(session, people)
    evaluation = await alerts.evaluate(session)
    return {"engagement": str(engagement.id), "finding": finding.number, "alerts": len(evaluation.raised)}


def _delivery(
    subscription: Subscription, entitlement: Entitlement, owner_org_id: Any, licence_id: Any, at: Any
) -> MeteredDelivery:
    return MeteredDelivery(
        entitlement_id=entitlement.id,
        subscription_id=subscription.id,
        buyer_org_id=subscription.buyer_org_id,
        operator_id=subscription.operator_id,
        owner_org_id=owner_org_id,
        product_id=subscription.product_id,
        licence_id=licence_id,
        mode=entitlement.mode,
        rows=20,
        bytes=2400,
        actor=Actor("system", "demo-history"),
        client_id=None,
        occurred_at=at,
    )


async def _delivery_during_suspension(session: AsyncSession, people: dict[str, Principal]) -> None:
    """One API call to a Harbour product recorded while Harbour's licence was suspended (a cached entitlement)."""
    spans: dict[str, dict[str, Any]] = {}
    for event_type, at, leaf in (
        await session.exec(
            select(LedgerEntry.event_type, LedgerEntry.occurred_at, LedgerEntry.leaf_input)
            .where(col(LedgerEntry.event_type).in_(["licence.suspended", "licence.reinstated"]))
            .order_by(col(LedgerEntry.leaf_index))
        )
    ).all():
        event = json.loads(leaf)
        if str(people["harbour"].org_id) in event["orgs"]:
            spans.setdefault(event["subjects"]["licence"], {})[event_type] = at
    for licence_id, span in spans.items():
        if "licence.suspended" not in span or "licence.reinstated" not in span:
            continue
        subscription = (
            await session.exec(
                select(Subscription)
                .where(col(Subscription.licence_id) == uuid.UUID(licence_id), Subscription.status == SubscriptionStatus.active)
                .order_by(col(Subscription.number))
            )
        ).first()
        if subscription is None:
            continue
        entitlement = (await session.exec(select(Entitlement).where(Entitlement.subscription_id == subscription.id))).one()
        moment = span["licence.suspended"] + (span["licence.reinstated"] - span["licence.suspended"]) / 2
        await write_deliveries(
            session, [_delivery(subscription, entitlement, people["authority"].org_id, subscription.licence_id, moment)]
        )
        await session.commit()
        return


async def _burst_of_calls(session: AsyncSession, people: dict[str, Principal]) -> None:
    """Today, the busiest API subscription to a Harbour product takes far more calls than on its usual days."""
    busiest = (
        await session.exec(
            select(Subscription)
            .join(Delivery, col(Delivery.subscription_id) == col(Subscription.id))
            .where(Subscription.operator_id == people["harbour"].org_id, Subscription.status == SubscriptionStatus.active)
            .group_by(col(Subscription.id))
            .order_by(func.count().desc(), col(Subscription.number))
        )
    ).first()
    if busiest is None:
        return
    entitlement = (await session.exec(select(Entitlement).where(Entitlement.subscription_id == busiest.id))).one()
    now = utcnow()
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    since = midnight - timedelta(days=alerts.LOOKBACK_DAYS)
    times = (
        await session.exec(
            select(Delivery.occurred_at).where(
                Delivery.subscription_id == busiest.id, col(Delivery.occurred_at) >= since, col(Delivery.occurred_at) < midnight
            )
        )
    ).all()
    per_day: dict[Any, int] = {}
    for moment in times:
        per_day[moment.date()] = per_day.get(moment.date(), 0) + 1
    recent = [per_day[day] for day in sorted(per_day, reverse=True)[: alerts.BASELINE_DAYS]]
    mean = sum(recent) / len(recent) if recent else 0
    calls = max(alerts.MIN_SPIKE_CALLS, int(mean * (alerts.SPIKE_FACTOR + 1)) + 1)
    span = max((now - midnight).total_seconds() - 1, 1.0)
    burst = [
        _delivery(
            busiest, entitlement, people["authority"].org_id, busiest.licence_id, midnight + timedelta(seconds=span * i / calls)
        )
        for i in range(calls)
    ]
    await write_deliveries(session, burst)
    await session.commit()
