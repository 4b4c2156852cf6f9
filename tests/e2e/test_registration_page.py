"""A visitor registers a buyer organisation in a real browser and lands, signed in, on the buyer console with its
qualification form."""

from __future__ import annotations

import re
import uuid

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import Engine

from tests.e2e.conftest import LiveServer
from tests.licensing.factories import ledger_events

pytestmark = pytest.mark.e2e


def test_a_visitor_registers_from_the_login_page_and_lands_on_the_buyer_console(
    page: Page, live_server: LiveServer, engine: Engine
) -> None:
    suffix = uuid.uuid4().hex[:6]
    name = f"Riverside Analytics {suffix}"
    email = f"wang.fang.{suffix}@riverside.test-market.cn"

    page.goto("/login")
    page.get_by_role("link", name="Register your organisation as a buyer").click()
    expect(page).to_have_url(re.compile(r"/register$"))
    page.get_by_label("Organisation name", exact=True).fill(name)
    page.get_by_label("Organisation name in Chinese (optional)").fill("河畔分析")
    page.get_by_label("Your name").fill("Wang Fang")
    page.get_by_label("E-mail").fill(email)
    page.get_by_label("Password").fill("a long enough password")
    page.get_by_role("button", name="Register and sign in").click()

    expect(page).to_have_url(re.compile(r"/buyer$"))
    expect(page.locator(".who-name")).to_have_text("Wang Fang")
    expect(page.locator(".who-org")).to_have_text(name)
    expect(page.locator('[data-form="qualification"]')).to_be_visible()
    assert [e["type"] for e in ledger_events(engine, "identity.")] == [
        "identity.organisation_registered",
        "identity.user_added",
        "identity.signed_in",
    ]
