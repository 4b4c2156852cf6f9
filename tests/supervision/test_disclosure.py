"""The annual public disclosure: every figure of a small world of ledger events computed by hand (licences in force
and their changes, products and public prices, franchise fees from the latest state of each statement, gross
transaction value, operators' performance, the ledger's facts); only events below the signed checkpoint count;
buyers are counted, never named; a year without events says so; bad years are refused; the page and the PDF show
the same figures to anyone."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from litestar.testing import TestClient
from sqlalchemy import Engine
from sqlmodel import Session
from sqlmodel.ext.asyncio.session import AsyncSession

from marketplace.core.events import Actor, DomainEvent
from marketplace.core.principal import OrgKind
from marketplace.core.settings import Settings
from supervision import disclosure, services
from supervision.models import SupervisionAlert
from supervision.signing import load_ledger_signer
from tests.billing.test_documents import flat, pdf_text
from tests.factories import make_login_session, make_org, make_user
from tests.helpers import assert_problem, use_session
from tests.licensing.factories import ledger_events
from tests.supervision.ledger_helpers import run

YEAR = 2025
API = f"/api/supervision/disclosure/{YEAR}"
SYSTEM = Actor("system", "tests")


def _at(year: int, month: int, day: int) -> datetime:
    return datetime(year, month, day, 12, tzinfo=UTC)


def _id(n: int) -> str:
    return str(uuid.UUID(int=n))


R1, R2 = _id(1), _id(2)
L1, L2, L3 = _id(11), _id(12), _id(13)
P1, P2 = _id(21), _id(22)
PLAN1, PLAN2, PLAN3, PLAN4, PLAN5 = (_id(31 + i) for i in range(5))
S1, S2, S3 = _id(41), _id(42), _id(43)
ST_A_JAN, ST_A_MAR, ST_B_FEB, ST_A_DEC = _id(51), _id(52), _id(53), _id(54)


class World:
    def __init__(self, engine: Engine) -> None:
        self.owner = make_org(engine, OrgKind.owner).id
        self.a = make_org(engine, OrgKind.operator, name=f"Harbour Data {uuid.uuid4().hex[:6]}", name_zh="港湾数据").id
        self.b = make_org(engine, OrgKind.operator, name=f"Summit Analytics {uuid.uuid4().hex[:6]}").id
        self.buyer1 = make_org(engine, OrgKind.buyer, name=f"Secret Buyer One {uuid.uuid4().hex[:6]}").id
        self.buyer2 = make_org(engine, OrgKind.buyer, name=f"Secret Buyer Two {uuid.uuid4().hex[:6]}").id
        self.regulator = make_org(engine, OrgKind.regulator).id

    def event(
        self, kind: str, when: datetime, orgs: tuple[uuid.UUID, ...], subjects: dict[str, str], **payload: Any
    ) -> DomainEvent:
        return DomainEvent(kind, SYSTEM, orgs=orgs, subjects=subjects, payload=payload, occurred_at=when)

    def licence(
        self, kind: str, when: datetime, licence: str, operator: uuid.UUID, status: str, resources: list[str], **more: Any
    ) -> DomainEvent:
        number = {L1: "LIC-2024-0001", L2: "LIC-2025-0001", L3: "LIC-2024-0002"}[licence]
        term = (
            {"starts_on": "2024-03-01", "ends_on": "2027-02-28"}
            if licence != L2
            else {"starts_on": "2025-01-10", "ends_on": "2026-01-09"}
        )
        return self.event(
            kind,
            when,
            (self.owner, operator),
            {"licence": licence},
            number=number,
            version=1,
            status=status,
            reason=more.get("reason", ""),
            resource_ids=resources,
            term=term,
        )

    def product(
        self, kind: str, when: datetime, product: str, operator: uuid.UUID, licence: str, status: str, **more: Any
    ) -> DomainEvent:
        return self.event(kind, when, (self.owner, operator), {"product": product, "licence": licence}, status=status, **more)

    def plan(self, kind: str, when: datetime, product: str, plan: str, operator: uuid.UUID, **terms: Any) -> DomainEvent:
        base = {
            "type": "monthly",
            "price": "0.00",
            "per_call_price": None,
            "monthly_cap": None,
            "visibility": "public",
            "access": "self_serve",
        }
        return self.event(kind, when, (operator,), {"product": product, "plan": plan}, **{**base, **terms})

    def subscription(
        self, when: datetime, sub: str, buyer: uuid.UUID, operator: uuid.UUID, product: str, purpose: str
    ) -> DomainEvent:
        return self.event(
            "subscription.activated",
            when,
            (buyer, operator, self.owner),
            {"subscription": sub, "product": product, "plan": PLAN1, "licence": L1},
            number=f"SUB-{sub[-2:]}",
            status="active",
            purpose=purpose,
            reduction_percent=0,
            price="100.00",
            currency="CNY",
            plan_type="monthly",
        )

    def payment(self, kind: str, when: datetime, sub: str, buyer: uuid.UUID, operator: uuid.UUID, amount: str) -> DomainEvent:
        return self.event(
            kind,
            when,
            (buyer, operator, self.owner),
            {"payment": _id(90), "subscription": sub, "licence": L1},
            amount=amount,
            currency="CNY",
            gateway="invoice",
        )

    def delivery(self, when: datetime, sub: str, product: str, buyer: uuid.UUID, operator: uuid.UUID) -> DomainEvent:
        return self.event(
            "delivery.recorded",
            when,
            (buyer, operator, self.owner),
            {"entitlement": _id(99), "subscription": sub, "product": product, "licence": L1},
            mode="api",
            rows=10,
            bytes=100,
        )

    def statement(
        self, kind: str, when: datetime, statement: str, operator: uuid.UUID, period: str, gross: str, fee: str, status: str
    ) -> DomainEvent:
        return self.event(
            kind,
            when,
            (operator, self.owner),
            {"statement": statement},
            number=f"SET-{statement[-2:]}",
            period=period,
            currency="CNY",
            gross=gross,
            refunds="0.00",
            payment_fees="0.00",
            franchise_fee=fee,
            net="0.00",
            status=status,
        )

    def finding(self, kind: str, when: datetime, operator: uuid.UUID) -> DomainEvent:
        return self.event(
            kind, when, (operator, self.regulator), {"finding": _id(70)}, number="FND-1", severity="low", status="open"
        )

    def history(self) -> list[DomainEvent]:
        a, b, b1, b2 = self.a, self.b, self.buyer1, self.buyer2
        return [
            # Before the year: resources, licence L1 granted to A, product P1 listed with three plans, S1.
            self.event("resource.registered", _at(2024, 1, 5), (self.owner,), {"resource": R1}, code="ENT-REG", grade="L1"),
            self.event("resource.registered", _at(2024, 1, 6), (self.owner,), {"resource": R2}, code="TRAFFIC", grade="L3"),
            self.event("resource.updated", _at(2024, 1, 7), (self.owner,), {"resource": R2}, changed=["grade"], grade="L2"),
            self.licence("licence.created", _at(2024, 3, 1), L1, a, "draft", [R1]),
            self.licence("licence.granted", _at(2024, 3, 2), L1, a, "granted", [R1]),
            self.licence("licence.created", _at(2024, 3, 3), L3, b, "draft", [R2]),  # never granted: not disclosed
            self.product("product.created", _at(2024, 4, 1), P1, a, L1, "draft", mode="api"),
            self.event(
                "listing.submitted",
                _at(2024, 4, 2),
                (self.owner, a),
                {"review": _id(81), "licence": L1},
                product_ref=P1,
                product_name="Enterprise lookup",
            ),
            self.product("product.listed", _at(2024, 4, 10), P1, a, L1, "listed"),
            self.plan("plan.added", _at(2024, 4, 11), P1, PLAN1, a, type="monthly", price="100.00"),
            self.plan(
                "plan.added",
                _at(2024, 4, 11),
                P1,
                PLAN2,
                a,
                type="metered",
                price="0.00",
                per_call_price="0.05",
                monthly_cap="800.00",
            ),
            self.plan("plan.added", _at(2024, 4, 11), P1, PLAN3, a, type="one_off", price="500.00", visibility="private"),
            self.subscription(_at(2024, 5, 1), S1, b1, a, P1, "public_welfare"),
            self.delivery(_at(2024, 12, 31), S1, P1, b1, a),  # the year before
            self.finding("finding.raised", _at(2024, 11, 1), b),  # the year before
            # The year.
            self.licence("licence.created", _at(YEAR, 1, 5), L2, b, "draft", [R2]),
            self.licence("licence.granted", _at(YEAR, 1, 10), L2, b, "granted", [R2]),
            self.statement(
                "settlement.issued", _at(YEAR, 1, 3), ST_A_DEC, a, "2024-12", "50.00", "5.00", "issued"
            ),  # last year's month
            self.product("product.created", _at(YEAR, 1, 20), P2, b, L2, "draft", mode="file"),
            self.event(
                "listing.submitted",
                _at(YEAR, 1, 21),
                (self.owner, b),
                {"review": _id(82), "licence": L2},
                product_ref=P2,
                product_name="Traffic counts",
            ),
            self.product("product.listed", _at(YEAR, 2, 1), P2, b, L2, "listed"),
            self.plan("plan.added", _at(YEAR, 2, 2), P2, PLAN4, b, type="one_off", price="300.00"),
            self.plan("plan.updated", _at(YEAR, 2, 3), P2, PLAN4, b, type="one_off", price="250.00", changed=["price"]),
            self.plan("plan.added", _at(YEAR, 2, 4), P2, PLAN5, b, type="monthly", price="80.00"),
            self.plan("plan.retired", _at(YEAR, 2, 5), P2, PLAN5, b, type="monthly", price="80.00"),
            self.subscription(_at(YEAR, 2, 10), S2, b2, b, P2, "market_analysis"),
            self.subscription(_at(YEAR, 3, 1), S3, b2, a, P1, "credit_assessment"),
            self.payment("payment.received", _at(YEAR, 1, 15), S1, b1, a, "100.00"),
            self.payment("payment.received", _at(YEAR, 3, 2), S3, b2, a, "200.00"),
            self.payment("payment.received", _at(YEAR, 2, 11), S2, b2, b, "250.00"),
            self.payment("payment.refunded", _at(YEAR, 3, 9), S3, b2, a, "50.00"),
            *(self.delivery(_at(YEAR, 4, d), S1, P1, b1, a) for d in (1, 2, 3)),
            *(self.delivery(_at(YEAR, 4, d), S3, P1, b2, a) for d in (4, 5)),
            *(self.delivery(_at(YEAR, 5, d), S2, P2, b2, b) for d in (1, 2, 3, 4)),
            self.licence("licence.suspended", _at(YEAR, 6, 1), L1, a, "suspended", [R1], reason="Settlement overdue"),
            self.licence("licence.reinstated", _at(YEAR, 7, 1), L1, a, "granted", [R1], reason="Settled"),
            self.statement("settlement.computed", _at(YEAR, 2, 1), ST_A_JAN, a, f"{YEAR}-01", "100.00", "10.00", "draft"),
            self.statement("settlement.issued", _at(YEAR, 2, 2), ST_A_JAN, a, f"{YEAR}-01", "120.00", "12.00", "issued"),
            self.statement(
                "settlement.acknowledged", _at(YEAR, 4, 2), ST_A_MAR, a, f"{YEAR}-03", "200.00", "24.00", "acknowledged"
            ),
            self.statement("settlement.computed", _at(YEAR, 3, 1), ST_B_FEB, b, f"{YEAR}-02", "250.00", "30.00", "draft"),
            self.finding("finding.raised", _at(YEAR, 8, 1), a),
            self.finding("finding.closed", _at(YEAR, 9, 1), a),
            # The year after.
            self.licence("licence.revoked", _at(YEAR + 1, 1, 5), L2, b, "revoked", [R2], reason="Breach"),
            self.delivery(_at(YEAR + 1, 1, 2), S1, P1, b1, a),
        ]


def _record(engine: Engine, settings: Settings, events: list[DomainEvent], *, sign: bool = True) -> None:
    async def write(session: AsyncSession) -> None:
        await services.record_many(session, events)
        await session.commit()
        if sign:
            await services.sign_checkpoint(session, load_ledger_signer(settings))

    run(engine.url.render_as_string(hide_password=False), write)


def _alerts(engine: Engine, world: World) -> None:
    with Session(engine) as session:
        for n, (operator, created, resolved) in enumerate(
            [
                (world.a, _at(YEAR, 5, 1), _at(YEAR, 5, 3)),
                (world.b, _at(YEAR - 1, 12, 1), None),  # the year before
                (world.b, _at(YEAR, 8, 1), None),
            ]
        ):
            session.add(
                SupervisionAlert(
                    rule="volume_spike",
                    severity="medium",
                    detail="d",
                    key=f"k{n}",
                    operator_id=operator,
                    created_at=created,
                    resolved_at=resolved,
                )
            )
        session.commit()


@pytest.fixture
def world(engine: Engine, settings: Settings) -> World:
    made = World(engine)
    _record(engine, settings, made.history())
    _alerts(engine, made)
    return made


def _by_operator(body: dict[str, Any], operator: uuid.UUID) -> dict[str, Any]:
    return next(o for o in body["operators"] if o["operator"]["id"] == str(operator))


def test_figures_of_a_year_match_the_hand_computed_world(client: TestClient[Any], engine: Engine, world: World) -> None:
    answer = client.get(API)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["year"] == YEAR
    assert body["complete"] is True
    assert body["has_data"] is True

    # Licences in force during the year: L1 (suspended and reinstated) and L2 (granted this year); L3 never granted.
    licences = {lic["number"]: lic for lic in body["licences"]}
    assert sorted(licences) == ["LIC-2024-0001", "LIC-2025-0001"]
    l1, l2 = licences["LIC-2024-0001"], licences["LIC-2025-0001"]
    assert l1["operator"]["id"] == str(world.a)
    assert l1["operator"]["name_zh"] == "港湾数据"
    assert l1["resources"] == [{"code": "ENT-REG", "grade": "L1"}]
    assert l2["resources"] == [{"code": "TRAFFIC", "grade": "L2"}], "the grade as last updated"
    assert l1["granted_this_year"] is False
    assert l2["granted_this_year"] is True
    assert [(c["on"], c["change"], c["reason"]) for c in l1["changes"]] == [
        ("2025-06-01", "suspended", "Settlement overdue"),
        ("2025-07-01", "reinstated", "Settled"),
    ]
    assert [c["change"] for c in l2["changes"]] == ["granted"]
    assert l2["status_at_end"] == "granted", "revoked only the year after"
    assert (l2["starts_on"], l2["ends_on"]) == ("2025-01-10", "2026-01-09")

    # Products listed during the year, public plans at its end, price ranges.
    products = {p["name"]: p for p in body["products"]}
    assert sorted(products) == ["Enterprise lookup", "Traffic counts"]
    p1, p2 = products["Enterprise lookup"], products["Traffic counts"]
    assert (p1["mode"], p1["licence_number"], p1["status_at_end"]) == ("api", "LIC-2024-0001", "listed")
    assert [(x["type"], x["price"], x["per_call_price"]) for x in p1["plans"]] == [
        ("metered", "0.00", "0.05"),
        ("monthly", "100.00", None),
    ]
    assert p1["private_plans"] == 1
    assert (p1["price_min"], p1["price_max"], p1["currency"]) == ("0.05", "100.00", "CNY")
    assert [(x["type"], x["price"]) for x in p2["plans"]] == [("one_off", "250.00")], "updated price; retired plan gone"
    assert (p2["price_min"], p2["price_max"], p2["listed_on"]) == ("250.00", "250.00", "2025-02-01")

    # Franchise fees: the latest state of each statement of the year's months; drafts apart.
    fees = {f["operator"]["id"]: f for f in body["fees"]}
    fa, fb = fees[str(world.a)], fees[str(world.b)]
    assert (fa["gross"], fa["franchise_fee"], fa["statements"], fa["provisional_fee"]) == ("320.00", "36.00", 2, "0.00")
    assert fa["monthly"][:4] == ["12.00", "0.00", "24.00", "0.00"]
    assert len(fa["monthly"]) == 12
    assert (fb["franchise_fee"], fb["provisional_fee"], fb["provisional_statements"]) == ("0.00", "30.00", 1)
    assert body["totals"]["franchise_fees"] == [{"currency": "CNY", "franchise_fee": "36.00", "provisional_fee": "30.00"}]
    assert body["gross_transaction_value"] == [
        {"currency": "CNY", "received": "550.00", "refunded": "50.00", "net": "500.00", "payments": 3}
    ]

    # Operators' performance.
    oa, ob = _by_operator(body, world.a), _by_operator(body, world.b)
    assert oa["revenue"] == [{"currency": "CNY", "received": "300.00", "refunded": "50.00", "net": "250.00", "payments": 2}]
    assert (oa["buyers"], oa["subscriptions"], oa["public_welfare_subscriptions"]) == (2, 2, 1)
    assert oa["deliveries"] == {"api": 5, "file": 0, "sandbox": 0}
    assert (oa["public_welfare_deliveries"], oa["public_welfare_share"]) == (3, "0.6000")
    assert oa["effective_fee_rates"] == [{"currency": "CNY", "value": "0.1125"}]
    assert (oa["findings_raised"], oa["findings_closed"], oa["alerts_raised"], oa["alerts_resolved"]) == (1, 1, 1, 1)
    assert (ob["buyers"], ob["deliveries"]["file"], ob["public_welfare_share"]) == (1, 4, "0.0000")
    assert (ob["findings_raised"], ob["alerts_raised"], ob["alerts_resolved"]) == (0, 1, 0)
    totals = body["totals"]
    assert (totals["licences"], totals["licences_granted"], totals["suspensions"], totals["products"]) == (2, 1, 1, 2)
    assert (totals["buyers"], totals["deliveries_total"], totals["public_welfare_share"]) == (2, 9, "0.3333")

    # The ledger: the year's events and the checkpoint every figure is consistent with.
    everything = ledger_events(engine)
    in_year = [e["index"] for e in everything if e["time"].startswith(str(YEAR))]
    ledger = body["ledger"]
    assert ledger["events_in_year"] == len(in_year)
    assert (ledger["first_index"], ledger["last_index"]) == (min(in_year), max(in_year))
    assert ledger["checkpoint_size"] == len(everything)
    root = run(engine.url.render_as_string(hide_password=False), lambda s: services.root_at(s, len(everything)))
    assert ledger["checkpoint_root"] == root.hex()
    assert ledger["checkpoint_note"]

    # Buyers are counted, never named.
    assert "Secret Buyer" not in answer.text
    assert str(world.buyer1) not in answer.text
    assert str(world.buyer2) not in answer.text


def test_only_events_below_the_signed_checkpoint_count(
    client: TestClient[Any], engine: Engine, settings: Settings, world: World
) -> None:
    before = client.get(API).json()
    late = world.payment("payment.received", _at(YEAR, 12, 1), S2, world.buyer2, world.b, "1000.00")
    _record(engine, settings, [late], sign=False)
    unsigned = client.get(API).json()
    assert unsigned["gross_transaction_value"] == before["gross_transaction_value"]
    assert unsigned["ledger"] == before["ledger"]
    _record(engine, settings, [], sign=True)
    signed = client.get(API).json()
    assert signed["gross_transaction_value"][0]["received"] == "1550.00"
    assert signed["ledger"]["checkpoint_size"] == before["ledger"]["checkpoint_size"] + 1
    assert signed["ledger"]["events_in_year"] == before["ledger"]["events_in_year"] + 1


def test_a_year_without_events_says_so(client: TestClient[Any], world: World) -> None:
    body = client.get("/api/supervision/disclosure/2010").json()
    assert body["has_data"] is False
    assert (body["licences"], body["products"], body["fees"], body["operators"]) == ([], [], [], [])
    assert body["ledger"]["events_in_year"] == 0
    assert body["ledger"]["checkpoint_size"] > 0
    page = client.get("/disclosure/2010")
    assert page.status_code == 200
    assert "No transactions were recorded in 2010." in page.text


def test_bad_years_are_refused_and_write_nothing(client: TestClient[Any], engine: Engine) -> None:
    before = len(ledger_events(engine))
    assert_problem(client.get("/api/supervision/disclosure/1999"), 400, "year_out_of_range")
    future = datetime.now(UTC).year + 1
    assert_problem(client.get(f"/api/supervision/disclosure/{future}"), 404, "disclosure_not_available")
    for path, status in (
        ("/disclosure/1999", 400),
        (f"/disclosure/{future}", 404),
        (f"/disclosure/{future}.pdf", 404),
        ("/disclosure/abc", 404),
    ):
        page = client.get(path)
        assert page.status_code == status, path
        assert "text/html" in page.headers["content-type"]
    assert len(ledger_events(engine)) == before


def test_the_current_year_is_reported_so_far(client: TestClient[Any], world: World) -> None:
    body = client.get(f"/api/supervision/disclosure/{datetime.now(UTC).year}").json()
    assert body["complete"] is False
    assert "The year is not over" in client.get(f"/disclosure/{datetime.now(UTC).year}").text


def test_the_page_shows_the_figures_to_anyone(client: TestClient[Any], engine: Engine, world: World) -> None:
    page = client.get(f"/disclosure/{YEAR}")
    assert page.status_code == 200
    text = page.text
    for expected in (
        "LIC-2024-0001",
        "LIC-2025-0001",
        "Enterprise lookup",
        "Traffic counts",
        "Settlement overdue",
        "550.00 CNY",
        "36.00 CNY",
    ):
        assert expected in text, expected
    assert 'data-stat="buyers">2<' in text
    assert 'data-chart="disclosure-fees-CNY"' in text
    assert "Secret Buyer" not in text
    # A signed-in regulator sees the same page.
    use_session(client, make_login_session(engine, make_user(engine, make_org(engine, OrgKind.regulator))))
    assert client.get(f"/disclosure/{YEAR}").text.count("LIC-2024-0001") == text.count("LIC-2024-0001")


@pytest.mark.parametrize("locale", ["en", "zh-CN"])
def test_the_pdf_holds_the_year_and_its_figures(client: TestClient[Any], world: World, locale: str) -> None:
    client.cookies.set("locale", locale)
    answer = client.get(f"/disclosure/{YEAR}.pdf")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/pdf"
    assert answer.content.startswith(b"%PDF")
    text = flat(pdf_text(answer.content))
    assert str(YEAR) in text
    for expected in ("LIC-2024-0001", "Enterprise lookup", "Traffic counts", "550.00 CNY", "36.00"):
        assert expected in text, expected
    assert "Secret Buyer" not in text


def test_a_report_is_computed_again_only_for_a_new_checkpoint(
    client: TestClient[Any], engine: Engine, settings: Settings, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    computed: list[int] = []
    compute = disclosure._disclose

    async def counting(*args: Any) -> Any:
        computed.append(args[1])
        return await compute(*args)

    monkeypatch.setattr(disclosure, "_disclose", counting)
    first = client.get(API).json()
    assert client.get(f"/disclosure/{YEAR}").status_code == 200
    assert client.get(API).json() == first
    assert computed == [YEAR], "the page and the second read answer the report already computed"
    _record(engine, settings, [world.finding("finding.raised", _at(YEAR, 10, 1), world.b)])
    again = client.get(API).json()
    assert computed == [YEAR, YEAR]
    assert _by_operator(again, world.b)["findings_raised"] == 1
