"""Permission matrix of the supervision console's pages: every party, the exact status each gets.

World: the parties of the core matrix (each signed in as an administrator of its own organisation), the auditor
holding an engagement that covers the operator over this year (so the matrix's auditor is in scope; out of scope and
without an engagement: ``tests/supervision/test_supervision_pages.py``), a licence's event in the ledger, a finding
raised by the regulator against the operator, and an open alert on the operator.

The world is built once and its rows put back before every test (``tests.worlds.replayed``).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from litestar.testing import TestClient
from sqlalchemy import Engine
from sqlmodel.ext.asyncio.session import AsyncSession

from marketplace.core.events import Actor, DomainEvent
from marketplace.core.principal import Principal, Role
from marketplace.core.settings import Settings
from marketplace.core.types import utcnow
from supervision import engagements, findings, services
from supervision.alerts import Hit, raise_alert
from supervision.schemas import EngagementCreate
from tests.conftest import TEST_ORIGIN
from tests.factories import make_login_session, make_org, make_user
from tests.helpers import csrf, shared_app
from tests.marketplace.core.test_permissions import KIND, PARTIES, Case, _by
from tests.supervision.ledger_helpers import run
from tests.worlds import replayed

SUPERVISORS_READ = _by(303, 200, 403, 403, 403, 200, 200)
REGULATOR_WRITES = _by(303, 403, 403, 403, 403, 303, 403)
OWNER_WRITES = _by(303, 303, 403, 403, 403, 403, 403)


def _finding_form(_party: str, world: dict[str, Any]) -> dict[str, str]:
    return {"operator_id": world["operator"], "title": "Check", "description": "Look at it.", "severity": "low", "evidence": "0"}


def _grant_form(_party: str, world: dict[str, Any]) -> dict[str, Any]:
    today = utcnow().date()
    return {
        "auditor_id": world["auditor"],
        "operator_ids": world["operator"],
        "period_start": today.replace(month=1, day=1).isoformat(),
        "period_end": today.isoformat(),
        "expires_on": (today + timedelta(days=10)).isoformat(),
    }


def _text(_party: str, _world: dict[str, Any]) -> dict[str, str]:
    return {"text": "Answered.", "note": "Handled.", "reason": "Audit done."}


CASES: list[Case] = [
    Case("GET", "/supervision", SUPERVISORS_READ),
    Case("GET", "/supervision/events", SUPERVISORS_READ),
    Case("GET", "/supervision/licences/{licence_id:uuid}", SUPERVISORS_READ),
    Case("GET", "/supervision/alerts", SUPERVISORS_READ),
    Case("POST", "/supervision/alerts/{alert_id:int}/acknowledge", REGULATOR_WRITES, form=_text),  # type: ignore[arg-type]
    Case("POST", "/supervision/alerts/{alert_id:int}/resolve", REGULATOR_WRITES, form=_text),  # type: ignore[arg-type]
    Case("GET", "/supervision/findings", _by(303, 200, 200, 403, 403, 200, 200)),
    Case("POST", "/supervision/findings", _by(303, 403, 403, 403, 403, 303, 303), form=_finding_form),  # type: ignore[arg-type]
    # An audit firm sees the findings its firm raised: this one is the regulator's.
    Case("GET", "/supervision/findings/{finding_id:uuid}", _by(303, 200, 200, 403, 403, 200, 404)),
    Case("POST", "/supervision/findings/{finding_id:uuid}/respond", _by(303, 403, 303, 403, 403, 403, 403), form=_text),  # type: ignore[arg-type]
    Case("POST", "/supervision/findings/{finding_id:uuid}/close", REGULATOR_WRITES, form=_text),  # type: ignore[arg-type]
    Case("GET", "/supervision/scorecard", SUPERVISORS_READ),
    Case("GET", "/supervision/engagements", SUPERVISORS_READ),
    Case("POST", "/supervision/engagements", OWNER_WRITES, form=_grant_form),  # type: ignore[arg-type]
    Case("POST", "/supervision/engagements/{engagement_id:uuid}/revoke", OWNER_WRITES, form=_text),  # type: ignore[arg-type]
    Case("GET", "/supervision/exports", SUPERVISORS_READ),
    Case("GET", "/supervision/exports/download", SUPERVISORS_READ),
    # No file: the guard lets supervisors through to the 400 of an empty upload.
    Case("POST", "/supervision/leak-trace", _by(303, 400, 403, 403, 403, 400, 400), form=lambda _p, _w: {"note": ""}),  # type: ignore[arg-type]
]


def _world(engine: Engine, database_url: str) -> tuple[dict[str, Any], dict[str, str]]:
    orgs = {party: make_org(engine, kind) for party, kind in KIND.items()}
    users = {party: make_user(engine, org, Role.admin) for party, org in orgs.items()}
    sessions = {party: make_login_session(engine, user) for party, user in users.items()}
    licence = str(uuid.uuid4())

    def principal(party: str) -> Principal:
        org = orgs[party]
        return Principal(org_id=org.id, org_kind=org.kind, org_name=org.name, user_id=users[party].id, role=Role.admin)

    async def build(session: AsyncSession) -> dict[str, str]:
        await services.record(
            session,
            DomainEvent(
                "licence.granted",
                Actor("system", "tests"),
                orgs=(orgs["owner"].id, orgs["operator"].id),
                subjects={"licence": licence},
                payload={},
            ),
        )
        await session.commit()
        granted = await engagements.grant_engagement(
            session,
            principal("owner"),
            EngagementCreate(
                auditor_id=orgs["auditor"].id,
                operator_ids=[orgs["operator"].id],
                period_start=utcnow().date().replace(month=1, day=1),
                period_end=utcnow().date(),
                expires_at=datetime.now(UTC) + timedelta(days=30),
            ),
        )
        finding = await findings.raise_finding(
            session,
            principal("regulator"),
            findings.FindingCreate(operator_id=orgs["operator"].id, title="Late", description="Late deliveries.", evidence=[0]),
        )
        alert = await raise_alert(
            session,
            Hit(
                rule="delivery.volume_spike",
                key="matrix",
                detail="A spike.",
                occurred_at=utcnow(),
                evidence=[0],
                operator_id=orgs["operator"].id,
                licence_id=licence,
            ),
        )
        await session.commit()
        assert alert is not None
        return {"engagement": str(granted.id), "finding": str(finding.id), "alert": str(alert.id)}

    made = run(database_url, build)
    ids = {"licence": licence, "operator": str(orgs["operator"].id), "auditor": str(orgs["auditor"].id), **made}
    return ids, sessions


def _path(case: Case, ids: dict[str, str]) -> str:
    path = (
        case.path.replace("{licence_id:uuid}", ids["licence"])
        .replace("{alert_id:int}", ids["alert"])
        .replace("{finding_id:uuid}", ids["finding"])
        .replace("{engagement_id:uuid}", ids["engagement"])
    )
    if path.endswith("/exports/download"):
        today = utcnow().date()
        path += f"?start={today.replace(day=1).isoformat()}&end={(today + timedelta(days=1)).isoformat()}&format=csv"
    return path


@pytest.mark.parametrize("party", PARTIES)
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_console_page_answers_each_party_exactly(
    settings: Settings, engine: Engine, database_url: str, case: Case, party: str
) -> None:
    ids, sessions = replayed(engine, __name__, lambda: _world(engine, database_url))
    with TestClient(app=shared_app(settings), base_url=TEST_ORIGIN) as client:
        if party != "anonymous":
            client.cookies.set("market_session", sessions[party])
        kwargs: dict[str, Any] = {"follow_redirects": False}
        if case.method == "POST":
            assert case.form is not None
            kwargs["data"] = {**case.form(party, ids), "_csrf_token": csrf(client)}  # type: ignore[arg-type]
        response = client.request(case.method, _path(case, ids), **kwargs)
    expected = case.expected[party]
    assert response.status_code == expected, f"{case.id} as {party}: {response.status_code} {response.text[:300]}"
    if expected == 303 and party == "anonymous":
        assert response.headers["location"].startswith("/login")
