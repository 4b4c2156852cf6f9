"""The billing pages through HTTP: the buyer pays from the subscription page and reads its invoices, invoices and
receipts as documents, the operator records transfers, refunds and settles from its billing console, the owner
acknowledges statements and computes months. Each page renders for its party in English and Chinese; every refusal
is shown beside its form, in the page language, and changes nothing; other parties get 403 or 404.

The shop (``tests.billing.support``): an owner's licence (fee rate 0.12) to the operator, a monthly plan of 1,000.00
CNY, buyer B's subscription waiting for payment; buyer A takes no part in it.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from litestar.testing import TestClient
from sqlalchemy import Engine, text

from billing.models import Invoice, InvoiceStatus, Payment, Refund, SettlementStatement, StatementStatus
from licensing.models import PlanType
from marketplace.core.http import CSRF_HEADER
from marketplace.core.settings import Settings
from marketplace.core.types import utcnow
from marketplace.subscriptions.models import SubscriptionStatus
from tests.billing.stripe_fake import StripeFake
from tests.billing.support import TABLES, BillingShop, act, all_of, checkout, make_billing_shop, pay, stored
from tests.conftest import TEST_ORIGIN, make_settings
from tests.helpers import csrf, shared_app
from tests.licensing.factories import ledger_events, row_counts
from tests.marketplace.factories import make_plan, make_product, make_subscription
from tests.marketplace.subscriptions.support import RULES, stored_entitlement, stored_subscription

ZH = {"accept-language": "zh-CN"}
EN = {"accept-language": "en"}
PERIOD = f"{utcnow():%Y-%m}"


def post_form(client: TestClient[Any], path: str, data: dict[str, str], headers: dict[str, str] | None = None) -> Any:
    """Submit a page's form (with its CSRF token), without following the redirect."""
    return client.post(path, data={**data, "_csrf_token": csrf(client)}, headers=headers or EN, follow_redirects=False)


def state(engine: Engine) -> dict[str, Any]:
    """What a refused form must leave as it was."""
    with engine.connect() as conn:
        return {
            "counts": row_counts(engine, *TABLES),
            "subscriptions": sorted(conn.execute(text("SELECT id, status FROM subscription")).all()),
            "invoices": sorted(conn.execute(text("SELECT id, status FROM invoice")).all()),
            "payments": sorted(conn.execute(text("SELECT id, refunded_minor FROM payment")).all()),
            "statements": sorted(conn.execute(text("SELECT id, status, computed_at FROM settlement_statement")).all()),
        }


def paid(client: TestClient[Any], billing: BillingShop) -> tuple[dict[str, Any], dict[str, Any]]:
    """Buyer B checked out by invoice and the operator recorded the transfer: the invoice and the payment."""
    invoice = checkout(client, billing)
    answer = pay(client, billing, invoice)
    assert answer.status_code == 201, answer.text
    return invoice, answer.json()


def refund_form(amount: str = "", reason: str = "Goodwill", end_access: bool = False, key: str = "") -> dict[str, str]:
    form = {"amount": amount, "reason": reason, "request_key": key or uuid.uuid4().hex}
    if end_access:
        form["end_access"] = "1"
    return form


# --- the buyer ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "words"), [(EN, ("Pay by bank transfer (invoice)", "How to pay")), (ZH, ("银行转账", "付款方式"))]
)
def test_the_buyer_pays_by_invoice_from_the_subscription_page(
    client: TestClient[Any], engine: Engine, headers: dict[str, str], words: tuple[str, str]
) -> None:
    billing = make_billing_shop(engine)
    act(client, billing, "buyer_b")
    page = client.get(f"/buyer/subscriptions/{billing.pending.id}", headers=headers)
    assert page.status_code == 200
    assert words[0] in page.text
    assert 'data-form="checkout-invoice"' in page.text
    assert 'data-form="checkout-stripe"' not in page.text  # Stripe is not configured here

    answer = post_form(client, f"/buyer/subscriptions/{billing.pending.id}/checkout", {"method": "invoice"}, headers)
    assert answer.status_code == 303, answer.text
    [invoice] = all_of(engine, Invoice)
    assert answer.headers["location"] == f"/billing/invoices/{invoice.id}"
    assert invoice.gateway.value == "invoice"
    assert invoice.status is InvoiceStatus.open

    document = client.get(answer.headers["location"], headers=headers)
    assert document.status_code == 200
    assert invoice.number in document.text
    assert "1,000.00 CNY" in document.text
    assert words[1] in document.text
    assert "data-instructions" in document.text
    assert f"/api/billing/invoices/{invoice.id}/pdf" in document.text
    assert billing.operator.name in document.text

    # Asking again answers the same invoice; the subscription's page shows it.
    again = post_form(client, f"/buyer/subscriptions/{billing.pending.id}/checkout", {"method": "invoice"}, headers)
    assert again.headers["location"] == f"/billing/invoices/{invoice.id}"
    assert len(all_of(engine, Invoice)) == 1
    page = client.get(f"/buyer/subscriptions/{billing.pending.id}", headers=headers)
    assert f'data-open-invoice="{invoice.number}"' in page.text
    assert f"/billing/invoices/{invoice.id}" in page.text
    assert invoice.due_at.strftime("%Y-%m-%d") in page.text


def test_asking_for_card_payment_without_stripe_is_refused_on_the_page(client: TestClient[Any], engine: Engine) -> None:
    billing = make_billing_shop(engine)
    act(client, billing, "buyer_b")
    before = state(engine)
    answer = post_form(client, f"/buyer/subscriptions/{billing.pending.id}/checkout", {"method": "stripe"}, ZH)
    assert answer.status_code == 409
    assert "此处不支持银行卡支付" in answer.text
    assert "data-errors" in answer.text
    assert state(engine) == before


def test_an_active_subscription_is_not_checked_out_again(client: TestClient[Any], engine: Engine) -> None:
    billing = make_billing_shop(engine)
    paid(client, billing)
    act(client, billing, "buyer_b")
    page = client.get(f"/buyer/subscriptions/{billing.pending.id}")
    assert "data-pay" not in page.text
    before = state(engine)
    answer = post_form(client, f"/buyer/subscriptions/{billing.pending.id}/checkout", {"method": "invoice"})
    assert answer.status_code == 409
    assert "This subscription is not waiting for payment any more." in answer.text
    assert state(engine) == before


@pytest.mark.parametrize(("headers", "word"), [(EN, "Amount due"), (ZH, "应付金额")])
def test_the_buyers_invoices_list_its_own_only(
    client: TestClient[Any], engine: Engine, headers: dict[str, str], word: str
) -> None:
    billing = make_billing_shop(engine)
    invoice, payment = paid(client, billing)
    act(client, billing, "buyer_b")
    page = client.get("/buyer/invoices", headers=headers)
    assert page.status_code == 200
    assert word in page.text
    assert f'data-invoice="{invoice["number"]}"' in page.text
    assert f"/billing/receipts/{payment['id']}" in page.text
    act(client, billing, "buyer")
    other = client.get("/buyer/invoices", headers=headers)
    assert other.status_code == 200
    assert invoice["number"] not in other.text


@pytest.mark.parametrize(
    ("headers", "words"), [(EN, ("Inclusion proof checked: verified.", "Ledger index")), (ZH, ("包含性证明", "账本序号"))]
)
def test_the_receipt_shows_the_ledger_index_and_its_inclusion_proof(
    client: TestClient[Any], engine: Engine, headers: dict[str, str], words: tuple[str, str]
) -> None:
    billing = make_billing_shop(engine)
    invoice, payment = paid(client, billing)
    act(client, billing, "buyer_b")
    document = client.get(f"/billing/invoices/{invoice['id']}", headers=headers)
    assert f"/billing/receipts/{payment['id']}" in document.text
    assert "data-instructions" not in document.text  # paid: nothing more to pay
    receipt = client.get(f"/billing/receipts/{payment['id']}", headers=headers)
    assert receipt.status_code == 200
    for word in words:
        assert word in receipt.text
    index = ledger_events(engine, "payment.received")[0]["index"]
    assert f"<strong data-ledger-index>{index}</strong>" in receipt.text
    assert "data-proof-verified" in receipt.text
    assert 'data-proof-against="current_tree"' in receipt.text
    api = client.get(f"/api/billing/receipts/{payment['id']}").json()
    for hashed in api["inclusion_proof"]:
        assert hashed in receipt.text
    assert api["root_hash"] in receipt.text
    assert f"/supervision/ledger?entry={index}" in receipt.text


def test_the_receipt_is_proved_against_a_signed_checkpoint_once_there_is_one(client: TestClient[Any], engine: Engine) -> None:
    billing = make_billing_shop(engine)
    _invoice, payment = paid(client, billing)
    act(client, billing, "owner")
    signed = client.post("/api/supervision/ledger/checkpoint", headers={CSRF_HEADER: csrf(client)})
    assert signed.status_code in (200, 201), signed.text
    act(client, billing, "buyer_b")
    receipt = client.get(f"/billing/receipts/{payment['id']}")
    assert 'data-proof-against="checkpoint"' in receipt.text
    assert "data-checkpoint" in receipt.text
    assert "data-proof-verified" in receipt.text


# --- the operator ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("headers", "word"), [(EN, "Record transfer received"), (ZH, "登记已收转账")])
def test_the_operator_records_a_transfer_and_the_subscription_becomes_active(
    client: TestClient[Any], engine: Engine, headers: dict[str, str], word: str
) -> None:
    billing = make_billing_shop(engine)
    invoice = checkout(client, billing)
    act(client, billing, "operator")
    page = client.get("/operator/billing", headers=headers)
    assert page.status_code == 200
    assert word in page.text
    row = re.search(rf'<tr data-invoice="{invoice["number"]}">.*?</tr>', page.text, re.S)
    assert row is not None
    assert 'value="1000.00"' in row.group(0)  # the amount is prefilled

    answer = post_form(
        client,
        f"/operator/billing/invoices/{invoice['id']}/transfer",
        {"amount": "1000.00", "reference": "BOC-PAGE-0001", "received_on": utcnow().date().isoformat()},
        headers,
    )
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"].startswith("/operator/billing?done=transfer")
    assert stored_subscription(engine, billing.pending.id).status is SubscriptionStatus.active
    assert stored_entitlement(engine, billing.pending.id) is not None
    assert stored(engine, Invoice, invoice["id"]).status is InvoiceStatus.paid
    [payment] = all_of(engine, Payment)
    assert payment.reference == "BOC-PAGE-0001"
    assert [e["type"] for e in ledger_events(engine, "payment.")] == ["payment.received"]

    done = client.get(answer.headers["location"], headers=headers)
    assert "data-done" in done.text
    assert f'<tr data-invoice="{invoice["number"]}">' not in done.text  # nothing left to collect
    assert f'data-payment="{invoice["number"]}"' in done.text
    assert 'data-chart="received-CNY"' in done.text
    assert re.search(rf'<tr data-month="{PERIOD}">.*?1,000\.00 CNY', done.text, re.S)


def test_an_overdue_invoice_is_still_collected_from_the_console(client: TestClient[Any], engine: Engine) -> None:
    billing = make_billing_shop(engine)
    invoice = checkout(client, billing)
    with engine.begin() as conn:
        conn.execute(text("UPDATE invoice SET status = 'overdue' WHERE number = :number"), {"number": invoice["number"]})
    act(client, billing, "operator")
    page = client.get("/operator/billing", headers=ZH)
    row = re.search(rf'<tr data-invoice="{invoice["number"]}">.*?</tr>', page.text, re.S)
    assert row is not None
    assert "已逾期" in row.group(0)
    assert "1 张已逾期" in page.text
    answer = post_form(
        client, f"/operator/billing/invoices/{invoice['id']}/transfer", {"amount": "1000.00", "reference": "BOC-LATE"}
    )
    assert answer.status_code == 303, answer.text
    assert stored(engine, Invoice, invoice["id"]).status is InvoiceStatus.paid
    assert stored_subscription(engine, billing.pending.id).status is SubscriptionStatus.active


@pytest.mark.parametrize(
    ("form", "field", "message"),
    [
        ({"amount": "999.00", "reference": "BOC-1"}, "amount", "The amount must be exactly the invoice's amount."),
        ({"amount": "abc", "reference": "BOC-1"}, "amount", "Give a positive amount of money, such as 1000.00."),
        ({"amount": "1000.00", "reference": "  "}, "reference", "Give the bank reference of the transfer."),
        (
            {"amount": "1000.00", "reference": "BOC-1", "received_on": "2999-01-01"},
            "received_on",
            "The transfer cannot have been received in the future.",
        ),
        ({"amount": "1000.00", "reference": "BOC-1", "received_on": "yesterday"}, "received_on", "Give the date as YYYY-MM-DD."),
    ],
)
def test_a_refused_transfer_is_shown_beside_its_field_and_changes_nothing(
    client: TestClient[Any], engine: Engine, form: dict[str, str], field: str, message: str
) -> None:
    billing = make_billing_shop(engine)
    invoice = checkout(client, billing)
    act(client, billing, "operator")
    before = state(engine)
    answer = post_form(client, f"/operator/billing/invoices/{invoice['id']}/transfer", form)
    assert answer.status_code == 400
    error = f'<span class="error" id="transfer-{invoice["id"]}-{field}-error" data-field-error="{field}">'
    assert error + message.replace("'", "&#39;") + "</span>" in answer.text
    assert f'aria-describedby="transfer-{invoice["id"]}-{field}-error"' in answer.text
    assert "data-errors" in answer.text
    # What was typed stays in the form.
    if form["reference"].strip():
        assert f'value="{form["reference"]}"' in answer.text
    assert state(engine) == before
    assert stored_subscription(engine, billing.pending.id).status is SubscriptionStatus.pending_payment


def test_a_reference_recorded_once_is_refused_the_second_time_in_chinese(client: TestClient[Any], engine: Engine) -> None:
    billing = make_billing_shop(engine)
    paid(client, billing)  # reference BOC-20261203-0001
    second, _ = _second_pending(engine, billing)
    invoice = checkout(client, billing, second.id)
    act(client, billing, "operator")
    before = state(engine)
    answer = post_form(
        client,
        f"/operator/billing/invoices/{invoice['id']}/transfer",
        {"amount": "1000.00", "reference": "BOC-20261203-0001"},
        ZH,
    )
    assert answer.status_code == 409
    assert "该银行流水号的付款已登记" in answer.text
    assert state(engine) == before


def _second_pending(engine: Engine, billing: BillingShop) -> tuple[Any, Any]:
    product = make_product(engine, billing.licence, billing.shop.resource, rules=RULES)
    plan = make_plan(engine, product, type=PlanType.monthly, price="1000.00")
    return make_subscription(engine, billing.shop.buyer_b, product, plan, status=SubscriptionStatus.pending_payment)


def test_the_operator_refunds_from_the_form_once_however_often_it_is_sent(client: TestClient[Any], engine: Engine) -> None:
    billing = make_billing_shop(engine)
    _invoice, payment = paid(client, billing)
    act(client, billing, "operator")
    form = refund_form("100.00", "Two days of outage")
    for _ in range(2):  # a double submission answers the refund already made
        answer = post_form(client, f"/operator/billing/payments/{payment['id']}/refund", form)
        assert answer.status_code == 303, answer.text
        assert answer.headers["location"].startswith("/operator/billing?done=refund")
    [refund] = all_of(engine, Refund)
    assert (refund.amount_minor, refund.reason, refund.ends_access) == (10000, "Two days of outage", False)
    assert stored(engine, Payment, payment["id"]).refunded_minor == 10000
    assert [e["type"] for e in ledger_events(engine, "payment.refunded")] == ["payment.refunded"]
    assert stored_subscription(engine, billing.pending.id).status is SubscriptionStatus.active
    page = client.get("/operator/billing")
    assert re.search(r"<td class=\"num nowrap\" data-refunded>100\.00 CNY</td>", page.text)


def test_a_full_refund_that_ends_access_ends_the_subscription(client: TestClient[Any], engine: Engine) -> None:
    billing = make_billing_shop(engine)
    _invoice, payment = paid(client, billing)
    act(client, billing, "operator")
    answer = post_form(client, f"/operator/billing/payments/{payment['id']}/refund", refund_form("", "Wrong product", True))
    assert answer.status_code == 303, answer.text
    assert stored(engine, Payment, payment["id"]).refunded_minor == 100000
    assert stored_subscription(engine, billing.pending.id).status is not SubscriptionStatus.active
    entitlement = stored_entitlement(engine, billing.pending.id)
    assert entitlement is not None
    assert entitlement.ended_at is not None
    page = client.get("/operator/billing")
    assert "Fully refunded" in page.text


@pytest.mark.parametrize(
    ("party", "form", "status", "field", "message"),
    [
        (
            "operator",
            refund_form("2000.00"),
            409,
            "amount",
            "That is more than is left to refund: at most 1000.00 of this payment can be refunded.",
        ),
        ("operator", refund_form("0"), 400, "amount", "Give a positive amount of money, such as 1000.00."),
        ("operator", refund_form("10.00", reason=""), 400, "reason", "Give the reason for the refund."),
        (
            "operator",
            refund_form("10.00", end_access=True),
            400,
            "end_access",
            "Access ends only with a refund of everything left: leave the amount empty or give all of it.",
        ),
        (
            "operator_member",
            refund_form("10.00"),
            403,
            None,
            "Your role may not do this: ask an administrator of your organisation.",
        ),
        ("other_operator", refund_form("10.00"), 404, None, "No such payment."),
    ],
)
def test_a_refused_refund_shows_its_reason_and_changes_nothing(
    client: TestClient[Any], engine: Engine, party: str, form: dict[str, str], status: int, field: str | None, message: str
) -> None:
    billing = make_billing_shop(engine)
    _invoice, payment = paid(client, billing)
    act(client, billing, party)
    before = state(engine)
    events = len(ledger_events(engine))
    answer = post_form(client, f"/operator/billing/payments/{payment['id']}/refund", form)
    assert answer.status_code == status, answer.text
    assert message in answer.text
    if field is not None:
        assert f'id="refund-{payment["id"]}-{field}-error"' in answer.text
    assert state(engine) == before
    assert len(ledger_events(engine)) == events


def test_a_refused_refund_speaks_chinese(client: TestClient[Any], engine: Engine) -> None:
    billing = make_billing_shop(engine)
    _invoice, payment = paid(client, billing)
    act(client, billing, "operator")
    answer = post_form(client, f"/operator/billing/payments/{payment['id']}/refund", refund_form("2000.00"), ZH)
    assert answer.status_code == 409
    assert "此笔付款最多还可退 1000.00" in answer.text
    assert all_of(engine, Refund) == []


@pytest.mark.parametrize(("headers", "word"), [(EN, "Settlement statements"), (ZH, "结算单")])
def test_the_operator_computes_and_issues_a_statement_and_the_owner_acknowledges_it(
    client: TestClient[Any], engine: Engine, headers: dict[str, str], word: str
) -> None:
    billing = make_billing_shop(engine)
    paid(client, billing)
    act(client, billing, "operator")
    computed = post_form(client, "/operator/billing/settlements", {"period": PERIOD}, headers)
    assert computed.status_code == 303, computed.text
    [statement] = all_of(engine, SettlementStatement)
    assert (statement.status, statement.gross_minor, statement.franchise_fee_minor) == (StatementStatus.draft, 100000, 12000)
    page = client.get("/operator/billing", headers=headers)
    assert word in page.text
    row = re.search(rf'<tr data-statement="{statement.number}">.*?</tr>', page.text, re.S)
    assert row is not None
    assert "120.00 CNY" in row.group(0)
    assert f"/api/billing/settlements/{statement.id}/csv" in row.group(0)
    assert f"/api/billing/settlements/{statement.id}/pdf" in row.group(0)
    assert 'data-form="issue"' in row.group(0)

    # The owner sees nothing to acknowledge while it is a draft, and is refused if it tries.
    act(client, billing, "owner")
    refused = post_form(client, f"/owner/settlements/{statement.id}/acknowledge", {}, headers)
    assert refused.status_code == 409
    assert stored(engine, SettlementStatement, statement.id).status is StatementStatus.draft

    act(client, billing, "operator")
    issued = post_form(client, f"/operator/billing/settlements/{statement.id}/issue", {}, headers)
    assert issued.status_code == 303, issued.text
    assert stored(engine, SettlementStatement, statement.id).status is StatementStatus.issued
    # The month is closed now: computing it again is refused on the page.
    closed = post_form(client, "/operator/billing/settlements", {"period": PERIOD}, headers)
    assert closed.status_code == 409
    assert 'data-field-error="period"' in closed.text or "data-form-error" in closed.text

    act(client, billing, "owner")
    owner_page = client.get("/owner/settlements", headers=headers)
    assert owner_page.status_code == 200
    assert 'data-stat="to-acknowledge">1<' in owner_page.text
    assert 'data-chart="fees-CNY"' in owner_page.text
    assert re.search(rf'<tr data-operator="{billing.operator.id}">.*?120\.00 CNY', owner_page.text, re.S)
    acknowledged = post_form(client, f"/owner/settlements/{statement.id}/acknowledge", {}, headers)
    assert acknowledged.status_code == 303, acknowledged.text
    assert stored(engine, SettlementStatement, statement.id).status is StatementStatus.acknowledged
    assert [e["type"] for e in ledger_events(engine, "settlement.")] == [
        "settlement.computed",
        "settlement.issued",
        "settlement.acknowledged",
    ]
    after = client.get(acknowledged.headers["location"], headers=headers)
    assert 'data-stat="to-acknowledge">0<' in after.text


def test_the_owner_computes_an_operators_month(client: TestClient[Any], engine: Engine) -> None:
    billing = make_billing_shop(engine)
    paid(client, billing)
    act(client, billing, "owner")
    page = client.get("/owner/settlements", headers=ZH)
    assert "结算单" in page.text
    assert f'<option value="{billing.operator.id}"' in page.text
    answer = post_form(client, "/owner/settlements", {"operator_id": str(billing.operator.id), "period": PERIOD})
    assert answer.status_code == 303, answer.text
    [statement] = all_of(engine, SettlementStatement)
    assert (statement.operator_id, statement.period, statement.status) == (billing.operator.id, PERIOD, StatementStatus.draft)


@pytest.mark.parametrize(
    ("form", "status", "field"),
    [
        ({"operator_id": "not-an-id", "period": PERIOD}, 404, "operator_id"),
        ({"operator_id": str(uuid.uuid4()), "period": PERIOD}, 404, "operator_id"),
        ({"operator_id": "", "period": PERIOD}, 400, "operator_id"),
        ({"operator_id": "{operator}", "period": "2026-13"}, 400, "period"),
        ({"operator_id": "{operator}", "period": "2999-01"}, 400, "period"),
    ],
)
def test_a_refused_computation_by_the_owner_changes_nothing(
    client: TestClient[Any], engine: Engine, form: dict[str, str], status: int, field: str
) -> None:
    billing = make_billing_shop(engine)
    paid(client, billing)
    act(client, billing, "owner")
    before = state(engine)
    data = {key: value.replace("{operator}", str(billing.operator.id)) for key, value in form.items()}
    answer = post_form(client, "/owner/settlements", data)
    assert answer.status_code == status, answer.text
    assert f'id="settle-{field}-error"' in answer.text
    assert state(engine) == before


# --- who may do what ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("party", "path", "status"),
    [
        ("buyer", "/billing/invoices/{invoice}", 404),
        ("other_operator", "/billing/invoices/{invoice}", 404),
        ("buyer", "/billing/receipts/{payment}", 404),
        ("other_operator", "/billing/receipts/{payment}", 404),
        ("owner", "/billing/invoices/{invoice}", 200),
        ("regulator", "/billing/receipts/{payment}", 200),
        ("operator_member", "/billing/receipts/{payment}", 200),
        ("buyer_b", "/operator/billing", 403),
        ("owner", "/operator/billing", 403),
        ("operator", "/owner/settlements", 403),
        ("regulator", "/owner/settlements", 403),
        ("operator", "/buyer/invoices", 403),
    ],
)
def test_pages_answer_only_the_parties_that_may_see_them(
    client: TestClient[Any], engine: Engine, party: str, path: str, status: int
) -> None:
    billing = make_billing_shop(engine)
    invoice, payment = paid(client, billing)
    act(client, billing, party)
    answer = client.get(path.format(invoice=invoice["id"], payment=payment["id"]), headers=ZH)
    assert answer.status_code == status, answer.text
    if status == 404:
        assert invoice["number"] not in answer.text
        assert "1,000.00" not in answer.text


@pytest.mark.parametrize(
    ("party", "path", "form", "status"),
    [
        ("other_operator", "/operator/billing/invoices/{invoice}/transfer", {"amount": "1000.00", "reference": "BOC-X"}, 404),
        ("buyer_b", "/operator/billing/invoices/{invoice}/transfer", {"amount": "1000.00", "reference": "BOC-X"}, 403),
        ("owner", "/operator/billing/invoices/{invoice}/transfer", {"amount": "1000.00", "reference": "BOC-X"}, 403),
        ("regulator", "/operator/billing/invoices/{invoice}/transfer", {"amount": "1000.00", "reference": "BOC-X"}, 403),
        ("buyer", "/buyer/subscriptions/{subscription}/checkout", {"method": "invoice"}, 404),
        ("operator", "/buyer/subscriptions/{subscription}/checkout", {"method": "invoice"}, 403),
        ("operator", "/owner/settlements", {"operator_id": "{operator}", "period": PERIOD}, 403),
        ("other_operator", "/operator/billing/settlements", {"period": PERIOD}, 303),
    ],
)
def test_other_parties_cannot_write_and_nothing_changes(
    client: TestClient[Any], engine: Engine, party: str, path: str, form: dict[str, str], status: int
) -> None:
    billing = make_billing_shop(engine)
    invoice = checkout(client, billing)
    act(client, billing, party)
    before = state(engine)
    ids = {"invoice": invoice["id"], "subscription": str(billing.pending.id), "operator": str(billing.operator.id)}
    answer = post_form(client, path.format(**ids), {key: value.format(**ids) for key, value in form.items()})
    assert answer.status_code == status, answer.text
    # Another operator's computation settles its own (empty) month: nothing of this operator's changes.
    assert state(engine) == before
    assert stored(engine, Invoice, invoice["id"]).status is InvoiceStatus.open


def test_a_member_of_the_operator_records_transfers_but_neither_refunds_nor_settles(
    client: TestClient[Any], engine: Engine
) -> None:
    billing = make_billing_shop(engine)
    invoice = checkout(client, billing)
    act(client, billing, "operator_member")
    recorded = post_form(
        client, f"/operator/billing/invoices/{invoice['id']}/transfer", {"amount": "1000.00", "reference": "BOC-MEMBER"}
    )
    assert recorded.status_code == 303, recorded.text
    assert stored_subscription(engine, billing.pending.id).status is SubscriptionStatus.active
    page = client.get("/operator/billing")
    assert "Only an administrator of your organisation refunds payments." in page.text
    assert 'data-form="refund"' not in page.text
    assert "Only an administrator of your organisation computes and issues statements." in page.text
    assert 'data-form="settle"' not in page.text
    before = state(engine)
    for path, form in (
        ("/operator/billing/settlements", {"period": PERIOD}),
        (f"/operator/billing/payments/{all_of(engine, Payment)[0].id}/refund", refund_form("10.00")),
    ):
        refused = post_form(client, path, form)
        assert refused.status_code == 403, refused.text
        assert "Your role may not do this: ask an administrator of your organisation." in refused.text
    assert state(engine) == before


# --- card payments through Stripe (the loopback fake) -----------------------------------------------------------------


@pytest.fixture
def stripe_client(settings: Settings) -> Iterator[tuple[TestClient[Any], StripeFake]]:
    with StripeFake() as fake:
        configured = make_settings(
            settings.resolved_database_url,
            settings.var_dir,
            stripe_api_key="sk_test_market_pages",
            stripe_webhook_secret="whsec_market_pages",
            stripe_api_base=fake.base_url,
        )
        with TestClient(app=shared_app(configured), base_url=TEST_ORIGIN) as client:
            yield client, fake
        assert fake.errors == [], fake.errors[0] if fake.errors else ""


def test_the_buyer_is_sent_to_stripe_when_paying_by_card(
    stripe_client: tuple[TestClient[Any], StripeFake], engine: Engine
) -> None:
    client, fake = stripe_client
    billing = make_billing_shop(engine, plan_type=PlanType.one_off, price="250.00")
    act(client, billing, "buyer_b")
    page = client.get(f"/buyer/subscriptions/{billing.pending.id}")
    assert 'data-form="checkout-stripe"' in page.text
    answer = post_form(client, f"/buyer/subscriptions/{billing.pending.id}/checkout", {"method": "stripe"})
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"].startswith(fake.base_url + "/pay/")
    [invoice] = all_of(engine, Invoice)
    assert invoice.gateway.value == "stripe"
    page = client.get(f"/buyer/subscriptions/{billing.pending.id}")
    assert answer.headers["location"] in page.text  # the way back to the card payment
    act(client, billing, "operator")
    console = client.get("/operator/billing")
    assert "Paid by card through Stripe: recorded when Stripe confirms it." in console.text
    assert f"/operator/billing/invoices/{invoice.id}/transfer" not in console.text


def test_a_regulators_reads_of_billing_pages_are_recorded(client: TestClient[Any], engine: Engine) -> None:
    billing = make_billing_shop(engine)
    invoice = checkout(client, billing)
    act(client, billing, "regulator")
    assert client.get(f"/billing/invoices/{invoice['id']}").status_code == 200
    assert client.get(f"/api/billing/invoices/{invoice['id']}").status_code == 200
    reads = [e["payload"]["path"] for e in ledger_events(engine, "records.read")]
    assert f"/billing/invoices/{invoice['id']}" in reads
    assert f"/api/billing/invoices/{invoice['id']}" in reads
