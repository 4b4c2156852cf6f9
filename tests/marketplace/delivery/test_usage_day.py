"""The daily usage the consoles chart (``usage_day``) adds up the delivery rows exactly: kept by the meter in the
flush that writes them, and filled from the deliveries already metered by the migration that introduces it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, insert, text

from marketplace.core.db import create_sync_engine
from marketplace.core.settings import Settings
from marketplace.delivery.models import Delivery
from marketplace.migrations import upgrade
from tests.marketplace.delivery.support import bearer, delivery_client, rows_path
from tests.marketplace.factories import make_market

PER_DAY = (
    "SELECT {day}, product_id, buyer_org_id, operator_id, mode, count(*), sum(rows), sum(bytes) FROM delivery "
    "GROUP BY {day}, product_id, buyer_org_id, operator_id, mode ORDER BY 1, 2, 3, 4, 5"
)
KEPT = "SELECT day, product_id, buyer_org_id, operator_id, mode, calls, rows, bytes FROM usage_day ORDER BY 1, 2, 3, 4, 5"


def _both(engine: Engine) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    day = "date(occurred_at)" if engine.dialect.name == "sqlite" else "(occurred_at AT TIME ZONE 'UTC')::date"
    with engine.connect() as conn:
        added_up = [tuple(str(v) for v in row) for row in conn.execute(text(PER_DAY.format(day=day)))]
        kept = [tuple(str(v) for v in row) for row in conn.execute(text(KEPT))]
    return added_up, kept


def test_the_meter_keeps_usage_day_equal_to_its_deliveries(settings: Settings, engine: Engine) -> None:
    market = make_market(engine, settings.resolved_data_dir)
    with delivery_client(settings) as client:
        headers = bearer(client, engine, market.buyer_a)
        for limit in (1, 2, 3, 4):
            assert client.get(rows_path(market.product.id, f"limit={limit}"), headers=headers).status_code == 200
    added_up, kept = _both(engine)
    assert len(kept) == 1
    assert kept == added_up
    assert kept[0][5:] == ("4", "10", added_up[0][7])


def test_the_migration_adds_up_the_deliveries_already_metered(fresh_database_url: str, tmp_path: Path) -> None:
    upgrade(fresh_database_url, "0011_supervision_cursor")
    engine = create_sync_engine(fresh_database_url)
    try:
        market = make_market(engine, tmp_path / "data")
        start = datetime(2026, 11, 30, 23, 59, 0, tzinfo=UTC)  # across midnight (UTC)
        rows = [
            {
                "id": uuid.uuid4(),
                "entitlement_id": market.entitlement.id,
                "subscription_id": market.subscription.id,
                "buyer_org_id": market.buyer_a.id,
                "operator_id": market.operator.id,
                "product_id": market.product.id,
                "mode": market.entitlement.mode.value,
                "rows": 10 + i,
                "bytes": 100 * i,
                "occurred_at": start + timedelta(seconds=20 * i),
            }
            for i in range(6)
        ]
        with engine.begin() as conn:
            conn.execute(insert(Delivery.__table__), rows)  # type: ignore[attr-defined]
        upgrade(fresh_database_url)
        added_up, kept = _both(engine)
        assert [r[0] for r in kept] == ["2026-11-30", "2026-12-01"]
        assert [r[5] for r in kept] == ["3", "3"]
        assert kept == added_up
    finally:
        engine.dispose()
