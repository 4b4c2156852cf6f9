"""Permission matrix of the listing-review routes: every party, the exact status each gets.

The owner has granted the operator a licence over a resource with real contents; the operator has one
pending review on it (its checks pass), so that approve and reject find something to decide.

The world is built once and its rows (and files) put back before every test (``tests.worlds.replayed``): each test,
read or write, starts from its own fresh copy of the same world.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import TestClient
from sqlalchemy import Engine, text
from sqlmodel import Session

from licensing.models import DeliveryMode, ListingReview, ReviewStatus
from marketplace.core.http import CSRF_HEADER
from marketplace.core.identity.models import Organisation
from marketplace.core.principal import OrgKind
from marketplace.core.settings import Settings
from tests.conftest import TEST_ORIGIN
from tests.helpers import csrf, shared_app
from tests.licensing.factories import listing_submission, make_licence, make_visit_resource, row_counts
from tests.marketplace.core.test_permissions import PARTIES, Case, World, _by, build_world
from tests.worlds import replayed

REVIEW = "{review_id:uuid}"
BASE = "/api/licensing/reviews"


@dataclass
class ReviewWorld:
    """The core world, the operator's licence with a resource, and a pending review on it."""

    world: World
    submission: dict[str, Any]
    review_id: str


#: The matrix's auditor has no engagement in force: 403 ``outside_engagement`` (in scope: test_auditor_scope.py).
READ = _by(401, 200, 200, 403, 403, 200, 403)
OPERATOR_WRITES = _by(401, 403, 201, 403, 403, 403, 403)
OWNER_DECIDES = _by(401, 200, 403, 403, 403, 403, 403)


def _submission(_party: str, world: Any) -> dict[str, Any]:
    return {**world.submission, "product_ref": f"product-{uuid.uuid4()}"}


def _reason(_party: str, _world: Any) -> dict[str, str]:
    return {"reason": "Reviewed by the data authority"}


CASES: list[Case] = [
    Case("GET", BASE, READ),
    Case("GET", f"{BASE}?status=pending", READ),
    Case("POST", BASE, OPERATOR_WRITES, json=_submission),
    Case("POST", f"{BASE}/check", _by(401, 403, 200, 403, 403, 403, 403), json=_submission),
    Case("GET", f"{BASE}/{REVIEW}", READ),
    Case("POST", f"{BASE}/{REVIEW}/approve", OWNER_DECIDES, json=_reason),
    Case("POST", f"{BASE}/{REVIEW}/reject", OWNER_DECIDES, json=_reason),
]


def _build(engine: Engine, settings: Settings) -> ReviewWorld:
    world = build_world(engine)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT id, kind FROM organisation")).all()
    orgs = {str(kind): uuid.UUID(str(org_id)) for org_id, kind in rows}
    owner = Organisation(id=orgs["owner"], name="owner", kind=OrgKind.owner)
    operator = Organisation(id=orgs["operator"], name="operator", kind=OrgKind.operator)
    resource = make_visit_resource(engine, owner, settings.resolved_data_dir)
    licence = make_licence(engine, owner, operator, [resource])
    submission = listing_submission(licence, resource, product_ref="product-pending")
    with Session(engine) as session:
        review = ListingReview(
            operator_id=operator.id,
            licence_id=licence.id,
            product_ref="product-pending",
            product_name=submission["product_name"],
            mode=DeliveryMode.api,
            submission_json=json.dumps(submission),
            checks_json="[]",
            checks_passed=True,
            measured_k=10,
            status=ReviewStatus.pending,
        )
        session.add(review)
        session.commit()
        review_id = str(review.id)
    return ReviewWorld(world=world, submission=submission, review_id=review_id)


def _request(client: TestClient[Litestar], case: Case, party: str, world: ReviewWorld) -> Any:
    path = case.path.replace(REVIEW, world.review_id)
    kwargs: dict[str, Any] = {"follow_redirects": False}
    if case.method != "GET":
        kwargs["headers"] = {CSRF_HEADER: csrf(client)}
        if case.json is not None:
            json_body: Callable[[str, Any], Any] = case.json
            kwargs["json"] = json_body(party, world)
    return client.request(case.method, path, **kwargs)


@pytest.mark.parametrize("party", PARTIES)
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_review_route_answers_each_party_exactly(settings: Settings, engine: Engine, case: Case, party: str) -> None:
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
    if response.status_code == 403 and party in ("regulator", "auditor") and case.method == "POST":
        assert "read_only_party" in response.text
    # A refused write leaves the reviews as they were.
    if case.method == "POST" and response.status_code >= 400:
        assert row_counts(engine, "listing_review") == {"listing_review": 1}
        with engine.connect() as conn:
            status = conn.execute(text("SELECT status FROM listing_review")).scalar_one()
        assert status == "pending"
