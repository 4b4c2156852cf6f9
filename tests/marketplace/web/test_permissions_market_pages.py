"""Permission matrix of the catalog, buyer console and operator console pages: every party, the exact status.

The world (fresh for each request): a small market (a listed visits product of the operator with a monthly plan
and a free plan; buyer A qualified and subscribed), buyer B's qualification waiting for the operator, and buyer B's
on-request subscription (to a second product) waiting for approval; each party signed in as an admin of its own organisation.

The world is built once and its rows (and files) put back before every test (``tests.worlds.replayed``): each test,
read or write, starts from its own fresh copy of the same world.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient
from sqlalchemy import Engine

from licensing.models import PlanType, Purpose
from marketplace.catalog.models import PlanAccess
from marketplace.core.principal import OrgKind
from marketplace.core.settings import Settings
from marketplace.subscriptions.models import QualificationStatus, SubscriptionStatus
from marketplace.subscriptions.services.qualifications import credit_code_check_character
from tests.conftest import TEST_ORIGIN
from tests.factories import make_login_session, make_org, make_user
from tests.helpers import csrf, shared_app
from tests.marketplace.core.test_permissions import PARTIES, Case, _by
from tests.marketplace.factories import make_market, make_plan, make_product, make_qualification, make_subscription
from tests.worlds import replayed

CREDIT_CODE = "91330106MA2B3C4D5" + credit_code_check_character("91330106MA2B3C4D5")
ANYONE = _by(200, 200, 200, 200, 200, 200, 200)
BUYERS = _by(303, 403, 403, 200, 200, 403, 403)
OPERATOR = _by(303, 403, 200, 403, 403, 403, 403)
OPERATOR_WRITES = _by(303, 403, 303, 403, 403, 403, 403)


def _qualification(_party: str, _world: dict[str, Any]) -> dict[str, str]:
    return {
        "operator_id": _world["operator"],
        "business_licence_number": CREDIT_CODE,
        "industry": "logistics",
        "contact_name": "Li Ming",
        "contact_email": "li.ming@example.cn",
        "contact_phone": "+86 10 5555 0100",
    }


def _subscribe(_party: str, world: dict[str, Any]) -> dict[str, str]:
    return {"plan_id": world["free_plan"], "purpose": "credit_assessment", "agree": "1", "agreement_version": "2026-11"}


def _plan(_party: str, _world: dict[str, Any]) -> dict[str, str]:
    return {"name": "Trial", "name_zh": "试用", "type": "free", "price": "0.00", "access": "self_serve", "visibility": "public"}


CASES: list[Case] = [
    Case("GET", "/catalog", ANYONE),
    Case("GET", "/catalog/{product_id:uuid}", ANYONE),
    Case("GET", "/agreement", ANYONE),
    # Buyer A already subscribes to the product (409); buyer B takes the free plan.
    Case("POST", "/catalog/{product_id:uuid}/subscribe", _by(303, 403, 403, 409, 303, 403, 403), form=_subscribe),  # type: ignore[arg-type]
    Case("GET", "/buyer", BUYERS),
    # Buyer A is already qualified with the operator (409); buyer B's is still submitted (409) — a third buyer would pass.
    Case("POST", "/buyer/qualifications", _by(303, 403, 403, 409, 409, 403, 403), form=_qualification),  # type: ignore[arg-type]
    Case("GET", "/buyer/subscriptions/{subscription_id:uuid}", _by(303, 403, 403, 200, 404, 403, 403)),
    Case(
        "POST",
        "/buyer/subscriptions/{subscription_id:uuid}/cancel",
        _by(303, 403, 403, 303, 404, 403, 403),
        form=lambda _p, _w: {},
    ),  # type: ignore[arg-type]
    Case(
        "POST",
        "/buyer/subscriptions/{subscription_id:uuid}/proof",
        _by(303, 403, 403, 400, 404, 403, 403),
        form=lambda _p, _w: {},
    ),  # type: ignore[arg-type]
    Case("GET", "/operator", OPERATOR),
    Case(
        "POST", "/operator/qualifications/{qualification_id:uuid}", OPERATOR_WRITES, form=lambda _p, _w: {"decision": "approve"}
    ),  # type: ignore[arg-type]
    Case("POST", "/operator/subscriptions/{subscription_id:uuid}", OPERATOR_WRITES, form=lambda _p, _w: {"decision": "approve"}),  # type: ignore[arg-type]
    Case("GET", "/operator/products/{product_id:uuid}", OPERATOR),
    Case("POST", "/operator/products/{product_id:uuid}/plans", OPERATOR_WRITES, form=_plan),  # type: ignore[arg-type]
    Case("POST", "/operator/plans/{plan_id:uuid}/retire", OPERATOR_WRITES, form=lambda _p, _w: {}),  # type: ignore[arg-type]
    Case("POST", "/operator/products/{product_id:uuid}/submit", OPERATOR, form=lambda _p, _w: {"intent": "check"}),  # type: ignore[arg-type]
    Case("POST", "/operator/products/{product_id:uuid}/delist", OPERATOR_WRITES, form=lambda _p, _w: {"reason": "Data refresh"}),  # type: ignore[arg-type]
]


def _world(engine: Engine, data_dir: Path) -> tuple[dict[str, Any], dict[str, str]]:
    market = make_market(engine, data_dir)
    free = make_plan(engine, market.product, type=PlanType.free)
    qualification = make_qualification(engine, market.buyer_b, market.operator.id, status=QualificationStatus.submitted)
    other = make_product(engine, market.licence, market.resource)
    other_plan = make_plan(engine, other, type=PlanType.free, access=PlanAccess.on_request)
    request, _entitlement = make_subscription(
        engine, market.buyer_b, other, other_plan, status=SubscriptionStatus.awaiting_approval, purpose=Purpose.credit_assessment
    )
    orgs = {
        "owner": market.owner,
        "operator": market.operator,
        "buyer_a": market.buyer_a,
        "buyer_b": market.buyer_b,
    }
    orgs["regulator"] = make_org(engine, OrgKind.regulator)
    orgs["auditor"] = make_org(engine, OrgKind.auditor)
    sessions = {party: make_login_session(engine, make_user(engine, org)) for party, org in orgs.items()}
    ids = {
        "product": str(market.product.id),
        "operator": str(market.operator.id),
        "free_plan": str(free.id),
        "plan": str(market.plan.id),
        "subscription": str(market.subscription.id),
        "request": str(request.id),
        "qualification": str(qualification.id),
    }
    return ids, sessions


def _path(case: Case, ids: dict[str, Any]) -> str:
    subscription = ids["request"] if case.path.startswith("/operator/subscriptions") else ids["subscription"]
    return (
        case.path.replace("{product_id:uuid}", ids["product"])
        .replace("{subscription_id:uuid}", subscription)
        .replace("{qualification_id:uuid}", ids["qualification"])
        .replace("{plan_id:uuid}", ids["plan"])
    )


@pytest.mark.parametrize("party", PARTIES)
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_market_page_answers_each_party_exactly(settings: Settings, engine: Engine, case: Case, party: str) -> None:
    ids, sessions = replayed(
        engine, __name__, lambda: _world(engine, settings.resolved_data_dir), data_dir=settings.resolved_data_dir
    )
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
