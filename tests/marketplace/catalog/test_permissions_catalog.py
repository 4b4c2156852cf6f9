"""Permission matrix of the catalog routes: every party, the exact status each gets.

The owner has licensed a visits resource (real contents) to the operator, who has a listed product and a draft
product, each with a monthly plan. Anyone reads the catalog and listed products; a draft exists only for its
operator, the owner of its licence, regulators and auditors; only the operator writes.

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

from marketplace.catalog.models import ProductStatus
from marketplace.core.http import CSRF_HEADER
from marketplace.core.identity.models import Organisation
from marketplace.core.principal import OrgKind
from marketplace.core.settings import Settings
from tests.conftest import TEST_ORIGIN
from tests.helpers import csrf, shared_app
from tests.licensing.factories import make_licence, make_visit_resource, row_counts
from tests.marketplace.core.test_permissions import PARTIES, Case, World, _by, build_world
from tests.marketplace.factories import make_plan, make_product
from tests.worlds import replayed

PRODUCT = "{product_id:uuid}"
PLAN = "{plan_id:uuid}"
BASE = "/api/catalog"
DRAFT = "?which=draft"  # the draft product instead of the listed one (the query string is not part of the route)


@dataclass
class CatalogWorld:
    world: World
    listed_id: str
    draft_id: str
    plan_id: str
    licence_id: str
    resource_id: str


ANYONE = _by(200, 200, 200, 200, 200, 200, 200)
OPERATOR_READS = _by(401, 403, 200, 403, 403, 403, 403)
OPERATOR_WRITES = _by(401, 403, 200, 403, 403, 403, 403)
OPERATOR_CREATES = _by(401, 403, 201, 403, 403, 403, 403)


def _product(_party: str, world: Any) -> dict[str, Any]:
    return {
        "licence_id": world.licence_id,
        "resource_id": world.resource_id,
        "mode": "api",
        "rules": [{"field": "district", "action": "keep"}],
        "purposes": ["public_welfare"],
        "name": "District visits",
        "name_zh": "区县就诊",
    }


def _plan(_party: str, _world: Any) -> dict[str, Any]:
    return {"name": "Pro", "name_zh": "专业版", "type": "monthly", "price": "800.00"}


CASES: list[Case] = [
    Case("GET", f"{BASE}/products", ANYONE),
    Case("GET", f"{BASE}/products?q=门诊&mode=api&sort=name", ANYONE),
    Case("GET", f"{BASE}/products/{PRODUCT}", ANYONE),
    # The matrix's auditor has no engagement: an unlisted product is not shown to it (in scope: test_auditor_scope).
    Case("GET", f"{BASE}/products/{PRODUCT}{DRAFT}", _by(404, 200, 200, 404, 404, 200, 404)),
    Case("GET", f"{BASE}/operator/products", OPERATOR_READS),
    Case("POST", f"{BASE}/products", OPERATOR_CREATES, json=_product),
    Case("PATCH", f"{BASE}/products/{PRODUCT}{DRAFT}", OPERATOR_WRITES, json=lambda _p, _w: {"summary": "New summary"}),
    Case("POST", f"{BASE}/products/{PRODUCT}/check{DRAFT}", OPERATOR_WRITES),
    Case("POST", f"{BASE}/products/{PRODUCT}/submit{DRAFT}", OPERATOR_WRITES),
    Case("POST", f"{BASE}/products/{PRODUCT}/delist", OPERATOR_WRITES, json=lambda _p, _w: {"reason": "Retired source"}),
    Case("POST", f"{BASE}/products/{PRODUCT}/plans{DRAFT}", OPERATOR_CREATES, json=_plan),
    Case("PATCH", f"{BASE}/plans/{PLAN}", OPERATOR_WRITES, json=lambda _p, _w: {"price": "900.00"}),
    Case("POST", f"{BASE}/plans/{PLAN}/retire", OPERATOR_WRITES),
]


def _build(engine: Engine, settings: Settings) -> CatalogWorld:
    world = build_world(engine)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT id, kind FROM organisation")).all()
    orgs = {str(kind): uuid.UUID(str(org_id)) for org_id, kind in rows}
    owner = Organisation(id=orgs["owner"], name="owner", kind=OrgKind.owner)
    operator = Organisation(id=orgs["operator"], name="operator", kind=OrgKind.operator)
    resource = make_visit_resource(engine, owner, settings.resolved_data_dir)
    licence = make_licence(engine, owner, operator, [resource])
    listed = make_product(engine, licence, resource)
    plan = make_plan(engine, listed)
    draft = make_product(engine, licence, resource, status=ProductStatus.draft)
    make_plan(engine, draft)
    return CatalogWorld(world, str(listed.id), str(draft.id), str(plan.id), str(licence.id), str(resource.id))


def _request(client: TestClient[Litestar], case: Case, party: str, world: CatalogWorld) -> Any:
    product = world.draft_id if DRAFT in case.path else world.listed_id
    path = case.path.replace(DRAFT, "").replace(PRODUCT, product).replace(PLAN, world.plan_id)
    kwargs: dict[str, Any] = {"follow_redirects": False}
    if case.method != "GET":
        kwargs["headers"] = {CSRF_HEADER: csrf(client)}
        json_body: Callable[[str, Any], Any] | None = case.json
        kwargs["json"] = json_body(party, world) if json_body is not None else {}
    return client.request(case.method, path, **kwargs)


def _state(engine: Engine) -> tuple[dict[str, int], list[Any]]:
    counts = row_counts(engine, "product", "plan", "plan_buyer", "product_search", "listing_review")
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT id, status, summary, price_from FROM product ORDER BY id")).all()
        plans = conn.execute(text("SELECT id, price, active FROM plan ORDER BY id")).all()
    return counts, [tuple(r) for r in rows] + [tuple(p) for p in plans]


@pytest.mark.parametrize("party", PARTIES)
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_catalog_route_answers_each_party_exactly(settings: Settings, engine: Engine, case: Case, party: str) -> None:
    world = replayed(engine, __name__, lambda: _build(engine, settings), data_dir=settings.resolved_data_dir)
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
    # A refused write leaves the catalog as it was.
    if case.method != "GET" and response.status_code >= 400:
        assert _state(engine) == before
