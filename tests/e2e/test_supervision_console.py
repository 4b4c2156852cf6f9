"""The supervision console in a real browser: the regulator opens the dashboard (charts and figures from the ledger),
goes to the transactions, drills from a licence down to a delivery whose inclusion proof is checked against the
signed checkpoint, opens that entry on the ledger page, raises a finding with it as evidence and exports the month;
the audit firm sees only its engagement; the Chinese pages say the same."""

from __future__ import annotations

import csv
import re
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import Engine
from sqlmodel.ext.asyncio.session import AsyncSession

from marketplace.core.events import Actor, DomainEvent
from marketplace.core.identity.models import User
from marketplace.core.principal import OrgKind, Role
from marketplace.core.types import utcnow
from supervision import engagements, services
from supervision.schemas import EngagementCreate
from supervision.signing import load_ledger_signer
from tests.conftest import make_settings
from tests.e2e.conftest import LiveServer
from tests.factories import PASSWORD, make_org, make_user
from tests.licensing.factories import ledger_events
from tests.supervision.ledger_helpers import run

pytestmark = pytest.mark.e2e

LICENCE, LICENCE_B = str(uuid.UUID(int=4242)), str(uuid.UUID(int=4343))
PRODUCT = str(uuid.UUID(int=5151))


def _sign_in(page: Page, user: User) -> None:
    page.goto("/login")
    page.get_by_label("E-mail").fill(user.email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator(".who-name")).to_have_text(user.display_name)


def _world(engine: Engine, database_url: str, var_dir: Path, server: LiveServer) -> dict[str, Any]:
    """Two operators under their own licences, a buyer, a month of payments and deliveries, a signed checkpoint, and
    an engagement of the audit firm over the first operator."""
    harbour = make_org(engine, OrgKind.operator, "Harbour Data Ops", "港湾数据运营")
    summit = make_org(engine, OrgKind.operator, "Summit Analytics", "峰顶分析")
    buyer = make_org(engine, OrgKind.buyer, "Lakeside Credit", "湖畔征信")
    owner = make_org(engine, OrgKind.owner, "Data Authority", "数据主管部门")
    regulator = make_org(engine, OrgKind.regulator, "Market Regulator", "市场监管")
    auditor = make_org(engine, OrgKind.auditor, "Clearview Audit", "明鉴审计")
    first = utcnow().date().replace(day=1) - timedelta(days=20)
    made = []
    for n in range(16):
        side = (n // 2) % 2
        made.append(
            DomainEvent(
                type=("payment.received", "delivery.recorded")[n % 2],
                actor=Actor("system", "e2e"),
                orgs=((harbour.id, summit.id)[side], buyer.id),
                subjects={
                    "licence": (LICENCE, LICENCE_B)[side],
                    "product": PRODUCT if side == 0 else str(uuid.UUID(int=5252)),
                    "subscription": str(uuid.UUID(int=6000 + side)),
                },
                payload={"amount": f"{1000 + n * 10}.00", "currency": "CNY"} if n % 2 == 0 else {"mode": "api", "rows": 100},
                occurred_at=datetime.combine(first + timedelta(days=n), datetime.min.time(), UTC),
            )
        )
    settings = make_settings(database_url, var_dir, public_url=server.url)  # the server's signer
    owner_admin = make_user(engine, owner, Role.admin)

    async def write(session: AsyncSession) -> None:
        await services.record_many(session, made)
        await session.commit()
        from marketplace.core.principal import Principal

        await engagements.grant_engagement(
            session,
            Principal(org_id=owner.id, org_kind=OrgKind.owner, org_name=owner.name, user_id=owner_admin.id, role=Role.admin),
            EngagementCreate(
                auditor_id=auditor.id,
                operator_ids=[harbour.id],
                period_start=first - timedelta(days=1),
                period_end=utcnow().date(),
                expires_at=datetime.now(UTC) + timedelta(days=30),
            ),
        )
        await services.sign_checkpoint(session, load_ledger_signer(settings))

    # Playwright's sync API keeps an event loop on this thread: write on a thread of its own.
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(run, database_url, write).result()
    return {
        "regulator": make_user(engine, regulator, Role.member),
        "auditor": make_user(engine, auditor, Role.member),
        "first": first,
        "harbour": str(harbour.id),
    }


def test_the_regulator_drills_from_the_dashboard_to_a_delivery_proof_raises_a_finding_and_exports(
    page: Page, live_server: LiveServer, engine: Engine, database_url: str, var_dir: Path
) -> None:
    world = _world(engine, database_url, var_dir, live_server)
    _sign_in(page, world["regulator"])

    # The dashboard: charts, and the figures of the ledger.
    page.locator('[data-nav="supervision"]').click()
    expect(page).to_have_url(re.compile(r"/supervision$"))
    expect(page.locator('[data-chart="revenue"] svg rect').first).to_be_attached()
    expect(page.locator('[data-chart="deliveries"]')).to_be_visible()
    expect(page.locator('[data-stat="transactions"]')).to_have_text("8")
    expect(page.locator('[data-table="operators"]')).to_contain_text("Harbour Data Ops")

    # The transactions, filtered to payments, then a licence's trail.
    page.locator(".subnav").get_by_role("link", name="Transactions").click()
    expect(page).to_have_url(re.compile(r"/supervision/events$"))
    page.get_by_label("Event type").select_option("payment.received")
    page.get_by_role("button", name="Search").click()
    expect(page.locator('[data-table="events"] tbody tr')).to_have_count(8)
    page.locator(f'a[href="/supervision/licences/{LICENCE}"]').first.click()
    expect(page).to_have_url(re.compile(rf"/supervision/licences/{LICENCE}$"))
    expect(page.locator("[data-checkpoint-status]")).to_have_attribute("data-checkpoint-status", "ok")
    deliveries = page.locator('[data-table="deliveries"] tbody tr')
    expect(deliveries).to_have_count(4)
    first_delivery = deliveries.first
    index = first_delivery.get_attribute("data-entry")
    assert index is not None
    first_delivery.locator('[data-proof="verified"] summary').click()
    expect(first_delivery.locator(".proof li").first).to_be_visible()

    # The entry on the ledger page, its proof verified there too.
    first_delivery.get_by_role("link", name=index, exact=True).click()
    expect(page).to_have_url(re.compile(rf"/supervision/ledger\?entry={index}$"))
    expect(page.locator(f'[data-entry="{index}"]')).to_contain_text("delivery.recorded")
    expect(page.locator("[data-proof-verified]")).to_be_visible()

    # A finding against the operator with that delivery as evidence.
    page.goto("/supervision/findings")
    page.get_by_label("Operator").select_option(label="Harbour Data Ops")
    page.get_by_label("Title").fill("Deliveries to check")
    page.get_by_label("What was found").fill("Deliveries after the agreed volume.")
    page.get_by_label("Evidence: ledger entries").fill(index)
    page.get_by_role("button", name="Raise the finding").click()
    expect(page).to_have_url(re.compile(r"/supervision/findings/[0-9a-f-]{36}\?done=raised$"))
    expect(page.locator("[data-evidence]")).to_contain_text(f"Ledger entry {index}")
    assert [e["payload"]["evidence"] for e in ledger_events(engine, "finding.raised")] == [[int(index)]]

    # The month exported as CSV, with every event of the month the checkpoint covers.
    page.goto("/supervision/exports")
    first: date = world["first"]
    page.get_by_label("First day").fill(first.isoformat())
    page.get_by_label("Until (not included)").fill((first + timedelta(days=31)).isoformat())
    with page.expect_download() as download:
        page.get_by_role("button", name="Download").click()
    lines = Path(download.value.path()).read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith("leaf_index,event_type")
    rows = list(csv.DictReader(lines))
    size = int(rows[0]["checkpoint_size"])
    expected = [
        e["index"]
        for e in ledger_events(engine)
        if first <= date.fromisoformat(e["time"][:10]) < first + timedelta(days=31) and e["index"] < size
    ]
    assert [int(r["leaf_index"]) for r in rows] == expected
    assert len(expected) >= 16


@pytest.mark.parametrize("browser_locale", ["zh-CN"])
def test_the_audit_firm_sees_only_its_engagement_in_chinese(
    page: Page, live_server: LiveServer, engine: Engine, database_url: str, var_dir: Path
) -> None:
    world = _world(engine, database_url, var_dir, live_server)
    page.goto("/login")
    page.locator('input[name="email"]').fill(world["auditor"].email)
    page.locator('input[name="password"]').fill(PASSWORD)
    page.locator('form [type="submit"]').click()
    page.goto("/supervision")
    expect(page.locator("h1")).to_have_text("监管看板")
    expect(page.locator("[data-scope]")).to_be_visible()
    expect(page.locator('[data-table="operators"]')).to_contain_text("港湾数据运营")
    expect(page.locator('[data-table="operators"]')).not_to_contain_text("峰顶分析")
    page.goto("/supervision/events")
    harbours = [e for e in ledger_events(engine) if world["harbour"] in e["orgs"]]
    expect(page.locator('[data-table="events"] tbody tr[data-entry]')).to_have_count(len(harbours))
    for e in harbours:
        expect(page.locator(f'tr[data-entry="{e["index"]}"]')).to_be_attached()
    refused = page.goto(f"/supervision/licences/{LICENCE_B}")
    assert refused is not None
    assert refused.status == 403
