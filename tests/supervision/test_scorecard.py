"""Operators' scorecards: figures hand-computed on the dashboard's small ledger, with alerts and findings; an auditor
sees its engagement's operators and days only, another operator's card is refused and the attempt recorded."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from litestar.testing import TestClient
from sqlalchemy import Engine
from sqlmodel import Session

from marketplace.core.principal import OrgKind
from supervision.findings import Finding, FindingStatus, Severity
from supervision.models import Engagement, EngagementOperator
from tests.factories import make_login_session, make_org, make_user
from tests.helpers import assert_problem, use_session
from tests.licensing.factories import ledger_events
from tests.supervision.test_dashboard import PERIOD, _as, at, small_ledger

SCORECARD = "/api/supervision/scorecard"


def _findings(engine: Engine, operator: uuid.UUID, raised_by: uuid.UUID) -> None:
    """Three findings against ``operator``: answered after 24 h, answered after 48 h and closed, still open; and one
    raised before the period."""
    with Session(engine) as session:
        for n, (raised, hours, status) in enumerate(
            (
                ("2026-09-10", 24, FindingStatus.responded),
                ("2026-10-01", 48, FindingStatus.closed),
                ("2026-10-20", None, FindingStatus.open),
                ("2026-08-01", 1, FindingStatus.closed),
            )
        ):
            session.add(
                Finding(
                    number=f"FND-S-{n}-{uuid.uuid4().hex[:6]}",
                    operator_id=operator,
                    raised_by_org_id=raised_by,
                    title="Late deliveries",
                    description="See the evidence.",
                    severity=Severity.medium,
                    evidence_json="[0]",
                    status=status,
                    raised_at=at(raised),
                    responded_at=None if hours is None else at(raised) + timedelta(hours=hours),
                    response=None if hours is None else "Fixed.",
                )
            )
        session.commit()


def test_scorecards_show_the_hand_computed_figures(client: TestClient[Any], engine: Engine) -> None:
    w = small_ledger(engine)
    regulator = make_org(engine, OrgKind.regulator)
    _findings(engine, w["a"], regulator.id)
    _as(client, engine, regulator)
    answer = client.get(SCORECARD, params=PERIOD)
    assert answer.status_code == 200, answer.text
    cards = {c["operator_id"]: c for c in answer.json()["items"]}
    assert answer.json()["total"] == 2
    a, b = cards[str(w["a"])], cards[str(w["b"])]
    assert a["period"] == {"start": "2026-09-01", "end": "2026-10-31"}
    assert a["revenue"] == {
        "gross": {"CNY": "150.50", "USD": "10.00"},
        "refunds": {"CNY": "30.00"},
        "net": {"CNY": "120.50", "USD": "10.00"},
    }
    assert a["payments"] == 3
    assert a["refunds"] == {"count": 1, "amount": {"CNY": "30.00"}}
    assert a["buyers"] == 2
    assert a["usage"] == {
        "api_calls": 2,
        "by_mode": {"api": {"deliveries": 2, "rows": 15, "bytes": 150}, "sandbox": {"deliveries": 1, "rows": 3, "bytes": 30}},
    }
    assert a["public_welfare"]["share"] == "0.5000"
    assert a["public_welfare"]["subscriptions"] == 2
    assert a["alerts"] == {"open": 1, "total": 2}
    assert a["findings"] == {"raised": 3, "open": 2, "closed": 1}
    assert a["response_hours"] == {"responded": 2, "median": 36.0, "max": 48.0}
    assert b["revenue"]["gross"] == {"CNY": "20.00"}
    assert b["buyers"] == 2
    assert b["usage"]["api_calls"] == 0
    assert b["usage"]["by_mode"] == {"file": {"deliveries": 1, "rows": 1000, "bytes": 9000}}
    assert b["public_welfare"] == {
        "subscriptions": 2,
        "public_welfare_or_research": 1,
        "share": "0.5000",
        "by_purpose": {"academic_research": 1, "market_analysis": 1},
    }
    assert b["alerts"] == {"open": 1, "total": 1}
    assert b["findings"] == {"raised": 0, "open": 0, "closed": 0}
    assert b["response_hours"] == {"responded": 0, "median": None, "max": None}
    # One operator's card is the same as in the list.
    one = client.get(f"{SCORECARD}/{w['a']}", params=PERIOD)
    assert one.status_code == 200, one.text
    assert one.json() == a
    # September only: one payment, one buyer... of A.
    september = client.get(f"{SCORECARD}/{w['a']}", params={"start": "2026-09-01", "end": "2026-09-30"}).json()
    assert (september["payments"], september["buyers"], september["revenue"]["gross"]) == (1, 2, {"CNY": "100.00"})
    assert september["findings"] == {"raised": 1, "open": 1, "closed": 0}


def test_unknown_operators_and_bad_periods(client: TestClient[Any], engine: Engine) -> None:
    w = small_ledger(engine)
    _as(client, engine, make_org(engine, OrgKind.regulator))
    assert_problem(client.get(f"{SCORECARD}/{uuid.uuid4()}"), 404, "operator_not_found")
    assert_problem(client.get(f"{SCORECARD}/{w['x']}"), 404, "operator_not_found")
    before = len(ledger_events(engine))
    assert_problem(
        client.get(f"{SCORECARD}/{w['a']}", params={"start": "2026-10-02", "end": "2026-10-01"}), 400, "period_reversed"
    )
    assert_problem(client.get(SCORECARD, params={"start": "2024-01-01", "end": "2026-01-01"}), 400, "period_too_long")
    assert len(ledger_events(engine)) == before


def test_an_auditor_scores_only_its_engagement(client: TestClient[Any], engine: Engine) -> None:
    w = small_ledger(engine)
    regulator = make_org(engine, OrgKind.regulator)
    _findings(engine, w["a"], regulator.id)
    auditor = make_org(engine, OrgKind.auditor)
    auditor_session = make_login_session(engine, make_user(engine, auditor))
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
    items = client.get(SCORECARD, params=PERIOD).json()["items"]
    assert [c["operator_id"] for c in items] == [str(w["a"])]
    card = items[0]
    # October only: two payments (Y 50.50 CNY, X 10.00 USD), the refund, one API delivery; alerts and findings of
    # October.
    assert card["revenue"]["gross"] == {"CNY": "50.50", "USD": "10.00"}
    assert card["revenue"]["net"] == {"CNY": "20.50", "USD": "10.00"}
    assert (card["payments"], card["buyers"], card["usage"]["api_calls"]) == (2, 2, 1)
    assert card["alerts"] == {"open": 1, "total": 1}
    assert card["findings"] == {"raised": 2, "open": 1, "closed": 1}
    assert card["response_hours"] == {"responded": 1, "median": 48.0, "max": 48.0}
    assert client.get(f"{SCORECARD}/{w['a']}", params=PERIOD).json() == card
    assert ledger_events(engine)[-1]["type"] == "records.read"
    # Another operator: refused, and the attempt recorded.
    assert_problem(client.get(f"{SCORECARD}/{w['b']}", params=PERIOD), 403, "outside_engagement")
    refused = ledger_events(engine)[-1]
    assert refused["type"] == "records.read_refused"
    assert refused["payload"]["path"] == f"{SCORECARD}/{w['b']}"
    assert refused["orgs"] == [str(auditor.id)]


def test_after_expiry_an_auditor_sees_no_scorecard(client: TestClient[Any], engine: Engine) -> None:
    w = small_ledger(engine)
    auditor = make_org(engine, OrgKind.auditor)
    auditor_session = make_login_session(engine, make_user(engine, auditor))
    with Session(engine) as session:
        engagement = Engagement(
            auditor_id=auditor.id,
            period_start=at("2026-09-01").date(),
            period_end=at("2026-10-31").date(),
            expires_at=datetime.now(UTC) - timedelta(days=1),
            owner_org_id=w["owner"],
        )
        session.add(engagement)
        session.flush()
        session.add(EngagementOperator(engagement_id=engagement.id, operator_id=w["a"]))
        session.commit()
    client.cookies.clear()
    use_session(client, auditor_session)
    assert_problem(client.get(f"{SCORECARD}/{w['a']}", params=PERIOD), 403, "outside_engagement")
    assert_problem(client.get(SCORECARD, params=PERIOD), 403, "outside_engagement")
