"""Settlement statements against hand-computed figures: two licences at different fee rates, a refund, a payment
fee, the monthly maximum of a metered plan; draft -> issued -> acknowledged, a closed month refused, reconciliation
mismatches listed, CSV export."""

from __future__ import annotations

import csv
import io
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from litestar.testing import TestClient
from sqlalchemy import Engine
from sqlmodel import Session

from billing.models import Invoice, InvoiceKind, Payment, SettlementStatement, StatementStatus
from billing.services.usage import bill_usage
from licensing.models import Licence, PlanType
from marketplace.app import connect_domains
from marketplace.core.types import utcnow
from marketplace.subscriptions.models import SubscriptionStatus
from tests.billing.support import (
    TABLES,
    BillingShop,
    act,
    add_deliveries,
    all_of,
    earlier_this_month,
    make_billing_shop,
    metered_subscription,
    pay,
)
from tests.conftest import make_settings
from tests.helpers import assert_problem
from tests.licensing.factories import ledger_events, make_licence, make_resource, row_counts
from tests.marketplace.factories import make_plan, make_product, make_qualification, make_subscription
from tests.marketplace.subscriptions.support import FIELDS, RULES, Shop
from tests.supervision.ledger_helpers import run

PERIOD = f"{utcnow().year:04d}-{utcnow().month:02d}"


def _pay_subscription(
    client: TestClient[Any], billing: BillingShop, subscription_id: uuid.UUID, party: str, reference: str
) -> dict[str, Any]:
    headers = act(client, billing, party)
    answer = client.post("/api/billing/checkout", json={"subscription_id": str(subscription_id)}, headers=headers)
    assert answer.status_code == 201, answer.text
    invoice: dict[str, Any] = answer.json()["invoice"]
    paid = pay(client, billing, invoice, reference=reference)
    assert paid.status_code == 201, paid.text
    payment: dict[str, Any] = paid.json()
    return payment


def _month(client: TestClient[Any], engine: Engine) -> tuple[BillingShop, dict[str, Any]]:
    """The month of the hand-computed example (all amounts in CNY):

    licence A (fee rate 0.12): 1,000.00 by transfer and 250.00 through Stripe (fee 7.55); 50.00 refunded.
        gross 1,250.00, refunds 50.00, fee base 1,200.00 -> franchise fee 144.00
    licence B (fee rate 0.085): 333.33, and a metered plan's usage at its monthly maximum: 6,500 calls, 1,000 free,
        0.05 a call, at most 300.00 with the 100.00 fee -> 200.00.
        gross 533.33 -> 533.33 * 0.085 = 45.33305 -> franchise fee 45.33
    total: gross 1,783.33, refunds 50.00, payment fees 7.55, franchise fee 189.33, net 1,536.45
    """
    billing = make_billing_shop(engine)
    shop = billing.shop
    payments = {"a_transfer": _pay_subscription(client, billing, billing.pending.id, "buyer_b", "A-1")}
    stripe_plan = make_plan(engine, shop.product, type=PlanType.one_off, price="250.00")
    make_qualification(engine, shop.buyer, shop.operator.id)
    second, _ = make_subscription(engine, shop.buyer, shop.product, stripe_plan, status=SubscriptionStatus.pending_payment)
    payments["a_stripe"] = _pay_subscription(client, billing, second.id, "buyer", "A-2")
    with Session(engine) as session:
        stored = session.get(Payment, uuid.UUID(payments["a_stripe"]["id"]))
        assert stored is not None
        stored.fee_minor = 755
        session.add(stored)
        session.commit()
    headers = act(client, billing, "operator")
    refund = client.post(
        f"/api/billing/payments/{payments['a_transfer']['id']}/refunds",
        json={"amount": "50.00", "reason": "Late data"},
        headers=headers,
    )
    assert refund.status_code == 201, refund.text
    resource_b = make_resource(engine, shop.owner, fields=FIELDS)
    licence_b = make_licence(engine, shop.owner, shop.operator, [resource_b])
    with Session(engine) as session:
        stored_licence = session.get(Licence, licence_b.id)
        assert stored_licence is not None
        stored_licence.fee_rate = "0.085"
        session.add(stored_licence)
        session.commit()
    product_b = make_product(engine, licence_b, resource_b, rules=RULES)
    plan = make_plan(engine, product_b, type=PlanType.monthly, price="333.33")
    subscription, _ = make_subscription(engine, shop.buyer, product_b, plan, status=SubscriptionStatus.pending_payment)
    payments["B-1"] = _pay_subscription(client, billing, subscription.id, "buyer", "B-1")
    # A metered subscription on licence B uses 6,500 calls this month: past the monthly maximum, so its usage
    # invoice (issued once the month is over) is 200.00; the buyer pays it by transfer at once.
    metered, entitlement = metered_subscription(engine, Shop(**{**shop.__dict__, "product": product_b}), buyer=shop.buyer_b)
    now = utcnow()
    add_deliveries(engine, metered, entitlement, 6500, earlier_this_month(now))
    next_month = (datetime(now.year, now.month, 1, tzinfo=UTC) + timedelta(days=32)).replace(day=2)
    settings = make_settings(engine.url.render_as_string(hide_password=False), Path("var"))
    connect_domains()
    run(settings.resolved_database_url, lambda session: bill_usage(session, next_month, settings))
    [usage_invoice] = [i for i in all_of(engine, Invoice) if i.kind is InvoiceKind.usage]
    assert usage_invoice.amount_minor == 20000
    paid = pay(client, billing, {"id": str(usage_invoice.id), "amount": "200.00"}, reference="B-2")
    assert paid.status_code == 201, paid.text
    payments["B-2"] = paid.json()
    return billing, payments


def test_a_month_settles_to_the_hand_computed_figures(client: TestClient[Any], engine: Engine) -> None:
    billing, _payments = _month(client, engine)
    headers = act(client, billing, "operator")
    answer = client.post("/api/billing/settlements/run", json={"period": PERIOD}, headers=headers)
    assert answer.status_code == 200, answer.text
    [statement] = answer.json()["items"]
    assert {
        k: statement[k] for k in ("period", "currency", "gross", "refunds", "payment_fees", "franchise_fee", "net", "status")
    } == {
        "period": PERIOD,
        "currency": "CNY",
        "gross": "1783.33",
        "refunds": "50.00",
        "payment_fees": "7.55",
        "franchise_fee": "189.33",
        "net": "1536.45",
        "status": "draft",
    }
    assert statement["operator_name"] == billing.operator.name
    assert statement["payments"] == 4
    assert statement["refund_count"] == 1
    assert {
        (line["fee_rate"], line["gross"], line["refunds"], line["payment_fees"], line["franchise_fee"])
        for line in statement["lines"]
    } == {
        ("0.12", "1250.00", "50.00", "7.55", "144.00"),
        ("0.085", "533.33", "0.00", "0.00", "45.33"),
    }
    assert statement["mismatches"] == []
    # The same run again computes the same figures and records nothing new.
    events = len(ledger_events(engine, "settlement."))
    again = client.post("/api/billing/settlements/run", json={"period": PERIOD}, headers=headers).json()["items"][0]
    assert again["id"] == statement["id"]
    assert len(ledger_events(engine, "settlement.")) == events
    # CSV: a row per licence and the total.
    exported = client.get(f"/api/billing/settlements/{statement['id']}/csv")
    assert exported.status_code == 200
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert rows[-1]["licence"] == "TOTAL"
    assert (rows[-1]["gross"], rows[-1]["franchise_fee"], rows[-1]["net"]) == ("1783.33", "189.33", "1536.45")
    assert sorted(r["franchise_fee"] for r in rows[:-1]) == ["144.00", "45.33"]


def test_issued_statements_close_the_month_and_the_owner_acknowledges(client: TestClient[Any], engine: Engine) -> None:
    billing = make_billing_shop(engine)
    invoice = (
        act(client, billing, "buyer_b")
        and client.post(
            "/api/billing/checkout", json={"subscription_id": str(billing.pending.id)}, headers=act(client, billing, "buyer_b")
        ).json()["invoice"]
    )
    pay(client, billing, invoice)
    headers = act(client, billing, "operator")
    [statement] = client.post("/api/billing/settlements/run", json={"period": PERIOD}, headers=headers).json()["items"]
    assert (statement["gross"], statement["franchise_fee"], statement["net"]) == ("1000.00", "120.00", "880.00")
    # The owner cannot acknowledge a draft.
    owner = act(client, billing, "owner")
    assert_problem(
        client.post(f"/api/billing/settlements/{statement['id']}/acknowledge", headers=owner), 409, "statement_not_issued"
    )
    headers = act(client, billing, "operator")
    issued = client.post(f"/api/billing/settlements/{statement['id']}/issue", headers=headers)
    assert issued.status_code == 200, issued.text
    assert issued.json()["status"] == "issued"
    before = row_counts(engine, *TABLES)
    assert_problem(client.post("/api/billing/settlements/run", json={"period": PERIOD}, headers=headers), 409, "period_closed")
    assert_problem(client.post(f"/api/billing/settlements/{statement['id']}/issue", headers=headers), 409, "statement_not_draft")
    assert row_counts(engine, *TABLES) == before
    owner = act(client, billing, "owner")
    acknowledged = client.post(f"/api/billing/settlements/{statement['id']}/acknowledge", headers=owner)
    assert acknowledged.status_code == 200, acknowledged.text
    assert acknowledged.json()["status"] == "acknowledged"
    [stored] = all_of(engine, SettlementStatement)
    assert stored.status is StatementStatus.acknowledged
    assert [e["type"] for e in ledger_events(engine, "settlement.")] == [
        "settlement.computed",
        "settlement.issued",
        "settlement.acknowledged",
    ]
    assert ledger_events(engine, "settlement.acknowledged")[0]["payload"]["franchise_fee"] == "120.00"


def test_the_owner_settles_only_its_operators_and_bad_periods_are_refused(client: TestClient[Any], engine: Engine) -> None:
    billing = make_billing_shop(engine)
    owner = act(client, billing, "owner")
    run = client.post(
        "/api/billing/settlements/run", json={"period": PERIOD, "operator_id": str(billing.operator.id)}, headers=owner
    )
    assert run.status_code == 200, run.text
    assert run.json()["items"] == []  # nothing received yet this month: no statement
    assert_problem(client.post("/api/billing/settlements/run", json={"period": PERIOD}, headers=owner), 400, "operator_required")
    assert_problem(
        client.post("/api/billing/settlements/run", json={"period": PERIOD, "operator_id": str(uuid.uuid4())}, headers=owner),
        404,
        "operator_not_found",
    )
    operator = act(client, billing, "operator")
    for period in ("2026-13", "26-01", "2026-1"):
        assert_problem(
            client.post("/api/billing/settlements/run", json={"period": period}, headers=operator), 400, "invalid_input"
        )
    future = f"{utcnow().year + 1:04d}-01"
    assert_problem(client.post("/api/billing/settlements/run", json={"period": future}, headers=operator), 400, "invalid_period")
    assert all_of(engine, SettlementStatement) == []


def test_reconciliation_lists_a_payment_that_does_not_match_its_invoice(client: TestClient[Any], engine: Engine) -> None:
    billing = make_billing_shop(engine)
    invoice = client.post(
        "/api/billing/checkout", json={"subscription_id": str(billing.pending.id)}, headers=act(client, billing, "buyer_b")
    ).json()["invoice"]
    pay(client, billing, invoice)
    with Session(engine) as session:
        stored = session.get(Invoice, uuid.UUID(invoice["id"]))
        assert stored is not None
        stored.amount_minor = 90000  # the record changed behind the platform's back
        session.add(stored)
        session.commit()
    headers = act(client, billing, "operator")
    [statement] = client.post("/api/billing/settlements/run", json={"period": PERIOD}, headers=headers).json()["items"]
    assert statement["mismatches"] == [
        {
            "kind": "amount_differs",
            "payment": statement["mismatches"][0]["payment"],
            "invoice": invoice["number"],
            "invoice_amount": "900.00",
            "payment_amount": "1000.00",
        }
    ]
    assert ledger_events(engine, "settlement.computed")[-1]["payload"]["mismatches"] == 1
