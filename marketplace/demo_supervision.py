"""The supervision part of the demo: the audit firm's engagement (Harbour's transactions of the last six months,
for ninety days more) and a finding in progress (raised by the regulator against Summit over the deliveries that
led to its licence's suspension, answered by Summit, not closed yet)."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from marketplace.core.principal import Principal
from marketplace.core.types import utcnow
from supervision import findings
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
    return {"engagement": str(engagement.id), "finding": finding.number}
