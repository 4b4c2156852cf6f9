"""The buyer's side in a real browser: finding a product by a Chinese word, subscribing with a purpose and the
agreement, and the buyer console with its usage chart, subscriptions and a cancellation."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import Engine, text

from licensing.models import PlanType
from marketplace.core.identity.models import User
from tests.conftest import make_settings
from tests.e2e.conftest import LiveServer
from tests.factories import PASSWORD, make_user
from tests.licensing.factories import ledger_events
from tests.marketplace.factories import index_products, make_deliveries, make_market, make_plan

pytestmark = pytest.mark.e2e


def _sign_in(page: Page, user: User) -> None:
    page.goto("/login")
    page.get_by_label("E-mail").fill(user.email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator(".who-name")).to_have_text(user.display_name)


def test_buyer_finds_a_product_by_a_chinese_word_and_subscribes_with_a_purpose(
    page: Page, live_server: LiveServer, engine: Engine, database_url: str, var_dir: Path
) -> None:
    data_dir = make_settings(database_url, var_dir).resolved_data_dir
    market = make_market(engine, data_dir)
    with engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE product SET name = 'Outpatient visit statistics', name_zh = '门诊就诊统计', "
                """sample_json = '[{"district": "Haidian", "age": "30-39"}]' WHERE id = :id"""
            ),
            {"id": market.product.id.hex if engine.dialect.name == "sqlite" else market.product.id},
        )
    free = make_plan(engine, market.product, type=PlanType.free, name="Community", name_zh="社区版", quota_calls=1000)
    index_products(database_url, market.product)
    buyer = make_user(engine, market.buyer_b)

    _sign_in(page, buyer)
    page.locator('[data-nav="catalog"]').click()
    page.get_by_role("searchbox").fill("门诊")
    page.get_by_role("button", name="Search").click()
    card = page.locator(f'[data-product="{market.product.id}"]')
    expect(card).to_be_visible()
    expect(page.locator("[data-total]")).to_have_attribute("data-total", "1")
    card.get_by_role("link").click()

    expect(page.locator("[data-product-name]")).to_have_text("Outpatient visit statistics")
    expect(page.locator('[data-table="sample"] tbody td')).to_have_text(["Haidian", "30-39"])
    # The paid plan needs a qualification this buyer does not have: the page says so.
    expect(page.locator("[data-qualification]")).to_be_visible()
    page.get_by_label("Community").check()
    page.locator('[data-field="purpose"]').select_option("credit_assessment")
    page.get_by_label("Application scenario (what you will use it for)").fill("Scoring small business loans")
    page.locator('[data-field="agree"]').check()
    page.get_by_role("button", name="Subscribe").click()

    expect(page).to_have_url(re.compile(r"/buyer/subscriptions/[0-9a-f-]{36}$"))
    expect(page.locator('.page-head [data-status="active"]')).to_be_visible()
    expect(page.locator("[data-entitlement]")).to_contain_text("district")
    expect(page.locator("[data-entitlement]")).to_contain_text("1,000")
    created = [e for e in ledger_events(engine, "subscription.") if e["type"] == "subscription.created"]
    assert [e["subjects"]["plan"] for e in created] == [str(free.id)]


def test_buyer_console_shows_usage_per_day_and_cancels_a_subscription(
    page: Page, live_server: LiveServer, engine: Engine, database_url: str, var_dir: Path
) -> None:
    data_dir = make_settings(database_url, var_dir).resolved_data_dir
    market = make_market(engine, data_dir)
    make_deliveries(engine, market.subscription, market.entitlement, [(0, 100), (0, 50), (1, 100), (3, 20)])
    buyer = make_user(engine, market.buyer_a)

    _sign_in(page, buyer)
    page.locator('[data-nav="buyer"]').click()
    expect(page.locator('[data-stat="active"]')).to_have_text("1")
    calls = page.locator('[data-chart="calls"]')
    expect(calls.locator("rect")).to_have_count(3)  # three days with calls, one product
    expect(calls.locator("rect title").last).to_contain_text(": 2")  # today: two calls
    expect(page.locator('[data-chart="rows"] rect')).to_have_count(3)
    row = page.locator(f'[data-subscription="{market.subscription.number}"]')
    expect(row).to_contain_text("active")

    row.get_by_role("link", name=market.subscription.number).click()
    page.get_by_label("Reason (optional)").fill("Project finished")
    page.get_by_role("button", name="Cancel the subscription: access ends at once").click()
    expect(page.locator('.page-head [data-status="cancelled"]')).to_be_visible()
    expect(page.locator("[data-entitlement]")).to_contain_text("Ended")
    assert [e["type"] for e in ledger_events(engine, "entitlement.")] == ["entitlement.ended"]
