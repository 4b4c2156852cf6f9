"""Listing review over real HTTP, on real Parquet contents: submission with automated checks, the owner's
decision, refused transitions, what each party sees, and the ledger."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from litestar.testing import TestClient
from sqlalchemy import Engine
from sqlmodel import Session

from licensing.models import DataResource, Grade, Licence, LicenceStatus, ResourceVersion
from marketplace.app import create_app
from marketplace.core.principal import OrgKind
from marketplace.core.settings import Settings
from tests.conftest import TEST_ORIGIN
from tests.factories import make_login_session, make_org, make_user
from tests.helpers import assert_problem, use_session
from tests.licensing.factories import (
    VISIT_FIELDS,
    clean_visit_rules,
    ledger_events,
    listing_submission,
    make_licence,
    make_resource,
    make_visit_resource,
    row_counts,
    visit_rows,
    write_parquet,
)

REVIEWS = "/api/licensing/reviews"


@dataclass
class World:
    settings: Settings
    engine: Engine
    owner: Any
    operator: Any
    resource: DataResource
    licence: Licence
    sessions: dict[str, str]


def build(settings: Settings, engine: Engine, *, min_k: int = 5, grade: Grade = Grade.L2) -> World:
    owner = make_org(engine, OrgKind.owner)
    operator = make_org(engine, OrgKind.operator)
    resource = make_visit_resource(engine, owner, settings.resolved_data_dir, grade=grade)
    licence = make_licence(engine, owner, operator, [resource], min_k=min_k)
    sessions = {
        "owner": make_login_session(engine, make_user(engine, owner)),
        "operator": make_login_session(engine, make_user(engine, operator)),
    }
    for party, kind in (
        ("operator_b", OrgKind.operator),
        ("owner_b", OrgKind.owner),
        ("regulator", OrgKind.regulator),
        ("auditor", OrgKind.auditor),
        ("buyer", OrgKind.buyer),
    ):
        sessions[party] = make_login_session(engine, make_user(engine, make_org(engine, kind)))
    return World(settings, engine, owner, operator, resource, licence, sessions)


def as_party(world: World, party: str, method: str, path: str, body: Any = None) -> Any:
    with TestClient(app=create_app(world.settings), base_url=TEST_ORIGIN) as client:
        headers = use_session(client, world.sessions[party])
        return client.request(method, path, json=body, headers=headers if method != "GET" else None)


def submit(world: World, **changes: Any) -> Any:
    return as_party(world, "operator", "POST", REVIEWS, listing_submission(world.licence, world.resource, **changes))


def nothing_stored(world: World) -> None:
    assert row_counts(world.engine, "listing_review") == {"listing_review": 0}
    assert ledger_events(world.engine, "listing.") == []


def test_a_clean_product_is_pending_then_approved_and_listed(settings: Settings, engine: Engine) -> None:
    world = build(settings, engine)
    response = submit(world)
    assert response.status_code == 201, response.text
    review = response.json()
    assert review["status"] == "pending"
    assert review["checks_passed"] is True
    assert review["measured_k"] == 10
    assert {c["code"] for c in review["checks"]} >= {"direct_identifiers_protected", "k_anonymity", "prices_within_caps"}
    assert all(c["passed"] and c["explanation"] for c in review["checks"])
    assert uuid.UUID(review["product_ref"])  # a new product id when none is given
    assert review["submission"]["rules"][0] == {"field": "patient_name", "action": "pseudonymise", "method": None, "size": None}
    assert review["operator_id"] == str(world.operator.id)

    queue = as_party(world, "owner", "GET", f"{REVIEWS}?status=pending").json()
    assert [r["id"] for r in queue["items"]] == [review["id"]]
    assert queue["total"] == 1

    approved = as_party(world, "owner", "POST", f"{REVIEWS}/{review['id']}/approve", {"reason": "Masking meets the licence."})
    assert approved.status_code == 200, approved.text
    assert approved.json()["status"] == "approved"
    assert approved.json()["decision_reason"] == "Masking meets the licence."
    assert approved.json()["decided_at"] is not None
    assert as_party(world, "operator", "GET", f"{REVIEWS}/{review['id']}").json()["status"] == "approved"

    events = ledger_events(engine, "listing.")
    assert [e["type"] for e in events] == ["listing.submitted", "listing.checks_passed", "listing.approved"]
    assert all(set(e["orgs"]) == {str(world.owner.id), str(world.operator.id)} for e in events)
    assert all(e["subjects"]["review"] == review["id"] for e in events)
    assert events[1]["payload"]["measured_k"] == 10
    assert events[2]["payload"]["reason"] == "Masking meets the licence."
    text = json.dumps(events)
    assert "Patient 0" not in text, "no data contents in the ledger"
    assert "110101" not in text


def test_a_direct_identifier_in_clear_is_refused_and_nothing_is_stored(settings: Settings, engine: Engine) -> None:
    world = build(settings, engine)
    rules = [r if r["field"] != "patient_name" else {"field": "patient_name", "action": "keep"} for r in clean_visit_rules()]
    body = assert_problem(submit(world, rules=rules), 422, "listing_checks_failed")
    assert body["failed"] == ["direct_identifiers_protected"]
    check = next(c for c in body["checks"] if c["code"] == "direct_identifiers_protected")
    assert not check["passed"]
    assert "patient_name (kept)" in check["explanation"]
    assert len(body["checks"]) == 10
    nothing_stored(world)


def test_an_identifier_copied_into_a_free_text_column_is_found_in_the_contents(settings: Settings, engine: Engine) -> None:
    world = build(settings, engine)
    body = assert_problem(submit(world, rules=[*clean_visit_rules(), {"field": "notes"}]), 422, "listing_checks_failed")
    check = next(c for c in body["checks"] if c["code"] == "direct_identifiers_protected")
    assert "'notes' carries raw values of 'patient_name'" in check["explanation"]
    nothing_stored(world)


def test_k_below_the_licence_is_refused_with_measured_and_required_k(settings: Settings, engine: Engine) -> None:
    world = build(settings, engine)
    rules = [r if r["field"] != "age" else {"field": "age", "action": "keep"} for r in clean_visit_rules()]
    body = assert_problem(submit(world, rules=rules), 422, "listing_checks_failed")
    assert body["failed"] == ["k_anonymity"]
    assert body["measured_k"] == 1
    check = next(c for c in body["checks"] if c["code"] == "k_anonymity")
    assert check["details"]["measured_k"] == 1
    assert check["details"]["required_k"] == 5
    assert "age (kept)" in check["explanation"]
    assert "k >= 5" in check["explanation"]
    nothing_stored(world)

    strict = build(settings, engine, min_k=20)
    body = assert_problem(submit(strict), 422, "listing_checks_failed")
    assert body["failed"] == ["k_anonymity"]
    assert "k = 10" in body["checks"][6]["explanation"]
    assert "k >= 20" in body["checks"][6]["explanation"]
    assert row_counts(engine, "listing_review") == {"listing_review": 0}


def test_licence_terms_are_checked(settings: Settings, engine: Engine) -> None:
    world = build(settings, engine, grade=Grade.L3)
    body = assert_problem(
        submit(
            world,
            purposes=["market_analysis"],
            plans=[{"type": "monthly", "price": "2500.00"}],
        ),
        422,
        "listing_checks_failed",
    )
    assert body["failed"] == ["l3_sandbox_only", "purposes_within_licence", "prices_within_caps"]
    assert submit(world, mode="sandbox").status_code == 201


def test_a_resource_outside_the_licence_is_not_read(settings: Settings, engine: Engine) -> None:
    world = build(settings, engine)
    other = make_visit_resource(engine, world.owner, settings.resolved_data_dir)
    body = assert_problem(
        as_party(world, "operator", "POST", REVIEWS, listing_submission(world.licence, other)), 422, "listing_checks_failed"
    )
    assert "resources_within_licence" in body["failed"]
    assert next(c for c in body["checks"] if c["code"] == "k_anonymity")["details"] == {"not_run": True}
    nothing_stored(world)


def test_the_check_route_answers_without_storing(settings: Settings, engine: Engine) -> None:
    world = build(settings, engine)
    body = listing_submission(
        world.licence, world.resource, rules=[{"field": "age", "action": "keep"}, {"field": "patient_name"}]
    )
    report = as_party(world, "operator", "POST", f"{REVIEWS}/check", body)
    assert report.status_code == 200, report.text
    assert report.json()["passed"] is False
    assert {c["code"] for c in report.json()["checks"] if not c["passed"]} == {"direct_identifiers_protected", "k_anonymity"}
    clean = as_party(world, "operator", "POST", f"{REVIEWS}/check", listing_submission(world.licence, world.resource)).json()
    assert clean["passed"] is True
    assert clean["measured_k"] == 10
    nothing_stored(world)


def test_the_reviewer_rejects_with_a_reason(settings: Settings, engine: Engine) -> None:
    world = build(settings, engine)
    review = submit(world).json()
    blank = as_party(world, "owner", "POST", f"{REVIEWS}/{review['id']}/reject", {"reason": "   "})
    assert_problem(blank, 400, "invalid_input")
    rejected = as_party(
        world, "owner", "POST", f"{REVIEWS}/{review['id']}/reject", {"reason": "Diagnosis too detailed for api mode."}
    )
    assert rejected.status_code == 200, rejected.text
    assert rejected.json()["status"] == "rejected"
    assert rejected.json()["decision_reason"] == "Diagnosis too detailed for api mode."
    assert [e["type"] for e in ledger_events(engine, "listing.")][-1] == "listing.rejected"
    # Back to draft: the operator may submit the product again.
    again = submit(world, product_ref=review["product_ref"])
    assert again.status_code == 201
    assert again.json()["product_ref"] == review["product_ref"]


def test_refused_transitions_are_409_and_change_nothing(settings: Settings, engine: Engine) -> None:
    world = build(settings, engine)
    first = submit(world, product_ref="product-1").json()
    assert_problem(submit(world, product_ref="product-1"), 409, "review_already_pending")
    as_party(world, "owner", "POST", f"{REVIEWS}/{first['id']}/approve", {"reason": "ok"})
    before = len(ledger_events(engine))
    for action in ("approve", "reject"):
        assert_problem(
            as_party(world, "owner", "POST", f"{REVIEWS}/{first['id']}/{action}", {"reason": "again"}), 409, "review_not_pending"
        )
    second = submit(world).json()
    as_party(world, "owner", "POST", f"{REVIEWS}/{second['id']}/reject", {"reason": "no"})
    for action in ("approve", "reject"):
        assert_problem(
            as_party(world, "owner", "POST", f"{REVIEWS}/{second['id']}/{action}", {"reason": "again"}), 409, "review_not_pending"
        )
    assert len(ledger_events(engine)) == before + 3  # the second submission (2 events) and its rejection only
    assert as_party(world, "owner", "GET", f"{REVIEWS}/{first['id']}").json()["decision_reason"] == "ok"


def test_approval_needs_the_licence_still_in_force(settings: Settings, engine: Engine) -> None:
    world = build(settings, engine)
    review = submit(world).json()
    with Session(engine) as session:
        licence = session.get(Licence, world.licence.id)
        assert licence is not None
        licence.status = LicenceStatus.suspended
        session.add(licence)
        session.commit()
    assert_problem(
        as_party(world, "owner", "POST", f"{REVIEWS}/{review['id']}/approve", {"reason": "ok"}), 409, "licence_not_in_force"
    )
    assert as_party(world, "owner", "GET", f"{REVIEWS}/{review['id']}").json()["status"] == "pending"


def test_approval_rechecks_the_current_contents(settings: Settings, engine: Engine) -> None:
    world = build(settings, engine)
    review = submit(world).json()
    # A new version of the contents with only 3 people per group: k drops below the licence's 5.
    location = f"resources/{world.resource.id}/v2.parquet"
    write_parquet(settings.resolved_data_dir / location, VISIT_FIELDS, visit_rows(per_group=3))
    with Session(engine) as session:
        session.add(
            ResourceVersion(
                resource_id=world.resource.id,
                version=2,
                location=location,
                source_format="parquet",
                row_count=18,
                byte_size=1,
                content_hash="0" * 64,
            )
        )
        resource = session.get(DataResource, world.resource.id)
        assert resource is not None
        resource.current_version = 2
        session.add(resource)
        session.commit()
    body = assert_problem(
        as_party(world, "owner", "POST", f"{REVIEWS}/{review['id']}/approve", {"reason": "ok"}),
        409,
        "listing_checks_no_longer_pass",
    )
    assert body["failed"] == ["k_anonymity"]
    assert body["measured_k"] == 3
    assert as_party(world, "owner", "GET", f"{REVIEWS}/{review['id']}").json()["status"] == "pending"


def test_each_party_sees_only_what_it_may(settings: Settings, engine: Engine) -> None:
    world = build(settings, engine)
    review = submit(world).json()
    path = f"{REVIEWS}/{review['id']}"
    # Another operator: the licence and the review do not exist for it.
    other = as_party(world, "operator_b", "POST", REVIEWS, listing_submission(world.licence, world.resource))
    assert_problem(other, 404, "licence_not_found")
    assert_problem(
        as_party(world, "operator_b", "POST", f"{REVIEWS}/check", listing_submission(world.licence, world.resource)),
        404,
        "licence_not_found",
    )
    assert_problem(as_party(world, "operator_b", "GET", path), 404, "review_not_found")
    assert as_party(world, "operator_b", "GET", REVIEWS).json() == {"items": [], "total": 0}
    # Another owner neither sees nor decides it.
    assert_problem(as_party(world, "owner_b", "GET", path), 404, "review_not_found")
    assert_problem(as_party(world, "owner_b", "POST", f"{path}/approve", {"reason": "mine?"}), 404, "review_not_found")
    assert as_party(world, "owner_b", "GET", REVIEWS).json()["total"] == 0
    # Regulators read everything (auditors only within an engagement: tests/licensing/test_auditor_scope.py);
    # buyers nothing.
    assert_problem(as_party(world, "auditor", "GET", REVIEWS), 403, "outside_engagement")
    for party in ("regulator", "owner", "operator"):
        assert as_party(world, party, "GET", path).status_code == 200, party
        assert as_party(world, party, "GET", REVIEWS).json()["total"] == 1, party
    assert_problem(as_party(world, "buyer", "GET", REVIEWS), 403, "party_not_allowed")
    assert_problem(as_party(world, "operator", "POST", f"{path}/approve", {"reason": "self"}), 403, "party_not_allowed")
    assert as_party(world, "owner", "GET", f"{REVIEWS}?status=approved").json()["total"] == 0
    assert as_party(world, "owner", "GET", f"{REVIEWS}?licence_id={world.licence.id}").json()["total"] == 1
    assert row_counts(engine, "listing_review") == {"listing_review": 1}
    assert as_party(world, "owner", "GET", path).json()["status"] == "pending"


def test_malformed_submissions_are_400(settings: Settings, engine: Engine) -> None:
    world = build(settings, engine)
    for changes in (
        {"plans": [{"type": "monthly", "price": "-1"}]},
        {"mode": "carrier_pigeon"},
        {"rules": [{"field": "age", "action": "shred"}]},
    ):
        assert_problem(submit(world, **changes), 400, "invalid_input")
    unknown = assert_problem(submit(world, rules=[*clean_visit_rules(), {"field": "ghost"}]), 422, "listing_checks_failed")
    assert unknown["failed"] == ["masking_rules_valid", "direct_identifiers_protected", "k_anonymity"]
    nothing_stored(world)


def test_a_resource_without_contents_cannot_be_listed(settings: Settings, engine: Engine) -> None:
    world = build(settings, engine)
    empty = make_resource(engine, world.owner, fields=VISIT_FIELDS)
    licence = make_licence(engine, world.owner, world.operator, [empty])
    body = assert_problem(
        as_party(world, "operator", "POST", REVIEWS, listing_submission(licence, empty)), 422, "listing_checks_failed"
    )
    assert "has no contents yet" in next(c for c in body["checks"] if c["code"] == "k_anonymity")["explanation"]
