"""The invoice path: checkout issues a numbered invoice, the operator records the bank transfer, the subscription
becomes active with its entitlement in the same transaction, and the receipt proves the payment is in the ledger.
Every refusal changes nothing."""

from __future__ import annotations

import base64
from datetime import timedelta
from typing import Any

from litestar.testing import TestClient
from sqlalchemy import Engine, text

from billing.models import Invoice, InvoiceStatus, Payment
from marketplace.core.types import utcnow
from marketplace.subscriptions.models import SubscriptionStatus
from supervision import merkle
from tests.billing.support import TABLES, act, all_of, checkout, make_billing_shop, pay, stored
from tests.helpers import assert_problem
from tests.licensing.factories import ledger_events, row_counts
from tests.marketplace.factories import make_qualification, make_subscription
from tests.marketplace.subscriptions.support import stored_entitlement, stored_subscription


def _leaf_input(engine: Engine, index: int) -> bytes:
    with engine.connect() as conn:
        return str(
            conn.execute(text("SELECT leaf_input FROM ledger_entry WHERE leaf_index = :i"), {"i": index}).scalar_one()
        ).encode()


def test_checkout_issues_one_numbered_invoice(client: TestClient[Any], engine: Engine) -> None:
    billing = make_billing_shop(engine)
    invoice = checkout(client, billing)
    assert invoice["number"] == f"INV-{utcnow().year}-000001"
    assert invoice["status"] == "open"
    assert invoice["gateway"] == "invoice"
    assert invoice["kind"] == "subscription"
    assert invoice["amount"] == "1000.00"
    assert invoice["currency"] == "CNY"
    assert [line["amount"] for line in invoice["lines"]] == ["1000.00"]
    assert billing.pending.number in invoice["lines"][0]["description"]
    assert billing.pending.number in invoice["lines"][0]["description_zh"]
    assert invoice["ledger_index"] is not None
    # Asking again answers the same invoice; nothing new is issued.
    assert checkout(client, billing)["id"] == invoice["id"]
    assert len(all_of(engine, Invoice)) == 1
    issued = ledger_events(engine, "invoice.issued")
    assert len(issued) == 1
    assert issued[0]["payload"]["amount"] == "1000.00"
    assert issued[0]["index"] == invoice["ledger_index"]
    assert stored_subscription(engine, billing.pending.id).status is SubscriptionStatus.pending_payment


def test_a_recorded_transfer_activates_the_subscription_in_one_transaction(client: TestClient[Any], engine: Engine) -> None:
    billing = make_billing_shop(engine)
    invoice = checkout(client, billing)
    answer = pay(client, billing, invoice)
    assert answer.status_code == 201, answer.text
    payment = answer.json()
    assert payment["amount"] == "1000.00"
    assert payment["refunded"] == "0.00"
    assert payment["reference"] == "BOC-20261203-0001"
    subscription = stored_subscription(engine, billing.pending.id)
    assert subscription.status is SubscriptionStatus.active
    entitlement = stored_entitlement(engine, billing.pending.id)
    assert entitlement is not None
    assert entitlement.ended_at is None
    # A monthly plan: one calendar month from the payment.
    assert timedelta(days=27) < entitlement.valid_until - utcnow() <= timedelta(days=31)
    paid = stored(engine, Invoice, invoice["id"])
    assert paid.status is InvoiceStatus.paid
    assert paid.paid_at is not None
    types = [e["type"] for e in ledger_events(engine)]
    received_at = types.index("payment.received")
    assert types.index("subscription.activated") < received_at
    assert "entitlement.granted" in types
    event = ledger_events(engine, "payment.received")[0]
    assert event["index"] == payment["ledger_index"]
    assert event["payload"]["amount"] == "1000.00"
    assert event["subjects"]["invoice"] == invoice["id"]
    assert set(event["orgs"]) == {str(billing.shop.buyer_b.id), str(billing.operator.id), str(billing.shop.owner.id)}


def test_the_receipt_carries_a_verifiable_inclusion_proof(client: TestClient[Any], engine: Engine) -> None:
    billing = make_billing_shop(engine)
    invoice = checkout(client, billing)
    payment = pay(client, billing, invoice).json()
    act(client, billing, "buyer_b")
    answer = client.get(f"/api/billing/receipts/{payment['id']}")
    assert answer.status_code == 200, answer.text
    receipt = answer.json()
    assert receipt["invoice_number"] == invoice["number"]
    assert receipt["ledger_index"] == payment["ledger_index"]
    assert receipt["proof_against"] == "current_tree"
    leaf = next(e for e in ledger_events(engine) if e["index"] == receipt["ledger_index"])
    assert leaf["type"] == "payment.received"
    merkle.verify_inclusion(
        receipt["ledger_index"],
        receipt["tree_size"],
        merkle.leaf_hash(_leaf_input(engine, receipt["ledger_index"])),
        [base64.b64decode(h) for h in receipt["inclusion_proof"]],
        base64.b64decode(receipt["root_hash"]),
    )


def test_wrong_amounts_and_repeated_payments_change_nothing(client: TestClient[Any], engine: Engine) -> None:
    billing = make_billing_shop(engine)
    invoice = checkout(client, billing)
    before = row_counts(engine, *TABLES)
    headers = act(client, billing, "operator")
    url = f"/api/billing/invoices/{invoice['id']}/payments"
    for body, status, code in (
        ({"amount": "999.99", "reference": "R1"}, 400, "amount_mismatch"),
        ({"amount": "1000.001", "reference": "R1"}, 400, "invalid_amount"),
        ({"amount": "-1000.00", "reference": "R1"}, 400, "invalid_input"),
        ({"amount": "1000.00", "reference": ""}, 400, "invalid_input"),
        (
            {"amount": "1000.00", "reference": "R1", "received_on": (utcnow() + timedelta(days=2)).date().isoformat()},
            400,
            "received_in_future",
        ),
        ({"amount": "1000.00", "reference": "R1", "extra": 1}, 400, "invalid_input"),
    ):
        assert_problem(client.post(url, json=body, headers=headers), status, code)
    assert row_counts(engine, *TABLES) == before
    assert pay(client, billing, invoice).status_code == 201
    after_payment = row_counts(engine, *TABLES)
    assert_problem(pay(client, billing, invoice, reference="OTHER"), 409, "invoice_not_payable")
    assert row_counts(engine, *TABLES) == after_payment
    assert len(all_of(engine, Payment)) == 1


def test_a_bank_reference_is_recorded_once(client: TestClient[Any], engine: Engine) -> None:
    billing = make_billing_shop(engine)
    make_qualification(engine, billing.shop.buyer, billing.operator.id)
    second, _ = make_subscription(
        engine, billing.shop.buyer, billing.shop.product, billing.plan, status=SubscriptionStatus.pending_payment
    )
    first_invoice = checkout(client, billing)
    headers = act(client, billing, "buyer")
    second_invoice = client.post("/api/billing/checkout", json={"subscription_id": str(second.id)}, headers=headers).json()[
        "invoice"
    ]
    assert second_invoice["number"] != first_invoice["number"]
    assert pay(client, billing, first_invoice, reference="SAME-REF").status_code == 201
    before = row_counts(engine, *TABLES)
    assert_problem(pay(client, billing, second_invoice, reference="SAME-REF"), 409, "payment_reference_used")
    assert row_counts(engine, *TABLES) == before
    assert stored_subscription(engine, second.id).status is SubscriptionStatus.pending_payment


def test_checkout_refusals(client: TestClient[Any], engine: Engine) -> None:
    billing = make_billing_shop(engine)
    before = row_counts(engine, *TABLES)
    # Another buyer's subscription is not found; an active one is not payable.
    headers = act(client, billing, "buyer")
    assert_problem(
        client.post("/api/billing/checkout", json={"subscription_id": str(billing.pending.id)}, headers=headers),
        404,
        "subscription_not_found",
    )
    assert row_counts(engine, *TABLES) == before
    invoice = checkout(client, billing)
    pay(client, billing, invoice)
    headers = act(client, billing, "buyer_b")
    assert_problem(
        client.post("/api/billing/checkout", json={"subscription_id": str(billing.pending.id)}, headers=headers),
        409,
        "subscription_not_payable",
    )
    assert_problem(client.post("/api/billing/checkout", json={"subscription_id": "nope"}, headers=headers), 400, "invalid_input")
    assert_problem(
        client.post(
            "/api/billing/checkout", json={"subscription_id": str(billing.pending.id), "method": "cash"}, headers=headers
        ),
        400,
        "invalid_input",
    )


def test_invoices_are_scoped_to_each_party(client: TestClient[Any], engine: Engine) -> None:
    billing = make_billing_shop(engine)
    invoice = checkout(client, billing)
    seen = {}
    for party in ("buyer", "buyer_b", "operator", "other_operator", "owner", "regulator"):
        act(client, billing, party)
        answer = client.get("/api/billing/invoices")
        assert answer.status_code == 200, answer.text
        seen[party] = [i["id"] for i in answer.json()["items"]]
        one = client.get(f"/api/billing/invoices/{invoice['id']}")
        assert one.status_code == (200 if seen[party] else 404), (party, one.text)
    assert seen == {
        "buyer": [],
        "buyer_b": [invoice["id"]],
        "operator": [invoice["id"]],
        "other_operator": [],
        "owner": [invoice["id"]],
        "regulator": [invoice["id"]],
    }


def test_only_the_operators_people_record_transfers(client: TestClient[Any], engine: Engine) -> None:
    billing = make_billing_shop(engine)
    invoice = checkout(client, billing)
    before = row_counts(engine, *TABLES)
    for party, status, code in (
        ("buyer_b", 403, "party_not_allowed"),
        ("owner", 403, "party_not_allowed"),
        ("regulator", 403, "read_only_party"),
        ("other_operator", 404, "invoice_not_found"),
    ):
        headers = act(client, billing, party)
        answer = client.post(
            f"/api/billing/invoices/{invoice['id']}/payments", json={"amount": "1000.00", "reference": "X"}, headers=headers
        )
        assert answer.status_code == status, (party, answer.text)
        assert answer.json()["code"] == code, (party, answer.text)
    assert row_counts(engine, *TABLES) == before
    # A member of the operator may record one.
    assert pay(client, billing, invoice).status_code == 201
