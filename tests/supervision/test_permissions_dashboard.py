"""Permission matrix of the dashboard and the scorecards: the owner and regulators read them, an auditor only within
an engagement in force (none in the matrix's world: 403 ``outside_engagement``, the attempt recorded), nobody else;
a success by a regulator is recorded as a read. Then an auditor in and out of scope."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from litestar.testing import TestClient
from sqlalchemy import Engine, text
from sqlmodel import Session

from marketplace.core.principal import OrgKind
from marketplace.core.settings import Settings
from supervision.models import Engagement, EngagementOperator
from tests.conftest import TEST_ORIGIN
from tests.factories import make_org
from tests.helpers import shared_app
from tests.licensing.factories import ledger_events
from tests.marketplace.core.test_permissions import PARTIES, Case, _by, build_world

OPERATOR = "{operator_id:uuid}"
PERIOD = "start=2026-09-01&end=2026-10-31"

CASES: list[Case] = [
    Case("GET", f"/api/supervision/dashboard?{PERIOD}", _by(401, 200, 403, 403, 403, 200, 403)),
    Case("GET", f"/api/supervision/scorecard?{PERIOD}", _by(401, 200, 403, 403, 403, 200, 403)),
    Case("GET", f"/api/supervision/scorecard/{OPERATOR}?{PERIOD}", _by(401, 200, 403, 403, 403, 200, 403)),
]


def _operator(engine: Engine) -> uuid.UUID:
    with engine.connect() as conn:
        return uuid.UUID(str(conn.execute(text("SELECT id FROM organisation WHERE kind = 'operator'")).scalar_one()))


@pytest.mark.parametrize("party", PARTIES)
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_route_answers_each_party_exactly(settings: Settings, engine: Engine, case: Case, party: str) -> None:
    world = build_world(engine)
    path = case.path.replace(OPERATOR, str(_operator(engine)))
    before = len(ledger_events(engine))
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
        if "/scorecard?" in path:
            assert "items" in body
        elif "/scorecard/" in path:
            assert body["operator_id"] == path.split("/")[-1].split("?")[0]
        else:
            assert "totals" in body
        assert added == (["records.read"] if party == "regulator" else [])


def test_an_auditor_in_scope_reads_and_out_of_scope_is_refused(settings: Settings, engine: Engine) -> None:
    world = build_world(engine)
    covered = _operator(engine)
    other = make_org(engine, OrgKind.operator).id
    with engine.connect() as conn:
        auditor = uuid.UUID(str(conn.execute(text("SELECT id FROM organisation WHERE kind = 'auditor'")).scalar_one()))
        owner = uuid.UUID(str(conn.execute(text("SELECT id FROM organisation WHERE kind = 'owner'")).scalar_one()))
    with Session(engine) as session:
        engagement = Engagement(
            auditor_id=auditor,
            period_start=date(2026, 9, 1),
            period_end=date(2026, 10, 31),
            expires_at=datetime.now(UTC) + timedelta(days=10),
            owner_org_id=owner,
        )
        session.add(engagement)
        session.flush()
        session.add(EngagementOperator(engagement_id=engagement.id, operator_id=covered))
        session.commit()
    expected: list[tuple[str, int]] = [
        (f"/api/supervision/dashboard?{PERIOD}", 200),
        (f"/api/supervision/scorecard?{PERIOD}", 200),
        (f"/api/supervision/scorecard/{covered}?{PERIOD}", 200),
        (f"/api/supervision/scorecard/{other}?{PERIOD}", 403),
    ]
    with TestClient(app=shared_app(settings), base_url=TEST_ORIGIN) as client:
        client.cookies.set("market_session", world.sessions["auditor"])
        for path, status in expected:
            before = len(ledger_events(engine))
            response = client.get(path)
            assert response.status_code == status, f"{path}: {response.text[:300]}"
            added = [e["type"] for e in ledger_events(engine)[before:]]
            assert added == (["records.read"] if status == 200 else ["records.read_refused"])
            body: Any = response.json()
            if path.startswith("/api/supervision/scorecard?"):
                assert [c["operator_id"] for c in body["items"]] == [str(covered)]
            elif status == 403:
                assert body["code"] == "outside_engagement"
