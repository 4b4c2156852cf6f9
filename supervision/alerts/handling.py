"""The supervisors' interface to alerts: listing them in scope, and a regulator's acknowledge and resolve."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, StringConstraints
from sqlalchemy import ColumnElement, and_, false, func, or_
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from marketplace.core.errors import Conflict, Forbidden, InvalidInput, NotFound
from marketplace.core.events import Actor, DomainEvent
from marketplace.core.principal import OrgKind, Principal
from marketplace.core.types import utcnow
from supervision import services as ledger
from supervision.alerts._core import (
    MAX_NOTE,
    RULES,
    AlertSeverity,
    AlertState,
    _day_start,
    _subjects,
)
from supervision.engagements import Scope
from supervision.models import LedgerEntry, SupervisionAlert

# --- the supervisors' interface ------------------------------------------------------------------


class AlertResolve(BaseModel):
    """How a regulator resolved an alert."""

    model_config = ConfigDict(extra="forbid")

    note: Annotated[str, StringConstraints(min_length=1, max_length=MAX_NOTE, strip_whitespace=True)]


@dataclass(frozen=True)
class AlertFilter:
    """What the list is asked for (all optional)."""

    state: AlertState | None = None
    severity: AlertSeverity | None = None
    rule: str | None = None
    operator: uuid.UUID | None = None


def _require_supervisor(principal: Principal) -> None:
    if principal.org_kind not in (OrgKind.owner, OrgKind.regulator, OrgKind.auditor):
        raise Forbidden("Alerts are for the owner, regulators and auditors.", code="party_not_allowed")


def _in_scope(scope: Scope | None) -> ColumnElement[bool] | None:
    """An auditor's scope as a condition on alerts: their operator, at a time within that operator's periods."""
    if scope is None:
        return None
    return or_(
        *[
            and_(
                col(SupervisionAlert.operator_id) == operator,
                col(SupervisionAlert.occurred_at) >= _day_start(first),
                col(SupervisionAlert.occurred_at) < _day_start(last + timedelta(days=1)),
            )
            for operator, periods in scope.periods.items()
            for first, last in periods
        ],
        false(),  # nothing, when there are no periods
    )


def alert_in_scope(alert: SupervisionAlert, scope: Scope | None) -> bool:
    """Whether an alert is inside ``scope`` (None: everything is)."""
    if scope is None:
        return True
    return (
        alert.operator_id is not None and alert.occurred_at is not None and scope.covers([alert.operator_id], alert.occurred_at)
    )


async def list_alerts(
    session: AsyncSession,
    principal: Principal,
    scope: Scope | None,
    wanted: AlertFilter,
    *,
    before: int | None = None,
    limit: int = 50,
) -> tuple[list[SupervisionAlert], int, int | None]:
    """Alerts newest first (by id), older than ``before``: the page, how many match in all, and the next cursor.
    An auditor gets only alerts of its engagements (``scope``); an operator filter outside it is refused by the
    caller (403 ``outside_engagement``)."""
    _require_supervisor(principal)
    if wanted.rule is not None and wanted.rule not in RULES:
        raise InvalidInput(f"Unknown rule {wanted.rule!r}.", code="unknown_rule", field="rule", rules=sorted(RULES))
    conditions: list[ColumnElement[bool]] = []
    if wanted.state is not None:
        conditions.append(col(SupervisionAlert.state) == wanted.state.value)
    if wanted.severity is not None:
        conditions.append(col(SupervisionAlert.severity) == wanted.severity.value)
    if wanted.rule is not None:
        conditions.append(col(SupervisionAlert.rule) == wanted.rule)
    if wanted.operator is not None:
        conditions.append(col(SupervisionAlert.operator_id) == wanted.operator)
    if (inside := _in_scope(scope)) is not None:
        conditions.append(inside)
    total = int((await session.exec(select(func.count()).select_from(SupervisionAlert).where(*conditions))).one())
    if before is not None:
        conditions.append(col(SupervisionAlert.id) < before)
    rows = list(
        (
            await session.exec(
                select(SupervisionAlert).where(*conditions).order_by(col(SupervisionAlert.id).desc()).limit(limit + 1)
            )
        ).all()
    )
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, total, (rows[-1].id if more and rows else None)


async def get_alert(session: AsyncSession, alert_id: int, *, lock: bool = False) -> SupervisionAlert:
    """One alert (404 ``alert_not_found``); the caller checks the reader's scope."""
    stmt = select(SupervisionAlert).where(SupervisionAlert.id == alert_id)
    found = (await session.exec(stmt.with_for_update() if lock else stmt)).first()
    if found is None:
        raise NotFound("No such alert.", code="alert_not_found")
    return found


def _require_regulator(principal: Principal) -> None:
    if principal.org_kind is not OrgKind.regulator or principal.is_program:
        raise Forbidden("A regulator's person handles alerts.", code="party_not_allowed")


async def _record_change(session: AsyncSession, principal: Principal, alert: SupervisionAlert, **payload: Any) -> None:
    orgs = tuple(dict.fromkeys(o for o in (alert.operator_id, principal.org_id) if o is not None))
    await ledger.record(
        session,
        DomainEvent(
            f"alert.{alert.state}",
            Actor.of(principal),
            orgs=orgs,
            subjects={"alert": str(alert.id), **_subjects(alert)},
            payload={"rule": alert.rule, "severity": alert.severity, "state": alert.state, **payload},
        ),
    )


async def acknowledge(session: AsyncSession, principal: Principal, alert_id: int) -> SupervisionAlert:
    """A regulator takes an open alert in hand (409 ``alert_not_open`` otherwise); records ``alert.acknowledged``."""
    _require_regulator(principal)
    alert = await get_alert(session, alert_id, lock=True)
    if alert.state != AlertState.open.value:
        raise Conflict(f"Alert {alert.id} is {alert.state}, not open.", code="alert_not_open", state=alert.state)
    alert.state = AlertState.acknowledged.value
    alert.acknowledged_at, alert.acknowledged_by = utcnow(), principal.user_id
    session.add(alert)
    await _record_change(session, principal, alert)
    await session.commit()
    await session.refresh(alert)
    return alert


async def resolve(session: AsyncSession, principal: Principal, alert_id: int, note: str) -> SupervisionAlert:
    """A regulator resolves an open or acknowledged alert with a note (409 ``alert_already_resolved`` otherwise);
    records ``alert.resolved`` with the note."""
    _require_regulator(principal)
    text = note.strip()
    if not text:
        raise InvalidInput("Say how the alert was resolved.", code="note_required", field="note")
    if len(text) > MAX_NOTE:
        raise InvalidInput(f"A note is at most {MAX_NOTE} characters.", code="note_too_long", field="note")
    alert = await get_alert(session, alert_id, lock=True)
    if alert.state == AlertState.resolved.value:
        raise Conflict(f"Alert {alert.id} is already resolved.", code="alert_already_resolved", state=alert.state)
    alert.state = AlertState.resolved.value
    alert.resolved_at, alert.resolved_by, alert.resolution_note = utcnow(), principal.user_id, text
    session.add(alert)
    await _record_change(session, principal, alert, note=text)
    await session.commit()
    await session.refresh(alert)
    return alert


async def public(session: AsyncSession, alerts: Sequence[SupervisionAlert]) -> list[dict[str, Any]]:
    """Alerts as the interface shows them, each evidence index with its event's type and time (one read)."""
    wanted = sorted({i for a in alerts for i in json.loads(a.evidence_json)})
    entries: dict[int, tuple[str, datetime]] = {}
    if wanted:
        rows = (
            await session.exec(
                select(LedgerEntry.leaf_index, LedgerEntry.event_type, LedgerEntry.occurred_at).where(
                    col(LedgerEntry.leaf_index).in_(wanted)
                )
            )
        ).all()
        entries.update({index: (kind, moment) for index, kind, moment in rows})
    out = []
    for alert in alerts:
        evidence = []
        for index in json.loads(alert.evidence_json):
            if index in entries:
                kind, moment = entries[index]
                evidence.append({"index": index, "type": kind, "time": moment.isoformat()})
        out.append(
            {
                "id": alert.id,
                "rule": alert.rule,
                "severity": alert.severity,
                "detail": alert.detail,
                "state": alert.state,
                "params": json.loads(alert.params_json),
                "evidence": evidence,
                "operator_id": str(alert.operator_id) if alert.operator_id else None,
                "subjects": _subjects(alert),
                "created_at": alert.created_at.isoformat(),
                "occurred_at": alert.occurred_at.isoformat() if alert.occurred_at else None,
                "acknowledged_at": alert.acknowledged_at.isoformat() if alert.acknowledged_at else None,
                "acknowledged_by": str(alert.acknowledged_by) if alert.acknowledged_by else None,
                "resolved_at": alert.resolved_at.isoformat() if alert.resolved_at else None,
                "resolved_by": str(alert.resolved_by) if alert.resolved_by else None,
                "resolution_note": alert.resolution_note,
            }
        )
    return out
