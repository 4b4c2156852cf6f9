"""Catalog, buyer and operator pages through real HTTP: what each shows, and that refused forms change nothing."""

from __future__ import annotations

import re

from litestar.testing import TestClient
from sqlalchemy import Engine, text

from licensing.models import PlanType
from marketplace.app import create_app
from marketplace.catalog.models import PlanVisibility, ProductStatus
from marketplace.core.settings import Settings
from marketplace.subscriptions.models import QualificationStatus
from tests.conftest import TEST_ORIGIN
from tests.factories import make_login_session, make_user
from tests.helpers import csrf
from tests.licensing.factories import ledger_events, row_counts
from tests.marketplace.factories import (
    index_products,
    make_deliveries,
    make_market,
    make_plan,
    make_product,
    make_qualification,
)


def _sign_in(client: TestClient, engine: Engine, org: object) -> None:  # type: ignore[type-arg]
    client.cookies.set("market_session", make_login_session(engine, make_user(engine, org)))  # type: ignore[arg-type]


def test_catalog_search_page_filters_by_facet_and_hides_what_is_not_listed(
    settings: Settings, engine: Engine, database_url: str
) -> None:
    market = make_market(engine, settings.resolved_data_dir)
    sandbox = make_product(
        engine, market.licence, market.resource, mode=market.product.mode.__class__("sandbox"), name="Visits sandbox"
    )
    draft = make_product(engine, market.licence, market.resource, status=ProductStatus.draft, name="Unlisted draft")
    make_plan(engine, sandbox, type=PlanType.free)
    index_products(database_url, market.product, sandbox, draft)
    with TestClient(app=create_app(settings), base_url=TEST_ORIGIN) as client:
        everything = client.get("/catalog")
        assert everything.status_code == 200
        assert 'data-total="2"' in everything.text
        assert "Unlisted draft" not in everything.text
        only_sandbox = client.get("/catalog", params={"mode": "sandbox"})
        assert 'data-total="1"' in only_sandbox.text
        assert f'data-product="{sandbox.id}"' in only_sandbox.text
        assert f'data-product="{market.product.id}"' not in only_sandbox.text
        # A filter value that means nothing is dropped with a note, not a 500.
        odd = client.get("/catalog", params={"mode": "carrier-pigeon"})
        assert odd.status_code == 200
        assert "were not understood" in odd.text
        assert client.get(f"/catalog/{draft.id}").status_code == 404
        chinese = client.get("/catalog", headers={"accept-language": "zh-CN"})
        assert "数据产品目录" in chinese.text


def test_private_plan_is_shown_only_to_its_named_buyer(settings: Settings, engine: Engine) -> None:
    market = make_market(engine, settings.resolved_data_dir)
    make_plan(engine, market.product, name="Bank seat", visibility=PlanVisibility.private, buyers=[market.buyer_a])
    with TestClient(app=create_app(settings), base_url=TEST_ORIGIN) as client:
        _sign_in(client, engine, market.buyer_a)
        assert "Bank seat" in client.get(f"/catalog/{market.product.id}").text
        _sign_in(client, engine, market.buyer_b)
        assert "Bank seat" not in client.get(f"/catalog/{market.product.id}").text


def test_subscribe_form_refusals_store_nothing(settings: Settings, engine: Engine) -> None:
    market = make_market(engine, settings.resolved_data_dir)
    free = make_plan(engine, market.product, type=PlanType.free)
    before = row_counts(engine, "subscription", "entitlement")
    with TestClient(app=create_app(settings), base_url=TEST_ORIGIN) as client:
        _sign_in(client, engine, market.buyer_b)
        url = f"/catalog/{market.product.id}/subscribe"
        base = {"plan_id": str(free.id), "purpose": "credit_assessment", "agreement_version": "2026-11"}
        no_agreement = client.post(url, data={**base, "_csrf_token": csrf(client)})
        assert no_agreement.status_code == 400
        assert "accept the data use agreement" in no_agreement.text
        wrong_purpose = client.post(url, data={**base, "purpose": "urban_planning", "agree": "1", "_csrf_token": csrf(client)})
        assert wrong_purpose.status_code == 400
        assert "data-errors" in wrong_purpose.text
        # A paid plan without the operator's qualification.
        paid = client.post(url, data={**base, "plan_id": str(market.plan.id), "agree": "1", "_csrf_token": csrf(client)})
        assert paid.status_code == 403
        assert row_counts(engine, "subscription", "entitlement") == before
        with engine.begin() as conn:
            conn.execute(
                text("UPDATE product SET status = 'delisted' WHERE id = :id"),
                {"id": market.product.id.hex if engine.dialect.name == "sqlite" else market.product.id},
            )
        delisted = client.post(url, data={**base, "agree": "1", "_csrf_token": csrf(client)})
        assert delisted.status_code == 409, delisted.text[-1500:]
    assert row_counts(engine, "subscription", "entitlement") == before


def test_operator_console_charts_usage_and_decides_a_qualification(settings: Settings, engine: Engine) -> None:
    market = make_market(engine, settings.resolved_data_dir)
    make_deliveries(engine, market.subscription, market.entitlement, [(0, 10), (2, 10), (2, 10)])
    waiting = make_qualification(engine, market.buyer_b, market.operator.id, status=QualificationStatus.submitted)
    with TestClient(app=create_app(settings), base_url=TEST_ORIGIN) as client:
        _sign_in(client, engine, market.operator)
        console = client.get("/operator")
        assert console.status_code == 200
        usage = re.search(r'data-chart="usage".*?</figure>', console.text, re.S)
        assert usage is not None
        assert usage.group(0).count("<rect") == 2  # two days with calls
        assert 'data-chart="revenue"' in console.text
        assert f'data-qualification="{waiting.id}"' in console.text
        # Rejecting needs a reason: refused, nothing changes.
        refused = client.post(f"/operator/qualifications/{waiting.id}", data={"decision": "reject", "_csrf_token": csrf(client)})
        assert refused.status_code == 400
        approved = client.post(
            f"/operator/qualifications/{waiting.id}",
            data={"decision": "approve", "_csrf_token": csrf(client)},
            follow_redirects=False,
        )
        assert approved.status_code == 303
    assert [e["type"] for e in ledger_events(engine, "qualification.")] == ["qualification.approved"]
