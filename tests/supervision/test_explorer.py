"""The transaction explorer: filters by type, organisation, product, licence, subscription, period and amount agree
with the ledger itself; keyset pages walk every match once; events recorded since the last query are there; an
auditor sees only its engagement."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from litestar.testing import TestClient
from sqlalchemy import Engine
from sqlmodel.ext.asyncio.session import AsyncSession

from marketplace.core.events import Actor, DomainEvent
from marketplace.core.principal import OrgKind
from supervision import services
from tests.factories import make_login_session, make_org, make_user
from tests.helpers import assert_problem, use_session
from tests.licensing.factories import ledger_events
from tests.supervision.ledger_helpers import run

EVENTS = "/api/supervision/events"
DAY = date(2026, 9, 1)
PRODUCTS = [str(uuid.UUID(int=100 + i)) for i in range(3)]
LICENCES = [str(uuid.UUID(int=200 + i)) for i in range(2)]


def _events(operators: list[uuid.UUID], buyer: uuid.UUID, count: int = 40) -> list[DomainEvent]:
    made = []
    for n in range(count):
        kind = ("payment.received", "delivery.recorded", "invoice.issued", "licence.suspended")[n % 4]
        payload: dict[str, Any] = {"n": n}
        if kind in ("payment.received", "invoice.issued"):
            payload.update(amount=f"{n * 37 % 500}.{n % 100:02d}", currency="CNY")
        made.append(
            DomainEvent(
                type=kind,
                actor=Actor("system", "tests"),
                orgs=(operators[n % 2], buyer),
                subjects={
                    "product": PRODUCTS[n % 3],
                    "licence": LICENCES[n % 2],
                    "subscription": str(uuid.UUID(int=300 + n % 5)),
                },
                payload=payload,
                occurred_at=datetime.combine(DAY + timedelta(days=n % 20), datetime.min.time(), UTC) + timedelta(minutes=n),
            )
        )
    return made


def _record(engine: Engine, events: list[DomainEvent]) -> None:
    async def write(session: AsyncSession) -> None:
        await services.record_many(session, events)
        await session.commit()

    run(engine.url.render_as_string(hide_password=False), write)


def _as(client: TestClient[Any], engine: Engine, org: Any) -> dict[str, str]:
    client.cookies.clear()
    return use_session(client, make_login_session(engine, make_user(engine, org)))


def _walk(client: TestClient[Any], params: dict[str, Any], limit: int = 7) -> list[int]:
    seen: list[int] = []
    before = None
    for _ in range(100):
        answer = client.get(EVENTS, params={**params, "limit": limit, **({"before": before} if before is not None else {})})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        seen += [item["index"] for item in body["items"]]
        before = body["next_before"]
        if before is None:
            return seen
    raise AssertionError("the pages never ended")


def _amount(event: dict[str, Any]) -> Decimal | None:
    amount = event["payload"].get("amount")
    return Decimal(amount) if amount is not None else None


@pytest.fixture
def world(engine: Engine) -> dict[str, Any]:
    operators = [make_org(engine, OrgKind.operator).id, make_org(engine, OrgKind.operator).id]
    buyer = make_org(engine, OrgKind.buyer).id
    _record(engine, _events(operators, buyer))
    return {"operators": operators, "buyer": buyer}


def test_filters_and_pages_agree_with_the_ledger(client: TestClient[Any], engine: Engine, world: dict[str, Any]) -> None:
    _as(client, engine, make_org(engine, OrgKind.regulator))
    everything = [e for e in ledger_events(engine) if e["type"] != "records.read"]
    a = str(world["operators"][0])

    def expected(keep: Any) -> list[int]:
        return sorted((e["index"] for e in everything if keep(e)), reverse=True)

    cases: list[tuple[dict[str, Any], Any]] = [
        ({}, lambda e: True),
        ({"type": ["payment.received", "invoice.issued"]}, lambda e: e["type"] in ("payment.received", "invoice.issued")),
        ({"org": a}, lambda e: a in e["orgs"]),
        ({"product": PRODUCTS[1]}, lambda e: e["subjects"].get("product") == PRODUCTS[1]),
        ({"licence": LICENCES[0], "org": a}, lambda e: e["subjects"].get("licence") == LICENCES[0] and a in e["orgs"]),
        (
            {"start": (DAY + timedelta(days=3)).isoformat(), "end": (DAY + timedelta(days=6)).isoformat()},
            lambda e: DAY + timedelta(days=3) <= date.fromisoformat(e["time"][:10]) <= DAY + timedelta(days=6),
        ),
        (
            {"min_amount": "100", "max_amount": "300.50"},
            lambda e: (m := _amount(e)) is not None and Decimal(100) <= m <= Decimal("300.50"),
        ),
    ]
    for params, keep in cases:
        # The regulator's reads are recorded as they happen; they are events too, but not of these filters' kinds.
        got = [i for i in _walk(client, params) if i in {e["index"] for e in everything}]
        assert got == expected(keep), params
    first = client.get(EVENTS, params={"limit": 1}).json()["items"][0]
    ledger = next(e for e in ledger_events(engine) if e["index"] == first["index"])
    assert {k: first[k] for k in ("type", "time", "orgs", "subjects", "payload")} == {
        k: ledger[k] for k in ("type", "time", "orgs", "subjects", "payload")
    }


def test_events_recorded_since_the_last_query_are_there(client: TestClient[Any], engine: Engine, world: dict[str, Any]) -> None:
    _as(client, engine, make_org(engine, OrgKind.regulator))
    params = {"type": "licence.suspended"}
    before = _walk(client, params)
    _record(engine, _events(world["operators"], world["buyer"], count=4))
    after = _walk(client, params)
    assert len(after) == len(before) + 1


def test_bad_queries_are_refused(client: TestClient[Any], engine: Engine) -> None:
    _as(client, engine, make_org(engine, OrgKind.regulator))
    assert_problem(client.get(EVENTS, params={"start": "2026-09-05", "end": "2026-09-01"}), 400, "period_reversed")
    for params in ({"limit": 0}, {"limit": 201}, {"org": "nope"}, {"min_amount": "-1"}, {"currency": "yuan"}, {"before": -1}):
        assert_problem(client.get(EVENTS, params=params), 400, "invalid_input")
    for kind in (OrgKind.operator, OrgKind.buyer):
        _as(client, engine, make_org(engine, kind))
        assert client.get(EVENTS).status_code == 403


def test_an_auditor_explores_only_its_engagement(client: TestClient[Any], engine: Engine, world: dict[str, Any]) -> None:
    auditor = make_org(engine, OrgKind.auditor)
    auditor_session = make_login_session(engine, make_user(engine, auditor))
    client.cookies.clear()
    use_session(client, auditor_session)
    assert_problem(client.get(EVENTS), 403, "outside_engagement")
    a, b = (str(o) for o in world["operators"])
    headers = _as(client, engine, make_org(engine, OrgKind.owner))
    granted = client.post(
        "/api/supervision/engagements",
        json={
            "auditor_id": str(auditor.id),
            "operator_ids": [a],
            "period_start": DAY.isoformat(),
            "period_end": (DAY + timedelta(days=9)).isoformat(),
            "expires_at": (datetime.now(UTC) + timedelta(days=30)).isoformat(),
        },
        headers=headers,
    )
    assert granted.status_code == 201, granted.text
    client.cookies.clear()
    use_session(client, auditor_session)
    seen = set(_walk(client, {}))
    expected = {
        e["index"]
        for e in ledger_events(engine)
        if a in e["orgs"]
        and DAY <= date.fromisoformat(e["time"][:10]) <= DAY + timedelta(days=9)
        and e["type"] != "engagement.granted"
    }
    assert seen == expected
    assert seen
    refused_before = len(ledger_events(engine, "records.read_refused"))
    assert_problem(client.get(EVENTS, params={"org": b}), 403, "outside_engagement")
    refused = ledger_events(engine, "records.read_refused")
    assert len(refused) == refused_before + 1
    assert b in refused[-1]["payload"]["query"], "the attempt is recorded with what was asked"
