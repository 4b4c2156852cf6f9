"""The alert rules and their runs (see the package's docstring for what each rule watches)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from babel.numbers import get_currency_precision
from sqlalchemy import func, or_
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from marketplace.core.types import utcnow
from supervision import services as ledger
from supervision.alerts._core import (
    BASELINE_DAYS,
    BATCH,
    LICENCE_RUNS,
    LICENCE_STOPS,
    LOOKBACK_DAYS,
    MAX_EVIDENCE,
    MIN_BASELINE_DAYS,
    MIN_SPIKE_CALLS,
    PLAN_EVENTS,
    PRODUCT_EVENTS,
    SETTLEMENT_EVENTS,
    SPIKE_FACTOR,
    SUBSCRIPTION_ENDS,
    SUBSCRIPTION_STARTS,
    TRIGGERS,
    Event,
    Hit,
    _day_start,
    _events,
    _minor,
    _Operators,
    _stamp,
    _subscription_number,
    _types,
    raise_alert,
)
from supervision.explorer import EventIndex, EventOrg, index_new_events
from supervision.models import LedgerEntry, SupervisionAlert, SupervisionCursor

# --- the rules -----------------------------------------------------------------------------------


async def _after_end(session: AsyncSession, new: list[Event], operators: _Operators) -> list[Hit]:
    """``delivery.after_end``: new deliveries, and deliveries later than a new end, against their timelines."""
    candidates = {e.index: e for e in new if e.type == "delivery.recorded"}
    for end in new:
        if end.type in SUBSCRIPTION_ENDS and end.subjects.get("subscription"):
            scope = EventIndex.subscription_id == end.subjects["subscription"]
        elif end.type in LICENCE_STOPS and end.subjects.get("licence"):
            scope = EventIndex.licence_id == end.subjects["licence"]
        else:
            continue
        for later in await _events(
            session, scope, EventIndex.event_type == "delivery.recorded", col(EventIndex.occurred_at) > end.time, limit=500
        ):
            candidates.setdefault(later.index, later)
    if not candidates:
        return []
    timelines: dict[tuple[str, str], list[Event]] = {}

    async def timeline(kind: str, subject: str) -> list[Event]:
        if (kind, subject) not in timelines:
            if kind == "subscription":
                where = (EventIndex.subscription_id == subject, _types(SUBSCRIPTION_ENDS, SUBSCRIPTION_STARTS))
            else:
                where = (EventIndex.licence_id == subject, _types(LICENCE_STOPS, LICENCE_RUNS))
            timelines[(kind, subject)] = await _events(session, *where)
        return timelines[(kind, subject)]

    grouped: dict[str, tuple[Hit, list[Event]]] = {}
    for delivery in sorted(candidates.values(), key=lambda e: (e.time, e.index)):
        stop: Event | None = None
        subscription = delivery.subjects.get("subscription")
        licence = delivery.subjects.get("licence")
        if subscription:
            stop = _stopped_by(await timeline("subscription", subscription), delivery, SUBSCRIPTION_ENDS)
        if stop is None and licence:
            stop = _stopped_by(await timeline("licence", licence), delivery, LICENCE_STOPS)
        if stop is None:
            continue
        whose = delivery.subjects.get("entitlement") or subscription or str(delivery.index)
        day = delivery.time.astimezone(UTC).date().isoformat()
        key = f"delivery.after_end:{whose}:{day}"
        if key not in grouped:
            hit = Hit(
                rule="delivery.after_end",
                key=key,
                detail="",
                occurred_at=delivery.time,
                evidence=[stop.index],
                params={"day": day, "stopped_by": stop.type, "stopped_at": stop.time.isoformat(), "deliveries": 0},
                operator_id=await operators.of(delivery.orgs),
                licence_id=licence,
                product_id=delivery.subjects.get("product"),
                subscription_id=subscription,
            )
            grouped[key] = (hit, [stop])
        hit = grouped[key][0]
        hit.params["deliveries"] += 1
        hit.occurred_at = max(hit.occurred_at, delivery.time)
        if len(hit.evidence) < MAX_EVIDENCE:
            hit.evidence.append(delivery.index)
    hits = []
    for hit, (stop,) in grouped.values():
        what = (
            f"its licence was {stop.type.removeprefix('licence.')}"
            if stop.type in LICENCE_STOPS
            else "its entitlement ended"
            if stop.type == "entitlement.ended"
            else f"its subscription was {stop.type.removeprefix('subscription.')}"
        )
        count = hit.params["deliveries"]
        number = await _subscription_number(session, hit.subscription_id)
        hit.params["subscription_number"] = number
        hit.detail = (
            f"{count} {'delivery was' if count == 1 else 'deliveries were'} recorded on {hit.params['day']} for "
            f"subscription {number or hit.subscription_id} after {what} ({stop.type} at {_stamp(stop.time)}, ledger entry {stop.index})."
        )
        hits.append(hit)
    return hits


def _stopped_by(events: list[Event], delivery: Event, stops: frozenset[str]) -> Event | None:
    """The stop in force when ``delivery`` occurred: the latest timeline event (by time) not after it, if a stop."""
    latest = None
    for event in events:
        if event.time > delivery.time:
            break
        latest = event
    return latest if latest is not None and latest.type in stops else None


def _utc_day(session: AsyncSession, column: Any) -> Any:
    dialect = session.bind.dialect.name if session.bind else "sqlite"
    return func.date(func.timezone("UTC", column)) if dialect == "postgresql" else func.date(column)


async def _volume_spike(session: AsyncSession, new: list[Event], operators: _Operators) -> list[Hit]:
    """``delivery.volume_spike``: each (subscription, day) with new deliveries against its baseline (one grouped count
    per subscription and batch)."""
    touched: dict[str, dict[date, Event]] = defaultdict(dict)
    for event in new:
        if event.type == "delivery.recorded" and event.subjects.get("subscription"):
            touched[event.subjects["subscription"]].setdefault(event.time.astimezone(UTC).date(), event)
    hits = []
    per_day = _utc_day(session, EventIndex.occurred_at)
    for subscription, days in touched.items():
        mine = (EventIndex.subscription_id == subscription, EventIndex.event_type == "delivery.recorded")
        first, last = min(days) - timedelta(days=LOOKBACK_DAYS), max(days) + timedelta(days=1)
        rows = (
            await session.exec(
                select(per_day, func.count())
                .where(*mine, col(EventIndex.occurred_at) >= _day_start(first), col(EventIndex.occurred_at) < _day_start(last))
                .group_by(per_day)
            )
        ).all()
        counts = {date.fromisoformat(str(day)[:10]): int(n) for day, n in rows}
        for day, sample in sorted(days.items()):
            today = counts.get(day, 0)
            if today < MIN_SPIKE_CALLS:
                continue
            earlier = sorted((d for d in counts if day - timedelta(days=LOOKBACK_DAYS) <= d < day), reverse=True)
            baseline = [counts[d] for d in earlier[:BASELINE_DAYS]]
            if len(baseline) < MIN_BASELINE_DAYS:
                continue
            mean = sum(baseline) / len(baseline)
            if today <= SPIKE_FACTOR * mean:
                continue
            start = _day_start(day)
            number = await _subscription_number(session, subscription)
            latest = await _events(
                session,
                *mine,
                col(EventIndex.occurred_at) >= start,
                col(EventIndex.occurred_at) < start + timedelta(days=1),
                limit=MAX_EVIDENCE,
                newest_first=True,
            )
            hits.append(
                Hit(
                    rule="delivery.volume_spike",
                    key=f"delivery.volume_spike:{subscription}:{day.isoformat()}",
                    detail=f"Subscription {number or subscription} received {today} deliveries on {day.isoformat()}, "
                    f"{today / mean:.1f} times its baseline of {mean:.1f} a day (the mean of its previous "
                    f"{len(baseline)} active days).",
                    occurred_at=max(e.time for e in latest) if latest else sample.time,
                    evidence=[e.index for e in latest],
                    params={
                        "day": day.isoformat(),
                        "deliveries": today,
                        "baseline": round(mean, 2),
                        "baseline_days": len(baseline),
                        "factor": SPIKE_FACTOR,
                        "subscription_number": number,
                    },
                    operator_id=await operators.of(sample.orgs),
                    licence_id=sample.subjects.get("licence"),
                    product_id=sample.subjects.get("product"),
                    subscription_id=subscription,
                )
            )
    return hits


async def _licence_terms(session: AsyncSession, licence: str, before: int, field_name: str) -> Event | None:
    """The licence's latest ``licence.*`` event before index ``before`` that carries ``field_name``."""
    events = await _events(
        session,
        EventIndex.licence_id == licence,
        col(EventIndex.event_type).like("licence.%"),
        col(EventIndex.leaf_index) < before,
        limit=50,
        newest_first=True,
    )
    return next((e for e in sorted(events, key=lambda e: -e.index) if field_name in e.payload), None)


async def _purpose(session: AsyncSession, new: list[Event], operators: _Operators) -> list[Hit]:
    """``purpose.not_permitted``: each subscription with a new event, its declared purpose against its licence's."""
    firsts: dict[str, Event] = {}
    for event in new:
        if event.type.startswith("subscription.") and event.subjects.get("subscription") and event.subjects.get("licence"):
            firsts.setdefault(event.subjects["subscription"], event)
    hits = []
    for subscription, event in firsts.items():
        purpose = event.payload.get("purpose")
        licence = event.subjects["licence"]
        terms = await _licence_terms(session, licence, event.index, "purposes")
        if not purpose or terms is None or purpose in (terms.payload.get("purposes") or ()):
            continue
        number = event.payload.get("number") or subscription
        permitted = list(terms.payload.get("purposes") or ())
        hits.append(
            Hit(
                rule="purpose.not_permitted",
                key=f"purpose.not_permitted:{subscription}",
                detail=f"Subscription {number} declares the purpose {purpose!r}, which licence "
                f"{terms.payload.get('number', licence)} does not permit (it permits: {', '.join(permitted) or 'none'}).",
                occurred_at=event.time,
                evidence=[terms.index, event.index],
                params={"purpose": purpose, "permitted": permitted, "subscription_number": number},
                operator_id=await operators.of(event.orgs),
                licence_id=licence,
                product_id=event.subjects.get("product"),
                subscription_id=subscription,
            )
        )
    return hits


def _plan_breach(payload: dict[str, Any], caps: dict[str, Any]) -> tuple[str, str, str] | None:
    """Whether a plan's terms break the licence's caps: (what, price, cap), or None. The rules of the catalog's
    ``check_plan_terms`` that are about the licence."""
    plan_type = str(payload.get("type"))
    try:
        capped = {str(k): Decimal(str(v)) for k, v in caps.items() if v is not None}
        price = Decimal(str(payload.get("price") or "0"))
        per_call = payload.get("per_call_price")
        if plan_type not in capped:
            return ("type_not_licensed", f"{price:.2f}", "none")
        if plan_type == "metered":
            if per_call is not None and Decimal(str(per_call)) > capped["metered"]:
                return ("per_call_price_over_cap", f"{Decimal(str(per_call)):.2f}", f"{capped['metered']:.2f}")
            if "monthly" in capped and price > capped["monthly"]:
                return ("monthly_fee_over_cap", f"{price:.2f}", f"{capped['monthly']:.2f}")
        elif plan_type != "free" and price > capped[plan_type]:
            return ("price_over_cap", f"{price:.2f}", f"{capped[plan_type]:.2f}")
    except (InvalidOperation, ValueError, TypeError):
        return None
    return None


async def _outside_licence(session: AsyncSession, new: list[Event], operators: _Operators) -> list[Hit]:
    """``product.outside_licence``: new product and plan events against the licence's resources and price caps."""
    hits = []
    created: dict[str, Event | None] = {}

    async def creation(product: str) -> Event | None:
        if product not in created:
            found = await _events(session, EventIndex.product_id == product, EventIndex.event_type == "product.created", limit=1)
            created[product] = found[0] if found else None
        return created[product]

    for event in new:
        product = event.subjects.get("product")
        if not product or event.type not in PRODUCT_EVENTS | PLAN_EVENTS:
            continue
        origin = event if event.type == "product.created" else await creation(product)
        licence = event.subjects.get("licence") or (origin.subjects.get("licence") if origin else None)
        if not licence:
            continue
        if event.type in PRODUCT_EVENTS:
            resource = origin.payload.get("resource") if origin else None
            terms = await _licence_terms(session, licence, event.index, "resource_ids")
            if not resource or terms is None or resource in (terms.payload.get("resource_ids") or ()):
                continue
            hit = Hit(
                rule="product.outside_licence",
                key=f"product.outside_licence:{product}:resource:{resource}",
                detail=f"Product {product} ({event.type}) is built on resource {resource}, which licence "
                f"{terms.payload.get('number', licence)} does not cover.",
                occurred_at=event.time,
                evidence=sorted({terms.index, event.index, *([origin.index] if origin else [])}),
                params={"what": "resource_not_in_licence", "resource": resource},
            )
        else:
            terms = await _licence_terms(session, licence, event.index, "price_caps")
            breach = _plan_breach(event.payload, terms.payload.get("price_caps") or {}) if terms else None
            if terms is None or breach is None:
                continue
            what, price, cap = breach
            plan = event.subjects.get("plan", "")
            number = terms.payload.get("number", licence)
            hit = Hit(
                rule="product.outside_licence",
                key=f"product.outside_licence:{plan}:{event.payload.get('type')}:{event.payload.get('price')}:"
                f"{event.payload.get('per_call_price')}",
                detail=(
                    f"A {event.payload.get('type')} plan of product {product} is offered although licence {number} sets no "
                    "cap for that type of plan."
                    if what == "type_not_licensed"
                    else f"A {event.payload.get('type')} plan of product {product} is priced {price}, over licence "
                    f"{number}'s cap of {cap}."
                ),
                occurred_at=event.time,
                evidence=[terms.index, event.index],
                params={"what": what, "plan": plan, "plan_type": event.payload.get("type"), "price": price, "cap": cap},
            )
        hit.operator_id = await operators.of(event.orgs)
        hit.licence_id, hit.product_id = licence, product
        hits.append(hit)
    return hits


def _month(period: str) -> tuple[datetime, datetime] | None:
    try:
        first = datetime.strptime(period, "%Y-%m").replace(tzinfo=UTC)
    except (TypeError, ValueError):
        return None
    return first, (first + timedelta(days=32)).replace(day=1)


async def _settlement(session: AsyncSession, new: list[Event], operators: _Operators) -> list[Hit]:
    """``settlement.mismatch``: each new statement against the payments and refunds recorded before it."""
    hits = []
    for event in new:
        if event.type not in SETTLEMENT_EVENTS:
            continue
        currency, month = str(event.payload.get("currency") or ""), _month(str(event.payload.get("period")))
        operator = await operators.of(event.orgs)
        statement = event.subjects.get("statement", str(event.index))
        if operator is None or month is None or len(currency) != 3:
            continue
        start, end = month
        mine = (
            EventOrg.org_id == str(operator),
            EventIndex.currency == currency,
            col(EventIndex.leaf_index) < event.index,
        )
        payments = [
            p
            for p in await _events(
                session,
                col(EventIndex.leaf_index).in_(
                    select(EventOrg.leaf_index).where(EventOrg.org_id == str(operator), col(EventOrg.occurred_at) >= start)
                ),
                *mine[1:],
                EventIndex.event_type == "payment.received",
                limit=100_000,
            )
            if start <= _received(p) < end
        ]
        refunds = await _events(
            session,
            col(EventIndex.leaf_index).in_(
                select(EventOrg.leaf_index).where(*mine[:1], col(EventOrg.occurred_at) >= start, col(EventOrg.occurred_at) < end)
            ),
            *mine[1:],
            EventIndex.event_type == "payment.refunded",
            limit=100_000,
        )
        gross = sum(_minor(p.payload.get("amount"), currency) or 0 for p in payments)
        refunded = sum(_minor(r.payload.get("amount"), currency) or 0 for r in refunds)
        stated_gross = _minor(event.payload.get("gross"), currency)
        stated_refunds = _minor(event.payload.get("refunds"), currency)
        mismatches = int(event.payload.get("mismatches") or 0)
        if stated_gross == gross and stated_refunds == refunded and not mismatches:
            continue
        digits = int(get_currency_precision(currency))

        def money(minor: int, digits: int = digits) -> str:
            return f"{Decimal(minor).scaleb(-digits):.{digits}f}"

        problems = []
        if stated_gross != gross:
            problems.append(f"gross {event.payload.get('gross')} against {money(gross)} received")
        if stated_refunds != refunded:
            problems.append(f"refunds {event.payload.get('refunds')} against {money(refunded)} refunded")
        if mismatches:
            problems.append(f"{mismatches} reconciliation mismatch{'es' if mismatches != 1 else ''}")
        hits.append(
            Hit(
                rule="settlement.mismatch",
                key=f"settlement.mismatch:{statement}",
                detail=f"Settlement statement {event.payload.get('number', statement)} for {event.payload.get('period')} "
                f"({currency}) does not match the ledger: {'; '.join(problems)}.",
                occurred_at=event.time,
                evidence=[event.index, *[e.index for e in (payments + refunds)][: MAX_EVIDENCE - 1]],
                params={
                    "period": event.payload.get("period"),
                    "currency": currency,
                    "stated_gross": event.payload.get("gross"),
                    "ledger_gross": money(gross),
                    "stated_refunds": event.payload.get("refunds"),
                    "ledger_refunds": money(refunded),
                    "mismatches": mismatches,
                },
                operator_id=operator,
            )
        )
    return hits


def _received(payment: Event) -> datetime:
    try:
        return datetime.fromisoformat(str(payment.payload["received_at"]).replace("Z", "+00:00")).astimezone(UTC)
    except (KeyError, ValueError):
        return payment.time


RULE_FUNCTIONS = (_after_end, _volume_spike, _purpose, _outside_licence, _settlement)


# --- running the rules ---------------------------------------------------------------------------


@dataclass
class Evaluation:
    """What a run did: entries looked at, the index to start the next run from, the alerts raised."""

    start: int
    next_index: int
    examined: int = 0
    raised: list[SupervisionAlert] = field(default_factory=list)


async def evaluate(session: AsyncSession, start: int = 0, *, batch: int = BATCH) -> Evaluation:
    """Run every rule over the relevant ledger entries from index ``start`` up to the current head; raise what they
    find (idempotent: an alert raised before is not raised again). Returns the index the next run starts from."""
    await index_new_events(session)
    size, _root = await ledger.head(session)
    result = Evaluation(start=start, next_index=max(start, size))
    position = start
    relevant = or_(col(LedgerEntry.event_type).in_(sorted(TRIGGERS)), col(LedgerEntry.event_type).like("subscription.%"))
    while position < size:
        rows = (
            await session.exec(
                select(LedgerEntry.leaf_index, LedgerEntry.leaf_input)
                .where(col(LedgerEntry.leaf_index) >= position, col(LedgerEntry.leaf_index) < size, relevant)
                .order_by(col(LedgerEntry.leaf_index))
                .limit(batch)
            )
        ).all()
        if not rows:
            break
        new = [Event.decode(index, leaf) for index, leaf in rows]
        result.examined += len(new)
        operators = _Operators(session)
        for rule in RULE_FUNCTIONS:
            for hit in await rule(session, new, operators):
                alert = await raise_alert(session, hit)
                if alert is not None:
                    result.raised.append(alert)
        position = new[-1].index + 1
    return result


class StoredCursor:
    """Where the periodic run keeps how far it got: a row of ``supervision_cursor`` (the next index, and the leaf hash
    of the entry before it, so that a ledger replaced under it is evaluated again from the start). Shared by every
    worker; losing it costs one full run, nothing more: raising is idempotent."""

    def __init__(self, name: str = "alert_rules") -> None:
        self.name = name

    async def load(self, session: AsyncSession) -> int:
        """The index to start from (0 when unknown or no longer matching the ledger)."""
        saved = await session.get(SupervisionCursor, self.name)
        if saved is None or saved.next_index <= 0 or saved.leaf_hash is None:
            return 0
        entry = await session.get(LedgerEntry, saved.next_index - 1)
        return saved.next_index if entry is not None and bytes(entry.leaf_hash) == bytes(saved.leaf_hash) else 0

    async def save(self, session: AsyncSession, position: int) -> None:
        """Remember ``position`` (commits)."""
        entry = await session.get(LedgerEntry, position - 1) if position > 0 else None
        if entry is None:
            return
        saved = await session.get(SupervisionCursor, self.name) or SupervisionCursor(name=self.name)
        saved.next_index, saved.leaf_hash, saved.updated_at = position, bytes(entry.leaf_hash), utcnow()
        session.add(saved)
        try:
            await session.commit()
        except IntegrityError:  # another run saved it first: its position is as good as ours
            await session.rollback()


async def evaluate_new_events(session: AsyncSession, cursor: StoredCursor) -> Evaluation:
    """One periodic run: from where the last run stopped to the head."""
    result = await evaluate(session, await cursor.load(session))
    await cursor.save(session, result.next_index)
    return result


async def raise_self_check_failure(session: AsyncSession, problems: list[str], checked: int) -> SupervisionAlert | None:
    """The ``ledger.self_check_failed`` alert of today (one a day, however often the check runs)."""
    now = utcnow()
    size, _root = await ledger.head(session)
    hit = Hit(
        rule="ledger.self_check_failed",
        key=f"ledger.self_check_failed:{now.date().isoformat()}",
        detail="The ledger self-check failed: " + "; ".join(problems),
        occurred_at=now,
        evidence=[size - 1] if size else [],
        params={"problems": problems, "checked_entries": checked},
    )
    try:
        return await raise_alert(session, hit)
    except (IntegrityError, ledger.LedgerCorrupt):
        # The damage may be where the next entry goes: the alert must still be raised, without its ledger event.
        await session.rollback()
        hit.params["recorded_in_ledger"] = False
        return await raise_alert(session, hit, record_event=False)
