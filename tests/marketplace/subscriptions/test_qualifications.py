"""Buyer qualification: a buyer submits its business licence (a valid unified social credit code) to an operator,
which approves or rejects it with a reason; a rejected buyer may submit again, never while one is submitted or
approved; reads are scoped; events carry no contact details and no licence number in clear."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from litestar.testing import TestClient
from sqlalchemy import Engine

from marketplace.core.errors import InvalidInput
from marketplace.core.principal import OrgKind
from marketplace.subscriptions.models import QualificationStatus
from marketplace.subscriptions.services.qualifications import normalise_credit_code, qualification_status
from tests.factories import make_login_session, make_org, make_user
from tests.helpers import assert_problem, use_session
from tests.licensing.factories import ledger_events, row_counts
from tests.marketplace.subscriptions.support import act, credit_code, make_shop, qualification_body
from tests.supervision.ledger_helpers import run

BASE = "/api/buyers/qualifications"
TABLES = ("buyer_qualification", "ledger_entry")


@pytest.mark.parametrize("code", ["91350100M000100Y43", "91110000600037341L", "91440300708461136T", "914403001922038216"])
def test_published_credit_codes_are_valid(code: str) -> None:
    assert normalise_credit_code(code) == code
    assert normalise_credit_code(code.lower()) == code


@pytest.mark.parametrize(
    ("code", "why"),
    [
        ("91350100M000100Y44", "check character"),
        ("91350100M000100Y4", "17 characters"),
        ("91350100M000100Y433", "19 characters"),
        ("91350100M00O100Y43", "letter O"),
        ("91A50100M000100Y43", "division not digits"),
        ("", "empty"),
    ],
)
def test_bad_credit_codes_are_refused(code: str, why: str) -> None:
    with pytest.raises(InvalidInput) as raised:
        normalise_credit_code(code)
    assert raised.value.code == "business_licence_number_invalid", why


def test_submit_approve_and_the_buyer_qualifies(client: TestClient[Any], engine: Engine) -> None:
    shop = make_shop(engine)
    headers = act(client, shop, "buyer")
    submitted = client.post(
        BASE, json=qualification_body(shop.operator.id, business_licence_number=credit_code().lower()), headers=headers
    )
    assert submitted.status_code == 201, submitted.text
    body = submitted.json()
    assert body["status"] == "submitted"
    assert body["business_licence_number"] == credit_code()
    assert body["buyer_org_id"] == str(shop.buyer.id)
    qid = body["id"]
    assert client.get(f"{BASE}/{qid}").json()["status"] == "submitted"

    headers = act(client, shop, "operator")
    queue = client.get(f"{BASE}?status=submitted").json()
    assert [q["id"] for q in queue["items"]] == [qid]
    assert queue["total"] == 1
    approved = client.post(f"{BASE}/{qid}/approve", json={}, headers=headers)
    assert approved.status_code == 200, approved.text
    assert approved.json()["status"] == "approved"
    assert approved.json()["decided_at"]
    status = run(
        str(engine.url.render_as_string(hide_password=False)), lambda s: qualification_status(s, shop.buyer.id, shop.operator.id)
    )
    assert status is QualificationStatus.approved

    events = ledger_events(engine, "qualification.")
    assert [e["type"] for e in events] == ["qualification.submitted", "qualification.approved"]
    text = str(events)
    for personal in ("li.ming@", "5555", "Li Ming", credit_code()):
        assert personal not in text
    assert events[0]["payload"]["licence_number_sha256"] == hashlib.sha256(credit_code().encode()).hexdigest()
    assert events[0]["payload"]["industry"] == "finance"
    assert sorted(events[0]["orgs"]) == sorted([str(shop.buyer.id), str(shop.operator.id)])


def test_reject_needs_a_reason_and_the_buyer_may_submit_again(client: TestClient[Any], engine: Engine) -> None:
    shop = make_shop(engine)
    headers = act(client, shop, "buyer")
    qid = client.post(BASE, json=qualification_body(shop.operator.id), headers=headers).json()["id"]
    # While submitted: a second submission is refused.
    again = client.post(BASE, json=qualification_body(shop.operator.id), headers=headers)
    assert_problem(again, 409, "qualification_exists")

    headers = act(client, shop, "operator")
    before = row_counts(engine, *TABLES)
    for blank in ({"reason": "   "}, {}):
        assert_problem(client.post(f"{BASE}/{qid}/reject", json=blank, headers=headers), 400, "reason_required")
    assert row_counts(engine, *TABLES) == before
    rejected = client.post(f"{BASE}/{qid}/reject", json={"reason": "The licence number does not match the name"}, headers=headers)
    assert rejected.status_code == 200
    assert rejected.json()["status"] == "rejected"
    assert rejected.json()["decision_reason"] == "The licence number does not match the name"
    # Decided already: 409.
    assert_problem(client.post(f"{BASE}/{qid}/approve", json={}, headers=headers), 409, "qualification_not_submitted")

    headers = act(client, shop, "buyer")
    resubmitted = client.post(BASE, json=qualification_body(shop.operator.id, industry="logistics"), headers=headers)
    assert resubmitted.status_code == 201
    listed = client.get(BASE).json()
    assert [q["status"] for q in listed["items"]] == ["submitted", "rejected"]
    events = ledger_events(engine, "qualification.")
    assert [e["type"] for e in events] == ["qualification.submitted", "qualification.rejected", "qualification.submitted"]
    assert events[1]["payload"]["reason"] == "The licence number does not match the name"
    assert events[2]["payload"]["resubmission"] is True


def test_approved_buyer_cannot_submit_again(client: TestClient[Any], engine: Engine) -> None:
    shop = make_shop(engine)
    headers = act(client, shop, "buyer")
    qid = client.post(BASE, json=qualification_body(shop.operator.id), headers=headers).json()["id"]
    client.post(f"{BASE}/{qid}/approve", json={"reason": "Checked"}, headers=act(client, shop, "operator"))
    headers = act(client, shop, "buyer")
    before = row_counts(engine, *TABLES)
    body = assert_problem(
        client.post(BASE, json=qualification_body(shop.operator.id), headers=headers), 409, "qualification_exists"
    )
    assert body["qualification_status"] == "approved"
    assert row_counts(engine, *TABLES) == before


@pytest.mark.parametrize(
    ("changes", "status", "code"),
    [
        ({"business_licence_number": "91350100M000100Y44"}, 400, "business_licence_number_invalid"),
        ({"business_licence_number": "NOT-A-CODE"}, 400, "business_licence_number_invalid"),
        ({"contact_email": "not an email"}, 400, "invalid_input"),
        ({"industry": ""}, 400, "invalid_input"),
        ({"unexpected": "field"}, 400, "invalid_input"),
    ],
)
def test_bad_submissions_are_refused_and_write_nothing(
    client: TestClient[Any], engine: Engine, changes: dict[str, Any], status: int, code: str
) -> None:
    shop = make_shop(engine)
    headers = act(client, shop, "buyer")
    before = row_counts(engine, *TABLES)
    assert_problem(client.post(BASE, json=qualification_body(shop.operator.id, **changes), headers=headers), status, code)
    assert row_counts(engine, *TABLES) == before


def test_submission_to_something_not_an_operator_is_404(client: TestClient[Any], engine: Engine) -> None:
    shop = make_shop(engine)
    headers = act(client, shop, "buyer")
    for target in (shop.owner.id, shop.buyer_b.id):
        assert_problem(client.post(BASE, json=qualification_body(target), headers=headers), 404, "operator_not_found")
    assert row_counts(engine, "buyer_qualification") == {"buyer_qualification": 0}


def test_reads_are_scoped(client: TestClient[Any], engine: Engine) -> None:
    shop = make_shop(engine)
    other_operator = make_org(engine, OrgKind.operator)
    other_operator_session = make_login_session(engine, make_user(engine, other_operator))
    a_id = client.post(BASE, json=qualification_body(shop.operator.id), headers=act(client, shop, "buyer")).json()["id"]
    b_id = client.post(BASE, json=qualification_body(other_operator.id), headers=act(client, shop, "buyer_b")).json()["id"]

    act(client, shop, "buyer")
    assert [q["id"] for q in client.get(BASE).json()["items"]] == [a_id]
    assert_problem(client.get(f"{BASE}/{b_id}"), 404, "qualification_not_found")
    act(client, shop, "operator")
    assert [q["id"] for q in client.get(BASE).json()["items"]] == [a_id]
    assert_problem(client.get(f"{BASE}/{b_id}"), 404, "qualification_not_found")
    # Another operator can neither see nor decide this operator's qualification.
    headers = use_session(client, other_operator_session)
    assert_problem(client.post(f"{BASE}/{a_id}/approve", json={}, headers=headers), 404, "qualification_not_found")
    regulator = make_user(engine, make_org(engine, OrgKind.regulator))
    use_session(client, make_login_session(engine, regulator))
    assert {q["id"] for q in client.get(BASE).json()["items"]} == {a_id, b_id}
    act(client, shop, "owner")
    assert_problem(client.get(BASE), 403, "party_not_allowed")
