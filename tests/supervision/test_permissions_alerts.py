"""Permission matrix of the alert routes. World: the parties of the core matrix, an engagement of the auditor covering
the operator, an alert about the operator (inside the engagement) and one about another operator (outside it).

The owner and regulators read every alert, the auditor those inside its engagement (outside: 403
``outside_engagement``, the attempt recorded); operators and buyers are refused. Only a regulator acknowledges and
resolves; a refusal changes no alert and writes nothing to the ledger (but the auditor's recorded refusal)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from litestar.testing import TestClient
from sqlalchemy import Engine, text
from sqlmodel import Session

from marketplace.core.http import CSRF_HEADER
from marketplace.core.principal import OrgKind, Principal, Role
from marketplace.core.settings import Settings
from marketplace.core.types import utcnow
from supervision import engagements
from supervision.models import SupervisionAlert
from supervision.schemas import EngagementCreate
from tests.conftest import TEST_ORIGIN
from tests.factories import make_org
from tests.helpers import csrf, shared_app
from tests.licensing.factories import ledger_events
from tests.marketplace.core.test_permissions import PARTIES, Case, World, _by, build_world
from tests.supervision.ledger_helpers import run
from tests.worlds import replayed

ALERTS = "/api/supervision/alerts"
ALERT = "{alert_id:int}"
#: Marks a row asking for the alert outside the auditor's engagement (the query is dropped before the request).
OUTSIDE = "?alert=outside"

READ = _by(401, 200, 403, 403, 403, 200, 200)
REGULATOR_ONLY = _by(401, 403, 403, 403, 403, 200, 403)

CASES: list[Case] = [
    Case("GET", ALERTS, READ),
    Case("GET", f"{ALERTS}/{ALERT}", READ),
    Case("GET", f"{ALERTS}/{ALERT}{OUTSIDE}", _by(401, 200, 403, 403, 403, 200, 403)),
    Case("POST", f"{ALERTS}/{ALERT}/acknowledge", REGULATOR_ONLY),
    Case("POST", f"{ALERTS}/{ALERT}/resolve", REGULATOR_ONLY, json=lambda _p, _w: {"note": "Checked with the operator."}),
]


@dataclass
class AlertWorld:
    world: World
    inside: int
    outside: int


def _build(engine: Engine) -> AlertWorld:
    world = build_world(engine)
    with engine.connect() as conn:
        orgs = {str(kind): uuid.UUID(str(org_id)) for org_id, kind in conn.execute(text("SELECT id, kind FROM organisation"))}
        owner_admin = conn.execute(
            text("SELECT u.id FROM user_account u JOIN organisation o ON o.id = u.org_id WHERE o.kind = 'owner'")
        ).scalar_one()
    owner = Principal(
        org_id=orgs["owner"], org_kind=OrgKind.owner, org_name="owner", user_id=uuid.UUID(str(owner_admin)), role=Role.admin
    )
    now = utcnow()
    grant = EngagementCreate(
        auditor_id=orgs["auditor"],
        operator_ids=[orgs["operator"]],
        period_start=(now - timedelta(days=30)).date(),
        period_end=now.date(),
        expires_at=now + timedelta(days=30),
    )
    run(engine.url.render_as_string(hide_password=False), lambda s: engagements.grant_engagement(s, owner, grant))
    stranger = make_org(engine, OrgKind.operator).id
    ids = []
    with Session(engine) as session:
        for n, operator in enumerate((orgs["operator"], stranger)):
            alert = SupervisionAlert(
                rule="delivery.after_end",
                severity="critical",
                detail="A delivery after the entitlement ended.",
                key=f"matrix:{n}",
                evidence_json="[0]",
                operator_id=operator,
                occurred_at=now - timedelta(days=1),
            )
            session.add(alert)
            session.commit()
            session.refresh(alert)
            assert alert.id is not None
            ids.append(alert.id)
    return AlertWorld(world, ids[0], ids[1])


def _alerts(engine: Engine) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text("SELECT id, state, resolution_note FROM supervision_alert ORDER BY id"))]


@pytest.mark.parametrize("party", PARTIES)
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_alert_route_answers_each_party_exactly(settings: Settings, engine: Engine, case: Case, party: str) -> None:
    world = replayed(engine, __name__, lambda: _build(engine))
    alert_id = world.outside if case.path.endswith(OUTSIDE) else world.inside
    path = case.path.removesuffix(OUTSIDE).replace(ALERT, str(alert_id))
    before_alerts, before_events = _alerts(engine), len(ledger_events(engine))
    with TestClient(app=shared_app(settings), base_url=TEST_ORIGIN) as client:
        if party != "anonymous":
            client.cookies.set("market_session", world.world.sessions[party])
        kwargs: dict[str, Any] = {}
        if case.method == "POST":
            kwargs["headers"] = {CSRF_HEADER: csrf(client)}
            kwargs["json"] = case.json(party, world.world) if case.json else None
        response = client.request(case.method, path, **kwargs)
    assert response.status_code == case.expected[party], f"{case.id} as {party}: {response.status_code} {response.text[:300]}"
    added = [e["type"] for e in ledger_events(engine)[before_events:]]
    if response.status_code >= 400:
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["code"]
        assert _alerts(engine) == before_alerts
        assert added == (["records.read_refused"] if party == "auditor" and case.method == "GET" else [])
    elif case.method == "GET":
        body = response.json()
        if case.path == ALERTS:
            expected = {world.inside} if party == "auditor" else {world.inside, world.outside}
            assert {a["id"] for a in body["items"]} == expected
        else:
            assert body["id"] == alert_id
        assert added == (["records.read"] if party in ("regulator", "auditor") else [])
    else:
        assert response.json()["state"] == ("acknowledged" if path.endswith("acknowledge") else "resolved")
        assert added == [f"alert.{response.json()['state']}"]
