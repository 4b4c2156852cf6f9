"""Permission matrix of the data plane (``/data/v1``): every party, and buyer programs with bearer tokens.

The world: the owner's licence to the operator; buyer A subscribed to an api, a file and a sandbox product (with a
ready export of the file product); buyer B subscribed to nothing. Programs are buyer A's and buyer B's API clients
(tokens with every scope). Data routes are the buyers' (people or programs); everyone else is refused (403, read-only
parties with ``read_only_party`` on writes); another buyer's product is 403 ``not_entitled`` and another buyer's
export 404. A download link is its own credential: it opens for anyone holding it.

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
from sqlmodel import Session

from licensing.models import DeliveryMode
from marketplace.core.http import CSRF_HEADER
from marketplace.core.identity.models import Organisation
from marketplace.core.settings import Settings
from marketplace.core.tasks import run_in_session
from marketplace.delivery.models import Export, ExportFormat
from marketplace.delivery.services import build_export, signed_link
from tests.conftest import TEST_ORIGIN
from tests.helpers import csrf
from tests.licensing.factories import row_counts
from tests.marketplace.core.test_permissions import PARTIES, Case, World, build_world
from tests.marketplace.delivery.support import bearer, tasks_in_process, wait_for_exports, with_delivery_lifespan
from tests.marketplace.factories import make_market
from tests.worlds import replayed

PROGRAMS = ("buyer_a_program", "buyer_b_program")
EVERY_CALLER = (*PARTIES, *PROGRAMS)
PRODUCT = "{product_id:uuid}"
EXPORT = "{export_id:uuid}"
BASE = "/data/v1"


def _by(
    anonymous: int,
    owner: int,
    operator: int,
    buyer_a: int,
    buyer_b: int,
    regulator: int,
    auditor: int,
    a_program: int,
    b_program: int,
) -> dict[str, int]:
    return dict(
        zip(EVERY_CALLER, (anonymous, owner, operator, buyer_a, buyer_b, regulator, auditor, a_program, b_program), strict=True)
    )


@dataclass
class DeliveryWorld:
    """The core world, buyer A's three products and its ready export, and the buyers' organisations."""

    world: World
    buyer_a: Organisation
    buyer_b: Organisation
    products: dict[str, str]
    export_id: str


def _export_body(_party: str, _world: Any) -> dict[str, Any]:
    return {"format": "csv"}


def _query(_party: str, _world: Any) -> dict[str, Any]:
    return {"sql": "SELECT district, count(*) AS visits FROM data GROUP BY district"}


BUYERS_READ = _by(401, 403, 403, 200, 200, 403, 403, 200, 200)
BUYER_A_DATA = _by(401, 403, 403, 200, 403, 403, 403, 200, 403)
BUYER_A_EXPORTS = _by(401, 403, 403, 202, 403, 403, 403, 202, 403)
BUYER_A_RECORD = _by(401, 403, 403, 200, 404, 403, 403, 200, 404)
LINK = _by(200, 200, 200, 200, 200, 200, 200, 200, 200)

CASES: list[Case] = [
    Case("GET", f"{BASE}/entitlements", BUYERS_READ),
    Case("GET", f"{BASE}/products/{PRODUCT}/rows?limit=5&mode=api", BUYER_A_DATA),
    Case("POST", f"{BASE}/products/{PRODUCT}/exports?mode=file", BUYER_A_EXPORTS, json=_export_body),
    Case("GET", f"{BASE}/exports", BUYERS_READ),
    Case("GET", f"{BASE}/exports/{EXPORT}", BUYER_A_RECORD),
    Case("GET", f"{BASE}/exports/{EXPORT}/download", LINK),
    Case("POST", f"{BASE}/products/{PRODUCT}/sandbox/query?mode=sandbox", BUYER_A_DATA, json=_query),
]


def _org(engine: Engine, org_id: Any) -> Organisation:
    with Session(engine) as session:
        org = session.get(Organisation, uuid.UUID(str(org_id)))
        assert org is not None
        session.expunge(org)
        return org


def _build(engine: Engine, settings: Settings) -> DeliveryWorld:
    world = build_world(engine)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT id, kind FROM organisation")).all()
        buyer_a_id = conn.execute(text("SELECT org_id FROM api_client")).scalar_one()
    by_kind = {str(kind): org_id for org_id, kind in rows if str(kind) != "buyer"}
    buyer_a = _org(engine, buyer_a_id)
    buyer_b_id = next(org_id for org_id, kind in rows if str(kind) == "buyer" and uuid.UUID(str(org_id)) != buyer_a.id)
    owner, operator, buyer_b = _org(engine, by_kind["owner"]), _org(engine, by_kind["operator"]), _org(engine, buyer_b_id)
    products = {}
    markets = {}
    for mode in (DeliveryMode.api, DeliveryMode.file, DeliveryMode.sandbox):
        market = make_market(
            engine, settings.resolved_data_dir, mode=mode, owner=owner, operator=operator, buyer_a=buyer_a, buyer_b=buyer_b
        )
        products[mode.value] = str(market.product.id)
        markets[mode] = market
    file_market = markets[DeliveryMode.file]
    with Session(engine) as session:
        export = Export(
            entitlement_id=file_market.entitlement.id,
            subscription_id=file_market.subscription.id,
            buyer_org_id=buyer_a.id,
            product_id=file_market.product.id,
            format=ExportFormat.csv,
            requested_by="user:test",
        )
        session.add(export)
        session.commit()
        export_id = export.id
    tasks_in_process(settings)
    built = run_in_session(lambda session: build_export(session, settings, export_id))
    assert built is not None
    assert built.status.value == "ready"
    return DeliveryWorld(world=world, buyer_a=buyer_a, buyer_b=buyer_b, products=products, export_id=str(export_id))


def _path(case: Case, world: DeliveryWorld, settings: Settings) -> str:
    path, _, query = case.path.partition("?")
    params = dict(p.split("=") for p in query.split("&")) if query else {}
    mode = params.pop("mode", "api")
    path = path.replace(PRODUCT, world.products[mode]).replace(EXPORT, world.export_id)
    if path.endswith("/download"):
        return signed_link(settings, uuid.UUID(world.export_id))[0]
    return path + ("?" + "&".join(f"{k}={v}" for k, v in params.items()) if params else "")


def _request(
    client: TestClient[Litestar], case: Case, party: str, world: DeliveryWorld, settings: Settings, engine: Engine
) -> Any:
    kwargs: dict[str, Any] = {"follow_redirects": False}
    headers: dict[str, str] = {}
    if party in PROGRAMS:
        headers = bearer(client, engine, world.buyer_a if party == "buyer_a_program" else world.buyer_b)
    elif party != "anonymous":
        client.cookies.set("market_session", world.world.sessions[party])
    if case.method != "GET":
        if party not in PROGRAMS:
            headers[CSRF_HEADER] = csrf(client)
        if case.json is not None:
            json_body: Callable[[str, Any], Any] = case.json
            kwargs["json"] = json_body(party, world)
    return client.request(case.method, _path(case, world, settings), headers=headers, **kwargs)


@pytest.mark.parametrize("party", EVERY_CALLER)
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_delivery_route_answers_each_party_exactly(settings: Settings, engine: Engine, case: Case, party: str) -> None:
    world = replayed(engine, __name__, lambda: _build(engine, settings), data_dir=settings.resolved_data_dir)
    exports_before = row_counts(engine, "export")
    app = with_delivery_lifespan(_app(settings))
    tasks_in_process(settings)
    with TestClient(app=app, base_url=TEST_ORIGIN) as client:
        response = _request(client, case, party, world, settings, engine)
        wait_for_exports(engine)
    expected = case.expected[party]
    assert response.status_code == expected, f"{case.id} as {party}: {response.status_code} {response.text[:300]}"
    if response.status_code >= 400:
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["code"]
    if response.status_code == 403 and party in ("regulator", "auditor") and case.method == "POST":
        assert response.json()["code"] == "read_only_party"
    if response.status_code == 403 and party == "buyer_b_program" and "/products/" in case.path:
        assert response.json()["code"] == "not_entitled"
    if case.method == "POST" and response.status_code >= 400:
        assert row_counts(engine, "export") == exports_before
        assert row_counts(engine, "delivery") == {"delivery": 1}  # the export built for the world, nothing more


_apps: dict[str, Litestar] = {}


def _app(settings: Settings) -> Litestar:
    from marketplace.app import create_app

    key = settings.model_dump_json()
    if key not in _apps:
        _apps[key] = create_app(settings)
    return _apps[key]
