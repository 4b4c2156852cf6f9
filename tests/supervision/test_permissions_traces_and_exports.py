"""Permission matrix of leak tracing and period exports: supervisors (owner, regulator, auditor) trace, nobody
else, and a trace writes nothing but its own ``leak.traced`` record (regulators and auditors may post it: it is a
read); the owner and regulators export a period, an auditor only within an engagement (none here: 403
``outside_engagement``)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from litestar.testing import TestClient
from sqlalchemy import Engine, text
from sqlmodel import Session

from marketplace.core.http import CSRF_HEADER
from marketplace.core.settings import Settings
from supervision.findings import Finding, Severity
from tests.conftest import TEST_ORIGIN
from tests.helpers import csrf, shared_app
from tests.licensing.factories import ledger_events
from tests.marketplace.core.test_permissions import PARTIES, Case, _by, build_world

CSV = b"district,visits\nHaidian,12\nChaoyang,7\n"

FINDING = "{finding_id:uuid}"
FINDINGS = "/api/supervision/findings"

CASES: list[Case] = [
    Case("GET", FINDINGS, _by(401, 200, 200, 403, 403, 200, 200)),
    Case("POST", FINDINGS, _by(401, 403, 403, 403, 403, 201, 403)),
    Case("POST", f"{FINDINGS}/{FINDING}/respond", _by(401, 403, 200, 403, 403, 403, 403)),
    Case("POST", f"{FINDINGS}/{FINDING}/close", _by(401, 403, 403, 403, 403, 200, 403)),
    Case("POST", "/api/supervision/leak-trace", _by(401, 200, 403, 403, 403, 200, 403)),
    Case("GET", "/api/supervision/events?limit=5", _by(401, 200, 403, 403, 403, 200, 403)),
    Case("GET", "/api/supervision/exports?start=2026-10-01&end=2026-11-01&format=csv", _by(401, 200, 403, 403, 403, 200, 403)),
    Case(
        "GET", "/api/supervision/exports?start=2026-10-01&end=2026-11-01&format=parquet", _by(401, 200, 403, 403, 403, 200, 403)
    ),
]


@pytest.mark.parametrize("party", PARTIES)
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_route_answers_each_party_exactly(settings: Settings, engine: Engine, case: Case, party: str) -> None:
    world = build_world(engine)
    with engine.connect() as conn:
        operator_id = uuid.UUID(str(conn.execute(text("SELECT id FROM organisation WHERE kind = 'operator'")).scalar_one()))
        regulator_id = uuid.UUID(str(conn.execute(text("SELECT id FROM organisation WHERE kind = 'regulator'")).scalar_one()))
    finding = Finding(
        number=f"FND-T-{uuid.uuid4().hex[:8]}",
        operator_id=operator_id,
        raised_by_org_id=regulator_id,
        title="A finding",
        description="Evidence attached",
        severity=Severity.low,
        evidence_json="[0]",
    )
    with Session(engine) as session:
        session.add(finding)
        session.commit()
        session.refresh(finding)
    before = len(ledger_events(engine))
    path = case.path.replace(FINDING, str(finding.id))
    with TestClient(app=shared_app(settings), base_url=TEST_ORIGIN) as client:
        if party != "anonymous":
            client.cookies.set("market_session", world.sessions[party])
        headers = {CSRF_HEADER: csrf(client)}
        if case.path.startswith(FINDINGS) and case.method == "POST":
            body: dict[str, Any] = (
                {"text": "Noted and fixed."}
                if FINDING in case.path
                else {
                    "operator_id": str(operator_id),
                    "title": "Late deliveries",
                    "description": "See the entry.",
                    "evidence": [0],
                }
            )
            response = client.post(path, json=body, headers=headers)
        elif case.method == "POST":
            response = client.post(path, content=CSV, headers={**headers, "Content-Type": "text/csv"})
        else:
            response = client.get(path)
    assert response.status_code == case.expected[party], f"{party}: {response.status_code} {response.text[:300]}"
    added = [e["type"] for e in ledger_events(engine)[before:]]
    if response.status_code >= 400:
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["code"]
        # A refusal writes nothing, except an auditor's attempt outside its engagement (a read, or a finding against
        # an operator it does not cover), which is recorded.
        raising = case.method == "POST" and case.path == FINDINGS
        recorded = party == "auditor" and (raising or not case.path.startswith(FINDINGS))
        assert added == (["records.read_refused"] if recorded else [])
    elif case.path.startswith(FINDINGS):
        if case.method == "GET":
            assert "items" in response.json()
            assert added == (["records.read"] if party in ("regulator", "auditor") else [])
        else:
            assert response.json()["id"]
            assert added
            assert all(t.startswith("finding.") for t in added)
    elif case.method == "POST":
        assert response.json()["found"] is False
        assert added == ["leak.traced"]
    elif case.path.startswith("/api/supervision/events"):
        assert len(response.json()["items"]) <= 5
        assert added == (["records.read"] if party == "regulator" else [])
    else:
        assert response.content.startswith(b"leaf_index,") or response.content.startswith(b"PAR1")
        assert added == (["records.read"] if party == "regulator" else [])
