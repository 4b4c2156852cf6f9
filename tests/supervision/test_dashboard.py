"""The supervision dashboard: figures hand-computed on a small ledger; the rollups it reads agree with a direct
aggregation of the ledger after indexing in several batches; an auditor sees its engagement only; bad periods are
refused and write nothing."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from litestar.testing import TestClient
from sqlalchemy import Engine, text
from sqlmodel import Session
from sqlmodel.ext.asyncio.session import AsyncSession

from marketplace.core.events import Actor, DomainEvent
from marketplace.core.principal import OrgKind
from supervision import services
from supervision.dashboard import resolve_period
from supervision.explorer import index_new_events
from supervision.models import SupervisionAlert
from supervision.rollup import span_clauses
from tests.factories import make_login_session, make_org, make_user
from tests.helpers import assert_problem, use_session
from tests.licensing.factories import ledger_events
from tests.supervision.ledger_helpers import run

DASHBOARD = "/api/supervision/dashboard"
PERIOD = {"start": "2026-09-01", "end": "2026-10-31"}
P1, P2, P3 = (str(uuid.UUID(int=700 + i)) for i in range(3))


def at(day: str, hour: int = 12) -> datetime:
    """Noon (or ``hour``) UTC of an ISO day."""
    return datetime.fromisoformat(day).replace(hour=hour, tzinfo=UTC)


def ev(kind: str, day: str, orgs: tuple[Any, ...], subjects: dict[str, str] | None = None, **payload: Any) -> DomainEvent:
    """An event of ``kind`` on ``day``."""
    return DomainEvent(
        type=kind,
        actor=Actor("system", "tests"),
        orgs=orgs,
        subjects=subjects or {},
        payload=payload,
        occurred_at=at(day),
    )


def record(engine: Engine, events: list[DomainEvent]) -> None:
    """Append ``events`` to the ledger."""

    async def write(session: AsyncSession) -> None:
        await services.record_many(session, events)
        await session.commit()

    run(engine.url.render_as_string(hide_password=False), write)


def small_ledger(engine: Engine) -> dict[str, Any]:
    """Two operators (A, B), two buyers (X, Y), the owner; payments, a refund, deliveries, a settlement, four
    activations, and two payments outside September-October. Organisations in varying order: the operator is found
    by its kind."""
    a, b = make_org(engine, OrgKind.operator).id, make_org(engine, OrgKind.operator).id
    x, y = make_org(engine, OrgKind.buyer).id, make_org(engine, OrgKind.buyer).id
    owner = make_org(engine, OrgKind.owner).id

    def pay(day: str, buyer: Any, operator: Any, product: str, amount: str, currency: str = "CNY") -> DomainEvent:
        return ev("payment.received", day, (buyer, operator, owner), {"product": product}, amount=amount, currency=currency)

    def deliver(day: str, buyer: Any, operator: Any, mode: str, rows: int, size: int) -> DomainEvent:
        return ev("delivery.recorded", day, (operator, buyer, owner), {"product": P1}, mode=mode, rows=rows, bytes=size)

    def activate(day: str, buyer: Any, operator: Any, purpose: str) -> DomainEvent:
        return ev(
            "subscription.activated",
            day,
            (buyer, operator, owner),
            {"product": P2},
            purpose=purpose,
            reduction_percent=0,
            price="10.00",
            currency="CNY",
        )

    events = [
        pay("2026-09-05", x, a, P1, "100.00"),
        pay("2026-10-10", y, a, P2, "50.50"),
        pay("2026-10-11", x, b, P3, "20.00"),
        pay("2026-10-12", x, a, P1, "10.00", "USD"),
        ev("payment.refunded", "2026-10-15", (x, a, owner), {"payment": "p"}, amount="30.00", currency="CNY"),
        deliver("2026-09-06", x, a, "api", 10, 100),
        deliver("2026-10-06", x, a, "api", 5, 50),
        deliver("2026-10-07", y, b, "file", 1000, 9000),
        deliver("2026-09-20", y, a, "sandbox", 3, 30),
        ev(
            "settlement.issued",
            "2026-10-02",
            (a, owner),
            {"statement": "s"},
            currency="CNY",
            gross="150.50",
            franchise_fee="12.34",
            net="100.00",
        ),
        activate("2026-09-03", x, a, "public_welfare"),
        activate("2026-09-04", y, a, "credit_assessment"),
        activate("2026-10-01", x, b, "academic_research"),
        activate("2026-10-02", y, b, "market_analysis"),
        pay("2026-08-31", x, a, P1, "99.00"),
        pay("2026-11-01", x, a, P1, "77.00"),
    ]
    record(engine, events)
    with Session(engine) as session:
        for severity, operator, state, day in (
            ("high", a, "open", "2026-10-10"),
            ("low", b, "open", "2026-09-15"),
            ("medium", a, "acknowledged", "2026-09-12"),
        ):
            session.add(
                SupervisionAlert(
                    rule="test.rule",
                    severity=severity,
                    detail="A test alert",
                    state=state,
                    operator_id=operator,
                    occurred_at=at(day),
                    key=f"test-{severity}",
                )
            )
        session.commit()
    return {"a": a, "b": b, "x": x, "y": y, "owner": owner}


def _as(client: TestClient[Any], engine: Engine, org: Any) -> dict[str, str]:
    client.cookies.clear()
    return use_session(client, make_login_session(engine, make_user(engine, org)))


def test_the_dashboard_shows_the_hand_computed_figures(client: TestClient[Any], engine: Engine) -> None:
    w = small_ledger(engine)
    _as(client, engine, make_org(engine, OrgKind.regulator))
    size = len(ledger_events(engine))
    answer = client.get(DASHBOARD, params=PERIOD)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["period"] == {"start": "2026-09-01", "end": "2026-10-31", "bucket": "month"}
    assert body["scope"] is None
    assert body["totals"] == {
        "transactions": 4,
        "gross": {"CNY": "170.50", "USD": "10.00"},
        "refunds": {"CNY": "30.00"},
        "refund_count": 1,
        "net": {"CNY": "140.50", "USD": "10.00"},
        "deliveries": 4,
    }
    assert body["series"] == [
        {
            "bucket": "2026-09",
            "start": "2026-09-01",
            "transactions": 1,
            "gross": {"CNY": "100.00"},
            "refunds": {},
            "deliveries": {"api": 1, "sandbox": 1},
        },
        {
            "bucket": "2026-10",
            "start": "2026-10-01",
            "transactions": 3,
            "gross": {"CNY": "70.50", "USD": "10.00"},
            "refunds": {"CNY": "30.00"},
            "deliveries": {"api": 1, "file": 1},
        },
    ]
    by_operator = {o["operator_id"]: o for o in body["by_operator"]}
    assert set(by_operator) == {str(w["a"]), str(w["b"])}
    assert by_operator[str(w["a"])]["transactions"] == 3
    assert by_operator[str(w["a"])]["gross"] == {"CNY": "150.50", "USD": "10.00"}
    assert by_operator[str(w["a"])]["refunds"] == {"CNY": "30.00"}
    assert by_operator[str(w["a"])]["deliveries"] == 3
    assert by_operator[str(w["a"])]["name"].startswith("Operator")
    assert (by_operator[str(w["b"])]["transactions"], by_operator[str(w["b"])]["gross"]) == (1, {"CNY": "20.00"})
    assert body["by_product"] == [
        {"product_id": P1, "transactions": 2, "gross": {"CNY": "100.00", "USD": "10.00"}},
        {"product_id": P2, "transactions": 1, "gross": {"CNY": "50.50"}},
        {"product_id": P3, "transactions": 1, "gross": {"CNY": "20.00"}},
    ]
    assert body["deliveries_by_mode"] == [
        {"mode": "api", "deliveries": 2, "rows": 15, "bytes": 150},
        {"mode": "file", "deliveries": 1, "rows": 1000, "bytes": 9000},
        {"mode": "sandbox", "deliveries": 1, "rows": 3, "bytes": 30},
    ]
    assert body["franchise_fees"] == {"CNY": "12.34"}
    assert body["public_welfare"] == {
        "subscriptions": 4,
        "public_welfare_or_research": 2,
        "share": "0.5000",
        "by_purpose": {"academic_research": 1, "credit_assessment": 1, "market_analysis": 1, "public_welfare": 1},
    }
    assert body["alerts"] == {"open": 2, "by_severity": {"high": 1, "low": 1}}
    assert body["ledger"]["size"] == size
    assert body["ledger"]["checkpoint"] is None
    # The regulator's read is recorded.
    assert ledger_events(engine)[-1]["type"] == "records.read"
    assert ledger_events(engine)[-1]["payload"]["path"] == DASHBOARD


def test_day_buckets_and_the_default_period(client: TestClient[Any], engine: Engine) -> None:
    small_ledger(engine)
    _as(client, engine, make_org(engine, OrgKind.owner))
    body = client.get(DASHBOARD, params={"start": "2026-10-09", "end": "2026-10-12", "bucket": "day"}).json()
    assert [(s["bucket"], s["transactions"]) for s in body["series"]] == [
        ("2026-10-09", 0),
        ("2026-10-10", 1),
        ("2026-10-11", 1),
        ("2026-10-12", 1),
    ]
    # A period starting mid-month: its first bucket starts with it.
    body = client.get(DASHBOARD, params={"start": "2026-08-31", "end": "2026-09-30"}).json()
    assert [(s["start"], s["transactions"]) for s in body["series"]] == [("2026-08-31", 1), ("2026-09-01", 1)]
    # By default: this month and the five before.
    period = resolve_period(None, None, today=date(2026, 3, 15))
    assert (period.start, period.end, len(period.buckets())) == (date(2025, 10, 1), date(2026, 3, 15), 6)
    default = client.get(DASHBOARD).json()
    assert len(default["series"]) == 6
    assert default["period"]["end"] == datetime.now(UTC).date().isoformat()


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"start": "2026-10-31", "end": "2026-09-01"}, "period_reversed"),
        ({"start": "2025-01-01", "end": "2026-10-31"}, "period_too_long"),
        ({"start": "2026-01-01", "end": "2026-10-31", "bucket": "day"}, "period_too_long"),
    ],
)
def test_bad_periods_are_refused_and_write_nothing(
    client: TestClient[Any], engine: Engine, params: dict[str, str], code: str
) -> None:
    _as(client, engine, make_org(engine, OrgKind.regulator))
    before = len(ledger_events(engine))
    assert_problem(client.get(DASHBOARD, params=params), 400, code)
    if "bucket" not in params:
        assert_problem(client.get("/api/supervision/scorecard", params=params), 400, code)
    assert len(ledger_events(engine)) == before


def test_other_bad_input_is_a_400(client: TestClient[Any], engine: Engine) -> None:
    _as(client, engine, make_org(engine, OrgKind.regulator))
    for params in ({"bucket": "week"}, {"start": "yesterday"}, {"end": "2026-13-01"}):
        assert client.get(DASHBOARD, params=params).status_code == 400, params


def test_an_auditor_sees_its_engagement_only(client: TestClient[Any], engine: Engine) -> None:
    w = small_ledger(engine)
    auditor = make_org(engine, OrgKind.auditor)
    auditor_session = make_login_session(engine, make_user(engine, auditor))
    client.cookies.clear()
    use_session(client, auditor_session)
    assert_problem(client.get(DASHBOARD, params=PERIOD), 403, "outside_engagement")
    assert ledger_events(engine)[-1]["type"] == "records.read_refused"
    headers = _as(client, engine, make_org(engine, OrgKind.owner))
    granted = client.post(
        "/api/supervision/engagements",
        json={
            "auditor_id": str(auditor.id),
            "operator_ids": [str(w["a"])],
            "period_start": "2026-10-01",
            "period_end": "2026-10-31",
            "expires_at": (datetime.now(UTC) + timedelta(days=30)).isoformat(),
        },
        headers=headers,
    )
    assert granted.status_code == 201, granted.text
    client.cookies.clear()
    use_session(client, auditor_session)
    body = client.get(DASHBOARD, params=PERIOD).json()
    assert body["scope"] == {str(w["a"]): [{"start": "2026-10-01", "end": "2026-10-31"}]}
    # Operator A in October only: two payments (50.50 CNY, 10.00 USD), the refund, one API delivery, the settlement.
    assert body["totals"] == {
        "transactions": 2,
        "gross": {"CNY": "50.50", "USD": "10.00"},
        "refunds": {"CNY": "30.00"},
        "refund_count": 1,
        "net": {"CNY": "20.50", "USD": "10.00"},
        "deliveries": 1,
    }
    assert [s["transactions"] for s in body["series"]] == [0, 2]
    assert [o["operator_id"] for o in body["by_operator"]] == [str(w["a"])]
    assert {p["product_id"] for p in body["by_product"]} == {P1, P2}
    assert body["deliveries_by_mode"] == [{"mode": "api", "deliveries": 1, "rows": 5, "bytes": 50}]
    assert body["franchise_fees"] == {"CNY": "12.34"}
    assert body["public_welfare"]["subscriptions"] == 0
    assert body["public_welfare"]["share"] is None
    assert body["alerts"] == {"open": 1, "by_severity": {"high": 1}}
    assert ledger_events(engine)[-1]["type"] == "records.read"


def test_operators_and_buyers_are_refused(client: TestClient[Any], engine: Engine) -> None:
    for kind in (OrgKind.operator, OrgKind.buyer):
        _as(client, engine, make_org(engine, kind))
        assert_problem(client.get(DASHBOARD), 403, "party_not_allowed")


# --- the rollups ---------------------------------------------------------------------------------------------------


def _direct(engine: Engine) -> dict[str, Counter[tuple[Any, ...]]]:
    """Aggregations computed straight from the explorer's index and the ledger's JSON, for comparison."""
    with engine.connect() as conn:
        indexed = conn.execute(text("SELECT event_type, occurred_at, amount_minor FROM event_index")).all()
        operators = {
            str(uuid.UUID(str(r[0]))) for r in conn.execute(text("SELECT id FROM organisation WHERE kind = 'operator'")).all()
        }
    counts: Counter[tuple[Any, ...]] = Counter()
    amounts: Counter[tuple[Any, ...]] = Counter()
    for kind, moment, amount in indexed:
        day = moment.astimezone(UTC).date() if isinstance(moment, datetime) else date.fromisoformat(str(moment)[:10])
        counts[(day.isoformat(), kind)] += 1
        if kind.startswith("payment."):
            amounts[(day.isoformat(), kind)] += amount or 0
    rows: Counter[tuple[Any, ...]] = Counter()
    per_operator: Counter[tuple[Any, ...]] = Counter()
    for event in ledger_events(engine):
        operator = next((o for o in event["orgs"] if o in operators), "")
        per_operator[(event["time"][:10], operator)] += 1
        if event["type"] == "delivery.recorded":
            rows[(event["time"][:10], event["payload"]["mode"])] += event["payload"]["rows"]
    return {"counts": counts, "amounts": amounts, "rows": rows, "per_operator": per_operator}


def _rolled(engine: Engine, span: str = "d") -> dict[str, Counter[tuple[Any, ...]]]:
    """The rollups as stored, by day (``span="d"``) or by month (``"m"``)."""
    with engine.connect() as conn:
        stored = conn.execute(
            text("SELECT day, event_type, operator_id, mode, count, amount_minor, rows FROM event_rollup WHERE span = :span"),
            {"span": span},
        ).all()
    counts: Counter[tuple[Any, ...]] = Counter()
    amounts: Counter[tuple[Any, ...]] = Counter()
    rows: Counter[tuple[Any, ...]] = Counter()
    per_operator: Counter[tuple[Any, ...]] = Counter()
    for day, kind, operator, mode, count, amount, delivered in stored:
        key = str(day)[:10]
        counts[(key, kind)] += count
        if kind.startswith("payment."):
            amounts[(key, kind)] += amount
        if kind == "delivery.recorded":
            rows[(key, mode)] += delivered
        per_operator[(key, operator)] += count
    return {"counts": counts, "amounts": amounts, "rows": rows, "per_operator": per_operator}


def test_the_rollup_equals_a_direct_aggregation_after_indexing_in_batches(engine: Engine) -> None:
    w = small_ledger(engine)
    url = engine.url.render_as_string(hide_password=False)
    assert run(url, lambda session: index_new_events(session, batch=3)) == 16
    record(
        engine,
        [
            ev("payment.received", "2026-10-10", (w["y"], w["a"], w["owner"]), {"product": P2}, amount="1.05", currency="CNY"),
            ev("delivery.recorded", "2026-10-06", (w["a"], w["x"]), {}, mode="api", rows=7, bytes=70),
            ev("identity.signed_in", "2026-10-06", (w["x"],)),
        ],
    )
    assert run(url, lambda session: index_new_events(session, batch=2)) == 3
    # Indexing again finds nothing to do and counts nothing twice.
    assert run(url, lambda session: index_new_events(session, batch=2)) == 0
    direct, rolled = _direct(engine), _rolled(engine)
    assert rolled == direct
    # The monthly rows are the daily ones added up by month.
    by_month = {name: Counter() for name in direct}
    for name, counter in direct.items():
        for key, value in counter.items():
            by_month[name][(f"{key[0][:7]}-01", *key[1:])] += value
    assert _rolled(engine, "m") == by_month
    assert rolled["amounts"][("2026-10-10", "payment.received")] == 5155
    assert rolled["rows"][("2026-10-06", "api")] == 12
    with engine.connect() as conn:
        buyers = conn.execute(
            text(
                "SELECT operator_id, buyer_id, SUM(count) FROM event_rollup_buyer WHERE span = 'd' GROUP BY operator_id, buyer_id"
            )
        ).all()
    assert {(o, b): int(n) for o, b, n in buyers} == {
        (str(w["a"]), str(w["x"])): 9,
        (str(w["a"]), str(w["y"])): 4,
        (str(w["b"]), str(w["x"])): 2,
        (str(w["b"]), str(w["y"])): 2,
    }


def test_money_is_summed_exactly(engine: Engine) -> None:
    """Many small amounts: integers of minor units, no float drift."""
    a = make_org(engine, OrgKind.operator).id
    record(engine, [ev("payment.received", "2026-10-01", (a,), {"product": P1}, amount="0.10", currency="CNY")] * 30)
    url = engine.url.render_as_string(hide_password=False)
    run(url, index_new_events)
    with engine.connect() as conn:
        total = conn.execute(
            text("SELECT SUM(amount_minor) FROM event_rollup WHERE span = 'd' AND event_type = 'payment.received'")
        ).scalar()
    assert Decimal(int(total)).scaleb(-2) == Decimal("3.00")


def test_a_period_is_read_as_whole_months_and_partial_days() -> None:
    assert span_clauses(date(2026, 3, 15), date(2026, 9, 10)) == [
        ("d", date(2026, 3, 15), date(2026, 3, 31)),
        ("m", date(2026, 4, 1), date(2026, 8, 1)),
        ("d", date(2026, 9, 1), date(2026, 9, 10)),
    ]
    assert span_clauses(date(2026, 1, 1), date(2026, 12, 31)) == [("m", date(2026, 1, 1), date(2026, 12, 1))]
    assert span_clauses(date(2026, 2, 3), date(2026, 2, 20)) == [("d", date(2026, 2, 3), date(2026, 2, 20))]
    assert span_clauses(date(2026, 12, 1), date(2027, 1, 5)) == [
        ("m", date(2026, 12, 1), date(2026, 12, 1)),
        ("d", date(2027, 1, 1), date(2027, 1, 5)),
    ]
    assert span_clauses(date(2026, 2, 3), date(2026, 2, 20), monthly=False) == [("d", date(2026, 2, 3), date(2026, 2, 20))]


def test_a_transfer_recorded_late_counts_in_the_month_it_was_received(client: TestClient[Any], engine: Engine) -> None:
    operator, buyer = make_org(engine, OrgKind.operator), make_org(engine, OrgKind.buyer)
    record(
        engine,
        [
            # Received on 30 September, entered by the operator on 2 October.
            ev(
                "payment.received",
                "2026-10-02",
                (operator.id, buyer.id),
                amount="500.00",
                currency="CNY",
                received_at="2026-09-30T09:00:00+00:00",
            ),
            ev("payment.received", "2026-10-05", (operator.id, buyer.id), amount="70.00", currency="CNY"),
        ],
    )
    _as(client, engine, make_org(engine, OrgKind.regulator))
    board = client.get(DASHBOARD, params=PERIOD).json()
    by_month = {s["bucket"]: s["gross"].get("CNY") for s in board["series"]}
    assert by_month == {"2026-09": "500.00", "2026-10": "70.00"}
