"""Permission matrix of the licensing pages: every party, the exact status each gets.

The world: an owner with a resource licensed (granted) to the operator, and a pending listing review
of the operator on that licence; each party signed in as an admin of its own organisation.

The world is built once and its rows (and files) put back before every test (``tests.worlds.replayed``): each test,
read or write, starts from its own fresh copy of the same world.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import pytest
from litestar.testing import TestClient
from sqlalchemy import Engine

from licensing.models import FieldType
from licensing.schemas import FieldSpec
from marketplace.core.settings import Settings
from tests.conftest import TEST_ORIGIN
from tests.factories import make_login_session, make_org, make_user
from tests.helpers import csrf, shared_app
from tests.licensing.factories import make_department, make_licence, make_resource, make_review
from tests.marketplace.core.test_permissions import KIND, PARTIES, Case, _by
from tests.worlds import replayed

FIELDS = [FieldSpec(name="district", type=FieldType.string)]


#: The matrix's auditor has no engagement in force: refused (in scope: tests/licensing/test_auditor_scope.py).
READ = _by(303, 200, 200, 403, 403, 200, 403)
OWNER_WRITES = _by(303, 303, 403, 403, 403, 403, 403)


def _resource_form(_party: str, world: dict[str, Any]) -> dict[str, str]:
    return {
        "department_id": world["department"],
        "code": "new-resource",
        "title": "New resource",
        "title_zh": "新资源",
        "grade": "L1",
        "update_frequency": "daily",
        "fields": "district, string",
    }


def _licence_form(_party: str, world: dict[str, Any]) -> dict[str, Any]:
    today = date.today()
    return {
        "operator_id": world["operator"],
        "resource_ids": [world["resource"]],
        "purposes": ["public_welfare"],
        "modes": ["api"],
        "territory": "Riverside",
        "starts_on": today.isoformat(),
        "ends_on": (today + timedelta(days=300)).isoformat(),
        "fee_rate": "0.1",
        "min_k": "5",
    }


def _reason(_party: str, _world: dict[str, Any]) -> dict[str, str]:
    return {"reason": "Decided by the board"}


CASES: list[Case] = [
    Case("GET", "/licensing/resources", READ),
    Case("POST", "/licensing/resources", OWNER_WRITES, form=_resource_form),  # type: ignore[arg-type]
    Case("GET", "/licensing/resources/{resource}", READ),
    Case("GET", "/licensing/licences", READ),
    Case("GET", "/licensing/licences/new", _by(303, 200, 403, 403, 403, 403, 403)),
    Case("POST", "/licensing/licences", OWNER_WRITES, form=_licence_form),  # type: ignore[arg-type]
    Case("GET", "/licensing/licences/{licence}", READ),
    Case("POST", "/licensing/licences/{licence}/suspend", OWNER_WRITES, form=_reason),  # type: ignore[arg-type]
    Case("GET", "/licensing/reviews", READ),
    Case("GET", "/licensing/reviews/new", _by(303, 403, 200, 403, 403, 403, 403)),
    Case("POST", "/licensing/reviews/new", _by(303, 403, 400, 403, 403, 403, 403), form=lambda _p, _w: {"intent": "check"}),  # type: ignore[arg-type]
    Case("POST", "/licensing/reviews/{review}/reject", OWNER_WRITES, form=_reason),  # type: ignore[arg-type]
]
#: How the coverage test names these routes.
ROUTE_PATHS = {
    "/licensing/resources/{resource}": "/licensing/resources/{resource_id:uuid}",
    "/licensing/licences/{licence}": "/licensing/licences/{licence_id:uuid}",
    "/licensing/licences/{licence}/suspend": "/licensing/licences/{licence_id:uuid}/{action:str}",
    "/licensing/reviews/{review}/reject": "/licensing/reviews/{review_id:uuid}/{decision:str}",
}
CASES = [Case(c.method, ROUTE_PATHS.get(c.path, c.path), c.expected, c.json, c.form, c.auth) for c in CASES]


def _world(engine: Engine) -> tuple[dict[str, Any], dict[str, str]]:
    orgs = {party: make_org(engine, kind) for party, kind in KIND.items()}
    sessions = {party: make_login_session(engine, make_user(engine, org)) for party, org in orgs.items()}
    department = make_department(engine, orgs["owner"])
    resource = make_resource(engine, orgs["owner"], fields=FIELDS, department=department)
    licence = make_licence(engine, orgs["owner"], orgs["operator"], [resource])
    review = make_review(engine, licence)
    ids = {
        "department": str(department.id),
        "operator": str(orgs["operator"].id),
        "resource": str(resource.id),
        "licence": str(licence.id),
        "review": str(review.id),
    }
    return ids, sessions


def _path(case: Case, ids: dict[str, Any]) -> str:
    return (
        case.path.replace("{resource_id:uuid}", ids["resource"])
        .replace("{licence_id:uuid}", ids["licence"])
        .replace("{action:str}", "suspend")
        .replace("{review_id:uuid}", ids["review"])
        .replace("{decision:str}", "reject")
    )


@pytest.mark.parametrize("party", PARTIES)
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_licensing_page_answers_each_party_exactly(settings: Settings, engine: Engine, case: Case, party: str) -> None:
    ids, sessions = replayed(engine, __name__, lambda: _world(engine))
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
