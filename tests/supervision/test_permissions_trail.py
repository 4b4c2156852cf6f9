"""Permission matrix of the drill-down: the owner and regulators read a licence's trail and one event with its
proof; operators and buyers are refused (least privilege) and nothing is written; the matrix's auditor has no
engagement (403 ``outside_engagement``, the attempt recorded). Auditors in and out of scope: tests/supervision/
test_trail.py."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from litestar.testing import TestClient
from sqlalchemy import Engine

from marketplace.core.events import Actor, DomainEvent
from marketplace.core.settings import Settings
from supervision import services
from tests.conftest import TEST_ORIGIN
from tests.helpers import shared_app
from tests.licensing.factories import ledger_events
from tests.marketplace.core.test_permissions import PARTIES, Case, _by, build_world
from tests.supervision.ledger_helpers import run

LICENCE = "{licence_id:uuid}"
INDEX = "{index:int}"

CASES: list[Case] = [
    Case("GET", f"/api/supervision/licences/{LICENCE}/trail", _by(401, 200, 403, 403, 403, 200, 403)),
    Case("GET", f"/api/supervision/events/{INDEX}", _by(401, 200, 403, 403, 403, 200, 403)),
]


def _licence(engine: Engine) -> tuple[str, int]:
    licence, product, subscription = (str(uuid.uuid4()) for _ in range(3))
    operator = str(uuid.uuid4())
    made = [
        DomainEvent("licence.granted", Actor("system", "tests"), orgs=(operator,), subjects={"licence": licence}),
        DomainEvent(
            "delivery.recorded",
            Actor("system", "tests"),
            orgs=(operator,),
            subjects={"licence": licence, "product": product, "subscription": subscription},
            payload={"mode": "api", "rows": 1},
        ),
    ]

    async def write(session: Any) -> list[int]:
        indices = await services.record_many(session, made)
        await session.commit()
        return indices

    indices = run(engine.url.render_as_string(hide_password=False), write)
    return licence, indices[-1]


@pytest.mark.parametrize("party", PARTIES)
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_route_answers_each_party_exactly(settings: Settings, engine: Engine, case: Case, party: str) -> None:
    world = build_world(engine)
    licence, index = _licence(engine)
    before = len(ledger_events(engine))
    path = case.path.replace(LICENCE, licence).replace(INDEX, str(index))
    with TestClient(app=shared_app(settings), base_url=TEST_ORIGIN) as client:
        if party != "anonymous":
            client.cookies.set("market_session", world.sessions[party])
        response = client.get(path)
    assert response.status_code == case.expected[party], f"{party}: {response.status_code} {response.text[:300]}"
    added = [e["type"] for e in ledger_events(engine)[before:]]
    if response.status_code >= 400:
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["code"]
        assert added == (["records.read_refused"] if party == "auditor" else [])
    else:
        body = response.json()
        if "trail" in case.path:
            assert body["licence_id"] == licence
            assert body["subscriptions_without_product"] == []
            assert len(body["products"]) == 1
            assert body["products"][0]["subscriptions"][0]["deliveries"]["count"] == 1
        else:
            assert body["index"] == index
            assert body["type"] == "delivery.recorded"
        assert added == (["records.read"] if party == "regulator" else [])
