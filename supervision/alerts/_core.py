"""Alerts: the rules' vocabulary (severities, states, which events they start from), raising an alert idempotently, and
reading the ledger's read model for the rules."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any

from babel.numbers import get_currency_precision
from sqlalchemy import ColumnElement
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from marketplace.core.events import Actor, DomainEvent
from marketplace.core.identity.models import Organisation
from marketplace.core.principal import OrgKind
from supervision import services as ledger
from supervision.explorer import EventIndex
from supervision.models import LedgerEntry, SupervisionAlert


class AlertState(StrEnum):
    """``open -> acknowledged -> resolved`` (an open alert may be resolved at once)."""

    open = "open"
    acknowledged = "acknowledged"
    resolved = "resolved"


class AlertSeverity(StrEnum):
    """How urgent an alert is."""

    info = "info"
    warning = "warning"
    critical = "critical"


#: Every rule and its severity.
RULES: dict[str, AlertSeverity] = {
    "delivery.after_end": AlertSeverity.critical,
    "delivery.volume_spike": AlertSeverity.warning,
    "purpose.not_permitted": AlertSeverity.critical,
    "product.outside_licence": AlertSeverity.critical,
    "settlement.mismatch": AlertSeverity.warning,
    "ledger.self_check_failed": AlertSeverity.critical,
}

#: Volume spike: today's deliveries above this many times the baseline mean ...
SPIKE_FACTOR = 5
#: ... and at least this many deliveries that day.
MIN_SPIKE_CALLS = 100
#: The baseline: the mean of up to this many previous active days ...
BASELINE_DAYS = 14
#: ... found within this many days before ...
LOOKBACK_DAYS = 90
#: ... of which there must be at least this many.
MIN_BASELINE_DAYS = 3
#: Most ledger indexes kept as one alert's evidence.
MAX_EVIDENCE = 20
#: Relevant entries read per batch by :func:`evaluate`.
BATCH = 2000
MAX_NOTE = 2000

SUBSCRIPTION_ENDS = frozenset({"entitlement.ended", "subscription.cancelled", "subscription.expired", "subscription.revoked"})
SUBSCRIPTION_STARTS = frozenset({"entitlement.granted", "subscription.activated", "subscription.renewed"})
LICENCE_STOPS = frozenset({"licence.suspended", "licence.revoked", "licence.expired"})
LICENCE_RUNS = frozenset({"licence.granted", "licence.reinstated"})
PRODUCT_EVENTS = frozenset({"product.created", "product.listed"})
PLAN_EVENTS = frozenset({"plan.added", "plan.updated"})
SETTLEMENT_EVENTS = frozenset({"settlement.computed", "settlement.issued"})
#: Event types the rules start from (and ``subscription.*``, for the declared purpose).
TRIGGERS = frozenset({"delivery.recorded", *SUBSCRIPTION_ENDS, *LICENCE_STOPS, *PRODUCT_EVENTS, *PLAN_EVENTS, *SETTLEMENT_EVENTS})


def is_trigger(event_type: str) -> bool:
    """Whether an event of this type may make a rule fire (the rules run soon after one is committed)."""
    return event_type in TRIGGERS or event_type.startswith("subscription.")


# --- raising -------------------------------------------------------------------------------------


@dataclass
class Hit:
    """What a rule found, before it becomes an alert."""

    rule: str
    key: str
    detail: str
    occurred_at: datetime
    evidence: list[int]
    params: dict[str, Any] = field(default_factory=dict)
    operator_id: uuid.UUID | None = None
    licence_id: str | None = None
    product_id: str | None = None
    subscription_id: str | None = None


async def raise_alert(session: AsyncSession, hit: Hit, *, record_event: bool = True) -> SupervisionAlert | None:
    """Store ``hit`` as an open alert and record ``alert.raised`` (unless ``record_event`` is false), in a transaction
    of its own (committed); None, writing nothing, when an alert of the same key exists (raising is idempotent, also
    between concurrent runs)."""
    if (await session.exec(select(SupervisionAlert.id).where(SupervisionAlert.key == hit.key))).first() is not None:
        return None
    evidence = sorted(set(hit.evidence))[:MAX_EVIDENCE]
    alert = SupervisionAlert(
        rule=hit.rule,
        severity=RULES[hit.rule].value,
        detail=hit.detail,
        key=hit.key,
        state=AlertState.open.value,
        params_json=json.dumps(hit.params, sort_keys=True, default=str),
        evidence_json=json.dumps(evidence),
        operator_id=hit.operator_id,
        licence_id=hit.licence_id,
        product_id=hit.product_id,
        subscription_id=hit.subscription_id,
        occurred_at=hit.occurred_at,
    )
    try:
        async with session.begin_nested():
            session.add(alert)
            await session.flush()
    except IntegrityError:  # raised at the same time by another run
        await session.rollback()
        return None
    if record_event:
        await _record_raised(session, alert, hit, evidence)
    await session.commit()
    await session.refresh(alert)
    return alert


async def _record_raised(session: AsyncSession, alert: SupervisionAlert, hit: Hit, evidence: list[int]) -> None:
    await ledger.record(
        session,
        DomainEvent(
            "alert.raised",
            Actor("system", "platform"),
            orgs=(hit.operator_id,) if hit.operator_id else (),
            subjects={"alert": str(alert.id), **_subjects(alert)},
            payload={"rule": alert.rule, "severity": alert.severity, "key": hit.key, "evidence": evidence},
        ),
    )


def _subjects(alert: SupervisionAlert) -> dict[str, str]:
    named = {"licence": alert.licence_id, "product": alert.product_id, "subscription": alert.subscription_id}
    return {key: value for key, value in named.items() if value}


# --- reading the read model ----------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    """A ledger event as the rules read it."""

    index: int
    type: str
    time: datetime
    orgs: tuple[str, ...]
    subjects: dict[str, str]
    payload: dict[str, Any]

    @classmethod
    def decode(cls, index: int, leaf_input: str) -> Event:
        data = json.loads(leaf_input)
        return cls(
            index=index,
            type=data["type"],
            time=datetime.fromisoformat(str(data["time"]).replace("Z", "+00:00")),
            orgs=tuple(data.get("orgs") or ()),
            subjects=dict(data.get("subjects") or {}),
            payload=dict(data.get("payload") or {}),
        )


async def _events(session: AsyncSession, *where: Any, limit: int = 1000, newest_first: bool = False) -> list[Event]:
    """Events of the read model matching ``where``, by time (then index)."""
    order = (
        (col(EventIndex.occurred_at).desc(), col(EventIndex.leaf_index).desc())
        if newest_first
        else (col(EventIndex.occurred_at), col(EventIndex.leaf_index))
    )
    rows = (
        await session.exec(
            select(LedgerEntry.leaf_index, LedgerEntry.leaf_input)
            .join(EventIndex, col(EventIndex.leaf_index) == col(LedgerEntry.leaf_index))
            .where(*where)
            .order_by(*order)
            .limit(limit)
        )
    ).all()
    return [Event.decode(index, leaf) for index, leaf in rows]


def _types(*names: Iterable[str]) -> ColumnElement[bool]:
    return col(EventIndex.event_type).in_(sorted({n for group in names for n in group}))


class _Operators:
    """Which of an event's organisations is the operator (looked up once per run)."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self.known: dict[str, bool] = {}

    async def of(self, orgs: Sequence[str]) -> uuid.UUID | None:
        unknown = [o for o in orgs if o not in self.known]
        if unknown:
            ids = [uuid.UUID(o) for o in unknown if _is_uuid(o)]
            found = (
                {
                    str(i)
                    for i in (
                        await self.session.exec(
                            select(Organisation.id).where(col(Organisation.id).in_(ids), Organisation.kind == OrgKind.operator)
                        )
                    ).all()
                }
                if ids
                else set()
            )
            for org in unknown:
                self.known[org] = org in found
        return next((uuid.UUID(o) for o in orgs if self.known.get(o)), None)


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


async def _subscription_number(session: AsyncSession, subscription: str | None) -> str | None:
    """The readable number of a subscription, from its latest ``subscription.*`` event (None if it has none)."""
    if not subscription:
        return None
    for event in await _events(
        session,
        EventIndex.subscription_id == subscription,
        col(EventIndex.event_type).like("subscription.%"),
        limit=1,
        newest_first=True,
    ):
        number = event.payload.get("number")
        return str(number) if number else None
    return None


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _day_start(day: date) -> datetime:
    return datetime.combine(day, time(), UTC)


def _minor(amount: Any, currency: str) -> int | None:
    try:
        return int(Decimal(str(amount)).scaleb(int(get_currency_precision(currency))).to_integral_value())
    except (InvalidOperation, ValueError, TypeError):
        return None
