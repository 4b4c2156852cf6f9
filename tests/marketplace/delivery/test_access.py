"""The access check of every delivery call: each refusal code fires, refusals deliver and meter nothing but are
recorded (one ``delivery.refused`` event per flush per entitlement and code, with a count), and a licence
suspension through the licensing API stops the very next call."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import Engine

from licensing.models import DeliveryMode, Licence, LicenceStatus
from marketplace.catalog.models import Product, ProductStatus
from marketplace.core.principal import Role
from marketplace.core.settings import Settings
from marketplace.core.types import utcnow
from marketplace.subscriptions.models import Entitlement, Subscription, SubscriptionStatus
from tests.conftest import make_settings
from tests.factories import make_login_session, make_user
from tests.helpers import assert_problem, use_session
from tests.licensing.factories import row_counts
from tests.marketplace.delivery.support import bearer, delivery_client, refusal_events, rows_path, terminate_backends, update
from tests.marketplace.factories import make_market


def _refused(
    settings: Settings, engine: Engine, change: Any, status: int, code: str, *, mode: DeliveryMode = DeliveryMode.api
) -> dict[str, Any]:
    market = make_market(engine, settings.resolved_data_dir, mode=mode)
    change(market)
    with delivery_client(settings) as client:
        headers = bearer(client, engine, market.buyer_a)
        body = assert_problem(client.get(rows_path(market.product.id), headers=headers), status, code)
    assert row_counts(engine, "delivery", "usage_counter") == {"delivery": 0, "usage_counter": 0}
    events = refusal_events(engine)
    assert [e["payload"]["code"] for e in events] == [code]
    assert events[0]["payload"]["count"] == 1
    assert events[0]["subjects"]["product"] == str(market.product.id)
    return body


def test_a_call_within_the_entitlement_is_answered(settings: Settings, engine: Engine) -> None:
    market = make_market(engine, settings.resolved_data_dir)
    with delivery_client(settings) as client:
        answer = client.get(rows_path(market.product.id, "limit=5"), headers=bearer(client, engine, market.buyer_a))
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["items"]) == 5
    assert row_counts(engine, "delivery") == {"delivery": 1}
    assert refusal_events(engine) == []


def test_buyer_b_token_on_buyer_a_product_is_not_entitled(settings: Settings, engine: Engine) -> None:
    market = make_market(engine, settings.resolved_data_dir)
    with delivery_client(settings) as client:
        headers = bearer(client, engine, market.buyer_b)
        assert_problem(client.get(rows_path(market.product.id), headers=headers), 403, "not_entitled")
        # An unknown product answers the same: nothing is revealed.
        assert_problem(client.get(rows_path("0b3d3c1e-1111-4222-8333-444455556666"), headers=headers), 403, "not_entitled")
    assert row_counts(engine, "delivery") == {"delivery": 0}
    events = refusal_events(engine)
    assert sorted(e["payload"]["code"] for e in events) == ["not_entitled", "not_entitled"]
    assert all(e["orgs"] == [str(market.buyer_b.id)] for e in events)


def test_entitlement_expired(settings: Settings, engine: Engine) -> None:
    def expire(market: Any) -> None:
        update(engine, Entitlement, market.entitlement.id, valid_until=utcnow() - timedelta(minutes=1))

    _refused(settings, engine, expire, 403, "entitlement_expired")


def test_entitlement_ended_by_expiry_says_expired(settings: Settings, engine: Engine) -> None:
    def expire(market: Any) -> None:
        update(engine, Subscription, market.subscription.id, status=SubscriptionStatus.expired)
        update(engine, Entitlement, market.entitlement.id, ended_at=utcnow(), ended_reason="expired")

    _refused(settings, engine, expire, 403, "entitlement_expired")


def test_entitlement_ended_says_why(settings: Settings, engine: Engine) -> None:
    def revoke(market: Any) -> None:
        update(engine, Subscription, market.subscription.id, status=SubscriptionStatus.revoked, status_reason="Resold the data")
        update(engine, Entitlement, market.entitlement.id, ended_at=utcnow(), ended_reason="revoked")

    body = _refused(settings, engine, revoke, 403, "entitlement_ended")
    assert body["ended_reason"] == "revoked"
    assert body["reason"] == "Resold the data"


def test_subscription_past_due_after_its_grace(settings: Settings, engine: Engine) -> None:
    def past_due(market: Any) -> None:
        update(engine, Subscription, market.subscription.id, status=SubscriptionStatus.past_due)
        update(engine, Entitlement, market.entitlement.id, valid_until=utcnow() - timedelta(minutes=1))

    _refused(settings, engine, past_due, 403, "subscription_past_due")


def test_a_past_due_subscription_delivers_within_its_grace(settings: Settings, engine: Engine) -> None:
    market = make_market(engine, settings.resolved_data_dir)
    update(engine, Subscription, market.subscription.id, status=SubscriptionStatus.past_due)
    update(engine, Entitlement, market.entitlement.id, valid_until=utcnow() + timedelta(days=3))
    with delivery_client(settings) as client:
        answer = client.get(rows_path(market.product.id, "limit=2"), headers=bearer(client, engine, market.buyer_a))
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["items"]) == 2


def test_licence_revoked_and_expired(settings: Settings, engine: Engine) -> None:
    _refused(
        settings, engine, lambda m: update(engine, Licence, m.licence.id, status=LicenceStatus.revoked), 403, "licence_revoked"
    )


def test_licence_expired_by_status(settings: Settings, engine: Engine) -> None:
    _refused(
        settings, engine, lambda m: update(engine, Licence, m.licence.id, status=LicenceStatus.expired), 403, "licence_expired"
    )


def test_licence_past_its_term_is_expired(settings: Settings, engine: Engine) -> None:
    def past_term(market: Any) -> None:
        today = utcnow().date()
        update(engine, Licence, market.licence.id, starts_on=today - timedelta(days=60), ends_on=today - timedelta(days=1))

    _refused(settings, engine, past_term, 403, "licence_expired")


def test_product_delisted(settings: Settings, engine: Engine) -> None:
    _refused(
        settings, engine, lambda m: update(engine, Product, m.product.id, status=ProductStatus.delisted), 403, "product_delisted"
    )


def test_mode_not_entitled(settings: Settings, engine: Engine) -> None:
    body = _refused(settings, engine, lambda m: None, 403, "mode_not_entitled", mode=DeliveryMode.sandbox)
    assert body["entitled_mode"] == "sandbox"


def test_insufficient_scope(settings: Settings, engine: Engine) -> None:
    market = make_market(engine, settings.resolved_data_dir)
    with delivery_client(settings) as client:
        headers = bearer(client, engine, market.buyer_a, scopes=["data:query"])
        assert_problem(client.get(rows_path(market.product.id), headers=headers), 403, "insufficient_scope")
    assert row_counts(engine, "delivery") == {"delivery": 0}


def test_quota_of_calls(settings: Settings, engine: Engine) -> None:
    market = make_market(engine, settings.resolved_data_dir)
    update(engine, Entitlement, market.entitlement.id, quota_calls=2)
    with delivery_client(settings) as client:
        headers = bearer(client, engine, market.buyer_a)
        # The first two are still in the meter's buffer (or just flushed) when the third is checked.
        assert client.get(rows_path(market.product.id, "limit=1"), headers=headers).status_code == 200
        assert client.get(rows_path(market.product.id, "limit=1"), headers=headers).status_code == 200
        answer = client.get(rows_path(market.product.id, "limit=1"), headers=headers)
        assert_problem(answer, 429, "quota_exceeded")
        assert int(answer.headers["retry-after"]) > 0
    assert row_counts(engine, "delivery") == {"delivery": 2}


def test_quota_of_rows_clamps_the_last_page(settings: Settings, engine: Engine) -> None:
    market = make_market(engine, settings.resolved_data_dir)
    update(engine, Entitlement, market.entitlement.id, quota_rows=15)
    with delivery_client(settings) as client:
        headers = bearer(client, engine, market.buyer_a)
        assert len(client.get(rows_path(market.product.id, "limit=10"), headers=headers).json()["items"]) == 10
        assert len(client.get(rows_path(market.product.id, "limit=10"), headers=headers).json()["items"]) == 5
        assert_problem(client.get(rows_path(market.product.id, "limit=10"), headers=headers), 429, "quota_exceeded")
        used = client.get("/data/v1/entitlements", headers=headers).json()["items"][0]["used"]
    assert used["calls"] == 2
    assert used["rows"] == 15


def test_rate_limited(database_url: str, var_dir: Any, engine: Engine) -> None:
    settings = make_settings(database_url, var_dir, delivery_burst=2, delivery_rate_per_second=0.01)
    market = make_market(engine, settings.resolved_data_dir)
    with delivery_client(settings) as client:
        headers = bearer(client, engine, market.buyer_a)
        assert client.get(rows_path(market.product.id, "limit=1"), headers=headers).status_code == 200
        assert client.get(rows_path(market.product.id, "limit=1"), headers=headers).status_code == 200
        answer = client.get(rows_path(market.product.id, "limit=1"), headers=headers)
        assert_problem(answer, 429, "rate_limited")
        assert int(answer.headers["retry-after"]) >= 1
        # Another client of the same buyer has its own bucket.
        other = bearer(client, engine, market.buyer_a)
        assert client.get(rows_path(market.product.id, "limit=1"), headers=other).status_code == 200
    assert row_counts(engine, "delivery") == {"delivery": 3}
    assert [e["payload"]["code"] for e in refusal_events(engine)] == ["rate_limited"]


def test_refusals_are_counted_per_flush(settings: Settings, engine: Engine) -> None:
    market = make_market(engine, settings.resolved_data_dir)
    update(engine, Product, market.product.id, status=ProductStatus.delisted)
    with delivery_client(settings) as client:
        headers = bearer(client, engine, market.buyer_a)
        runtime = client.app.state["delivery_runtime"]
        runtime.meter.max_delay_s = 60.0  # hold the buffer until shutdown
        for _ in range(4):
            assert_problem(client.get(rows_path(market.product.id), headers=headers), 403, "product_delisted")
    events = refusal_events(engine)
    assert len(events) == 1
    assert events[0]["payload"]["count"] == 4
    assert events[0]["subjects"]["entitlement"] == str(market.entitlement.id)
    assert set(events[0]["orgs"]) == {str(market.buyer_a.id), str(market.operator.id), str(market.owner.id)}


def test_licence_suspension_stops_the_very_next_call(settings: Settings, engine: Engine) -> None:
    market = make_market(engine, settings.resolved_data_dir)
    owner_admin = make_user(engine, market.owner, Role.admin)
    with delivery_client(settings) as client:
        headers = bearer(client, engine, market.buyer_a)
        assert client.get(rows_path(market.product.id, "limit=2"), headers=headers).status_code == 200
        csrf = use_session(client, make_login_session(engine, owner_admin))
        suspended = client.post(
            f"/api/licensing/licences/{market.licence.id}/suspend", json={"reason": "Audit finding"}, headers=csrf
        )
        assert suspended.status_code == 200, suspended.text
        client.cookies.clear()
        assert_problem(client.get(rows_path(market.product.id, "limit=2"), headers=headers), 403, "licence_suspended")
        # The sandbox and export routes are refused alike.
        assert_problem(
            client.post(f"/data/v1/products/{market.product.id}/exports", json={"format": "csv"}, headers=headers),
            403,
            "licence_suspended",
        )
    assert row_counts(engine, "delivery", "export") == {"delivery": 1, "export": 0}
    codes = sorted(e["payload"]["code"] for e in refusal_events(engine))
    assert codes == ["licence_suspended", "licence_suspended"]


def test_entitlements_lists_only_running_ones(settings: Settings, engine: Engine) -> None:
    market = make_market(engine, settings.resolved_data_dir)
    ended = make_market(engine, settings.resolved_data_dir, owner=market.owner, operator=market.operator, buyer_a=market.buyer_a)
    update(engine, Entitlement, ended.entitlement.id, ended_at=utcnow(), ended_reason="cancelled")
    with delivery_client(settings) as client:
        listed = client.get("/data/v1/entitlements", headers=bearer(client, engine, market.buyer_a)).json()
        others = client.get("/data/v1/entitlements", headers=bearer(client, engine, market.buyer_b)).json()
    assert [i["product_id"] for i in listed["items"]] == [str(market.product.id)]
    item = listed["items"][0]
    assert item["mode"] == "api"
    assert item["subscription_id"] == str(market.subscription.id)
    assert item["subscription_status"] == "active"
    assert item["fields"] == ["patient_name", "age", "district", "visit_date", "diagnosis", "cost"]
    assert item["quota"] == {"calls": None, "rows": None}
    assert others == {"items": [], "total": 0}


def test_the_state_reader_sees_every_commit_and_recovers_a_lost_connection(
    settings: Settings, engine: Engine, database_url: str
) -> None:
    """The access state is read on delivery's own connection (kept answers on SQLite, a queue of connections and
    answers kept under the access lease on PostgreSQL): a change committed by any other connection is seen by the
    next read (on PostgreSQL once the change has waited for the delivery processes, as every service's commit does),
    and on PostgreSQL the connections the server dropped are opened again."""
    import asyncio

    from sqlalchemy import update as sa_update
    from sqlalchemy.ext.asyncio import create_async_engine
    from sqlmodel import col

    from marketplace.core.db import async_url
    from marketplace.delivery.services.access import read_state
    from marketplace.delivery.services.access_lease import wait_for_delivery_processes
    from marketplace.delivery.services.metering import month_of
    from marketplace.delivery.services.runtime import StateReader

    market = make_market(engine, settings.resolved_data_dir)
    month = month_of(utcnow())

    async def changed(status: LicenceStatus) -> None:
        # Committed on another connection, then waited for as a service's commit does (on this event loop, which
        # the reader's lease renews on).
        changes = create_async_engine(async_url(database_url))
        try:
            async with changes.begin() as connection:
                await connection.execute(sa_update(Licence).where(col(Licence.id) == market.licence.id).values(status=status))
            await wait_for_delivery_processes(changes)
        finally:
            await changes.dispose()

    async def main() -> list[Any]:
        reader = StateReader(async_url(database_url))
        seen = []
        try:
            seen.append((await read_state(reader, market.buyer_a.id, market.product.id, month)).licence_status)
            seen.append((await read_state(reader, market.buyer_a.id, market.product.id, month)).licence_status)
            await changed(LicenceStatus.suspended)
            seen.append((await read_state(reader, market.buyer_a.id, market.product.id, month)).licence_status)
            if reader.dialect_name == "postgresql":
                dropped = terminate_backends(engine, "entitlement")
                assert dropped >= 1
                failed = 0
                for _ in range(StateReader.CONNECTIONS + 1):
                    try:
                        await read_state(reader, market.buyer_a.id, market.product.id, month)
                    except Exception:
                        failed += 1
                # A dropped connection is seen closed and opened again (at worst one read fails per dropped one).
                assert failed <= dropped
            await changed(LicenceStatus.granted)
            seen.append((await read_state(reader, market.buyer_a.id, market.product.id, month)).licence_status)
        finally:
            await reader.close()
        return seen

    assert [LicenceStatus(s) for s in asyncio.run(main())] == [
        LicenceStatus.granted,
        LicenceStatus.granted,
        LicenceStatus.suspended,
        LicenceStatus.granted,
    ]
