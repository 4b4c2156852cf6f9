"""An audit firm sees unlisted products only under the licences its engagements in force cover (listed products
are public)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from litestar.testing import TestClient
from sqlalchemy import Engine

from marketplace.catalog.models import Product, ProductStatus
from marketplace.core.principal import OrgKind, Role
from marketplace.core.settings import Settings
from tests.factories import make_login_session, make_org, make_user
from tests.helpers import use_session
from tests.marketplace.delivery.support import update
from tests.marketplace.factories import make_market


def test_an_auditor_sees_a_draft_product_only_inside_its_engagement(
    client: TestClient[Any], engine: Engine, settings: Settings
) -> None:
    market = make_market(engine, settings.resolved_data_dir)
    other = make_market(engine, settings.resolved_data_dir, owner=market.owner)
    for m in (market, other):
        update(engine, Product, m.product.id, status=ProductStatus.draft)
    auditor = make_org(engine, OrgKind.auditor)
    auditor_session = make_login_session(engine, make_user(engine, auditor))
    use_session(client, auditor_session)
    assert client.get(f"/api/catalog/products/{market.product.id}").status_code == 404
    client.cookies.clear()
    headers = use_session(client, make_login_session(engine, make_user(engine, market.owner, Role.admin)))
    granted = client.post(
        "/api/supervision/engagements",
        json={
            "auditor_id": str(auditor.id),
            "operator_ids": [str(market.operator.id)],
            "period_start": (datetime.now(UTC) - timedelta(days=30)).date().isoformat(),
            "period_end": datetime.now(UTC).date().isoformat(),
            "expires_at": (datetime.now(UTC) + timedelta(days=30)).isoformat(),
        },
        headers=headers,
    )
    assert granted.status_code == 201, granted.text
    client.cookies.clear()
    use_session(client, auditor_session)
    assert client.get(f"/api/catalog/products/{market.product.id}").status_code == 200
    assert client.get(f"/api/catalog/products/{other.product.id}").status_code == 404, "another operator's draft"
