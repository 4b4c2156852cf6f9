"""The annual public disclosure: the authority's report of a year (licences granted, products listed and their
prices, franchise fees collected, operators' performance, the ledger's own facts), computed from live data.

Like every supervision read it sees the other domains only through the ledger (DESIGN.md §3): the events whose
index lies below the latest signed checkpoint (so that anyone holding the exported ledger and the public key can
recompute every figure and check it against the checkpoint the report names), the explorer's read model
(``event_index``) for the bulky counts, and organisations' names and kinds (core identity). Alerts are not ledger
events: their counts come from supervision's own alert table, at the time of reading.

What is published is aggregate and public: operators (franchisees) and listed products are named; buyers never are
(a buyer's spending is commercial information): they appear as counts. Private plans (offered to named buyers) are
counted, not priced.

A year is ``[1 January, 1 January of the next year)`` in UTC. Before 2000: 400 ``year_out_of_range``; a year not
begun yet: 404 ``disclosure_not_available``. The current year is reported so far (``complete`` false).
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from babel.numbers import get_currency_precision
from sqlalchemy import or_
from sqlmodel import col, func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from marketplace.core.errors import InvalidInput, NotFound
from marketplace.core.identity.models import Organisation
from marketplace.core.principal import OrgKind
from marketplace.core.types import utcnow
from supervision import services
from supervision.explorer import EventIndex, index_new_events
from supervision.models import LedgerCheckpoint, LedgerEntry, SupervisionAlert

FIRST_YEAR = 2000
#: How long a computed report is answered again while the checkpoint stays the same, and how many are kept.
CACHE_SECONDS = 300
CACHE_ENTRIES = 8
#: Plans carry no currency in their events: a plan's prices are in the platform's currency.
PLAN_CURRENCY = "CNY"
PUBLIC_WELFARE = "public_welfare"
#: Licence statuses in which a licence is in force (suspended: still granted, not usable).
IN_FORCE = ("granted", "suspended")
MODES = ("api", "file", "sandbox")
#: Settlement statements whose figures are final: issued to the owner, or acknowledged by it.
FINAL = ("issued", "acknowledged")
#: Licence changes that move its status (``created`` and ``amended`` do not).
STATUS_CHANGES = ("granted", "suspended", "reinstated", "revoked", "expired")

#: Event types whose history up to the year's end gives the state at its end.
_STATE_PREFIXES = ("licence.", "product.", "plan.", "subscription.")
_STATE_TYPES = ("resource.registered", "resource.updated", "listing.submitted")
#: Event types counted within the year only.
_YEAR_TYPES = ("payment.received", "payment.refunded", "finding.raised", "finding.closed")


# --- the report ------------------------------------------------------------------------------------------------------


@dataclass
class Name:
    """An organisation's or a product's name, in English and (where given) Chinese."""

    id: str
    name: str
    name_zh: str | None = None


@dataclass
class LicenceChange:
    """A change of a licence's status during the year."""

    on: str
    change: str
    status: str
    reason: str


@dataclass
class ResourceGrade:
    """A data resource a licence covers: its code and grade (L1..L4)."""

    code: str
    grade: str


@dataclass
class LicenceFacts:
    """A licence in force at some time during the year."""

    number: str
    operator: Name
    resources: list[ResourceGrade]
    starts_on: str
    ends_on: str
    #: The share of gross owed to the owner, when the licence's events carry it.
    fee_rate: str | None
    granted_on: str | None
    granted_this_year: bool
    status_at_end: str
    changes: list[LicenceChange]


@dataclass
class PlanFacts:
    """A public plan offered at the end of the year (or when the product was delisted)."""

    type: str
    price: str
    per_call_price: str | None
    monthly_cap: str | None
    access: str


@dataclass
class ProductFacts:
    """A product listed at some time during the year, with its public plans and their price range."""

    id: str
    name: str
    operator: Name
    licence_number: str | None
    mode: str
    status_at_end: str
    listed_on: str | None
    plans: list[PlanFacts]
    private_plans: int
    price_min: str | None
    price_max: str | None
    currency: str


@dataclass
class FeeLine:
    """Franchise fees of one operator in one currency, from its settlement statements of the year's months: month by
    month and in total those issued to the owner or acknowledged by it (final), and apart those still in draft
    (provisional: they may change)."""

    operator: Name
    currency: str
    monthly: list[str]
    gross: str
    franchise_fee: str
    provisional_fee: str
    statements: int
    provisional_statements: int


@dataclass
class MoneyLine:
    """Money received and refunded in one currency."""

    currency: str
    received: str
    refunded: str
    net: str
    payments: int


@dataclass
class Amount:
    """An amount (or a rate) in one currency."""

    currency: str
    value: str


@dataclass
class OperatorFacts:
    """An operator's year."""

    operator: Name
    revenue: list[MoneyLine]
    franchise_fees: list[Amount]
    effective_fee_rates: list[Amount]
    buyers: int
    subscriptions: int
    public_welfare_subscriptions: int
    deliveries: dict[str, int]
    deliveries_total: int
    public_welfare_deliveries: int
    public_welfare_share: str | None
    findings_raised: int
    findings_closed: int
    alerts_raised: int
    alerts_resolved: int


@dataclass
class LedgerFacts:
    """The ledger behind the report: the signed checkpoint every figure is consistent with, and the year's events."""

    checkpoint_size: int
    checkpoint_root: str
    checkpoint_signed_at: str | None
    checkpoint_note: str | None
    events_in_year: int
    first_index: int | None
    last_index: int | None


@dataclass
class Disclosure:
    """The annual public disclosure of a year."""

    year: int
    complete: bool
    generated_at: str
    has_data: bool
    months: list[str]
    ledger: LedgerFacts
    licences: list[LicenceFacts]
    products: list[ProductFacts]
    fees: list[FeeLine]
    gross_transaction_value: list[MoneyLine]
    operators: list[OperatorFacts]
    totals: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        """The report as plain JSON (money as decimal strings)."""
        return asdict(self)


#: Reports computed lately, by (year, checkpoint size, checkpoint root): (when, report).
_recent: dict[tuple[int, int, bytes], tuple[float, Disclosure]] = {}


# --- helpers ---------------------------------------------------------------------------------------------------------


def check_year(year: int, today: date | None = None) -> None:
    """400 ``year_out_of_range`` before 2000; 404 ``disclosure_not_available`` for a year not begun yet."""
    if year < FIRST_YEAR:
        raise InvalidInput(f"Disclosures begin with the year {FIRST_YEAR}.", code="year_out_of_range", year=year)
    current = (today or utcnow().date()).year
    if year > current:
        raise NotFound(f"The year {year} has not begun: there is no disclosure for it yet.", code="disclosure_not_available")


def _digits(currency: str) -> int:
    try:
        return int(get_currency_precision(currency))
    except (ValueError, TypeError):
        return 2


def _money(value: Decimal, currency: str) -> str:
    return str(value.quantize(Decimal(1).scaleb(-_digits(currency))))


def _decimal(value: Any) -> Decimal:
    try:
        return Decimal(str(value)) if value is not None else Decimal(0)
    except (InvalidOperation, ValueError):
        return Decimal(0)


def _time(event: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(str(event["time"]).replace("Z", "+00:00"))


def _day(event: dict[str, Any]) -> str:
    return _time(event).astimezone(UTC).date().isoformat()


@dataclass
class _Orgs:
    operators: dict[str, Name]
    platform: set[str]  # the owner and supervisors: never a buyer

    def operator_of(self, event: dict[str, Any]) -> str | None:
        return next((o for o in event.get("orgs") or () if o in self.operators), None)

    def buyer_of(self, event: dict[str, Any]) -> str | None:
        return next((o for o in event.get("orgs") or () if o not in self.operators and o not in self.platform), None)


async def _organisations(session: AsyncSession) -> _Orgs:
    rows = (
        await session.exec(
            select(Organisation.id, Organisation.kind, Organisation.name, Organisation.name_zh).where(
                col(Organisation.kind).in_([OrgKind.operator, OrgKind.owner, OrgKind.regulator, OrgKind.auditor])
            )
        )
    ).all()
    operators = {str(i): Name(str(i), name, name_zh) for i, kind, name, name_zh in rows if kind == OrgKind.operator}
    return _Orgs(operators, {str(i) for i, kind, _n, _z in rows if kind != OrgKind.operator})


# --- the computation -------------------------------------------------------------------------------------------------


async def _events(session: AsyncSession, size: int, start: datetime, end: datetime) -> list[dict[str, Any]]:
    """The events the report replays, in ledger order: the history of licences, resources, products, plans and
    subscriptions up to the year's end, the year's payments, refunds and findings, and every settlement event."""
    kind = col(LedgerEntry.event_type)
    before_end = col(LedgerEntry.occurred_at) < end
    state = or_(kind.in_(_STATE_TYPES), *(kind.startswith(p) for p in _STATE_PREFIXES))
    rows = (
        await session.exec(
            select(LedgerEntry.leaf_index, LedgerEntry.leaf_input)
            .where(col(LedgerEntry.leaf_index) < size)
            .where(
                or_(
                    state & before_end,
                    kind.in_(_YEAR_TYPES) & (col(LedgerEntry.occurred_at) >= start) & before_end,
                    kind.startswith("settlement."),
                )
            )
            .order_by(col(LedgerEntry.leaf_index))
        )
    ).all()
    return [{**json.loads(leaf), "index": index} for index, leaf in rows]


async def _deliveries(
    session: AsyncSession, size: int, start: datetime, end: datetime
) -> list[tuple[str | None, str | None, int]]:
    """The year's deliveries counted per product and subscription (from the explorer's read model)."""
    rows = (
        await session.exec(
            select(EventIndex.product_id, EventIndex.subscription_id, func.count())
            .where(
                EventIndex.event_type == "delivery.recorded",
                col(EventIndex.occurred_at) >= start,
                col(EventIndex.occurred_at) < end,
                col(EventIndex.leaf_index) < size,
            )
            .group_by(col(EventIndex.product_id), col(EventIndex.subscription_id))
        )
    ).all()
    return [(p, s, int(n)) for p, s, n in rows]


async def _year_count(session: AsyncSession, size: int, start: datetime, end: datetime) -> tuple[int, int | None, int | None]:
    row = (
        await session.exec(
            select(func.count(), func.min(EventIndex.leaf_index), func.max(EventIndex.leaf_index)).where(
                col(EventIndex.occurred_at) >= start, col(EventIndex.occurred_at) < end, col(EventIndex.leaf_index) < size
            )
        )
    ).one()
    count, first, last = row
    return int(count), None if first is None else int(first), None if last is None else int(last)


async def _alerts(session: AsyncSession, start: datetime, end: datetime) -> tuple[dict[str, int], dict[str, int]]:
    raised = (
        await session.exec(
            select(SupervisionAlert.operator_id, func.count())
            .where(col(SupervisionAlert.created_at) >= start, col(SupervisionAlert.created_at) < end)
            .group_by(col(SupervisionAlert.operator_id))
        )
    ).all()
    resolved = (
        await session.exec(
            select(SupervisionAlert.operator_id, func.count())
            .where(col(SupervisionAlert.resolved_at) >= start, col(SupervisionAlert.resolved_at) < end)
            .group_by(col(SupervisionAlert.operator_id))
        )
    ).all()
    return ({str(o): int(n) for o, n in raised if o is not None}, {str(o): int(n) for o, n in resolved if o is not None})


@dataclass
class _Licence:
    number: str = ""
    operator: str | None = None
    resources: list[str] = field(default_factory=list)
    starts_on: str = ""
    ends_on: str = ""
    fee_rate: str | None = None
    status: str = "draft"
    status_at_start: str = "draft"
    granted_on: str | None = None
    changes: list[LicenceChange] = field(default_factory=list)
    touched: bool = False


@dataclass
class _Plan:
    product: str
    type: str = ""
    price: str = "0"
    per_call_price: str | None = None
    monthly_cap: str | None = None
    access: str = "self_serve"
    visibility: str = "public"
    active: bool = True


@dataclass
class _Product:
    operator: str | None = None
    licence: str | None = None
    mode: str = ""
    name: str = ""
    status: str = "draft"
    listed_on: str | None = None
    listed_in_year: bool = False
    listed_at_start: bool = False


@dataclass
class _Subscription:
    operator: str | None = None
    buyer: str | None = None
    purpose: str | None = None
    active_in_year: bool = False


def _headline(plan: _Plan) -> Decimal:
    """What a plan costs in the price range: a metered plan's price per call, another plan's price."""
    return _decimal(plan.per_call_price if plan.type == "metered" and plan.per_call_price else plan.price)


async def disclose(session: AsyncSession, year: int, *, now: datetime | None = None, cached: bool = False) -> Disclosure:
    """The disclosure of ``year`` from the events below the latest signed checkpoint (see the module's doc).

    ``cached``: answer a report of the same year and checkpoint computed in this process less than
    :data:`CACHE_SECONDS` ago (anyone may ask for the report, and over millions of events it takes seconds; its
    ledger figures cannot change while the checkpoint is the same, only its alert counts may lag)."""
    moment = now or utcnow()
    check_year(year, moment.date())
    await index_new_events(session)
    checkpoint = await services.latest_checkpoint(session)
    key = (year, checkpoint.size, checkpoint.root_hash) if checkpoint is not None else (year, 0, b"")
    if cached:
        hit = _recent.get(key)
        if hit is not None and time.monotonic() - hit[0] < CACHE_SECONDS:
            return hit[1]
    report = await _disclose(session, year, checkpoint, moment)
    if cached:
        _recent[key] = (time.monotonic(), report)
        while len(_recent) > CACHE_ENTRIES:
            _recent.pop(next(iter(_recent)))
    return report


async def _disclose(session: AsyncSession, year: int, checkpoint: LedgerCheckpoint | None, moment: datetime) -> Disclosure:
    start = datetime(year, 1, 1, tzinfo=UTC)
    end = datetime(year + 1, 1, 1, tzinfo=UTC)
    size = checkpoint.size if checkpoint is not None else 0
    orgs = await _organisations(session)
    events = await _events(session, size, start, end)
    deliveries = await _deliveries(session, size, start, end)
    count, first, last = await _year_count(session, size, start, end)
    alerts_raised, alerts_resolved = await _alerts(session, start, end)
    months = [f"{year}-{m:02d}" for m in range(1, 13)]

    grades: dict[str, ResourceGrade] = {}
    licences: dict[str, _Licence] = defaultdict(_Licence)
    products: dict[str, _Product] = defaultdict(_Product)
    plans: dict[str, _Plan] = {}
    subscriptions: dict[str, _Subscription] = defaultdict(_Subscription)
    statements: dict[str, dict[str, Any]] = {}
    received: dict[tuple[str | None, str], list[Decimal]] = defaultdict(list)
    refunded: dict[tuple[str | None, str], Decimal] = defaultdict(Decimal)
    findings: dict[str, list[int]] = defaultdict(lambda: [0, 0])

    for event in events:
        kind: str = event["type"]
        payload: dict[str, Any] = event.get("payload") or {}
        subjects: dict[str, str] = event.get("subjects") or {}
        in_year = _time(event) >= start
        if kind in ("resource.registered", "resource.updated"):
            resource = subjects.get("resource", "")
            known = grades.get(resource, ResourceGrade(code=str(payload.get("code", "")), grade=""))
            grades[resource] = ResourceGrade(
                code=str(payload.get("code") or known.code), grade=str(payload.get("grade") or known.grade)
            )
        elif kind.startswith("licence."):
            licence = licences[subjects.get("licence", "")]
            status = str(payload.get("status", licence.status))
            if not in_year:
                licence.status_at_start = status
            licence.number = str(payload.get("number", licence.number))
            licence.operator = orgs.operator_of(event) or licence.operator
            licence.resources = [str(r) for r in payload.get("resource_ids") or licence.resources]
            term = payload.get("term") or {}
            licence.starts_on = str(term.get("starts_on", licence.starts_on))
            licence.ends_on = str(term.get("ends_on", licence.ends_on))
            if payload.get("fee_rate") is not None:
                licence.fee_rate = str(payload["fee_rate"])
            change = kind.removeprefix("licence.")
            if change == "granted" and licence.granted_on is None:
                licence.granted_on = _day(event)
            if in_year:
                licence.touched = True
                if change in STATUS_CHANGES:
                    licence.changes.append(LicenceChange(_day(event), change, status, str(payload.get("reason") or "")))
            licence.status = status
        elif kind == "listing.submitted":
            ref = str(payload.get("product_ref", ""))
            if ref and payload.get("product_name"):
                products[ref].name = str(payload["product_name"])
        elif kind.startswith("product."):
            product = products[subjects.get("product", "")]
            product.operator = orgs.operator_of(event) or product.operator
            product.licence = subjects.get("licence", product.licence)
            if kind == "product.created":
                product.mode = str(payload.get("mode", ""))
            status = str(payload.get("status", product.status))
            if status == "listed" and product.status != "listed":
                product.listed_on = _day(event)
                if in_year:
                    product.listed_in_year = True
            product.status = status
            if not in_year:
                product.listed_at_start = status == "listed"
        elif kind.startswith("plan."):
            plan_id = subjects.get("plan", "")
            plan = plans.setdefault(plan_id, _Plan(product=subjects.get("product", "")))
            plan.type = str(payload.get("type", plan.type))
            plan.price = str(payload.get("price", plan.price))
            plan.per_call_price = payload.get("per_call_price", plan.per_call_price)
            plan.monthly_cap = payload.get("monthly_cap", plan.monthly_cap)
            plan.access = str(payload.get("access", plan.access))
            plan.visibility = str(payload.get("visibility", plan.visibility))
            plan.active = kind != "plan.retired"
        elif kind.startswith("subscription."):
            subscription = subscriptions[subjects.get("subscription", "")]
            subscription.operator = orgs.operator_of(event) or subscription.operator
            subscription.buyer = orgs.buyer_of(event) or subscription.buyer
            subscription.purpose = str(payload.get("purpose") or subscription.purpose or "")
            if in_year:
                subscription.active_in_year = True
        elif kind.startswith("settlement."):
            if str(payload.get("period", "")).startswith(f"{year}-"):
                statements[subjects.get("statement", "")] = {**payload, "operator": orgs.operator_of(event)}
        elif kind == "payment.received":
            currency = str(payload.get("currency", ""))
            operator = orgs.operator_of(event)
            received[(operator, currency)].append(_decimal(payload.get("amount")))
            subscription = subscriptions[subjects.get("subscription", "")]
            subscription.active_in_year = True
            subscription.operator = subscription.operator or operator
            subscription.buyer = subscription.buyer or orgs.buyer_of(event)
        elif kind == "payment.refunded":
            refunded[(orgs.operator_of(event), str(payload.get("currency", "")))] += _decimal(payload.get("amount"))
        elif kind in ("finding.raised", "finding.closed"):
            operator = orgs.operator_of(event)
            if operator is not None:
                findings[operator][0 if kind == "finding.raised" else 1] += 1

    # Deliveries: per operator and mode, and under public-welfare subscriptions.
    mode_counts: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(MODES, 0))
    welfare_deliveries: dict[str, int] = defaultdict(int)
    for product_id, subscription_id, n in deliveries:
        delivered = products.get(product_id or "")
        used = subscriptions.get(subscription_id or "")
        operator = (delivered.operator if delivered else None) or (used.operator if used else None)
        if operator is None:
            continue
        mode = delivered.mode if delivered and delivered.mode else "other"
        mode_counts[operator][mode] = mode_counts[operator].get(mode, 0) + n
        if used is not None:
            used.active_in_year = True
            if used.purpose == PUBLIC_WELFARE:
                welfare_deliveries[operator] += n

    def name_of(operator: str | None) -> Name:
        return orgs.operators.get(operator or "", Name(operator or "", operator or "?"))

    # Licences in force at some time during the year.
    licence_facts = [
        LicenceFacts(
            number=lic.number,
            operator=name_of(lic.operator),
            resources=sorted((grades.get(r, ResourceGrade(r[:8], "")) for r in lic.resources), key=lambda g: g.code),
            starts_on=lic.starts_on,
            ends_on=lic.ends_on,
            fee_rate=lic.fee_rate,
            granted_on=lic.granted_on,
            granted_this_year=lic.granted_on is not None and lic.granted_on >= start.date().isoformat(),
            status_at_end=lic.status,
            changes=lic.changes,
        )
        for lic in licences.values()
        if lic.granted_on is not None and (lic.status_at_start in IN_FORCE or lic.touched)
    ]
    licence_facts.sort(key=lambda f: f.number)
    numbers = {key: lic.number for key, lic in licences.items()}

    # Products listed at some time during the year, with the public plans offered at its end.
    product_facts: list[ProductFacts] = []
    for product_id, product in products.items():
        if not (product.listed_at_start or product.listed_in_year):
            continue
        offered = [p for p in plans.values() if p.product == product_id and p.active]
        public = sorted((p for p in offered if p.visibility == "public"), key=lambda p: (_headline(p), p.type))
        headline = [_headline(p) for p in public]
        product_facts.append(
            ProductFacts(
                id=product_id,
                name=product.name or product_id[:8],
                operator=name_of(product.operator),
                licence_number=numbers.get(product.licence or ""),
                mode=product.mode,
                status_at_end=product.status,
                listed_on=product.listed_on,
                plans=[PlanFacts(p.type, p.price, p.per_call_price, p.monthly_cap, p.access) for p in public],
                private_plans=len(offered) - len(public),
                price_min=str(min(headline)) if headline else None,
                price_max=str(max(headline)) if headline else None,
                currency=PLAN_CURRENCY,
            )
        )
    product_facts.sort(key=lambda f: (f.operator.name, f.name))

    # Franchise fees, per operator and currency, from the latest event of each statement of the year's months.
    fee_sums: dict[tuple[str | None, str], dict[str, Any]] = {}
    for statement in statements.values():
        currency = str(statement.get("currency", ""))
        line = fee_sums.setdefault(
            (statement["operator"], currency),
            {"monthly": dict.fromkeys(months, Decimal(0)), "gross": Decimal(0), "fee": Decimal(0), "draft": Decimal(0)}
            | {"n": 0, "d": 0},
        )
        fee = _decimal(statement.get("franchise_fee"))
        if statement.get("status") in FINAL:
            period = str(statement.get("period", ""))
            if period in line["monthly"]:
                line["monthly"][period] += fee
            line["gross"] += _decimal(statement.get("gross"))
            line["fee"] += fee
            line["n"] += 1
        else:
            line["draft"] += fee
            line["d"] += 1
    fee_lines = [
        FeeLine(
            operator=name_of(operator),
            currency=currency,
            monthly=[_money(v, currency) for v in line["monthly"].values()],
            gross=_money(line["gross"], currency),
            franchise_fee=_money(line["fee"], currency),
            provisional_fee=_money(line["draft"], currency),
            statements=line["n"],
            provisional_statements=line["d"],
        )
        for (operator, currency), line in fee_sums.items()
    ]
    fee_lines.sort(key=lambda f: (f.currency, f.operator.name))

    def money_lines(keys: Iterable[tuple[str | None, str]], pick: str | None) -> list[MoneyLine]:
        by_currency: dict[str, list[Decimal]] = defaultdict(lambda: [Decimal(0), Decimal(0), Decimal(0)])
        for operator, currency in keys:
            if pick is not None and operator != pick:
                continue
            sums = by_currency[currency]
            amounts = received.get((operator, currency), [])
            sums[0] += sum(amounts, Decimal(0))
            sums[1] += refunded.get((operator, currency), Decimal(0))
            sums[2] += len(amounts)
        return [
            MoneyLine(c, _money(r, c), _money(f, c), _money(r - f, c), int(n)) for c, (r, f, n) in sorted(by_currency.items())
        ]

    money_keys = set(received) | set(refunded)
    gtv = money_lines(money_keys, None)

    # Operators' performance: every operator that appears in the year.
    present = (
        {k[0] for k in money_keys}
        | set(mode_counts)
        | set(findings)
        | set(alerts_raised)
        | set(alerts_resolved)
        | {s["operator"] for s in statements.values()}
        | {f.operator.id for f in licence_facts}
        | {f.operator.id for f in product_facts}
        | {s.operator for s in subscriptions.values() if s.active_in_year}
    )
    operator_facts: list[OperatorFacts] = []
    for operator in sorted((o for o in present if o in orgs.operators), key=lambda o: orgs.operators[o].name):
        active = [s for s in subscriptions.values() if s.active_in_year and s.operator == operator]
        counted = mode_counts.get(operator, dict.fromkeys(MODES, 0))
        total = sum(counted.values())
        welfare = welfare_deliveries.get(operator, 0)
        fees = [f for f in fee_lines if f.operator.id == operator]
        revenue = money_lines(money_keys, operator)
        rates = [
            Amount(f.currency, str((_decimal(f.franchise_fee) / _decimal(f.gross)).quantize(Decimal("0.0001"))))
            for f in fees
            if _decimal(f.gross) > 0
        ]
        operator_facts.append(
            OperatorFacts(
                operator=orgs.operators[operator],
                revenue=revenue,
                franchise_fees=[Amount(f.currency, f.franchise_fee) for f in fees],
                effective_fee_rates=rates,
                buyers=len({s.buyer for s in active if s.buyer}),
                subscriptions=len(active),
                public_welfare_subscriptions=sum(1 for s in active if s.purpose == PUBLIC_WELFARE),
                deliveries=counted,
                deliveries_total=total,
                public_welfare_deliveries=welfare,
                public_welfare_share=f"{Decimal(welfare) / Decimal(total):.4f}" if total else None,
                findings_raised=findings.get(operator, [0, 0])[0],
                findings_closed=findings.get(operator, [0, 0])[1],
                alerts_raised=alerts_raised.get(operator, 0),
                alerts_resolved=alerts_resolved.get(operator, 0),
            )
        )

    deliveries_total = sum(o.deliveries_total for o in operator_facts)
    welfare_total = sum(o.public_welfare_deliveries for o in operator_facts)
    fee_totals: dict[str, list[Decimal]] = defaultdict(lambda: [Decimal(0), Decimal(0)])
    for f in fee_lines:
        fee_totals[f.currency][0] += _decimal(f.franchise_fee)
        fee_totals[f.currency][1] += _decimal(f.provisional_fee)
    totals = {
        "licences": len(licence_facts),
        "licences_granted": sum(1 for f in licence_facts if f.granted_this_year),
        "suspensions": sum(1 for f in licence_facts for c in f.changes if c.change == "suspended"),
        "products": len(product_facts),
        "operators": len(operator_facts),
        "buyers": len({s.buyer for s in subscriptions.values() if s.active_in_year and s.buyer}),
        "deliveries": {mode: sum(o.deliveries.get(mode, 0) for o in operator_facts) for mode in MODES},
        "deliveries_total": deliveries_total,
        "public_welfare_deliveries": welfare_total,
        "public_welfare_share": f"{Decimal(welfare_total) / Decimal(deliveries_total):.4f}" if deliveries_total else None,
        "franchise_fees": [
            {"currency": c, "franchise_fee": _money(v[0], c), "provisional_fee": _money(v[1], c)}
            for c, v in sorted(fee_totals.items())
        ],
        "findings_raised": sum(o.findings_raised for o in operator_facts),
        "findings_closed": sum(o.findings_closed for o in operator_facts),
        "alerts_raised": sum(alerts_raised.values()),
        "alerts_resolved": sum(alerts_resolved.values()),
    }
    return Disclosure(
        year=year,
        complete=moment >= end,
        generated_at=moment.astimezone(UTC).isoformat(),
        has_data=count > 0,
        months=months,
        ledger=LedgerFacts(
            checkpoint_size=size,
            checkpoint_root=checkpoint.root_hash.hex() if checkpoint is not None else "",
            checkpoint_signed_at=checkpoint.created_at.astimezone(UTC).isoformat() if checkpoint is not None else None,
            checkpoint_note=checkpoint.note if checkpoint is not None else None,
            events_in_year=count,
            first_index=first,
            last_index=last,
        ),
        licences=licence_facts,
        products=product_facts,
        fees=fee_lines,
        gross_transaction_value=gtv,
        operators=operator_facts,
        totals=totals,
    )
