"""Every successful read by a regulator or an auditor is itself recorded in the ledger (DESIGN.md §2)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from litestar.testing import TestClient
from sqlalchemy import Engine
from sqlmodel import Session

from marketplace.app import create_app
from marketplace.core.identity.models import Organisation
from marketplace.core.principal import OrgKind
from marketplace.core.settings import Settings
from marketplace.core.types import utcnow
from supervision.models import Engagement, EngagementOperator
from tests.conftest import TEST_ORIGIN
from tests.factories import make_login_session, make_org, make_user
from tests.licensing.factories import ledger_events


def _engage(engine: Engine, auditor: Organisation) -> None:
    owner, operator = make_org(engine, OrgKind.owner), make_org(engine, OrgKind.operator)
    today = utcnow().date()
    with Session(engine) as session:
        engagement = Engagement(
            auditor_id=auditor.id,
            owner_org_id=owner.id,
            period_start=today - timedelta(days=30),
            period_end=today,
            expires_at=utcnow() + timedelta(days=30),
            granted_at=utcnow(),
        )
        session.add(engagement)
        session.flush()
        session.add(EngagementOperator(engagement_id=engagement.id, operator_id=operator.id))
        session.commit()


@pytest.mark.parametrize("kind", [OrgKind.regulator, OrgKind.auditor])
def test_reads_by_supervisors_are_recorded_with_what_was_read(settings: Settings, engine: Engine, kind: OrgKind) -> None:
    org = make_org(engine, kind)
    ledger_query = "entry=0"
    if kind is OrgKind.auditor:  # an auditor reads only within an engagement in force
        _engage(engine, org)
        ledger_query = ""  # entry 0 (this very auditor's first recorded read) concerns no covered operator
    with TestClient(app=create_app(settings), base_url=TEST_ORIGIN) as client:
        client.cookies.set("market_session", make_login_session(engine, make_user(engine, org)))
        assert client.get("/api/licensing/licences?status=granted").status_code == 200
        assert client.get("/licensing/resources").status_code == 200
        assert client.get(f"/supervision/ledger?{ledger_query}").status_code == 200
        assert client.get("/api/licensing/licences/00000000-0000-0000-0000-000000000000").status_code == 404
        assert client.get("/api/me").status_code == 200
    reads = ledger_events(engine, "records.read")
    assert [(e["payload"]["path"], e["payload"]["query"]) for e in reads] == [
        ("/api/licensing/licences", "status=granted"),
        ("/licensing/resources", ""),
        ("/supervision/ledger", ledger_query),
    ]
    assert all(e["actor"]["kind"] == "user" and e["payload"]["party"] == kind.value for e in reads)
    assert all(e["orgs"] == [str(org.id)] for e in reads)


@pytest.mark.parametrize("kind", [OrgKind.owner, OrgKind.operator, OrgKind.buyer])
def test_reads_by_other_parties_are_not(settings: Settings, engine: Engine, kind: OrgKind) -> None:
    with TestClient(app=create_app(settings), base_url=TEST_ORIGIN) as client:
        client.cookies.set("market_session", make_login_session(engine, make_user(engine, make_org(engine, kind))))
        client.get("/api/licensing/licences")
        client.get("/api/orgs")
    assert ledger_events(engine, "records.read") == []
