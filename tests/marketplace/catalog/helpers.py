"""A small catalog world for the catalog's tests: an owner's visits resource (real Parquet contents) licensed to an
operator, people of every party, and HTTP helpers acting as one of them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from litestar.testing import TestClient
from sqlalchemy import Engine

from licensing.models import DataResource, Licence
from marketplace.app import create_app
from marketplace.core.http import CSRF_HEADER
from marketplace.core.identity.models import Organisation
from marketplace.core.principal import OrgKind
from marketplace.core.settings import Settings
from tests.conftest import TEST_ORIGIN
from tests.factories import make_login_session, make_org, make_user
from tests.helpers import csrf, use_session
from tests.licensing.factories import clean_visit_rules, make_licence, make_visit_resource

PRODUCTS = "/api/catalog/products"
CATALOG_TABLES = ("product", "plan", "plan_buyer", "product_search", "listing_review")


@dataclass
class CatalogWorld:
    settings: Settings
    engine: Engine
    owner: Organisation
    operator: Organisation
    buyer_a: Organisation
    buyer_b: Organisation
    resource: DataResource
    licence: Licence
    sessions: dict[str, str] = field(default_factory=dict)


def build(settings: Settings, engine: Engine, **licence_terms: Any) -> CatalogWorld:
    """An owner, an operator with a licence in force over a visits resource, two buyers, another operator, a regulator
    and an auditor, each with a signed-in person."""
    owner = make_org(engine, OrgKind.owner)
    operator = make_org(engine, OrgKind.operator)
    buyer_a = make_org(engine, OrgKind.buyer)
    buyer_b = make_org(engine, OrgKind.buyer)
    resource = make_visit_resource(engine, owner, settings.resolved_data_dir)
    licence = make_licence(engine, owner, operator, [resource], **licence_terms)
    world = CatalogWorld(settings, engine, owner, operator, buyer_a, buyer_b, resource, licence)
    for party, org in (("owner", owner), ("operator", operator), ("buyer_a", buyer_a), ("buyer_b", buyer_b)):
        world.sessions[party] = make_login_session(engine, make_user(engine, org))
    for party, kind in (("operator_b", OrgKind.operator), ("regulator", OrgKind.regulator), ("auditor", OrgKind.auditor)):
        world.sessions[party] = make_login_session(engine, make_user(engine, make_org(engine, kind)))
    return world


def product_body(world: CatalogWorld, **changes: Any) -> dict[str, Any]:
    """A valid body for ``POST /api/catalog/products`` (an api product of outpatient visits)."""
    body: dict[str, Any] = {
        "licence_id": str(world.licence.id),
        "resource_id": str(world.resource.id),
        "mode": "api",
        "rules": clean_visit_rules(),
        "purposes": ["public_welfare"],
        "name": "Outpatient visit statistics",
        "name_zh": "门诊就诊统计",
        "summary": "Visits by district and age band",
        "summary_zh": "按区县和年龄段统计的门诊就诊",
        "description": "Monthly outpatient visits, pseudonymised.",
        "description_zh": "每月门诊就诊记录，已假名化。",  # noqa: RUF001 (Chinese text uses full-width punctuation)
        "documentation": "GET /data/v1/products/{id}/rows",
        "domain": "health",
    }
    body.update(changes)
    return body


def monthly_plan(**changes: Any) -> dict[str, Any]:
    """A valid body for ``POST .../plans``: a public self-serve monthly plan."""
    body: dict[str, Any] = {"name": "Standard", "name_zh": "标准版", "type": "monthly", "price": "1500.00"}
    body.update(changes)
    return body


class Party:
    """One party of the world (or anonymous), calling the app through a shared client: its session cookie is set
    before each request."""

    def __init__(self, client: TestClient[Any], token: str | None) -> None:
        self.client = client
        self.token = token

    def _headers(self) -> dict[str, str]:
        self.client.cookies.clear()
        return use_session(self.client, self.token) if self.token else use_session_anonymous(self.client)

    def get(self, path: str, **params: Any) -> Any:
        self._headers()
        return self.client.get(path, params=params or None)

    def post(self, path: str, body: Any = None) -> Any:
        return self.client.post(path, json=body if body is not None else {}, headers=self._headers())

    def patch(self, path: str, body: Any) -> Any:
        return self.client.patch(path, json=body, headers=self._headers())


def use_session_anonymous(client: TestClient[Any]) -> dict[str, str]:
    """CSRF headers without a session."""
    return {CSRF_HEADER: csrf(client)}


@contextmanager
def market(world: CatalogWorld) -> Iterator[Callable[[str | None], Party]]:
    """One app and client for a test; ``party(name)`` acts as that party (None: anonymous)."""
    with TestClient(app=create_app(world.settings), base_url=TEST_ORIGIN) as client:
        yield lambda name: Party(client, world.sessions[name] if name else None)
