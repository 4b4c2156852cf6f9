"""Permission matrix of the departments and resources routes: every party, the exact status each gets.

The world is built once and its rows (and files) put back before every test (``tests.worlds.replayed``): each test,
read or write, starts from its own fresh copy of the same world.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import TestClient
from sqlalchemy import Engine
from sqlmodel import Session, select

from licensing.models import FieldType
from licensing.schemas import FieldSpec
from marketplace.core.http import CSRF_HEADER
from marketplace.core.identity.models import Organisation
from marketplace.core.principal import OrgKind
from marketplace.core.settings import Settings
from tests.conftest import TEST_ORIGIN
from tests.helpers import csrf, shared_app
from tests.licensing.factories import make_department, make_licence, make_resource
from tests.marketplace.core.test_permissions import PARTIES, Case, World, _by, build_world
from tests.worlds import replayed

_unique = itertools.count(1)
RESOURCE = "{resource_id:uuid}"
FIELDS = [FieldSpec(name="x", type=FieldType.integer)]


@dataclass
class ResourceWorld:
    """The core world, and the owner's department and resource, licensed (granted) to the operator."""

    world: World
    department_id: str
    resource_id: str


@dataclass(frozen=True)
class UploadCase(Case):
    """A row whose body is a raw file rather than JSON."""

    content: bytes = b""
    content_type: str = "text/csv"


#: The matrix's auditor has no engagement in force: 403 ``outside_engagement`` (in scope: test_auditor_scope.py).
READ = _by(401, 200, 200, 403, 403, 200, 403)
OWNER_WRITES = _by(401, 201, 403, 403, 403, 403, 403)


def _department(_party: str, _world: Any) -> dict[str, str]:
    return {"code": f"dept-{next(_unique)}", "name": "Transport Bureau", "name_zh": "交通局"}


def _resource(_party: str, world: Any) -> dict[str, Any]:
    return {
        "department_id": world.department_id,
        "code": f"traffic-{next(_unique)}",
        "title": "Traffic flow",
        "title_zh": "交通流量",
        "grade": "L2",
        "update_frequency": "daily",
        "fields": [{"name": "x", "type": "integer", "tag": "none"}],
    }


CASES: list[Case] = [
    Case("GET", "/api/licensing/departments", READ),
    Case("POST", "/api/licensing/departments", OWNER_WRITES, json=_department),
    Case("GET", "/api/licensing/resources", READ),
    Case("POST", "/api/licensing/resources", OWNER_WRITES, json=_resource),
    Case("GET", f"/api/licensing/resources/{RESOURCE}", READ),
    Case(
        "PATCH",
        f"/api/licensing/resources/{RESOURCE}",
        _by(401, 200, 403, 403, 403, 403, 403),
        json=lambda _p, _w: {"title": "Renamed"},
    ),
    Case("GET", f"/api/licensing/resources/{RESOURCE}/versions", READ),
    UploadCase("POST", f"/api/licensing/resources/{RESOURCE}/versions?format=csv", OWNER_WRITES, content=b"x\n1\n2\n"),
]


def _build(engine: Engine, settings: Settings) -> ResourceWorld:
    world = build_world(engine)
    with Session(engine) as session:
        orgs = {org.kind: org for org in session.exec(select(Organisation)).all()}
    owner, operator = orgs[OrgKind.owner], orgs[OrgKind.operator]
    department = make_department(engine, owner)
    resource = make_resource(engine, owner, fields=FIELDS, department=department, rows=[[1]], data_dir=settings.resolved_data_dir)
    make_licence(engine, owner, operator, [resource])
    return ResourceWorld(world=world, department_id=str(department.id), resource_id=str(resource.id))


def _request(client: TestClient[Litestar], case: Case, party: str, world: ResourceWorld) -> Any:
    path = case.path.replace(RESOURCE, world.resource_id)
    kwargs: dict[str, Any] = {"follow_redirects": False}
    if case.method != "GET":
        kwargs["headers"] = {CSRF_HEADER: csrf(client)}
        if isinstance(case, UploadCase):
            kwargs["headers"]["content-type"] = case.content_type
            kwargs["content"] = case.content
        elif case.json is not None:
            json_body: Callable[[str, Any], Any] = case.json
            kwargs["json"] = json_body(party, world)
    return client.request(case.method, path, **kwargs)


@pytest.mark.parametrize("party", PARTIES)
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_resource_route_answers_each_party_exactly(settings: Settings, engine: Engine, case: Case, party: str) -> None:
    world = replayed(engine, __name__, lambda: _build(engine, settings), data_dir=settings.resolved_data_dir)
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
