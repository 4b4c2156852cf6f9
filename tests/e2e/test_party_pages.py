"""Each party signs in through the real page in a real browser and lands on its own home, in English or Chinese.

The expected words are written out here (not read from the catalogue), so a broken or missing translation fails.
"""

from __future__ import annotations

import asyncio
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from playwright.sync_api import BrowserContext, Page, expect
from sqlalchemy import Engine

from marketplace.core.db import Database
from marketplace.core.principal import OrgKind
from marketplace.demo import DEMO_ORGS, seed_demo
from tests.e2e.conftest import LiveServer
from tests.factories import PASSWORD, make_org, make_user

pytestmark = pytest.mark.e2e

#: Browser language (Accept-Language) -> the page language the app should choose.
LANGS = {"en-US": "en", "zh-CN": "zh-CN"}

PARTY_TITLES = {
    OrgKind.owner: {"en": "Data authority", "zh-CN": "数据主管部门"},
    OrgKind.operator: {"en": "Operator", "zh-CN": "授权运营单位"},
    OrgKind.buyer: {"en": "Enterprise buyer", "zh-CN": "需求方企业"},
    OrgKind.regulator: {"en": "Regulator", "zh-CN": "监管部门"},
    OrgKind.auditor: {"en": "Third-party auditor", "zh-CN": "第三方审计机构"},
}
NAV_LABELS = {
    "en": {
        "home": "Home",
        "catalog": "Data product catalog",
        "buyer": "Buyer console",
        "invoices": "Invoices",
        "operator": "Operator console",
        "billing": "Billing",
        "members": "Organisation",
        "clients": "API clients",
        "resources": "Data resources",
        "licences": "Licences",
        "reviews": "Listing reviews",
        "settlements": "Settlements",
        "supervision": "Supervision",
        "findings": "Findings",
        "ledger": "Ledger",
        "disclosure": "Annual disclosure",
        "api": "API reference",
    },
    "zh-CN": {
        "home": "首页",
        "catalog": "数据产品目录",
        "buyer": "需求方工作台",
        "invoices": "发票",
        "operator": "运营工作台",
        "billing": "收费结算",
        "members": "本单位",
        "clients": "API 客户端",
        "resources": "数据资源",
        "licences": "授权运营协议",
        "reviews": "上架审核",
        "settlements": "结算管理",
        "supervision": "监管工作台",
        "findings": "监管意见",
        "ledger": "存证账本",
        "disclosure": "年度公开披露",
        "api": "API 参考文档",
    },
}
WORDS = {
    "en": {
        "sign_in": "Sign in",
        "sign_out": "Sign out",
        "email": "E-mail",
        "password": "Password",
        "wrong": "The e-mail or password is not right.",
        "active_clients": "Active API clients",
        "members": "Members of your organisation",
        "full_name": "Full name",
    },
    "zh-CN": {
        "sign_in": "登录",
        "sign_out": "退出登录",
        "email": "邮箱",
        "password": "密码",
        "wrong": "邮箱或密码不正确。",
        "active_clients": "有效 API 客户端",
        "members": "本单位成员",
        "full_name": "姓名",
    },
}


def other(lang: str) -> str:
    return "en" if lang == "zh-CN" else "zh-CN"


def sign_in(page: Page, lang: str, email: str, password: str) -> None:
    """Fill the sign-in form by its visible labels (so the labels must be tied to their fields) and submit."""
    words = WORDS[lang]
    expect(page.get_by_role("heading", level=1)).to_have_text(words["sign_in"])
    page.get_by_label(words["email"]).fill(email)
    page.get_by_label(words["password"]).fill(password)
    page.get_by_role("button", name=words["sign_in"]).click()


def expect_home_of(page: Page, live_server: LiveServer, kind: OrgKind, org_name: str, lang: str) -> None:
    """The party's own home, its navigation and header, all in ``lang`` and none of the other language."""
    expect(page).to_have_url(f"{live_server.url}/")
    expect(page.locator("html")).to_have_attribute("lang", lang)
    title = PARTY_TITLES[kind][lang]
    expect(page.locator(f'[data-home="{kind.value}"] h1')).to_have_text(f"{title} · {org_name}")
    expect(page.locator(f'header [data-party="{kind.value}"]')).to_contain_text(org_name)
    expect(page.locator(f'header [data-party="{kind.value}"]')).to_contain_text(title)
    keys = {
        OrgKind.buyer: ["home", "catalog", "buyer", "invoices", "members", "clients", "api"],
        OrgKind.operator: ["home", "catalog", "operator", "billing", "members", "licences", "reviews", "findings", "api"],
        OrgKind.owner: [
            "home",
            "catalog",
            "members",
            "resources",
            "licences",
            "reviews",
            "settlements",
            "supervision",
            "ledger",
            "disclosure",
            "api",
        ],
    }.get(kind, ["home", "catalog", "members", "resources", "licences", "reviews", "supervision", "ledger", "disclosure", "api"])
    nav = page.get_by_role("navigation", name="主导航" if lang == "zh-CN" else "Main navigation").locator("[data-nav]")
    expect(nav).to_have_text([NAV_LABELS[lang][k] for k in keys])
    assert nav.evaluate_all("links => links.map(a => a.dataset.nav)") == keys
    expect(page.locator('[data-nav="home"]')).to_have_attribute("aria-current", "page")
    expect(page.get_by_role("button", name=WORDS[lang]["sign_out"])).to_be_visible()
    expect(page.get_by_text(WORDS[lang]["members"], exact=True)).to_be_visible()
    expect(page.get_by_text(WORDS[lang]["active_clients"], exact=True)).to_have_count(1 if kind is OrgKind.buyer else 0)
    # Nothing of the other language leaks into the page.
    for word in (PARTY_TITLES[kind][other(lang)], WORDS[other(lang)]["sign_out"], NAV_LABELS[other(lang)]["home"]):
        expect(page.get_by_text(word, exact=True)).to_have_count(0)


@pytest.fixture
def demo(database_url: str, engine: Engine) -> dict[str, Any]:
    """The demo province seeded into the test database, with its accounts (as `make run` shows them)."""

    async def seed() -> dict[str, Any]:
        database = Database(database_url, pool_size=1)
        try:
            async with database.session() as session:
                return await seed_demo(session)
        finally:
            await database.dispose()

    # Playwright's sync API keeps an event loop on this thread: seed on a thread of its own.
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, seed()).result()


@pytest.mark.parametrize("browser_locale", list(LANGS))
@pytest.mark.parametrize("kind", list(OrgKind), ids=str)
def test_each_demo_party_lands_on_its_own_home_in_the_browser_language(
    page: Page, live_server: LiveServer, demo: dict[str, Any], kind: OrgKind, browser_locale: str
) -> None:
    lang = LANGS[browser_locale]
    account = next(a for a in demo["accounts"] if a["kind"] == kind.value and a["role"] == "admin")
    org = next(o for o in DEMO_ORGS if o.name == account["org"])
    page.goto("/login")
    expect(page.locator("html")).to_have_attribute("lang", lang)
    sign_in(page, lang, account["email"], account["password"])
    expect_home_of(page, live_server, kind, org.name_zh if lang == "zh-CN" else org.name, lang)


def test_the_language_switcher_is_remembered(
    page: Page, context: BrowserContext, live_server: LiveServer, engine: Engine
) -> None:
    org = make_org(engine, OrgKind.operator)
    user = make_user(engine, org)
    page.goto("/login")
    expect(page.locator("html")).to_have_attribute("lang", "en")
    page.get_by_role("link", name="简体中文").click()
    expect(page).to_have_url(f"{live_server.url}/login")
    expect(page.locator("html")).to_have_attribute("lang", "zh-CN")
    assert {c["name"]: c["value"] for c in context.cookies()}.get("locale") == "zh-CN"

    sign_in(page, "zh-CN", user.email, PASSWORD)
    expect_home_of(page, live_server, OrgKind.operator, org.name, "zh-CN")

    # The choice is remembered on the next page loads, though the browser still asks for English.
    page.get_by_role("link", name="本单位").click()
    expect(page).to_have_url(f"{live_server.url}/account/members")
    expect(page.get_by_role("heading", level=1)).to_have_text(org.name)
    expect(page.get_by_role("columnheader", name="姓名")).to_be_visible()
    page.reload()
    expect(page.locator("html")).to_have_attribute("lang", "zh-CN")
    expect(page.get_by_role("button", name="退出登录")).to_be_visible()

    # And switching back stays on the same page.
    page.get_by_role("link", name="English").click()
    expect(page).to_have_url(f"{live_server.url}/account/members")
    expect(page.locator("html")).to_have_attribute("lang", "en")
    expect(page.get_by_role("columnheader", name="Full name")).to_be_visible()
    page.goto("/")
    expect_home_of(page, live_server, OrgKind.operator, org.name, "en")


@pytest.mark.parametrize("browser_locale", list(LANGS))
def test_a_wrong_password_shows_the_error_on_the_page(
    page: Page, context: BrowserContext, live_server: LiveServer, engine: Engine, browser_locale: str
) -> None:
    lang = LANGS[browser_locale]
    user = make_user(engine, make_org(engine, OrgKind.buyer))
    page.goto("/login")
    sign_in(page, lang, user.email, "not the password")
    expect(page.get_by_role("alert")).to_have_text(WORDS[lang]["wrong"])
    expect(page).to_have_url(re.compile(r"/login(\?.*)?$"))
    expect(page.get_by_label(WORDS[lang]["email"])).to_have_value(user.email)
    expect(page.get_by_label(WORDS[lang]["password"])).to_have_value("")
    assert "market_session" not in {c["name"] for c in context.cookies()}
    # The right password still works from the same page.
    page.get_by_label(WORDS[lang]["password"]).fill(PASSWORD)
    page.get_by_role("button", name=WORDS[lang]["sign_in"]).click()
    expect(page.locator('[data-home="buyer"]')).to_be_visible()


def _token(live_server: LiveServer, client_id: str, secret: str) -> httpx.Response:
    return httpx.post(
        f"{live_server.url}/oauth/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret), timeout=10
    )


def test_a_buyer_creates_an_api_client_sees_its_secret_once_and_revokes_it(
    page: Page, live_server: LiveServer, engine: Engine
) -> None:
    org = make_org(engine, OrgKind.buyer)
    user = make_user(engine, org)
    page.goto("/login")
    sign_in(page, "en", user.email, PASSWORD)
    expect(page.locator('[data-stat="clients"]')).to_have_text("0")

    page.locator('[data-nav="clients"]').click()
    expect(page).to_have_url(f"{live_server.url}/account/clients")
    expect(page.get_by_role("heading", level=1)).to_have_text("API clients")
    expect(page.get_by_text("No API clients yet.")).to_be_visible()

    page.get_by_label("Name", exact=True).fill("Nightly risk pipeline")
    page.locator('input[name="scope"][value="data:export"]').uncheck()
    page.get_by_role("button", name="Create", exact=True).click()

    notice = page.locator("[data-created-client]")
    expect(notice).to_be_visible()
    expect(notice).to_contain_text("it is shown only this once")
    client_id = page.locator("#client-id").inner_text().strip()
    secret = page.locator("#client-secret").inner_text().strip()
    assert notice.get_attribute("data-created-client") == client_id
    assert client_id.startswith("mkc_")
    assert secret.startswith("mks_")
    assert len(secret) > 20
    row = page.locator("tbody tr", has_text=client_id)
    expect(row).to_contain_text("Nightly risk pipeline")
    expect(row).to_contain_text("Active")
    expect(row).not_to_contain_text("data:export")

    # The secret shown is the real one, with the chosen scopes.
    granted = _token(live_server, client_id, secret)
    assert granted.status_code == 200, granted.text
    assert set(granted.json()["scope"].split()) == {"profile", "data:read", "data:query", "billing:read"}

    # Loading the page again never shows the secret again.
    page.goto("/account/clients")
    expect(page.locator("[data-created-client]")).to_have_count(0)
    expect(page.locator("#client-secret")).to_have_count(0)
    assert secret not in page.content()
    expect(row).to_contain_text("Active")

    row.get_by_role("button", name="Revoke").click()
    expect(page).to_have_url(f"{live_server.url}/account/clients")
    expect(row.locator(".badge")).to_have_text("Revoked")
    expect(row.get_by_role("button", name="Revoke")).to_have_count(0)
    assert secret not in page.content()

    refused = _token(live_server, client_id, secret)
    assert refused.status_code == 401, refused.text
    page.locator('[data-nav="home"]').click()
    expect(page.locator('[data-stat="clients"]')).to_have_text("0")
