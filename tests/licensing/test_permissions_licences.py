"""Permission matrix of the licence routes: every party, the exact status each gets.

The owner holds three licences to the operator (a draft, a granted and a suspended one), so that each
transition route finds a licence it may change; the operator reads its own.

The world is built once and its rows (and files) put back before every test (``tests.worlds.replayed``): each test,
read or write, starts from its own fresh copy of the same world.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import TestClient
from sqlalchemy import Engine, text

from licensing.models import FieldType, LicenceStatus
from licensing.schemas import FieldSpec
from marketplace.core.http import CSRF_HEADER
from marketplace.core.identity.models import Organisation
from marketplace.core.principal import OrgKind
from marketplace.core.settings import Settings
from tests.conftest import TEST_ORIGIN
from tests.helpers import csrf, shared_app
from tests.licensing.factories import licence_body, make_licence, make_resource
from tests.marketplace.core.test_permissions import PARTIES, Case, World, _by, build_world
from tests.worlds import replayed

LICENCE = "{licence_id:uuid}"
BASE = "/api/licensing/licences"
FIELDS = [FieldSpec(name="x", type=FieldType.integer)]


@dataclass
class LicenceWorld:
    """The core world; the owner's resource; and the owner's licences to the operator, by status."""

    world: World
    operator_id: str
    resource_id: str
    licences: dict[LicenceStatus, str]


#: The matrix's auditor has no engagement in force: 403 ``outside_engagement`` (in scope: test_auditor_scope.py).
READ = _by(401, 200, 200, 403, 403, 200, 403)
OWNER_CHANGES = _by(401, 200, 403, 403, 403, 403, 403)


def _reason(_party: str, _world: Any) -> dict[str, str]:
    return {"reason": "Decided by the licensing board"}


def _new_licence(_party: str, world: Any) -> dict[str, Any]:
    return licence_body(world.operator_id, [world.resource_id])


CASES: list[Case] = [
    Case("GET", BASE, READ),
    Case("GET", f"{BASE}?status=granted", READ),
    Case("POST", BASE, _by(401, 201, 403, 403, 403, 403, 403), json=_new_licence),
    Case("GET", f"{BASE}/{LICENCE}", READ),
    Case("PATCH", f"{BASE}/{LICENCE}", OWNER_CHANGES, json=lambda _p, _w: {"reason": "Lower the fee", "fee_rate": "0.05"}),
    Case("POST", f"{BASE}/{LICENCE}/grant", OWNER_CHANGES, json=_reason),
    Case("POST", f"{BASE}/{LICENCE}/suspend", OWNER_CHANGES, json=_reason),
    Case("POST", f"{BASE}/{LICENCE}/reinstate", OWNER_CHANGES, json=_reason),
    Case("POST", f"{BASE}/{LICENCE}/revoke", OWNER_CHANGES, json=_reason),
    Case("GET", f"{BASE}/{LICENCE}/versions", READ),
]

#: Which licence each route acts on: one it may change from its current status.
TARGET = {
    "grant": LicenceStatus.draft,
    "reinstate": LicenceStatus.suspended,
    "suspend": LicenceStatus.granted,
    "revoke": LicenceStatus.granted,
}


def _build(engine: Engine) -> LicenceWorld:
    world = build_world(engine)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT id, kind FROM organisation")).all()
    orgs = {str(kind): uuid.UUID(str(org_id)) for org_id, kind in rows}
    owner = Organisation(id=orgs["owner"], name="owner", kind=OrgKind.owner)
    operator = Organisation(id=orgs["operator"], name="operator", kind=OrgKind.operator)
    resource = make_resource(engine, owner, fields=FIELDS)
    licences = {
        status: str(make_licence(engine, owner, operator, [resource], status=status).id)
        for status in (LicenceStatus.draft, LicenceStatus.granted, LicenceStatus.suspended)
    }
    return LicenceWorld(world=world, operator_id=str(operator.id), resource_id=str(resource.id), licences=licences)


def _target(case: Case, world: LicenceWorld) -> str:
    action = case.path.rsplit("/", 1)[-1]
    if case.method == "PATCH":
        return world.licences[LicenceStatus.draft]
    return world.licences[TARGET.get(action, LicenceStatus.granted)]


def _request(client: TestClient[Litestar], case: Case, party: str, world: LicenceWorld) -> Any:
    path = case.path.replace(LICENCE, _target(case, world))
    kwargs: dict[str, Any] = {"follow_redirects": False}
    if case.method != "GET":
        kwargs["headers"] = {CSRF_HEADER: csrf(client)}
        if case.json is not None:
            json_body: Callable[[str, Any], Any] = case.json
            kwargs["json"] = json_body(party, world)
    return client.request(case.method, path, **kwargs)


@pytest.mark.parametrize("party", PARTIES)
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_licence_route_answers_each_party_exactly(settings: Settings, engine: Engine, case: Case, party: str) -> None:
    world = replayed(engine, __name__, lambda: _build(engine))
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
        assert response.json()["code"] == "read_only_party"
    if response.status_code == 403 and party.startswith("buyer"):
        assert response.json()["code"] == "party_not_allowed"
    if response.status_code == 200 and case.method == "GET" and case.path == BASE:
        assert response.json()["total"] == 3, "the owner, the operator and the supervisors see the three licences"
    if response.status_code == 200 and case.path == f"{BASE}?status=granted":
        assert [item["status"] for item in response.json()["items"]] == ["granted"]
