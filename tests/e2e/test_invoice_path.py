"""The invoice path in a real browser: a buyer subscribes to a paid monthly plan from the catalog, pays by bank
transfer (the numbered invoice), the operator records the transfer on its billing console, and the buyer finds the
subscription active with its entitlement and the receipt carrying the ledger index of the payment."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import Engine

from licensing.models import PlanType
from marketplace.core.identity.models import User
from marketplace.core.types import utcnow
from tests.conftest import make_settings
from tests.e2e.conftest import LiveServer
from tests.factories import PASSWORD, make_user
from tests.licensing.factories import ledger_events
from tests.marketplace.factories import make_market, make_plan, make_qualification

pytestmark = pytest.mark.e2e


def _sign_in(page: Page, user: User) -> None:
    page.goto("/login")
    page.get_by_label("E-mail").fill(user.email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator(".who-name")).to_have_text(user.display_name)


def _sign_out(page: Page) -> None:
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(re.compile(r"/login$"))


def test_a_buyer_pays_by_invoice_and_the_operators_record_of_the_transfer_opens_access(
    page: Page, live_server: LiveServer, engine: Engine, database_url: str, var_dir: Path
) -> None:
    market = make_market(engine, make_settings(database_url, var_dir).resolved_data_dir)
    make_plan(
        engine, market.product, type=PlanType.monthly, price="1200.00", name="Monthly Pro", name_zh="专业月度版", quota_calls=5000
    )
    make_qualification(engine, market.buyer_b, market.operator.id)
    buyer = make_user(engine, market.buyer_b)
    operator = make_user(engine, market.operator)

    # The buyer subscribes to the paid plan from the product's page: the subscription waits for payment.
    _sign_in(page, buyer)
    page.goto(f"/catalog/{market.product.id}")
    page.get_by_label("Monthly Pro").check()
    page.locator('[data-field="purpose"]').select_option("credit_assessment")
    page.get_by_label("Application scenario (what you will use it for)").fill("Scoring small business loans")
    page.locator('[data-field="agree"]').check()
    page.get_by_role("button", name="Subscribe").click()
    expect(page).to_have_url(re.compile(r"/buyer/subscriptions/[0-9a-f-]{36}$"))
    subscription_url = page.url
    expect(page.locator('.page-head [data-status="pending_payment"]')).to_be_visible()
    expect(page.locator("[data-entitlement]")).to_contain_text("No entitlement yet")

    # It pays by bank transfer: the numbered invoice, its amount and how to pay it.
    page.get_by_role("button", name="Pay by bank transfer (invoice)").click()
    expect(page).to_have_url(re.compile(r"/billing/invoices/[0-9a-f-]{36}$"))
    number = f"INV-{utcnow().year}-000001"
    expect(page.locator("[data-invoice-number]")).to_have_text(number)
    expect(page.locator("[data-total]")).to_have_text("1,200.00 CNY")
    expect(page.locator("[data-instructions] [data-reference]")).to_have_text(number)
    expect(page.locator(".page-head [data-status]")).to_have_text("open")
    _sign_out(page)

    # The operator records the transfer it received on its billing console.
    _sign_in(page, operator)
    page.locator('[data-nav="billing"]').click()
    expect(page).to_have_url(re.compile(r"/operator/billing$"))
    row = page.locator(f'[data-table="unpaid"] tr[data-invoice="{number}"]')
    expect(row).to_contain_text("1,200.00 CNY")
    expect(row.get_by_label("Amount")).to_have_value("1200.00")
    row.get_by_label("Bank reference").fill("BOC-E2E-0001")
    row.get_by_role("button", name="Record transfer received").click()
    expect(page.locator("[data-done]")).to_contain_text("Transfer recorded")
    expect(page.locator(f'[data-table="unpaid"] tr[data-invoice="{number}"]')).to_have_count(0)
    expect(page.locator(f'[data-table="payments"] tr[data-payment="{number}"]')).to_contain_text("BOC-E2E-0001")
    _sign_out(page)

    # The buyer finds the subscription active with its entitlement, and the receipt with the ledger index.
    _sign_in(page, buyer)
    page.locator('[data-nav="invoices"]').click()
    invoice_row = page.locator(f'[data-table="invoices"] tr[data-invoice="{number}"]')
    expect(invoice_row.locator("[data-status]")).to_have_text("paid")
    page.goto(subscription_url)
    expect(page.locator('.page-head [data-status="active"]')).to_be_visible()
    expect(page.locator("[data-pay]")).to_have_count(0)
    expect(page.locator("[data-entitlement]")).to_contain_text("district")
    expect(page.locator("[data-entitlement]")).to_contain_text("5,000")
    page.locator(f'[data-table="subscription-invoices"] tr[data-invoice="{number}"]').get_by_role("link", name="Receipt").click()
    expect(page).to_have_url(re.compile(r"/billing/receipts/[0-9a-f-]{36}$"))
    [received] = ledger_events(engine, "payment.received")
    assert received["payload"]["reference"] == "BOC-E2E-0001"
    expect(page.locator("[data-ledger-index]")).to_have_text(str(received["index"]))
    expect(page.locator("[data-amount]")).to_have_text("1,200.00 CNY")
    expect(page.locator("[data-proof-verified]")).to_be_visible()
    expect(page.locator("[data-proof] li").first).to_be_visible()
