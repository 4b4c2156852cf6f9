"""Findings: a regulator or an auditor (within its engagement) raises a finding against an operator with evidence
(ledger indices); the operator responds; a regulator closes it with a note. Every step is a ledger event
(``finding.raised``, ``finding.responded``, ``finding.closed``) in the transaction of the change.

``open -> responded -> closed`` (a regulator may also close an open one); the operator may respond again while
the finding is not closed.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, StringConstraints
from pydantic import Field as PydanticField
from sqlalchemy import Column, Text
from sqlmodel import Field, SQLModel, col, func, select
from sqlmodel.ext.asyncio.session import AsyncSession
from sqlmodel.sql.expression import SelectOfScalar

from marketplace.core.errors import Conflict, Forbidden, InvalidInput, NotFound
from marketplace.core.events import Actor, DomainEvent
from marketplace.core.identity.models import Organisation
from marketplace.core.principal import OrgKind, Principal, Role
from marketplace.core.types import UTCDateTime, enum_column, utcnow
from supervision import services as ledger
from supervision.engagements import auditor_scope, refuse_outside


class FindingStatus(StrEnum):
    """``open -> responded -> closed``."""

    open = "open"
    responded = "responded"
    closed = "closed"


class Severity(StrEnum):
    """How serious a finding is."""

    low = "low"
    medium = "medium"
    high = "high"


class Finding(SQLModel, table=True):
    """A finding raised against an operator."""

    __tablename__ = "finding"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    number: str = Field(max_length=40, unique=True)
    operator_id: uuid.UUID = Field(foreign_key="organisation.id", index=True)
    raised_by_org_id: uuid.UUID = Field(foreign_key="organisation.id", index=True)
    raised_by: uuid.UUID | None = Field(default=None, foreign_key="user_account.id")
    title: str = Field(max_length=200)
    description: str = Field(sa_column=Column(Text, nullable=False))
    severity: Severity = Field(sa_column=enum_column(Severity))
    #: JSON list of ledger indices of the events the finding rests on.
    evidence_json: str = Field(sa_column=Column(Text, nullable=False))
    status: FindingStatus = Field(default=FindingStatus.open, sa_column=enum_column(FindingStatus, index=True))
    raised_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    response: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    responded_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    responded_by: uuid.UUID | None = Field(default=None, foreign_key="user_account.id")
    close_note: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    closed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    closed_by: uuid.UUID | None = Field(default=None, foreign_key="user_account.id")


Text2000 = Annotated[str, StringConstraints(min_length=1, max_length=2000, strip_whitespace=True)]


class FindingCreate(BaseModel):
    """A finding to raise."""

    model_config = ConfigDict(extra="forbid")

    operator_id: uuid.UUID
    title: Annotated[str, StringConstraints(min_length=3, max_length=200, strip_whitespace=True)]
    description: Text2000
    severity: Severity = Severity.medium
    evidence: list[Annotated[int, PydanticField(ge=0)]] = PydanticField(
        min_length=1, max_length=100, description="Ledger indices of the events it rests on"
    )


class FindingNote(BaseModel):
    """An operator's response, or a regulator's closing note."""

    model_config = ConfigDict(extra="forbid")

    text: Text2000


class FindingPublic(BaseModel):
    """A finding as the API shows it."""

    id: uuid.UUID
    number: str
    operator_id: uuid.UUID
    raised_by_org_id: uuid.UUID
    title: str
    description: str
    severity: Severity
    evidence: list[int]
    status: FindingStatus
    raised_at: datetime
    response: str | None
    responded_at: datetime | None
    close_note: str | None
    closed_at: datetime | None


def public(finding: Finding) -> FindingPublic:
    """The API shape of a finding."""
    return FindingPublic(
        **finding.model_dump(exclude={"evidence_json", "raised_by", "responded_by", "closed_by"}),
        evidence=json.loads(finding.evidence_json),
    )


def _event(type_: str, principal: Principal, finding: Finding, **payload: object) -> DomainEvent:
    return DomainEvent(
        type_,
        Actor.of(principal),
        orgs=tuple({finding.operator_id, finding.raised_by_org_id, principal.org_id}),
        subjects={"finding": str(finding.id)},
        payload={"number": finding.number, "severity": finding.severity.value, "status": finding.status.value, **payload},
    )


async def raise_finding(session: AsyncSession, principal: Principal, data: FindingCreate) -> Finding:
    """A regulator's or auditor's person raises a finding. Refusals (nothing written): ``party_not_allowed`` (403),
    ``outside_engagement`` (403: an auditor, against an operator its engagements in force do not cover),
    ``not_an_operator`` (400), ``evidence_not_found`` (400: an index beyond the ledger)."""
    if principal.org_kind not in (OrgKind.regulator, OrgKind.auditor) or principal.is_program:
        raise Forbidden("Regulators and auditors raise findings.", code="party_not_allowed")
    operator = await session.get(Organisation, data.operator_id)
    if operator is None or operator.kind is not OrgKind.operator:
        raise InvalidInput("The finding must be against an operator.", code="not_an_operator", field="operator_id")
    scope = await auditor_scope(session, principal)
    if scope is not None and data.operator_id not in scope.operator_ids:
        await refuse_outside(
            session,
            principal,
            path="/api/supervision/findings",
            detail="Your firm's engagements in force do not cover this operator.",
        )
    size, _root = await ledger.head(session)
    missing = sorted(i for i in set(data.evidence) if i >= size)
    if missing:
        raise InvalidInput(
            f"No ledger entry at {missing[0]} (the ledger holds {size}).", code="evidence_not_found", field="evidence"
        )
    count = (await session.exec(select(func.count()).select_from(Finding))).one()
    finding = Finding(
        number=f"FND-{utcnow().year}-{int(count) + 1:05d}-{uuid.uuid4().hex[:4].upper()}",
        operator_id=data.operator_id,
        raised_by_org_id=principal.org_id,
        raised_by=principal.user_id,
        title=data.title,
        description=data.description,
        severity=data.severity,
        evidence_json=json.dumps(sorted(set(data.evidence))),
    )
    session.add(finding)
    await session.flush()
    await ledger.record(session, _event("finding.raised", principal, finding, evidence=json.loads(finding.evidence_json)))
    await session.commit()
    await session.refresh(finding)
    return finding


def _scoped(principal: Principal) -> SelectOfScalar[Finding]:
    stmt = select(Finding)
    if principal.org_kind in (OrgKind.regulator, OrgKind.owner):
        return stmt
    if principal.org_kind is OrgKind.auditor:
        return stmt.where(Finding.raised_by_org_id == principal.org_id)
    if principal.org_kind is OrgKind.operator:
        return stmt.where(Finding.operator_id == principal.org_id)
    raise Forbidden("Buyers see no findings.", code="party_not_allowed")


async def list_findings(session: AsyncSession, principal: Principal, status: FindingStatus | None = None) -> list[Finding]:
    """Findings the caller may see, newest first: regulators and the owner all, an auditor those its firm raised,
    an operator those against it."""
    stmt = _scoped(principal)
    if status is not None:
        stmt = stmt.where(Finding.status == status)
    return list((await session.exec(stmt.order_by(col(Finding.raised_at).desc()).limit(500))).all())


async def _find(session: AsyncSession, principal: Principal, finding_id: uuid.UUID) -> Finding:
    found: Finding | None = (await session.exec(_scoped(principal).where(Finding.id == finding_id).with_for_update())).first()
    if found is None:
        raise NotFound("No such finding.", code="finding_not_found")
    return found


async def respond(session: AsyncSession, principal: Principal, finding_id: uuid.UUID, text: str) -> Finding:
    """The operator's person responds to a finding against it (again, while it is not closed)."""
    if principal.org_kind is not OrgKind.operator or principal.is_program or principal.role not in (Role.admin, Role.member):
        raise Forbidden("The operator concerned responds to a finding.", code="party_not_allowed")
    finding = await _find(session, principal, finding_id)
    if finding.status is FindingStatus.closed:
        raise Conflict(f"Finding {finding.number} is closed.", code="finding_closed")
    finding.response, finding.responded_at, finding.responded_by = text, utcnow(), principal.user_id
    finding.status = FindingStatus.responded
    session.add(finding)
    await ledger.record(session, _event("finding.responded", principal, finding, response_chars=len(text)))
    await session.commit()
    await session.refresh(finding)
    return finding


async def close(session: AsyncSession, principal: Principal, finding_id: uuid.UUID, note: str) -> Finding:
    """A regulator's person closes a finding with a note."""
    if principal.org_kind is not OrgKind.regulator or principal.is_program:
        raise Forbidden("A regulator closes findings.", code="party_not_allowed")
    finding = await _find(session, principal, finding_id)
    if finding.status is FindingStatus.closed:
        raise Conflict(f"Finding {finding.number} is already closed.", code="finding_closed")
    finding.close_note, finding.closed_at, finding.closed_by = note, utcnow(), principal.user_id
    finding.status = FindingStatus.closed
    session.add(finding)
    await ledger.record(session, _event("finding.closed", principal, finding, note=note))
    await session.commit()
    await session.refresh(finding)
    return finding
