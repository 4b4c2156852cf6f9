"""Findings: a regulator raises one against an operator with ledger evidence, the operator responds, the regulator
closes it, each step in the ledger; an auditor raises only within its engagement; bad input writes nothing."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from litestar.testing import TestClient
from sqlalchemy import Engine
from sqlmodel.ext.asyncio.session import AsyncSession

from marketplace.core.principal import OrgKind, Role
from supervision import services
from tests.factories import make_login_session, make_org, make_user
from tests.helpers import assert_problem, use_session
from tests.licensing.factories import ledger_events, row_counts
from tests.supervision.ledger_helpers import event, run

FINDINGS = "/api/supervision/findings"


def _ledger(engine: Engine, n: int = 3) -> None:
    async def write(session: AsyncSession) -> None:
        await services.record_many(session, [event(i) for i in range(n)])
        await session.commit()

    run(engine.url.render_as_string(hide_password=False), write)


def _as(client: TestClient[Any], engine: Engine, org: Any, role: Role = Role.admin) -> dict[str, str]:
    client.cookies.clear()
    return use_session(client, make_login_session(engine, make_user(engine, org, role)))


def _body(operator_id: uuid.UUID, **changes: Any) -> dict[str, Any]:
    return {
        "operator_id": str(operator_id),
        "title": "Deliveries during the suspension",
        "description": "Three deliveries were recorded while the licence was suspended.",
        "severity": "high",
        "evidence": [0, 2],
        **changes,
    }


def test_a_finding_is_raised_answered_and_closed_in_the_ledger(client: TestClient[Any], engine: Engine) -> None:
    _ledger(engine)
    operator, regulator = make_org(engine, OrgKind.operator), make_org(engine, OrgKind.regulator)
    headers = _as(client, engine, regulator)
    raised = client.post(FINDINGS, json=_body(operator.id), headers=headers)
    assert raised.status_code == 201, raised.text
    finding = raised.json()
    assert (finding["status"], finding["evidence"], finding["severity"]) == ("open", [0, 2], "high")
    headers = _as(client, engine, operator, Role.member)
    assert [f["id"] for f in client.get(FINDINGS).json()["items"]] == [finding["id"]]
    answered = client.post(
        f"{FINDINGS}/{finding['id']}/respond", json={"text": "A cache served them; fixed on the 4th."}, headers=headers
    )
    assert answered.status_code == 200, answered.text
    assert answered.json()["status"] == "responded"
    # Another operator neither sees nor answers it.
    other = make_org(engine, OrgKind.operator)
    headers = _as(client, engine, other)
    assert client.get(FINDINGS).json()["items"] == []
    assert_problem(
        client.post(f"{FINDINGS}/{finding['id']}/respond", json={"text": "x"}, headers=headers), 404, "finding_not_found"
    )
    headers = _as(client, engine, regulator)
    closed = client.post(f"{FINDINGS}/{finding['id']}/close", json={"text": "Fix verified on the ledger."}, headers=headers)
    assert closed.status_code == 200, closed.text
    assert closed.json()["status"] == "closed"
    assert_problem(
        client.post(f"{FINDINGS}/{finding['id']}/close", json={"text": "again"}, headers=headers), 409, "finding_closed"
    )
    headers = _as(client, engine, operator)
    assert_problem(
        client.post(f"{FINDINGS}/{finding['id']}/respond", json={"text": "late"}, headers=headers), 409, "finding_closed"
    )
    steps = [(e["type"], e["subjects"]["finding"]) for e in ledger_events(engine, "finding.")]
    assert steps == [("finding.raised", finding["id"]), ("finding.responded", finding["id"]), ("finding.closed", finding["id"])]


def test_bad_findings_write_nothing(client: TestClient[Any], engine: Engine) -> None:
    _ledger(engine)
    operator, regulator, buyer = (
        make_org(engine, OrgKind.operator),
        make_org(engine, OrgKind.regulator),
        make_org(engine, OrgKind.buyer),
    )
    headers = _as(client, engine, regulator)
    before = row_counts(engine, "finding", "ledger_entry")
    for body, status, code in (
        (_body(operator.id, evidence=[0, 99]), 400, "evidence_not_found"),
        (_body(buyer.id), 400, "not_an_operator"),
        (_body(operator.id, evidence=[]), 400, "invalid_input"),
        (_body(operator.id, title=""), 400, "invalid_input"),
        (_body(operator.id, severity="urgent"), 400, "invalid_input"),
    ):
        assert_problem(client.post(FINDINGS, json=body, headers=headers), status, code)
    assert row_counts(engine, "finding", "ledger_entry") == before
    for party in (operator, buyer):
        headers = _as(client, engine, party)
        assert client.post(FINDINGS, json=_body(operator.id), headers=headers).status_code == 403
    assert row_counts(engine, "finding", "ledger_entry") == before


def test_an_auditor_raises_findings_only_within_its_engagement(client: TestClient[Any], engine: Engine) -> None:
    _ledger(engine)
    owner, auditor = make_org(engine, OrgKind.owner), make_org(engine, OrgKind.auditor)
    covered, other = make_org(engine, OrgKind.operator), make_org(engine, OrgKind.operator)
    headers = _as(client, engine, auditor)
    before = row_counts(engine, "finding")
    assert_problem(client.post(FINDINGS, json=_body(covered.id), headers=headers), 403, "outside_engagement")
    headers = _as(client, engine, owner)
    today = datetime.now(UTC).date()
    granted = client.post(
        "/api/supervision/engagements",
        json={
            "auditor_id": str(auditor.id),
            "operator_ids": [str(covered.id)],
            "period_start": (today - timedelta(days=30)).isoformat(),
            "period_end": today.isoformat(),
            "expires_at": (datetime.now(UTC) + timedelta(days=30)).isoformat(),
        },
        headers=headers,
    )
    assert granted.status_code == 201, granted.text
    headers = _as(client, engine, auditor)
    refused_before = len(ledger_events(engine, "records.read_refused"))
    assert_problem(client.post(FINDINGS, json=_body(other.id), headers=headers), 403, "outside_engagement")
    assert row_counts(engine, "finding") == before
    assert len(ledger_events(engine, "records.read_refused")) == refused_before + 1, "the attempt is recorded"
    raised = client.post(FINDINGS, json=_body(covered.id), headers=headers)
    assert raised.status_code == 201, raised.text
    # The auditor sees what its firm raised; it may not close it (a regulator does).
    assert [f["id"] for f in client.get(FINDINGS).json()["items"]] == [raised.json()["id"]]
    assert client.post(f"{FINDINGS}/{raised.json()['id']}/close", json={"text": "done"}, headers=headers).status_code == 403
