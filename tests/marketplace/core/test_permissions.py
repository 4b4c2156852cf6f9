"""Permission matrix: every route x every party, with the exact status each must get.

Parties: anonymous, owner, operator, buyer A, buyer B, regulator, auditor. A route added to the
app without a row here fails ``test_matrix_covers_every_route``.
"""

from __future__ import annotations

import importlib
import itertools
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import TestClient
from sqlalchemy import Engine
from sqlmodel.ext.asyncio.session import AsyncSession

import tests
from marketplace.app import create_app
from marketplace.core.http import CSRF_HEADER
from marketplace.core.principal import OrgKind, Role
from marketplace.core.settings import Settings
from supervision import services
from tests.conftest import TEST_ORIGIN
from tests.factories import PASSWORD, make_api_client, make_login_session, make_org, make_user
from tests.helpers import csrf, shared_app
from tests.supervision.ledger_helpers import event, run
from tests.worlds import replayed

PARTIES = ("anonymous", "owner", "operator", "buyer_a", "buyer_b", "regulator", "auditor")
KIND = {
    "owner": OrgKind.owner,
    "operator": OrgKind.operator,
    "buyer_a": OrgKind.buyer,
    "buyer_b": OrgKind.buyer,
    "regulator": OrgKind.regulator,
    "auditor": OrgKind.auditor,
}
_unique = itertools.count(1)


@dataclass
class World:
    """One organisation and admin per party, and an API client of buyer A."""

    emails: dict[str, str] = field(default_factory=dict)
    sessions: dict[str, str] = field(default_factory=dict)
    buyer_a_client: str = ""


def build_world(engine: Engine) -> World:
    """One organisation, admin and session per party, and two ledger entries; built once per database and put
    back as it was for every later test (``tests.worlds.replayed``): each test gets its own fresh copy."""
    return replayed(engine, "permission matrix parties", lambda: _build_world(engine))


def _build_world(engine: Engine) -> World:
    world = World()
    # Two ledger entries, so that proofs exist.
    run(engine.url.render_as_string(hide_password=False), lambda s: _two_events(s))
    for party, kind in KIND.items():
        org = make_org(engine, kind)
        user = make_user(engine, org, Role.admin)
        world.emails[party] = user.email
        world.sessions[party] = make_login_session(engine, user)
        if party == "buyer_a":
            world.buyer_a_client = str(make_api_client(engine, org).record.id)
    return world


async def _two_events(session: AsyncSession) -> None:
    await services.record_many(session, [event(1), event(2)])
    await session.commit()


def _all(status: int) -> dict[str, int]:
    return dict.fromkeys(PARTIES, status)


def _people(anonymous: int, others: int) -> dict[str, int]:
    return {party: anonymous if party == "anonymous" else others for party in PARTIES}


def _by(anonymous: int, owner: int, operator: int, buyer_a: int, buyer_b: int, regulator: int, auditor: int) -> dict[str, int]:
    return dict(zip(PARTIES, (anonymous, owner, operator, buyer_a, buyer_b, regulator, auditor), strict=True))


def _credentials(party: str, world: World) -> dict[str, str]:
    email = world.emails.get(party, "nobody@nowhere.test-market.cn")
    return {"email": email, "password": PASSWORD}


def _new_member(_party: str, _world: World) -> dict[str, str]:
    return {
        "email": f"new{next(_unique)}@members.test-market.cn",
        "display_name": "New Member",
        "password": "a long enough password",
    }


@dataclass(frozen=True)
class Case:
    method: str
    path: str
    expected: dict[str, int]
    json: Callable[[str, World], Any] | None = None
    form: Callable[[str, World], dict[str, str]] | None = None
    auth: tuple[str, str] | None = None

    @property
    def id(self) -> str:
        return f"{self.method} {self.path}"


CASES = [
    Case("GET", "/health", _all(200)),
    Case("GET", "/schema/openapi.json", _all(200)),
    Case("GET", "/api/auth/csrf", _all(200)),
    Case("POST", "/api/auth/login", _people(401, 200), json=_credentials),
    Case("POST", "/api/auth/logout", _all(204)),
    Case("GET", "/api/me", _people(401, 200)),
    Case("GET", "/api/orgs", _people(401, 200)),
    Case("GET", "/api/users", _people(401, 200)),
    Case("POST", "/api/users", _by(401, 201, 201, 201, 201, 403, 403), json=_new_member),
    Case("GET", "/api/buyers/clients", _by(401, 403, 403, 200, 200, 200, 403)),
    Case("POST", "/api/buyers/clients", _by(401, 403, 403, 201, 201, 403, 403), json=lambda _p, _w: {"name": "pipeline"}),
    Case("POST", "/api/buyers/clients/{buyer_a_client}/revoke", _by(401, 403, 403, 200, 404, 403, 403)),
    Case("POST", "/oauth/token", _all(401), form=lambda _p, _w: {"grant_type": "client_credentials"}),
    Case("POST", "/oauth/revoke", _all(401), form=lambda _p, _w: {"token": "x"}),
    Case("GET", "/.well-known/oauth-authorization-server", _all(200)),
    Case("GET", "/.well-known/jwks.json", _all(200)),
    Case("GET", "/api/supervision/ledger/checkpoint", _all(200)),
    Case("GET", "/api/supervision/ledger/public-key", _all(200)),
    # The auditor of this world has no engagement: 403 outside_engagement (with one: tests/supervision/test_engagements.py).
    Case("GET", "/api/supervision/ledger/entries?start=0&end=10", _by(401, 200, 403, 403, 403, 200, 403)),
    Case("GET", "/api/supervision/ledger/proof/inclusion?index=0&tree_size=2", _by(401, 200, 403, 403, 403, 200, 200)),
    Case("GET", "/api/supervision/ledger/proof/consistency?first=1&second=2", _by(401, 200, 403, 403, 403, 200, 200)),
    Case("GET", "/api/supervision/ledger/export", _by(401, 200, 403, 403, 403, 200, 403)),
    Case("POST", "/api/supervision/ledger/checkpoint", _by(401, 200, 403, 403, 403, 403, 403)),
    Case("POST", "/api/supervision/ledger/self-check", _by(401, 200, 403, 403, 403, 200, 200)),
    Case("GET", "/supervision/ledger", _by(303, 200, 403, 403, 403, 200, 200)),
    Case("POST", "/supervision/ledger/verify", _by(303, 200, 403, 403, 403, 200, 200), form=lambda _p, _w: {}),
    Case("GET", "/", _all(200)),
    Case("GET", "/static/site.css", _all(200)),
    Case("GET", "/login", _people(200, 303)),
    Case("POST", "/login", _people(401, 303), form=_credentials),
    Case("POST", "/logout", _all(303)),
    Case(
        "POST",
        "/api/buyers/register",
        _people(201, 409),
        json=lambda p, w: {**_new_member(p, w), "organisation_name": f"New Buyer {next(_unique)}"},
    ),
    Case("GET", "/register", _people(200, 303)),
    Case(
        "POST",
        "/register",
        _people(303, 409),
        form=lambda p, w: {**_new_member(p, w), "organisation_name": f"New Buyer {next(_unique)}"},
    ),
    Case("GET", "/lang/zh-CN", _all(303)),
    Case("GET", "/account/members", _people(303, 200)),
    Case("POST", "/account/members", _by(303, 303, 303, 303, 303, 403, 403), form=_new_member),
    Case("GET", "/account/clients", _by(303, 403, 403, 200, 200, 403, 403)),
    Case("POST", "/account/clients", _by(303, 403, 403, 303, 303, 403, 403), form=lambda _p, _w: {"name": "pipeline"}),
    Case("POST", "/account/clients/{buyer_a_client}/revoke", _by(303, 403, 403, 303, 404, 403, 403)),
]


def _request(client: TestClient[Litestar], case: Case, party: str, world: World) -> Any:
    path = case.path.format(buyer_a_client=world.buyer_a_client)
    kwargs: dict[str, Any] = {"follow_redirects": False}
    if case.method != "GET":
        if case.form is not None:
            kwargs["data"] = {**case.form(party, world), "_csrf_token": csrf(client)}
        else:
            kwargs["headers"] = {CSRF_HEADER: csrf(client)}
            if case.json is not None:
                kwargs["json"] = case.json(party, world)
    return client.request(case.method, path, **kwargs)


@pytest.mark.parametrize("party", PARTIES)
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_route_answers_each_party_exactly(settings: Settings, engine: Engine, case: Case, party: str) -> None:
    world = build_world(engine)
    with TestClient(app=shared_app(settings), base_url=TEST_ORIGIN) as client:
        if party != "anonymous":
            client.cookies.set("market_session", world.sessions[party])
        response = _request(client, case, party, world)
    expected = case.expected[party]
    assert response.status_code == expected, f"{case.id} as {party}: {response.status_code} {response.text[:300]}"
    if response.status_code >= 400 and case.path.startswith(("/api", "/oauth")):
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["code"]
    if response.status_code == 403 and party in ("regulator", "auditor") and case.method == "POST":
        assert "read_only_party" in response.text


def _documented_paths(app: Litestar) -> set[tuple[str, str]]:
    routes = set()
    for route in app.routes:
        if route.path.startswith("/schema") or route.path.startswith("/static"):
            continue
        for method in getattr(route, "methods", set()):
            if method not in {"HEAD", "OPTIONS"}:
                routes.add((method, route.path))
    return routes


def _normalise(path: str) -> str:
    return (
        path.split("?")[0]
        .replace("{buyer_a_client}", "{client_uuid:uuid}")
        .replace("/lang/zh-CN", "/lang/{code:str}")
        .rstrip("/")
        or "/"
    )


def _every_matrix() -> list[Case]:
    """These rows and those of every other ``tests/**/test_permissions_*.py`` module (one per domain area)."""
    cases = list(CASES)
    for module in pkgutil.walk_packages(tests.__path__, "tests."):
        if module.name.rsplit(".", 1)[-1].startswith("test_permissions_"):
            cases += importlib.import_module(module.name).CASES
    return cases


def test_matrix_covers_every_route(settings: Settings) -> None:
    app = create_app(settings)
    covered = {(c.method, _normalise(c.path)) for c in _every_matrix()}
    routes = {(method, path.rstrip("/") or "/") for method, path in _documented_paths(app)}
    assert routes - covered == set(), "routes without a permission row"


def test_buyer_a_never_sees_buyer_b_clients(settings: Settings, engine: Engine) -> None:
    org_a, org_b = make_org(engine, OrgKind.buyer), make_org(engine, OrgKind.buyer)
    client_a, client_b = make_api_client(engine, org_a), make_api_client(engine, org_b)
    user_a = make_user(engine, org_a)
    with TestClient(app=shared_app(settings), base_url=TEST_ORIGIN) as client:
        client.cookies.set("market_session", make_login_session(engine, user_a))
        listed = client.get("/api/buyers/clients").json()
        assert [c["client_id"] for c in listed["items"]] == [client_a.client_id]
        page = client.get("/account/clients").text
        assert client_a.client_id in page
        assert client_b.client_id not in page
        response = client.post(f"/api/buyers/clients/{client_b.record.id}/revoke", headers={CSRF_HEADER: csrf(client)})
        assert response.status_code == 404
    with TestClient(app=shared_app(settings), base_url=TEST_ORIGIN) as client:
        token = client.post("/oauth/token", data={"grant_type": "client_credentials"}, auth=(client_b.client_id, client_b.secret))
        assert token.status_code == 200, "buyer A's attempt must not have revoked buyer B's client"


def test_organisation_directory_is_scoped(settings: Settings, engine: Engine) -> None:
    world_orgs = {party: make_org(engine, kind) for party, kind in KIND.items()}
    users = {party: make_user(engine, org) for party, org in world_orgs.items()}
    with TestClient(app=shared_app(settings), base_url=TEST_ORIGIN) as client:
        seen = {}
        for party, user in users.items():
            client.cookies.set("market_session", make_login_session(engine, user))
            seen[party] = {o["id"] for o in client.get("/api/orgs").json()["items"]}
    everyone = {str(o.id) for o in world_orgs.values()}
    assert seen["owner"] == everyone
    assert seen["regulator"] == everyone
    public = {str(world_orgs["owner"].id), str(world_orgs["operator"].id)}
    for party in ("operator", "buyer_a", "buyer_b", "auditor"):
        assert seen[party] == {str(world_orgs[party].id)} | public, party
    assert str(world_orgs["buyer_b"].id) not in seen["buyer_a"]


def test_members_list_is_own_organisation_only(settings: Settings, engine: Engine) -> None:
    org_a, org_b = make_org(engine, OrgKind.buyer), make_org(engine, OrgKind.operator)
    a1, a2, b1 = make_user(engine, org_a), make_user(engine, org_a, Role.member), make_user(engine, org_b)
    with TestClient(app=shared_app(settings), base_url=TEST_ORIGIN) as client:
        client.cookies.set("market_session", make_login_session(engine, a2))
        emails = {u["email"] for u in client.get("/api/users").json()["items"]}
        assert emails == {a1.email, a2.email}
        assert b1.email not in client.get("/account/members").text
        # A member (not admin) cannot add people.
        response = client.post(
            "/api/users",
            json={"email": "x@y.test-market.cn", "display_name": "X", "password": "a long enough password"},
            headers={CSRF_HEADER: csrf(client)},
        )
        assert response.status_code == 403
        assert response.json()["code"] == "org_admin_required"


def test_client_secret_page_is_shown_once_and_reload_creates_nothing(settings: Settings, engine: Engine) -> None:
    org = make_org(engine, OrgKind.buyer)
    user = make_user(engine, org)
    with TestClient(app=shared_app(settings), base_url=TEST_ORIGIN) as client:
        client.cookies.set("market_session", make_login_session(engine, user))
        created = client.post("/account/clients", data={"name": "ETL", "_csrf_token": csrf(client)}, follow_redirects=False)
        assert created.status_code == 303
        location = created.headers["location"]
        first = client.get(location)
        assert 'id="client-secret"' in first.text
        secret = first.text.split('id="client-secret">')[1].split("<")[0]
        assert secret.startswith("mks_")
        again = client.get(location)
        assert again.status_code == 200
        assert secret not in again.text
        assert client.get("/api/buyers/clients").json()["total"] == 1
