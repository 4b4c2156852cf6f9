"""Permission matrix of the qualification, agreement and subscription routes: every party, the exact status each gets.

The world: the owner's licence to the operator with two listed products. Buyer A has a qualification submitted to
the operator and a public-welfare subscription to the first product awaiting approval, its proof uploaded; the
second product has a free plan for the subscribe rows; a second operator takes the qualification submissions.

Choices: the owner takes no part in buyer onboarding (qualification routes: 403); it reads the subscriptions under
its licences but not their proofs (403); regulators and auditors read everything but proofs (403) and write nothing.

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

from licensing.models import Grade, PlanType, Purpose
from marketplace.core.http import CSRF_HEADER
from marketplace.core.identity.models import Organisation
from marketplace.core.principal import OrgKind
from marketplace.core.settings import Settings
from marketplace.subscriptions.models import QualificationStatus, Subscription, SubscriptionStatus
from marketplace.subscriptions.services.agreement import current_agreement
from tests.conftest import TEST_ORIGIN
from tests.factories import make_org
from tests.helpers import csrf, shared_app
from tests.licensing.factories import make_licence, make_resource, row_counts
from tests.marketplace.core.test_permissions import PARTIES, Case, World, _by, build_world
from tests.marketplace.factories import make_plan, make_product, make_qualification, make_subscription
from tests.marketplace.subscriptions.support import FIELDS, RULES, qualification_body
from tests.worlds import replayed

QUALIFICATION = "{qualification_id:uuid}"
SUBSCRIPTION = "{subscription_id:uuid}"
QUALIFICATIONS = "/api/buyers/qualifications"
SUBSCRIPTIONS = "/api/subscriptions"
PDF = b"%PDF-1.7\n%%EOF\n"
TABLES = ("buyer_qualification", "subscription", "entitlement")


@dataclass
class SubscriptionWorld:
    """The core world and the records the routes act on."""

    world: World
    other_operator_id: uuid.UUID
    qualification_id: str
    subscription_id: str
    free_plan_id: str


def _qualification(_party: str, world: Any) -> dict[str, Any]:
    return qualification_body(world.other_operator_id)


def _subscribe(_party: str, world: Any) -> dict[str, Any]:
    return {
        "plan_id": world.free_plan_id,
        "purpose": Purpose.credit_assessment.value,
        "agreement_version": current_agreement().version,
    }


def _reason(_party: str, _world: Any) -> dict[str, str]:
    return {"reason": "Checked against the registry"}


def _empty(_party: str, _world: Any) -> dict[str, str]:
    return {}


BUYER_WRITES = _by(401, 403, 403, 201, 201, 403, 403)
OPERATOR_DECIDES = _by(401, 403, 200, 403, 403, 403, 403)
#: The matrix's auditor has no engagement in force: 403 ``outside_engagement`` (in scope: test_auditor_scope.py).
QUALIFICATION_READ = _by(401, 403, 200, 200, 200, 200, 403)
QUALIFICATION_ONE = _by(401, 403, 200, 200, 404, 200, 403)
SUBSCRIPTION_READ = _by(401, 200, 200, 200, 200, 200, 403)
SUBSCRIPTION_ONE = _by(401, 200, 200, 200, 404, 200, 403)
BUYER_A_ACTS = _by(401, 403, 403, 200, 404, 403, 403)
PROOF_READ = _by(401, 403, 200, 200, 404, 403, 403)

CASES: list[Case] = [
    Case("POST", QUALIFICATIONS, BUYER_WRITES, json=_qualification),
    Case("GET", QUALIFICATIONS, QUALIFICATION_READ),
    Case("GET", f"{QUALIFICATIONS}?status=submitted", QUALIFICATION_READ),
    Case("GET", f"{QUALIFICATIONS}/{QUALIFICATION}", QUALIFICATION_ONE),
    Case("POST", f"{QUALIFICATIONS}/{QUALIFICATION}/approve", OPERATOR_DECIDES, json=_empty),
    Case("POST", f"{QUALIFICATIONS}/{QUALIFICATION}/reject", OPERATOR_DECIDES, json=_reason),
    Case("GET", f"{SUBSCRIPTIONS}/agreement", _by(200, 200, 200, 200, 200, 200, 200)),
    Case("POST", SUBSCRIPTIONS, BUYER_WRITES, json=_subscribe),
    Case("GET", SUBSCRIPTIONS, SUBSCRIPTION_READ),
    Case("GET", f"{SUBSCRIPTIONS}?status=awaiting_approval", SUBSCRIPTION_READ),
    Case("GET", f"{SUBSCRIPTIONS}/{SUBSCRIPTION}", SUBSCRIPTION_ONE),
    Case("POST", f"{SUBSCRIPTIONS}/{SUBSCRIPTION}/proof", BUYER_A_ACTS),
    Case("GET", f"{SUBSCRIPTIONS}/{SUBSCRIPTION}/proof", PROOF_READ),
    Case("POST", f"{SUBSCRIPTIONS}/{SUBSCRIPTION}/approve", OPERATOR_DECIDES, json=_empty),
    Case("POST", f"{SUBSCRIPTIONS}/{SUBSCRIPTION}/reject", OPERATOR_DECIDES, json=_reason),
    Case("POST", f"{SUBSCRIPTIONS}/{SUBSCRIPTION}/cancel", BUYER_A_ACTS, json=_empty),
    Case("POST", f"{SUBSCRIPTIONS}/{SUBSCRIPTION}/revoke", OPERATOR_DECIDES, json=_reason),
]


def _build(engine: Engine, settings: Settings) -> SubscriptionWorld:
    world = build_world(engine)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT id, kind FROM organisation")).all()
        buyer_a_id = conn.execute(text("SELECT org_id FROM api_client")).scalar_one()
    orgs = {str(kind): uuid.UUID(str(org_id)) for org_id, kind in rows if str(kind) != "buyer"}
    owner = Organisation(id=orgs["owner"], name="owner", kind=OrgKind.owner)
    operator = Organisation(id=orgs["operator"], name="operator", kind=OrgKind.operator)
    buyer_a = Organisation(id=uuid.UUID(str(buyer_a_id)), name="buyer a", kind=OrgKind.buyer)
    other_operator = make_org(engine, OrgKind.operator)
    resource = make_resource(engine, owner, fields=FIELDS, grade=Grade.L2)
    licence = make_licence(engine, owner, operator, [resource])
    product = make_product(engine, licence, resource, rules=RULES)
    second = make_product(engine, licence, resource, rules=RULES)
    plan = make_plan(engine, product, type=PlanType.free)
    free_plan = make_plan(engine, second, type=PlanType.free)
    qualification = make_qualification(engine, buyer_a, operator.id, status=QualificationStatus.submitted)
    subscription, _ = make_subscription(
        engine, buyer_a, product, plan, status=SubscriptionStatus.awaiting_approval, purpose=Purpose.public_welfare
    )
    location = f"proofs/{subscription.id}/proof.pdf"
    path = settings.resolved_data_dir / location
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(PDF)
    with Session(engine) as session:
        stored = session.get(Subscription, subscription.id)
        assert stored is not None
        stored.proof_location, stored.proof_name, stored.proof_sha256 = location, "proof.pdf", "0" * 64
        session.add(stored)
        session.commit()
    return SubscriptionWorld(
        world=world,
        other_operator_id=other_operator.id,
        qualification_id=str(qualification.id),
        subscription_id=str(subscription.id),
        free_plan_id=str(free_plan.id),
    )


def _request(client: TestClient[Litestar], case: Case, party: str, world: SubscriptionWorld) -> Any:
    path = case.path.replace(QUALIFICATION, world.qualification_id).replace(SUBSCRIPTION, world.subscription_id)
    kwargs: dict[str, Any] = {"follow_redirects": False}
    if case.method != "GET":
        kwargs["headers"] = {CSRF_HEADER: csrf(client)}
        if path.endswith("/proof"):
            kwargs["files"] = {"file": ("proof.pdf", PDF, "application/pdf")}
        elif case.json is not None:
            json_body: Callable[[str, Any], Any] = case.json
            kwargs["json"] = json_body(party, world)
    return client.request(case.method, path, **kwargs)


@pytest.mark.parametrize("party", PARTIES)
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_subscription_route_answers_each_party_exactly(settings: Settings, engine: Engine, case: Case, party: str) -> None:
    world = replayed(engine, __name__, lambda: _build(engine, settings), data_dir=settings.resolved_data_dir)
    before = row_counts(engine, *TABLES)
    with TestClient(app=shared_app(settings), base_url=TEST_ORIGIN) as client:
        if party != "anonymous":
            client.cookies.set("market_session", world.world.sessions[party])
        response = _request(client, case, party, world)
    expected = case.expected[party]
    assert response.status_code == expected, f"{case.id} as {party}: {response.status_code} {response.text[:300]}"
    if response.status_code >= 400:
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["code"]
    if response.status_code == 403 and party in ("regulator", "auditor") and case.method == "POST":
        assert "read_only_party" in response.text
    # A refused write changes nothing.
    if case.method == "POST" and response.status_code >= 400:
        assert row_counts(engine, *TABLES) == before
        with engine.connect() as conn:
            statuses = conn.execute(text("SELECT status FROM subscription")).scalars().all()
            qualification = conn.execute(text("SELECT status FROM buyer_qualification")).scalar_one()
        assert list(statuses) == ["awaiting_approval"]
        assert qualification == "submitted"
