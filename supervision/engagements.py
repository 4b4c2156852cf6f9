"""Auditors' engagements: the owner grants an audit firm a look at some operators' transactions over a period,
until an expiry; the owner may revoke it early. The only place that writes engagements; each change records
``engagement.granted`` / ``engagement.revoked`` in the ledger in its transaction.

:func:`auditor_scope` is the one rule every supervision read applies: None for parties that see everything (the
owner, regulators); for an auditor, the union of its engagements in force (not revoked, not expired): per covered
operator, the covered periods. An event is in scope when one of its organisations is a covered operator and it
occurred (UTC day) within one of that operator's periods.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from marketplace.core.errors import Conflict, Forbidden, InvalidInput, NotFound
from marketplace.core.events import Actor, DomainEvent, publish
from marketplace.core.identity.models import Organisation
from marketplace.core.principal import OrgKind, Principal
from marketplace.core.types import utcnow
from supervision.models import Engagement, EngagementOperator
from supervision.schemas import EngagementCreate, EngagementPublic

MAX_REASON = 2000
#: Parties that read every supervision record, whatever the engagements.
SEES_EVERYTHING = frozenset({OrgKind.owner, OrgKind.regulator})


# --- scope ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scope:
    """What an auditor may see now: per covered operator, the covered periods (UTC days, inclusive)."""

    periods: Mapping[uuid.UUID, tuple[tuple[date, date], ...]] = field(default_factory=dict)
    #: The same periods keyed by the ids' text, as ledger events name organisations.
    _by_text: dict[str, tuple[tuple[date, date], ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_text", {str(key): spans for key, spans in self.periods.items()})

    @property
    def operator_ids(self) -> frozenset[uuid.UUID]:
        return frozenset(self.periods)

    @property
    def is_empty(self) -> bool:
        """No engagement in force: the auditor may read nothing."""
        return not self.periods

    def covers(self, orgs: Iterable[uuid.UUID | str], occurred_at: datetime) -> bool:
        """Whether an event of ``orgs`` at ``occurred_at`` (timezone-aware) is inside the engagement."""
        day = occurred_at.astimezone(UTC).date()
        for org in orgs:
            for start, end in self._by_text.get(str(org).lower(), ()):
                if start <= day <= end:
                    return True
        return False

    def describe(self) -> dict[str, Any]:
        """The scope as plain JSON (for an export header)."""
        return {
            str(operator): [{"start": start.isoformat(), "end": end.isoformat()} for start, end in periods]
            for operator, periods in sorted(self.periods.items(), key=lambda item: str(item[0]))
        }


def _in_force(engagement: Engagement, now: datetime) -> bool:
    return engagement.revoked_at is None and engagement.expires_at > now


def status_of(engagement: Engagement, now: datetime | None = None) -> str:
    """``revoked``, ``expired`` or ``in_force``."""
    if engagement.revoked_at is not None:
        return "revoked"
    return "in_force" if engagement.expires_at > (now or utcnow()) else "expired"


async def auditor_scope(session: AsyncSession, principal: Principal, now: datetime | None = None) -> Scope | None:
    """None for the owner and regulators (they see everything); for an auditor, its engagements in force at ``now``
    (an empty scope when there are none). Operators and buyers are refused: they supervise nothing."""
    if principal.org_kind in SEES_EVERYTHING:
        return None
    if principal.org_kind is not OrgKind.auditor:
        raise Forbidden("Only the owner, regulators and auditors supervise.", code="party_not_allowed")
    moment = now or utcnow()
    rows = (
        await session.exec(
            select(Engagement, EngagementOperator.operator_id)
            .join(EngagementOperator, col(EngagementOperator.engagement_id) == col(Engagement.id))
            .where(
                Engagement.auditor_id == principal.org_id,
                col(Engagement.revoked_at).is_(None),
                col(Engagement.expires_at) > moment,
            )
        )
    ).all()
    periods: dict[uuid.UUID, list[tuple[date, date]]] = {}
    for engagement, operator_id in rows:
        if _in_force(engagement, moment):
            periods.setdefault(operator_id, []).append((engagement.period_start, engagement.period_end))
    return Scope({operator: tuple(sorted(set(spans))) for operator, spans in periods.items()})


# --- reads ---------------------------------------------------------------------------------------


async def _operator_ids(session: AsyncSession, engagement_ids: list[uuid.UUID]) -> dict[uuid.UUID, list[uuid.UUID]]:
    if not engagement_ids:
        return {}
    rows = (
        await session.exec(
            select(EngagementOperator.engagement_id, EngagementOperator.operator_id).where(
                col(EngagementOperator.engagement_id).in_(engagement_ids)
            )
        )
    ).all()
    found: dict[uuid.UUID, list[uuid.UUID]] = {}
    for engagement_id, operator_id in rows:
        found.setdefault(engagement_id, []).append(operator_id)
    return {key: sorted(value, key=str) for key, value in found.items()}


def _public(engagement: Engagement, operator_ids: list[uuid.UUID], now: datetime) -> EngagementPublic:
    return EngagementPublic(
        id=engagement.id,
        owner_org_id=engagement.owner_org_id,
        auditor_id=engagement.auditor_id,
        operator_ids=operator_ids,
        period_start=engagement.period_start,
        period_end=engagement.period_end,
        expires_at=engagement.expires_at,
        status=status_of(engagement, now),  # type: ignore[arg-type]
        granted_by=engagement.granted_by,
        granted_at=engagement.granted_at,
        revoked_at=engagement.revoked_at,
        revoked_by=engagement.revoked_by,
        revoked_reason=engagement.revoked_reason,
    )


async def describe(session: AsyncSession, engagement: Engagement, now: datetime | None = None) -> EngagementPublic:
    """One engagement as the interface shows it."""
    operators = await _operator_ids(session, [engagement.id])
    return _public(engagement, operators.get(engagement.id, []), now or utcnow())


async def list_engagements(
    session: AsyncSession, principal: Principal, *, limit: int = 100, offset: int = 0, now: datetime | None = None
) -> tuple[list[EngagementPublic], int]:
    """Newest first. The owner sees the engagements it granted, regulators all, an auditor its own; others: 403."""
    stmt = select(Engagement)
    if principal.org_kind is OrgKind.owner:
        stmt = stmt.where(Engagement.owner_org_id == principal.org_id)
    elif principal.org_kind is OrgKind.auditor:
        stmt = stmt.where(Engagement.auditor_id == principal.org_id)
    elif principal.org_kind is not OrgKind.regulator:
        raise Forbidden("Only the owner, regulators and auditors see engagements.", code="party_not_allowed")
    total = int((await session.exec(select(func.count()).select_from(stmt.subquery()))).one())
    rows = list(
        (
            await session.exec(stmt.order_by(col(Engagement.granted_at).desc(), col(Engagement.id)).limit(limit).offset(offset))
        ).all()
    )
    operators = await _operator_ids(session, [row.id for row in rows])
    moment = now or utcnow()
    return [_public(row, operators.get(row.id, []), moment) for row in rows], total


# --- writes --------------------------------------------------------------------------------------


def _require_owner_admin(principal: Principal) -> None:
    if principal.org_kind is not OrgKind.owner or principal.is_program:
        raise Forbidden("Only the owner (data authority) manages engagements.", code="party_not_allowed")
    if not principal.is_org_admin:
        raise Forbidden("Only an administrator of the owner manages engagements.", code="org_admin_required")


async def _check_grant(session: AsyncSession, data: EngagementCreate, now: datetime) -> list[uuid.UUID]:
    """Every rule on a new engagement; returns its operators (each once, in the order given)."""
    operator_ids = list(dict.fromkeys(data.operator_ids))
    if not operator_ids:
        raise InvalidInput("An engagement covers at least one operator.", code="operators_required")
    if data.period_end < data.period_start:
        raise InvalidInput(
            f"The period ends ({data.period_end}) before it starts ({data.period_start}).", code="engagement_period_invalid"
        )
    if data.expires_at <= now:
        raise InvalidInput(
            f"The engagement would already have expired ({data.expires_at.isoformat()}).", code="engagement_expired"
        )
    auditor = await session.get(Organisation, data.auditor_id)
    if auditor is None or auditor.kind != OrgKind.auditor:
        raise InvalidInput("An engagement is granted to an organisation of kind auditor.", code="not_an_auditor")
    kinds = dict(
        (await session.exec(select(Organisation.id, Organisation.kind).where(col(Organisation.id).in_(operator_ids)))).all()
    )
    strangers = [str(i) for i in operator_ids if kinds.get(i) != OrgKind.operator]
    if strangers:
        raise InvalidInput(f"Not operators: {', '.join(strangers)}.", code="not_an_operator", operator_ids=strangers)
    return operator_ids


async def grant_engagement(
    session: AsyncSession, principal: Principal, data: EngagementCreate, now: datetime | None = None
) -> EngagementPublic:
    """The owner's administrator grants an engagement; everything is checked before anything is written. Commits."""
    _require_owner_admin(principal)
    moment = now or utcnow()
    operator_ids = await _check_grant(session, data, moment)
    engagement = Engagement(
        auditor_id=data.auditor_id,
        period_start=data.period_start,
        period_end=data.period_end,
        expires_at=data.expires_at,
        owner_org_id=principal.org_id,
        granted_by=principal.user_id,
        granted_at=moment,
    )
    session.add(engagement)
    await session.flush()
    for operator_id in operator_ids:
        session.add(EngagementOperator(engagement_id=engagement.id, operator_id=operator_id))
    await publish(
        session,
        DomainEvent(
            "engagement.granted",
            Actor.of(principal),
            orgs=(principal.org_id, data.auditor_id, *operator_ids),
            subjects={"engagement": str(engagement.id)},
            payload={
                "auditor_id": str(data.auditor_id),
                "operator_ids": [str(i) for i in operator_ids],
                "period": {"start": data.period_start.isoformat(), "end": data.period_end.isoformat()},
                "expires_at": data.expires_at.isoformat(),
            },
            occurred_at=moment,
        ),
    )
    await session.commit()
    return _public(engagement, sorted(operator_ids, key=str), moment)


async def revoke_engagement(
    session: AsyncSession, principal: Principal, engagement_id: uuid.UUID, reason: str, now: datetime | None = None
) -> EngagementPublic:
    """The owner's administrator ends an engagement early, with a written reason. Commits."""
    _require_owner_admin(principal)
    text = reason.strip()
    if not text:
        raise InvalidInput("Give a written reason for revoking the engagement.", code="reason_required")
    if len(text) > MAX_REASON:
        raise InvalidInput(f"A reason is at most {MAX_REASON} characters.", code="reason_too_long")
    stmt = select(Engagement).where(Engagement.id == engagement_id, Engagement.owner_org_id == principal.org_id).with_for_update()
    engagement = (await session.exec(stmt)).first()
    if engagement is None:
        raise NotFound("No such engagement.", code="engagement_not_found")
    if engagement.revoked_at is not None:
        raise Conflict("The engagement was already revoked.", code="engagement_already_revoked")
    moment = now or utcnow()
    engagement.revoked_at = moment
    engagement.revoked_by = principal.user_id
    engagement.revoked_reason = text
    session.add(engagement)
    operators = (await _operator_ids(session, [engagement.id])).get(engagement.id, [])
    await publish(
        session,
        DomainEvent(
            "engagement.revoked",
            Actor.of(principal),
            orgs=(principal.org_id, engagement.auditor_id, *operators),
            subjects={"engagement": str(engagement.id)},
            payload={"auditor_id": str(engagement.auditor_id), "reason": text},
            occurred_at=moment,
        ),
    )
    await session.commit()
    return _public(engagement, operators, moment)


# --- reads by auditors ---------------------------------------------------------------------------


async def read_scope(
    session: AsyncSession, principal: Principal, *, path: str, query: str = "", now: datetime | None = None
) -> Scope | None:
    """The scope a supervision read runs under (None: everything). An auditor without an engagement in force is
    refused with 403 ``outside_engagement``, and the attempt is recorded in the ledger (``records.read_refused``,
    in a transaction of its own: nothing else is written)."""
    scope = await auditor_scope(session, principal, now)
    if scope is None or not scope.is_empty:
        return scope
    await publish(
        session,
        DomainEvent(
            "records.read_refused",
            Actor.of(principal),
            orgs=(principal.org_id,),
            payload={"path": path[:300], "query": query[:500], "party": principal.org_kind.value, "code": "outside_engagement"},
        ),
    )
    await session.commit()
    raise Forbidden("No engagement of your firm is in force: there is nothing you may read.", code="outside_engagement")


def event_in_scope(event: Mapping[str, Any], scope: Scope | None) -> bool:
    """Whether a decoded ledger event (``orgs``, ``time``) is inside ``scope`` (None: everything is)."""
    if scope is None:
        return True
    try:
        moment = datetime.fromisoformat(str(event["time"]).replace("Z", "+00:00"))
    except (KeyError, ValueError):
        return False
    return scope.covers(event.get("orgs") or (), moment)


async def refuse_outside(
    session: AsyncSession, principal: Principal, *, path: str, query: str = "", detail: str = "Outside your firm's engagements."
) -> None:
    """Record an auditor's read refused because it falls outside its engagements in force (``records.read_refused``,
    in a transaction of its own: nothing else is written), then raise 403 ``outside_engagement``."""
    await session.rollback()
    await publish(
        session,
        DomainEvent(
            "records.read_refused",
            Actor.of(principal),
            orgs=(principal.org_id,),
            payload={"path": path[:300], "query": query[:500], "party": principal.org_kind.value, "code": "outside_engagement"},
        ),
    )
    await session.commit()
    raise Forbidden(detail, code="outside_engagement")


def spans_in_force(auditor_id: uuid.UUID, now: datetime | None = None) -> Any:
    """A subquery of the (``operator_id``, ``period_start``, ``period_end``) an auditor's engagements in force at
    ``now`` cover, for other domains to scope their own records by in SQL (licensing: a licence whose operator is
    covered and whose term overlaps a covered period)."""
    return (
        select(col(EngagementOperator.operator_id), col(Engagement.period_start), col(Engagement.period_end))
        .join(Engagement, col(Engagement.id) == col(EngagementOperator.engagement_id))
        .where(
            Engagement.auditor_id == auditor_id,
            col(Engagement.revoked_at).is_(None),
            col(Engagement.expires_at) > (now or utcnow()),
        )
        .subquery("spans_in_force")
    )
