"""What an auditor may read of the licensing records: only inside its firm's engagements in force (DESIGN.md §2).

A licence is covered when its operator is one an engagement in force covers and its term overlaps that
engagement's period; a listing review, when its licence is covered; a data resource (and its department), when a
covered licence names it. An auditor with no engagement in force is refused every licensing read, and an auditor
asking for one record outside its engagements is refused (403 ``outside_engagement``); both refusals are recorded in
the ledger (``records.read_refused``) by :mod:`supervision.engagements`.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlmodel import and_, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from licensing.models import Licence, LicenceResource
from marketplace.core.principal import OrgKind, Principal
from supervision.engagements import read_scope, refuse_outside, spans_in_force


def is_auditor(principal: Principal) -> bool:
    """Whether ``principal``'s reads are narrowed to engagements."""
    return principal.org_kind is OrgKind.auditor


def covered_licence_ids(principal: Principal) -> Any:
    """A select of the ids of the licences the auditor's engagements in force cover."""
    spans = spans_in_force(principal.org_id)
    return (
        select(Licence.id)
        .join(spans, col(spans.c.operator_id) == col(Licence.operator_id))
        .where(and_(col(Licence.starts_on) <= spans.c.period_end, col(Licence.ends_on) >= spans.c.period_start))
    )


def covered_resource_ids(principal: Principal) -> Any:
    """A select of the ids of the data resources named by the licences the auditor's engagements cover."""
    return select(LicenceResource.resource_id).where(col(LicenceResource.licence_id).in_(covered_licence_ids(principal)))


async def require_engagement(session: AsyncSession, principal: Principal, path: str) -> None:
    """For an auditor: refuse (and record) a licensing read when no engagement of its firm is in force."""
    if is_auditor(principal):
        await read_scope(session, principal, path=path)


async def refuse_record(session: AsyncSession, principal: Principal, path: str, exists: bool) -> None:
    """An auditor asked for one record it may not see: when the record exists, the refusal is 403
    ``outside_engagement``, recorded; otherwise the caller answers 404 as for anyone."""
    if is_auditor(principal) and exists:
        await refuse_outside(
            session, principal, path=path, detail="Your firm's engagements in force do not cover this licensing record."
        )


def record_path(kind: str, record_id: uuid.UUID) -> str:
    """How a refused read of one record is named in the ledger."""
    return f"/api/licensing/{kind}/{record_id}"
