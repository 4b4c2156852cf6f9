"""Drill-down from a licence: the tree licence -> products -> subscriptions -> billing and deliveries matches the
ledger; every listed event's inclusion proof verifies against the signed checkpoint; an event recorded after the
checkpoint says so; one event with its proof; an auditor sees only its engagement (by operator, by period, not
after expiry), and every refusal is recorded."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from litestar.testing import TestClient
from sqlalchemy import Engine, text, update
from sqlmodel import Session, col

from marketplace.core.events import Actor, DomainEvent
from marketplace.core.identity.models import Organisation
from marketplace.core.principal import OrgKind
from marketplace.core.types import utcnow
from supervision import merkle, services
from supervision.models import Engagement
from supervision.note import open_checkpoint, parse_vkey
from tests.factories import make_login_session, make_org, make_user
from tests.helpers import assert_problem, use_session
from tests.licensing.factories import ledger_events
from tests.supervision.ledger_helpers import run

DAY = date(2026, 9, 1)
TRAIL = "/api/supervision/licences/{}/trail"
EVENT = "/api/supervision/events/{}"
SYSTEM = Actor("system", "tests")


def _at(days: int, minutes: int = 0) -> datetime:
    return datetime.combine(DAY, datetime.min.time(), UTC) + timedelta(days=days, minutes=minutes)


def _ids(prefix: int, count: int) -> list[str]:
    return [str(uuid.UUID(int=prefix + i)) for i in range(count)]


def _licence_events(
    owner: str, operator: str, buyer: str, licence: str, products: list[str], subs: list[str]
) -> list[DomainEvent]:
    """Events shaped as licensing, catalog, subscriptions, billing and delivery record them."""
    made = [
        DomainEvent("licence.granted", SYSTEM, orgs=(owner, operator), subjects={"licence": licence}, occurred_at=_at(0)),
    ]
    for n, product in enumerate(products):
        made += [
            DomainEvent(
                "product.created",
                SYSTEM,
                orgs=(operator,),
                subjects={"product": product, "licence": licence},
                occurred_at=_at(1, n),
            ),
            DomainEvent(
                "plan.created",
                SYSTEM,
                orgs=(operator,),
                subjects={"product": product, "plan": str(uuid.uuid4())},
                occurred_at=_at(1, 10 + n),
            ),
        ]
    for n, (subscription, product) in enumerate(zip(subs, products, strict=True)):
        subjects = {"subscription": subscription, "product": product, "licence": licence}
        orgs = (buyer, operator, owner)
        made += [
            DomainEvent("subscription.activated", SYSTEM, orgs=orgs, subjects={**subjects, "plan": "p"}, occurred_at=_at(2, n)),
            DomainEvent(
                "entitlement.granted", SYSTEM, orgs=orgs, subjects={**subjects, "entitlement": "e"}, occurred_at=_at(2, 5 + n)
            ),
            DomainEvent(
                "invoice.issued",
                SYSTEM,
                orgs=orgs,
                subjects={**subjects, "invoice": f"i{n}"},
                payload={"amount": "100.00", "currency": "CNY"},
                occurred_at=_at(3, n),
            ),
            DomainEvent(
                "payment.received",
                SYSTEM,
                orgs=orgs,
                subjects={**subjects, "invoice": f"i{n}", "payment": f"p{n}"},
                payload={"amount": "100.00", "currency": "CNY"},
                occurred_at=_at(3, 5 + n),
            ),
        ]
    return made


def _deliveries(
    operator: str, buyer: str, owner: str, licence: str, product: str, subscription: str, days: list[int]
) -> list[DomainEvent]:
    return [
        DomainEvent(
            "delivery.recorded",
            SYSTEM,
            orgs=(buyer, operator, owner),
            subjects={"entitlement": "e", "subscription": subscription, "product": product, "licence": licence},
            payload={"mode": "api", "rows": 10 + n, "bytes": 100},
            occurred_at=_at(day, n),
        )
        for n, day in enumerate(days)
    ]


def _record(engine: Engine, events: list[DomainEvent]) -> None:
    async def write(session: Any) -> None:
        await services.record_many(session, events)
        await session.commit()

    run(engine.url.render_as_string(hide_password=False), write)


def _as(client: TestClient[Any], engine: Engine, org: Organisation) -> dict[str, str]:
    client.cookies.clear()
    return use_session(client, make_login_session(engine, make_user(engine, org)))


def _leaf(engine: Engine, index: int) -> bytes:
    with engine.connect() as conn:
        return str(
            conn.execute(text("SELECT leaf_input FROM ledger_entry WHERE leaf_index = :i"), {"i": index}).scalar_one()
        ).encode()


@pytest.fixture
def world(client: TestClient[Any], engine: Engine) -> dict[str, Any]:
    owner = make_org(engine, OrgKind.owner)
    operator, other = make_org(engine, OrgKind.operator), make_org(engine, OrgKind.operator)
    buyer = make_org(engine, OrgKind.buyer)
    o, p, q, b = (str(x.id) for x in (owner, operator, other, buyer))
    licence, foreign_licence = _ids(1000, 2)
    products, subs = _ids(2000, 2), _ids(3000, 2)
    events = _licence_events(o, p, b, licence, products, subs)
    events.append(
        DomainEvent(
            "payment.refunded",
            SYSTEM,
            orgs=(b, p, o),
            subjects={"refund": "r", "payment": "p0", "invoice": "i0", "subscription": subs[0], "licence": licence},
            payload={"amount": "40.00", "currency": "CNY", "full": False},
            occurred_at=_at(20),
        )
    )
    events += _deliveries(p, b, o, licence, products[0], subs[0], [5, 6, 7, 8, 9, 11, 12, 13])
    events += _deliveries(p, b, o, licence, products[1], subs[1], [6, 7])
    foreign_product, foreign_sub = _ids(4000, 2)
    events += _licence_events(o, q, b, foreign_licence, [foreign_product], [foreign_sub])
    _record(engine, events)
    headers = _as(client, engine, owner)
    signed = client.post("/api/supervision/ledger/checkpoint", headers=headers)
    assert signed.status_code == 200, signed.text
    late = _deliveries(p, b, o, licence, products[1], subs[1], [8])
    _record(engine, late)
    return {
        "owner": owner, "operator": operator, "other": other, "buyer": buyer, "licence": licence,
        "foreign_licence": foreign_licence, "products": products, "subs": subs,
        "checkpoint_size": len(ledger_events(engine)) - 1,
    }  # fmt: skip


def _all_items(trail: dict[str, Any]) -> list[dict[str, Any]]:
    items = list(trail["events"])
    for product in trail["products"]:
        items += product["events"]
        for sub in product["subscriptions"]:
            items += sub["events"] + sub["billing"] + sub["deliveries"]["latest"]
    return items


def _types(items: list[dict[str, Any]]) -> list[str]:
    return [item["type"] for item in items]


def test_the_trail_is_the_ledger_and_every_proof_verifies(client: TestClient[Any], engine: Engine, world: dict[str, Any]) -> None:
    _as(client, engine, make_org(engine, OrgKind.regulator))
    answer = client.get(TRAIL.format(world["licence"]))
    assert answer.status_code == 200, answer.text
    trail = answer.json()
    assert _types(trail["events"]) == ["licence.granted"]
    assert [p["id"] for p in trail["products"]] == sorted(world["products"])
    first, second = (next(p for p in trail["products"] if p["id"] == pid) for pid in world["products"])
    assert _types(first["events"]) == ["product.created", "plan.created"]
    assert [s["id"] for s in first["subscriptions"]] == [world["subs"][0]]
    assert [s["id"] for s in second["subscriptions"]] == [world["subs"][1]]
    sub1, sub2 = first["subscriptions"][0], second["subscriptions"][0]
    assert _types(sub1["events"]) == ["subscription.activated", "entitlement.granted"]
    assert _types(sub1["billing"]) == ["invoice.issued", "payment.received", "payment.refunded"]
    assert sub1["deliveries"]["count"] == 8
    assert len(sub1["deliveries"]["latest"]) == 5
    shown = [d["index"] for d in sub1["deliveries"]["latest"]]
    assert shown == sorted(shown, reverse=True)
    expected_deliveries = [
        e["index"] for e in ledger_events(engine, "delivery.") if e["subjects"]["subscription"] == world["subs"][0]
    ]
    assert shown == sorted(expected_deliveries, reverse=True)[:5]
    # The "more" link pages through the rest in the explorer.
    rest = client.get(sub1["deliveries"]["more"])
    assert rest.status_code == 200, rest.text
    assert [e["index"] for e in rest.json()["items"]] == sorted(expected_deliveries, reverse=True)[5:]
    assert sub2["deliveries"]["count"] == 3
    assert sub2["deliveries"]["more"] is None
    assert trail["subscriptions_without_product"] == []
    assert trail["left_out"] == 0
    assert trail["truncated"] is False
    # Nothing of the other licence is in this trail.
    assert all(world["licence"] == item["subjects"].get("licence", world["licence"]) for item in _all_items(trail))

    checkpoint = trail["checkpoint"]
    assert checkpoint["size"] == world["checkpoint_size"]
    verifier = parse_vkey(client.get("/api/supervision/ledger/public-key").text)
    opened = open_checkpoint(checkpoint["note"], verifier)
    assert (opened.size, base64.b64encode(opened.root).decode()) == (checkpoint["size"], checkpoint["root"])
    items = _all_items(trail)
    assert len(items) == 1 + 4 + 2 + 3 + 5 + 2 + 2 + 3
    pending = [item for item in items if item["proof"]["status"] != "in checkpoint"]
    assert [item["index"] for item in pending] == [world["checkpoint_size"]]
    assert pending[0]["proof"]["status"] == "not yet in a checkpoint"
    assert pending[0]["proof"]["audit_path"] == []
    for item in items:
        leaf = _leaf(engine, item["index"])
        assert base64.b64decode(item["leaf_hash"]) == merkle.leaf_hash(leaf)
        if item in pending:
            continue
        path = [base64.b64decode(step) for step in item["proof"]["audit_path"]]
        merkle.verify_inclusion(item["index"], checkpoint["size"], merkle.leaf_hash(leaf), path, opened.root)
        with pytest.raises(merkle.ProofError):  # the proof is for this entry only
            merkle.verify_inclusion(item["index"], checkpoint["size"], merkle.leaf_hash(leaf + b" "), path, opened.root)


def test_one_event_with_its_proof(client: TestClient[Any], engine: Engine, world: dict[str, Any]) -> None:
    _as(client, engine, make_org(engine, OrgKind.regulator))
    refund = next(e for e in ledger_events(engine) if e["type"] == "payment.refunded")
    body = client.get(EVENT.format(refund["index"])).json()
    assert body["verified"] is True
    assert body["type"] == "payment.refunded"
    assert body["index"] == refund["index"]
    assert base64.b64decode(body["leaf_input"]) == _leaf(engine, refund["index"])
    path = [base64.b64decode(step) for step in body["proof"]["audit_path"]]
    root = base64.b64decode(body["checkpoint"]["root"])
    merkle.verify_inclusion(
        refund["index"], body["checkpoint"]["size"], merkle.leaf_hash(_leaf(engine, refund["index"])), path, root
    )
    late = client.get(EVENT.format(world["checkpoint_size"])).json()
    assert late["verified"] is None
    assert late["proof"]["status"] == "not yet in a checkpoint"
    assert_problem(client.get(EVENT.format(10**9)), 404, "entry_not_found")
    assert_problem(client.get(TRAIL.format(uuid.uuid4())), 404, "licence_not_found")
    assert client.get(TRAIL.format(world["licence"]), params={"deliveries": 0}).status_code == 400
    assert client.get(TRAIL.format(world["licence"]), params={"deliveries": 51}).status_code == 400


def test_deliveries_parameter_lists_more(client: TestClient[Any], engine: Engine, world: dict[str, Any]) -> None:
    _as(client, engine, make_org(engine, OrgKind.owner))
    trail = client.get(TRAIL.format(world["licence"]), params={"deliveries": 20}).json()
    sub1 = next(p for p in trail["products"] if p["id"] == world["products"][0])["subscriptions"][0]
    assert len(sub1["deliveries"]["latest"]) == 8
    assert sub1["deliveries"]["more"] is None


@pytest.mark.parametrize("kind", [OrgKind.operator, OrgKind.buyer])
def test_operators_and_buyers_are_refused(client: TestClient[Any], engine: Engine, world: dict[str, Any], kind: OrgKind) -> None:
    org = world["operator"] if kind is OrgKind.operator else world["buyer"]
    _as(client, engine, org)
    before = len(ledger_events(engine))
    assert_problem(client.get(TRAIL.format(world["licence"])), 403, "party_not_allowed")
    assert_problem(client.get(EVENT.format(0)), 403, "party_not_allowed")
    assert len(ledger_events(engine)) == before


def _refused(engine: Engine, before: int) -> list[str]:
    return [e["type"] for e in ledger_events(engine)[before:]]


def test_an_auditor_sees_only_its_engagement(client: TestClient[Any], engine: Engine, world: dict[str, Any]) -> None:
    auditor = make_org(engine, OrgKind.auditor)
    auditor_session = make_login_session(engine, make_user(engine, auditor))

    def as_auditor() -> None:
        client.cookies.clear()
        use_session(client, auditor_session)

    as_auditor()
    before = len(ledger_events(engine))
    assert_problem(client.get(TRAIL.format(world["licence"])), 403, "outside_engagement")
    assert _refused(engine, before) == ["records.read_refused"]

    headers = _as(client, engine, world["owner"])
    granted = client.post(
        "/api/supervision/engagements",
        json={
            "auditor_id": str(auditor.id),
            "operator_ids": [str(world["operator"].id)],
            "period_start": DAY.isoformat(),
            "period_end": (DAY + timedelta(days=9)).isoformat(),
            "expires_at": (datetime.now(UTC) + timedelta(days=30)).isoformat(),
        },
        headers=headers,
    )
    assert granted.status_code == 201, granted.text
    as_auditor()

    # In scope: the licence of the covered operator, only events in the period.
    before = len(ledger_events(engine))
    answer = client.get(TRAIL.format(world["licence"]))
    assert answer.status_code == 200, answer.text
    trail = answer.json()
    assert _refused(engine, before) == ["records.read"]
    sub1 = next(p for p in trail["products"] if p["id"] == world["products"][0])["subscriptions"][0]
    assert _types(sub1["billing"]) == ["invoice.issued", "payment.received"]  # the refund (day 20) is left out
    assert sub1["deliveries"]["count"] == 5  # days 5..9 of 5..13
    assert trail["left_out"] == 1
    sub2 = next(p for p in trail["products"] if p["id"] == world["products"][1])["subscriptions"][0]
    assert sub2["deliveries"]["count"] == 3
    items = _all_items(trail)
    assert all(date.fromisoformat(item["time"][:10]) <= DAY + timedelta(days=9) for item in items)

    # Out of scope by operator: another operator's licence; by period: the refund; both recorded.
    before = len(ledger_events(engine))
    assert_problem(client.get(TRAIL.format(world["foreign_licence"])), 403, "outside_engagement")
    refund = next(e for e in ledger_events(engine) if e["type"] == "payment.refunded")
    assert_problem(client.get(EVENT.format(refund["index"])), 403, "outside_engagement")
    foreign = next(e for e in ledger_events(engine) if e["subjects"].get("licence") == world["foreign_licence"])
    assert_problem(client.get(EVENT.format(foreign["index"])), 403, "outside_engagement")
    assert _refused(engine, before) == ["records.read_refused"] * 3
    inside = next(
        e for e in ledger_events(engine) if e["type"] == "invoice.issued" and e["subjects"]["licence"] == world["licence"]
    )
    assert client.get(EVENT.format(inside["index"])).json()["verified"] is True

    # After expiry: nothing.
    with Session(engine) as session:
        session.exec(
            update(Engagement).where(col(Engagement.auditor_id) == auditor.id).values(expires_at=utcnow() - timedelta(seconds=1))
        )  # type: ignore[call-overload]
        session.commit()
    before = len(ledger_events(engine))
    assert_problem(client.get(TRAIL.format(world["licence"])), 403, "outside_engagement")
    assert_problem(client.get(EVENT.format(inside["index"])), 403, "outside_engagement")
    assert _refused(engine, before) == ["records.read_refused"] * 2
