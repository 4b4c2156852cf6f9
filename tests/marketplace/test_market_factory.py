"""The shared market factory builds a consistent world (other tests of catalog, subscriptions and delivery rely on it)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine
from sqlmodel import Session

from marketplace.catalog.models import ProductStatus
from marketplace.subscriptions.models import Entitlement, SubscriptionStatus
from tests.marketplace.factories import VISIT_DELIVERED, delivered_fields, make_market


def test_market_has_a_listed_product_and_an_active_entitlement(engine: Engine, tmp_path: Path) -> None:
    market = make_market(engine, tmp_path)
    assert market.product.status is ProductStatus.listed
    assert market.subscription.status is SubscriptionStatus.active
    assert delivered_fields(market.product) == VISIT_DELIVERED
    with Session(engine) as session:
        stored = session.get(Entitlement, market.entitlement.id)
        assert stored is not None
        assert stored.buyer_org_id == market.buyer_a.id
        assert stored.valid_until > stored.valid_from
