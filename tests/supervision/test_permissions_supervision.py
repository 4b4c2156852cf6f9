"""Permission matrix of the engagement routes, and of the ledger reads once the auditor has an engagement.

World: the parties of the core matrix, an engagement of the auditor covering the operator over this year (in force
for 30 days) and a second one the owner may revoke. The owner's administrator grants and revokes; the owner,
regulators and auditors list; operators and buyers are refused. With its engagement the auditor reads the ledger
entries and the export (the core matrix has the auditor without one: 403).

The world is built once and its rows put back before every test (``tests.worlds.replayed``).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import TestClient
from sqlalchemy import Engine, text

from marketplace.core.http import CSRF_HEADER
from marketplace.core.principal import OrgKind, Principal, Role
from marketplace.core.settings import Settings
from marketplace.core.types import utcnow
from supervision import engagements
from supervision.schemas import EngagementCreate
from tests.conftest import TEST_ORIGIN
from tests.helpers import csrf, shared_app
from tests.licensing.factories import row_counts
from tests.marketplace.core.test_permissions import PARTIES, Case, World, _by, build_world
from tests.supervision.ledger_helpers import run
from tests.worlds import replayed

BASE = "/api/supervision/engagements"
ENGAGEMENT = "{engagement_id:uuid}"


@dataclass
class SupervisionWorld:
    world: World
    owner_id: str
    auditor_id: str
    operator_id: str
    engagement_id: str


def _grant_body(_party: str, world: Any) -> dict[str, Any]:
    today = utcnow().date()
    return {
        "auditor_id": world.auditor_id,
        "operator_ids": [world.operator_id],
        "period_start": today.replace(month=1, day=1).isoformat(),
        "period_end": today.isoformat(),
        "expires_at": (utcnow() + timedelta(days=30)).isoformat(),
    }


SUPERVISORS_READ = _by(401, 200, 403, 403, 403, 200, 200)

CASES: list[Case] = [
    Case("GET", BASE, SUPERVISORS_READ),
    Case("POST", BASE, _by(401, 201, 403, 403, 403, 403, 403), json=_grant_body),
    Case("POST", f"{BASE}/{ENGAGEMENT}/revoke", _by(401, 200, 403, 403, 403, 403, 403), json=lambda _p, _w: {"reason": "Ended"}),
]
#: Rows of routes the core matrix already covers, here with the auditor inside an engagement.
ENGAGED_READS: list[Case] = [
    Case("GET", "/api/supervision/ledger/entries?start=0&end=10", SUPERVISORS_READ),
    Case("GET", "/api/supervision/ledger/export", SUPERVISORS_READ),
]


def _build(engine: Engine) -> SupervisionWorld:
    world = build_world(engine)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT id, kind FROM organisation")).all()
        owner_admin = conn.execute(
            text("SELECT u.id FROM user_account u JOIN organisation o ON o.id = u.org_id WHERE o.kind = 'owner'")
        ).scalar_one()
    orgs = {str(kind): uuid.UUID(str(org_id)) for org_id, kind in rows}
    owner = Principal(
        org_id=orgs["owner"], org_kind=OrgKind.owner, org_name="owner", user_id=uuid.UUID(str(owner_admin)), role=Role.admin
    )
    ids = {"auditor_id": str(orgs["auditor"]), "operator_id": str(orgs["operator"])}
    data = EngagementCreate.model_validate(_grant_body("owner", SimpleNamespace(**ids)))
    url = engine.url.render_as_string(hide_password=False)
    run(url, lambda s: engagements.grant_engagement(s, owner, data))
    second = run(url, lambda s: engagements.grant_engagement(s, owner, data))
    return SupervisionWorld(world, str(orgs["owner"]), ids["auditor_id"], ids["operator_id"], str(second.id))


def _request(client: TestClient[Litestar], case: Case, party: str, world: SupervisionWorld) -> Any:
    path = case.path.replace(ENGAGEMENT, world.engagement_id)
    kwargs: dict[str, Any] = {"follow_redirects": False}
    if case.method != "GET":
        kwargs["headers"] = {CSRF_HEADER: csrf(client)}
        json_body: Callable[[str, Any], Any] | None = case.json
        kwargs["json"] = json_body(party, world) if json_body is not None else {}
    return client.request(case.method, path, **kwargs)


def _state(engine: Engine) -> tuple[dict[str, int], list[Any]]:
    counts = row_counts(engine, "engagement", "engagement_operator")
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT id, revoked_at FROM engagement ORDER BY id")).all()
    return counts, [tuple(r) for r in rows]


@pytest.mark.parametrize("party", PARTIES)
@pytest.mark.parametrize("case", CASES + ENGAGED_READS, ids=[c.id for c in CASES + ENGAGED_READS])
def test_supervision_route_answers_each_party_exactly(settings: Settings, engine: Engine, case: Case, party: str) -> None:
    world = replayed(engine, __name__, lambda: _build(engine))
    before = _state(engine)
    with TestClient(app=shared_app(settings), base_url=TEST_ORIGIN) as client:
        if party != "anonymous":
            client.cookies.set("market_session", world.world.sessions[party])
        response = _request(client, case, party, world)
    expected = case.expected[party]
    assert response.status_code == expected, f"{case.id} as {party}: {response.status_code} {response.text[:300]}"
    if response.status_code >= 400:
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["code"]
    if response.status_code == 403 and party in ("regulator", "auditor") and case.method != "GET":
        assert "read_only_party" in response.text
    # A refused write leaves the engagements as they were.
    if case.method != "GET" and response.status_code >= 400:
        assert _state(engine) == before
