"""The owner's licensing pages in a real browser: the review queue with its automated check results
(approve one, see it listed), and an upload of new contents with its progress and its errors."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import Engine

from licensing.schemas import ListingSubmission
from licensing.services import reviews
from marketplace.core.db import Database
from marketplace.core.identity.models import Organisation, User
from marketplace.core.principal import OrgKind
from marketplace.demo_licensing import principal_of
from tests.conftest import make_settings
from tests.e2e.conftest import LiveServer
from tests.factories import PASSWORD, make_org, make_user
from tests.licensing.factories import (
    VISIT_FIELDS,
    listing_submission,
    make_licence,
    make_visit_resource,
    row_counts,
    write_csv,
)

pytestmark = pytest.mark.e2e


def _sign_in(page: Page, user: User) -> None:
    page.goto("/login")
    page.get_by_label("E-mail").fill(user.email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator(".who-name")).to_have_text(user.display_name)


def _submit(database_url: str, var_dir: Path, operator: Organisation, user: User, body: dict[str, object]) -> None:
    """The operator submits a product for listing (through the service, as its page or API would)."""
    settings = make_settings(database_url, var_dir)

    async def work() -> None:
        database = Database(database_url, pool_size=1)
        try:
            async with database.session() as session:
                await reviews.submit_for_listing(
                    session, principal_of(operator, user), settings, ListingSubmission.model_validate(body)
                )
        finally:
            await database.dispose()

    # Playwright's sync API keeps an event loop on this thread.
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, work()).result()


def test_owner_approves_a_product_from_the_review_queue(
    page: Page, live_server: LiveServer, engine: Engine, database_url: str, var_dir: Path
) -> None:
    owner, operator = make_org(engine, OrgKind.owner), make_org(engine, OrgKind.operator)
    reviewer, operator_user = make_user(engine, owner), make_user(engine, operator)
    data_dir = make_settings(database_url, var_dir).resolved_data_dir
    resource = make_visit_resource(engine, owner, data_dir)
    licence = make_licence(engine, owner, operator, [resource])
    _submit(
        database_url, var_dir, operator, operator_user, listing_submission(licence, resource, product_name="Visits by district")
    )

    _sign_in(page, reviewer)
    page.locator('[data-nav="reviews"]').click()
    page.get_by_role("link", name="pending review").click()
    card = page.locator('article[data-review="Visits by district"]')
    expect(card).to_have_attribute("data-status", "pending")
    expect(card.locator('[data-check="k_anonymity"]')).to_have_attribute("data-passed", "yes")
    expect(card.locator('[data-check="direct_identifiers_protected"]')).to_have_attribute("data-passed", "yes")
    expect(card.locator("[data-k]")).to_have_text("10")
    card.get_by_label("Reason for approval").fill("Identifiers removed, k = 10 above the licence's 5")
    card.get_by_role("button", name="Approve and list").click()
    expect(page.locator('article[data-review="Visits by district"]')).to_have_count(0)
    page.locator(".filters").get_by_role("link", name="approved (listed)").click()
    listed = page.locator('article[data-review="Visits by district"]')
    expect(listed).to_have_attribute("data-status", "approved")
    expect(listed).to_contain_text("Identifiers removed, k = 10")


def test_owner_uploads_contents_with_progress_and_sees_what_is_wrong(
    page: Page, live_server: LiveServer, engine: Engine, database_url: str, var_dir: Path, tmp_path: Path
) -> None:
    owner = make_org(engine, OrgKind.owner)
    data_dir = make_settings(database_url, var_dir).resolved_data_dir
    resource = make_visit_resource(engine, owner, data_dir)
    names = [f.name for f in VISIT_FIELDS]
    good_row = ["Li Na", "110101199001011234", "34", "Haidian", "2025-03-01", "J20", "120.50", "none"]
    bad = write_csv(tmp_path / "bad.csv", [*names[:-1], "remarks"], [good_row, [*good_row[:2], "thirty", *good_row[3:]]])
    good = write_csv(tmp_path / "good.csv", names, [good_row] * 500)

    _sign_in(page, make_user(engine, owner))
    page.goto(f"/licensing/resources/{resource.id}")
    expect(page.locator('[data-version="1"]')).to_have_count(1)
    page.locator("#upload-file").set_input_files(str(bad))
    page.get_by_role("button", name="Upload").click()
    result = page.locator("#upload-result")
    expect(result).to_contain_text("Not stored")
    expect(result).to_contain_text("notes")
    expect(result).to_contain_text("remarks")
    assert row_counts(engine, "resource_version") == {"resource_version": 1}

    page.locator("#upload-file").set_input_files(str(good))
    page.get_by_role("button", name="Upload").click()
    expect(page.locator("#upload-progress progress")).to_be_visible()
    expect(page.locator("#upload-result")).to_contain_text("Stored as version v2")
    expect(page.locator('[data-version="2"]')).to_have_count(1, timeout=15_000)
    assert row_counts(engine, "resource_version") == {"resource_version": 2}
