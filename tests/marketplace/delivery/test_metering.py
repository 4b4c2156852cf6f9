"""Metering: every delivery is a ``Delivery`` row, a usage counter bump and a ``delivery.recorded`` ledger event
(metadata only), written with group commit; quota counts what is still buffered; shutdown flushes the buffer;
usage reads are scoped."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import Engine
from sqlalchemy import event as orm_events
from sqlalchemy.orm import Session as OrmSession

from licensing.models import DeliveryMode
from marketplace.core.principal import OrgKind, Principal, Role
from marketplace.core.settings import Settings
from marketplace.delivery.services import list_exports, usage_by_day, usage_by_mode
from marketplace.subscriptions.models import Entitlement
from supervision.engagements import grant_engagement
from supervision.schemas import EngagementCreate
from tests.factories import make_org, make_user
from tests.helpers import assert_problem
from tests.licensing.factories import ledger_events, row_counts
from tests.marketplace.delivery.support import bearer, counters, deliveries, delivery_client, rows_path, update, wait_for_exports
from tests.marketplace.factories import make_market
from tests.supervision.ledger_helpers import run

T = TypeVar("T")


def _run(settings: Settings, work: Callable[[Any], Awaitable[T]]) -> T:
    return run(settings.resolved_database_url, work)


def _principal(org: Any) -> Principal:
    return Principal(org_id=org.id, org_kind=org.kind, org_name=org.name)


def test_deliveries_are_metered_with_group_commit(settings: Settings, engine: Engine) -> None:
    market = make_market(engine, settings.resolved_data_dir)
    with delivery_client(settings) as client:
        headers = bearer(client, engine, market.buyer_a)
        meter = client.app.state["delivery_runtime"].meter
        meter.max_delay_s = 60.0  # hold everything until shutdown: one transaction for all
        sizes = []
        for limit in (3, 4, 5, 6, 7):
            answer = client.get(rows_path(market.product.id, f"limit={limit}"), headers=headers)
            sizes.append(len(answer.content))
        assert row_counts(engine, "delivery") == {"delivery": 0}, "buffered, not yet written"
        assert client.get("/data/v1/entitlements", headers=headers).json()["items"][0]["used"]["calls"] == 5
    assert meter.stats["flushes"] == 1
    assert meter.stats["deliveries"] == 5
    rows = deliveries(engine)
    assert [r["rows"] for r in rows] == [3, 4, 5, 6, 7]
    assert [r["bytes"] for r in rows] == sizes
    assert {r["mode"] for r in rows} == {"api"}
    assert all(r["client_id"] for r in rows)
    assert counters(engine, market.entitlement.id) == {"calls": 5, "rows": 25, "bytes": sum(sizes)}
    recorded = ledger_events(engine, "delivery.recorded")
    assert len(recorded) == 5
    assert sorted(r["ledger_index"] for r in rows) == [e["index"] for e in recorded]
    for event in recorded:
        assert set(event["payload"]) == {"mode", "rows", "bytes"}
        assert event["subjects"]["entitlement"] == str(market.entitlement.id)
        assert set(event["orgs"]) == {str(market.buyer_a.id), str(market.operator.id), str(market.owner.id)}
        assert event["actor"]["kind"] == "client"


def test_quota_counts_deliveries_still_in_the_buffer(settings: Settings, engine: Engine) -> None:
    market = make_market(engine, settings.resolved_data_dir)
    update(engine, Entitlement, market.entitlement.id, quota_calls=3)
    with delivery_client(settings) as client:
        headers = bearer(client, engine, market.buyer_a)
        client.app.state["delivery_runtime"].meter.max_delay_s = 60.0
        for _ in range(3):
            assert client.get(rows_path(market.product.id, "limit=1"), headers=headers).status_code == 200
        assert row_counts(engine, "delivery") == {"delivery": 0}
        assert_problem(client.get(rows_path(market.product.id, "limit=1"), headers=headers), 429, "quota_exceeded")
    assert row_counts(engine, "delivery") == {"delivery": 3}


def test_a_flush_is_unstable_from_its_commit_until_its_usage_leaves_the_buffer(settings: Settings, engine: Engine) -> None:
    """The commit is visible to other connections before the flush settles the buffer: a check reading the counter
    in that window must see an odd (unstable) epoch, or it would count the flushed calls twice."""
    market = make_market(engine, settings.resolved_data_dir)
    seen: list[tuple[int, int]] = []
    with delivery_client(settings) as client:
        headers = bearer(client, engine, market.buyer_a)
        meter = client.app.state["delivery_runtime"].meter
        meter.max_delay_s = 60.0
        for _ in range(2):
            assert client.get(rows_path(market.product.id, "limit=1"), headers=headers).status_code == 200
        before = meter.epoch
        month = next(iter(meter._pending))[1]

        def at_commit(session: Any) -> None:
            seen.append((meter.epoch, meter.pending(market.entitlement.id, month).calls))

        orm_events.listen(OrmSession, "after_commit", at_commit)
    try:  # leaving the client shuts the app down, which flushes the buffer
        assert meter.stable(meter.epoch)
        assert meter.epoch == before + 2
        assert meter.pending(market.entitlement.id, month).calls == 0
    finally:
        orm_events.remove(OrmSession, "after_commit", at_commit)
    assert (before + 1, 2) in seen, "the commit happened inside an odd epoch, with the calls still pending"
    assert not meter.stable(before + 1)
    assert counters(engine, market.entitlement.id)["calls"] == 2


def test_usage_reads_are_scoped(settings: Settings, engine: Engine) -> None:
    market = make_market(engine, settings.resolved_data_dir)
    files = make_market(engine, settings.resolved_data_dir, mode=DeliveryMode.file, owner=market.owner, buyer_b=market.buyer_b)
    other_operator = make_org(engine, OrgKind.operator)
    regulator = make_org(engine, OrgKind.regulator)
    with delivery_client(settings) as client:
        headers_a = bearer(client, engine, market.buyer_a)
        for limit in (2, 3):
            assert client.get(rows_path(market.product.id, f"limit={limit}"), headers=headers_a).status_code == 200
        headers_f = bearer(client, engine, files.buyer_a)
        assert (
            client.post(f"/data/v1/products/{files.product.id}/exports", json={"format": "csv"}, headers=headers_f).status_code
            == 202
        )
        wait_for_exports(engine)

    def by_day(org: Any, **kw: Any) -> list[Any]:
        return _run(settings, lambda s: usage_by_day(s, _principal(org), **kw))

    mine = by_day(market.buyer_a)
    assert [(u.product_id, u.calls, u.rows) for u in mine] == [(market.product.id, 2, 5)]
    assert mine[0].bytes > 0
    assert by_day(market.buyer_b) == []
    assert {u.product_id for u in by_day(market.operator)} == {market.product.id}
    assert {u.product_id for u in by_day(files.operator)} == {files.product.id}
    assert by_day(other_operator) == []
    assert {u.product_id for u in by_day(market.owner)} == {market.product.id, files.product.id}
    assert {u.product_id for u in by_day(regulator)} == {market.product.id, files.product.id}
    assert [u.product_id for u in by_day(regulator, product_id=files.product.id)] == [files.product.id]
    # An audit firm: nothing without an engagement; with one over the file operator, that operator's usage only.
    auditor = make_org(engine, OrgKind.auditor)
    assert by_day(auditor) == []
    admin = make_user(engine, market.owner, Role.admin)
    owner = Principal(org_id=market.owner.id, org_kind=OrgKind.owner, org_name="owner", user_id=admin.id, role=Role.admin)
    terms = EngagementCreate(
        auditor_id=auditor.id,
        operator_ids=[files.operator.id],
        period_start=date(2026, 1, 1),
        period_end=date(2026, 12, 31),
        expires_at=datetime.now(UTC) + timedelta(days=5),
    )
    _run(settings, lambda s: grant_engagement(s, owner, terms))
    assert {u.product_id for u in by_day(auditor)} == {files.product.id}
    modes = _run(settings, lambda s: usage_by_mode(s, _principal(regulator)))
    assert [(m.mode, m.calls, m.rows) for m in modes] == [(DeliveryMode.api, 2, 5), (DeliveryMode.file, 1, 60)]
    exports_f = _run(settings, lambda s: list_exports(s, _principal(files.buyer_a)))
    assert [e.product_id for e in exports_f] == [files.product.id]
    assert _run(settings, lambda s: list_exports(s, _principal(market.buyer_a))) == []
    assert len(_run(settings, lambda s: list_exports(s, _principal(files.operator)))) == 1
    assert _run(settings, lambda s: list_exports(s, _principal(market.operator))) == []
    assert uuid.UUID(str(exports_f[0].id))
