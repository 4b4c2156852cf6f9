"""Subscriptions through the API: every lifecycle step (free plan active at once, paid plan awaiting payment, on-request
and reduced purposes awaiting the operator's approval, proof upload and download, cancel, revoke), the entitlement
each active subscription yields, and the events each step records."""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal
from typing import Any

from litestar.testing import TestClient
from sqlalchemy import Engine

from licensing.models import PlanType, Purpose
from marketplace.catalog.models import PlanAccess, PlanVisibility
from marketplace.core.types import utcnow
from marketplace.subscriptions.models import QualificationStatus, SubscriptionStatus
from marketplace.subscriptions.services.subscriptions import add_month
from tests.helpers import assert_problem
from tests.licensing.factories import ledger_events, row_counts
from tests.marketplace.factories import make_plan, make_qualification
from tests.marketplace.subscriptions.support import (
    TABLES,
    act,
    make_shop,
    stored_entitlement,
    stored_subscription,
    subscribe,
)

BASE = "/api/subscriptions"
PDF = b"%PDF-1.7\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + bytes(range(40))


def _upload(
    client: TestClient[Any], headers: dict[str, str], subscription_id: str, content: bytes, name: str = "proof.pdf"
) -> Any:
    return client.post(
        f"{BASE}/{subscription_id}/proof", files={"file": (name, content, "application/octet-stream")}, headers=headers
    )


def test_agreement_is_public_and_bilingual(client: TestClient[Any]) -> None:
    body = client.get(f"{BASE}/agreement").json()
    assert body["version"] == "2026-11"
    assert body["effective_on"] == "2026-11-01"
    assert body["title_zh"] == "数据使用协议"
    assert "purpose" in body["text"]
    assert "用途" in body["text_zh"]


def test_free_plan_is_active_at_once_with_its_entitlement(client: TestClient[Any], engine: Engine) -> None:
    shop = make_shop(engine)
    plan = make_plan(engine, shop.product, type=PlanType.free, quota_calls=1000, quota_rows=50_000, term_days=90)
    headers = act(client, shop, "buyer")
    before = utcnow()
    response = subscribe(client, headers, plan.id)
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["status"] == "active"
    assert body["number"] == f"SUB-{before.year}-000001"
    assert body["price"] == "0.00"
    assert body["agreement_version"] == "2026-11"
    entitlement = body["entitlement"]
    assert entitlement["mode"] == "api"
    assert entitlement["fields"] == ["district", "cost"]  # id_number is dropped
    assert entitlement["quota_calls"] == 1000
    assert entitlement["quota_rows"] == 50_000
    stored = stored_entitlement(engine, body["id"])
    assert stored is not None
    assert before + timedelta(days=90) <= stored.valid_until <= utcnow() + timedelta(days=90)
    assert stored.ended_at is None
    assert stored_subscription(engine, body["id"]).valid_until == stored.valid_until

    events = ledger_events(engine, "subscription.") + ledger_events(engine, "entitlement.")
    assert [e["type"] for e in events] == ["subscription.created", "subscription.activated", "entitlement.granted"]
    created = events[0]
    assert sorted(created["orgs"]) == sorted(str(o) for o in (shop.buyer.id, shop.operator.id, shop.owner.id))
    assert created["subjects"] == {
        "subscription": body["id"],
        "product": str(shop.product.id),
        "plan": str(plan.id),
        "licence": str(shop.licence.id),
    }
    assert created["payload"]["plan_type"] == "free"
    assert created["payload"]["purpose"] == "credit_assessment"
    assert "Scoring small business loans" not in json.dumps(events)  # the buyer's words stay out of the ledger
    # A second subscription gets the next number (after the first ended).
    client.post(f"{BASE}/{body['id']}/cancel", headers=headers)
    assert subscribe(client, headers, plan.id).json()["number"] == f"SUB-{before.year}-000002"


def test_paid_plan_awaits_payment_without_entitlement(client: TestClient[Any], engine: Engine) -> None:
    shop = make_shop(engine)
    make_qualification(engine, shop.buyer, shop.operator.id)
    plan = make_plan(engine, shop.product, type=PlanType.monthly, price="1200.00")
    response = subscribe(client, act(client, shop, "buyer"), plan.id)
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["status"] == "pending_payment"
    assert body["price"] == "1200.00"
    assert body["entitlement"] is None
    assert stored_entitlement(engine, body["id"]) is None
    assert [e["type"] for e in ledger_events(engine, "subscription.")] == ["subscription.created"]
    assert ledger_events(engine, "entitlement.") == []


def test_on_request_plan_awaits_approval_then_the_operator_approves(client: TestClient[Any], engine: Engine) -> None:
    shop = make_shop(engine)
    make_qualification(engine, shop.buyer, shop.operator.id)
    paid = make_plan(engine, shop.product, type=PlanType.one_off, price="3000.00", access=PlanAccess.on_request)
    response = subscribe(client, act(client, shop, "buyer"), paid.id)
    body = response.json()
    assert body["status"] == "awaiting_approval"
    assert body["proof_required"] is False
    headers = act(client, shop, "operator")
    assert [s["id"] for s in client.get(f"{BASE}?status=awaiting_approval").json()["items"]] == [body["id"]]
    approved = client.post(f"{BASE}/{body['id']}/approve", headers=headers)
    assert approved.status_code == 200, approved.text
    assert approved.json()["status"] == "pending_payment"
    assert approved.json()["entitlement"] is None
    assert [e["type"] for e in ledger_events(engine, "subscription.")] == ["subscription.requested", "subscription.approved"]
    # Approving again: it no longer awaits approval.
    assert_problem(client.post(f"{BASE}/{body['id']}/approve", headers=headers), 409, "subscription_not_awaiting_approval")


def test_free_on_request_plan_becomes_active_on_approval(client: TestClient[Any], engine: Engine) -> None:
    shop = make_shop(engine)
    plan = make_plan(engine, shop.product, type=PlanType.free, access=PlanAccess.on_request)
    sid = subscribe(client, act(client, shop, "buyer"), plan.id).json()["id"]
    approved = client.post(
        f"{BASE}/{sid}/approve", json={"reason": "Known research partner"}, headers=act(client, shop, "operator")
    )
    assert approved.json()["status"] == "active"
    assert approved.json()["entitlement"]["fields"] == ["district", "cost"]
    assert [e["type"] for e in ledger_events(engine, "subscription.")] == [
        "subscription.requested",
        "subscription.approved",
        "subscription.activated",
    ]


def test_public_welfare_with_proof_is_approved_and_active_for_free(client: TestClient[Any], engine: Engine) -> None:
    shop = make_shop(engine)  # public welfare: 100 % reduction; the buyer is not qualified (the price is zero)
    plan = make_plan(engine, shop.product, type=PlanType.monthly, price="1000.00")
    buyer_headers = act(client, shop, "buyer")
    body = subscribe(client, buyer_headers, plan.id, Purpose.public_welfare, purpose_note="Free clinic planning").json()
    assert body["status"] == "awaiting_approval"
    assert body["reduction_percent"] == 100
    assert body["price"] == "0.00"
    assert body["proof_required"] is True
    sid = body["id"]

    # The operator cannot approve before the proof is there.
    operator_headers = act(client, shop, "operator")
    before = row_counts(engine, *TABLES)
    assert_problem(client.post(f"{BASE}/{sid}/approve", headers=operator_headers), 409, "proof_missing")
    assert row_counts(engine, *TABLES) == before

    buyer_headers = act(client, shop, "buyer")
    uploaded = _upload(client, buyer_headers, sid, PDF, name="../../etc/charity registration.pdf")
    assert uploaded.status_code == 200, uploaded.text
    assert uploaded.json()["proof_name"] == "charity registration.pdf"
    sha = uploaded.json()["proof_sha256"]
    stored = stored_subscription(engine, sid)
    assert stored.proof_location == f"proofs/{sid}/{sha}.pdf"
    downloaded = client.get(f"{BASE}/{sid}/proof")
    assert downloaded.status_code == 200
    assert downloaded.content == PDF
    assert downloaded.headers["content-type"].startswith("application/pdf")

    operator_headers = act(client, shop, "operator")
    assert client.get(f"{BASE}/{sid}/proof").content == PDF
    approved = client.post(f"{BASE}/{sid}/approve", json={"reason": "Registered charity"}, headers=operator_headers)
    assert approved.status_code == 200, approved.text
    assert approved.json()["status"] == "active"
    assert approved.json()["proof_checked"] is True
    assert approved.json()["entitlement"]["mode"] == "api"
    events = ledger_events(engine, "subscription.")
    assert [e["type"] for e in events] == [
        "subscription.requested",
        "subscription.proof_uploaded",
        "subscription.approved",
        "subscription.activated",
    ]
    assert events[1]["payload"]["proof_sha256"] == sha
    assert events[1]["payload"]["proof_bytes"] == len(PDF)
    assert events[0]["payload"]["reduction_percent"] == 100
    assert events[0]["payload"]["plan_price"] == "1000.00"


def test_academic_research_at_half_price_needs_qualification_proof_and_payment(client: TestClient[Any], engine: Engine) -> None:
    shop = make_shop(engine)  # academic research: 50 % reduction
    plan = make_plan(engine, shop.product, type=PlanType.one_off, price="999.99")
    before = row_counts(engine, *TABLES)
    refused = subscribe(client, act(client, shop, "buyer"), plan.id, Purpose.academic_research)
    assert_problem(refused, 403, "qualification_required")
    assert row_counts(engine, *TABLES) == before
    make_qualification(engine, shop.buyer, shop.operator.id)
    headers = act(client, shop, "buyer")
    body = subscribe(client, headers, plan.id, Purpose.academic_research).json()
    assert body["price"] == "500.00"  # 999.99 halved, to the cent (half up)
    assert body["status"] == "awaiting_approval"
    assert _upload(client, headers, body["id"], PNG, name="letter.png").status_code == 200
    approved = client.post(f"{BASE}/{body['id']}/approve", headers=act(client, shop, "operator"))
    assert approved.json()["status"] == "pending_payment"


def test_operator_rejects_a_request_with_a_reason(client: TestClient[Any], engine: Engine) -> None:
    shop = make_shop(engine)
    plan = make_plan(engine, shop.product, type=PlanType.free, access=PlanAccess.on_request)
    sid = subscribe(client, act(client, shop, "buyer"), plan.id).json()["id"]
    headers = act(client, shop, "operator")
    before = row_counts(engine, *TABLES)
    assert_problem(client.post(f"{BASE}/{sid}/reject", json={"reason": " "}, headers=headers), 400, "reason_required")
    assert row_counts(engine, *TABLES) == before
    rejected = client.post(f"{BASE}/{sid}/reject", json={"reason": "Purpose not credible"}, headers=headers)
    assert rejected.json()["status"] == "rejected"
    assert rejected.json()["status_reason"] == "Purpose not credible"
    assert ledger_events(engine, "subscription.rejected")[0]["payload"]["reason"] == "Purpose not credible"
    # A rejected request is not open: the buyer may ask again.
    assert subscribe(client, act(client, shop, "buyer"), plan.id).status_code == 201


def test_cancel_ends_access_at_once(client: TestClient[Any], engine: Engine) -> None:
    shop = make_shop(engine)
    plan = make_plan(engine, shop.product, type=PlanType.free)
    headers = act(client, shop, "buyer")
    sid = subscribe(client, headers, plan.id).json()["id"]
    cancelled = client.post(f"{BASE}/{sid}/cancel", json={"reason": "Project finished"}, headers=headers)
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    entitlement = stored_entitlement(engine, sid)
    assert entitlement is not None
    assert entitlement.ended_at is not None
    assert entitlement.ended_reason == "cancelled"
    assert cancelled.json()["entitlement"]["ended_reason"] == "cancelled"
    assert [e["type"] for e in ledger_events(engine, "entitlement.")] == ["entitlement.granted", "entitlement.ended"]
    before = row_counts(engine, *TABLES)
    assert_problem(client.post(f"{BASE}/{sid}/cancel", headers=headers), 409, "subscription_not_open")
    assert row_counts(engine, *TABLES) == before


def test_cancel_of_a_pending_subscription_needs_no_entitlement(client: TestClient[Any], engine: Engine) -> None:
    shop = make_shop(engine)
    make_qualification(engine, shop.buyer, shop.operator.id)
    plan = make_plan(engine, shop.product, type=PlanType.monthly, price="10.00")
    headers = act(client, shop, "buyer")
    sid = subscribe(client, headers, plan.id).json()["id"]
    assert client.post(f"{BASE}/{sid}/cancel", headers=headers).json()["status"] == "cancelled"
    assert stored_entitlement(engine, sid) is None
    assert ledger_events(engine, "entitlement.") == []


def test_revoke_needs_a_written_reason_and_ends_access(client: TestClient[Any], engine: Engine) -> None:
    shop = make_shop(engine)
    plan = make_plan(engine, shop.product, type=PlanType.free)
    sid = subscribe(client, act(client, shop, "buyer"), plan.id).json()["id"]
    headers = act(client, shop, "operator")
    before = row_counts(engine, *TABLES)
    for body in ({"reason": ""}, {"reason": "   "}, {}):
        assert_problem(client.post(f"{BASE}/{sid}/revoke", json=body, headers=headers), 400, "reason_required")
    assert row_counts(engine, *TABLES) == before
    assert stored_subscription(engine, sid).status is SubscriptionStatus.active
    revoked = client.post(f"{BASE}/{sid}/revoke", json={"reason": "Data resold to a third party"}, headers=headers)
    assert revoked.status_code == 200
    assert revoked.json()["status"] == "revoked"
    assert revoked.json()["status_reason"] == "Data resold to a third party"
    entitlement = stored_entitlement(engine, sid)
    assert entitlement is not None
    assert entitlement.ended_reason == "revoked"
    event = ledger_events(engine, "subscription.revoked")[0]
    assert event["payload"]["reason"] == "Data resold to a third party"
    assert event["payload"]["previous_status"] == "active"
    assert ledger_events(engine, "entitlement.ended")[0]["payload"]["ended_reason"] == "revoked"


def test_private_plan_is_offered_only_to_named_buyers(client: TestClient[Any], engine: Engine) -> None:
    shop = make_shop(engine)
    plan = make_plan(engine, shop.product, type=PlanType.free, visibility=PlanVisibility.private, buyers=[shop.buyer])
    assert_problem(subscribe(client, act(client, shop, "buyer_b"), plan.id), 404, "plan_not_found")
    assert row_counts(engine, "subscription") == {"subscription": 0}
    assert subscribe(client, act(client, shop, "buyer"), plan.id).status_code == 201


def test_metered_plan_entitlement_lasts_a_calendar_month(client: TestClient[Any], engine: Engine) -> None:
    shop = make_shop(engine)
    make_qualification(engine, shop.buyer, shop.operator.id)
    plan = make_plan(
        engine, shop.product, type=PlanType.metered, price="0.00", free_calls=100, per_call_price="0.05", quota_calls=10_000
    )
    before = utcnow()
    body = subscribe(client, act(client, shop, "buyer"), plan.id).json()
    assert body["status"] == "active"  # no monthly fee: usage is billed later
    entitlement = stored_entitlement(engine, body["id"])
    assert entitlement is not None
    assert add_month(before) <= entitlement.valid_until <= add_month(utcnow())
    assert entitlement.quota_calls == 10_000


def test_add_month_keeps_the_day_or_takes_the_last_of_a_shorter_month() -> None:
    start = utcnow().replace(year=2027, month=1, day=31, hour=12)
    assert add_month(start) == start.replace(month=2, day=28)
    assert add_month(start.replace(year=2028)) == start.replace(year=2028, month=2, day=29)
    assert add_month(start.replace(month=12, day=15)) == start.replace(year=2028, month=1, day=15)


def test_prices_are_decimal_strings(client: TestClient[Any], engine: Engine) -> None:
    shop = make_shop(engine, reductions={"credit_assessment": 15})
    make_qualification(engine, shop.buyer, shop.operator.id, status=QualificationStatus.approved)
    plan = make_plan(engine, shop.product, type=PlanType.one_off, price="100.10")
    body = subscribe(client, act(client, shop, "buyer"), plan.id).json()
    # Any reduced purpose needs a proof: credit assessment reduced by 15 % awaits approval.
    assert body["status"] == "awaiting_approval"
    assert body["proof_required"] is True
    assert Decimal(body["price"]) == Decimal("85.09")  # 85.085 rounded half up
    assert isinstance(body["price"], str)
