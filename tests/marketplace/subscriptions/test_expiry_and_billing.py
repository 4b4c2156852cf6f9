"""What other rooms call: the periodic expiry task, billing's activation of a paid subscription, the scoped lists,
and the operator console's reads (subscribers per product, contracted revenue per month)."""

from __future__ import annotations

import uuid
from datetime import timedelta
from functools import partial
from typing import Any

import pytest
from litestar.testing import TestClient
from sqlalchemy import Engine
from sqlmodel.ext.asyncio.session import AsyncSession

from licensing.models import PlanType
from marketplace.core.errors import Conflict
from marketplace.core.events import Actor
from marketplace.core.principal import OrgKind, Principal
from marketplace.core.tasks import PERIODIC_JOBS
from marketplace.core.types import utcnow
from marketplace.subscriptions import services, tasks
from marketplace.subscriptions.models import SubscriptionStatus
from marketplace.subscriptions.services.subscriptions import add_month
from tests.factories import make_login_session, make_org, make_user
from tests.helpers import use_session
from tests.licensing.factories import ledger_events, row_counts
from tests.marketplace.factories import make_plan, make_qualification, make_subscription
from tests.marketplace.subscriptions.support import (
    TABLES,
    Shop,
    act,
    make_shop,
    stored_entitlement,
    stored_subscription,
    subscribe,
)
from tests.supervision.ledger_helpers import run

BASE = "/api/subscriptions"


def _url(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=False)


async def _activate(session: AsyncSession, *, subscription_id: uuid.UUID) -> services.SubscriptionRecord:
    return await services.activate_subscription(session, subscription_id, None)


def _principal(shop: Shop, party: str) -> Principal:
    org = {"owner": shop.owner, "operator": shop.operator, "buyer": shop.buyer, "buyer_b": shop.buyer_b}[party]
    return Principal(org_id=org.id, org_kind=org.kind, org_name=org.name)


def test_expiry_task_ends_subscriptions_past_their_term_and_is_idempotent(client: TestClient[Any], engine: Engine) -> None:
    shop = make_shop(engine)
    plan = make_plan(engine, shop.product, type=PlanType.free)
    due, due_entitlement = make_subscription(engine, shop.buyer, shop.product, plan, valid_days=-1)
    current, _ = make_subscription(engine, shop.buyer_b, shop.product, plan, valid_days=10)
    assert due_entitlement is not None
    first = tasks.expire_subscriptions_task.apply().get()
    assert first["expired"] == [str(due.id)]
    assert stored_subscription(engine, due.id).status is SubscriptionStatus.expired
    entitlement = stored_entitlement(engine, due.id)
    assert entitlement is not None
    assert entitlement.ended_reason == "expired"
    assert entitlement.ended_at is not None
    assert stored_subscription(engine, current.id).status is SubscriptionStatus.active
    assert [e["type"] for e in ledger_events(engine, "subscription.")] == ["subscription.expired"]
    assert [e["type"] for e in ledger_events(engine, "entitlement.")] == ["entitlement.ended"]
    assert ledger_events(engine, "subscription.")[0]["actor"]["kind"] == "system"
    before = row_counts(engine, *TABLES)
    assert tasks.expire_subscriptions_task.apply().get()["expired"] == []
    assert row_counts(engine, *TABLES) == before
    assert any(job.task_name == "subscriptions.expire_subscriptions_task" for job in PERIODIC_JOBS)
    # Later, the second one expires too.
    later = utcnow() + timedelta(days=11)
    assert run(_url(engine), lambda s: services.expire_due_subscriptions(s, later)) == [current.id]


def test_billing_activates_a_paid_subscription(client: TestClient[Any], engine: Engine) -> None:
    shop = make_shop(engine)
    make_qualification(engine, shop.buyer, shop.operator.id)
    plan = make_plan(engine, shop.product, type=PlanType.monthly, price="500.00", quota_rows=10_000)
    sid = subscribe(client, act(client, shop, "buyer"), plan.id).json()["id"]
    before = utcnow()
    record = run(
        _url(engine), lambda s: services.activate_subscription(s, stored_subscription(engine, sid).id, Actor("system", "billing"))
    )
    assert record.subscription.status is SubscriptionStatus.active
    assert record.entitlement is not None
    assert record.entitlement.quota_rows == 10_000
    assert add_month(before) <= record.entitlement.valid_until <= add_month(utcnow())
    detail = client.get(f"{BASE}/{sid}").json()
    assert detail["status"] == "active"
    assert detail["entitlement"]["fields"] == ["district", "cost"]
    events = ledger_events(engine, "subscription.activated")
    assert events[0]["actor"] == {"kind": "system", "id": "billing"}
    # Renewal: billing extends an active subscription with paid_until.
    paid_until = utcnow() + timedelta(days=62)
    renewed = run(_url(engine), lambda s: services.activate_subscription(s, record.subscription.id, None, paid_until=paid_until))
    assert renewed.entitlement is not None
    assert renewed.entitlement.valid_until == paid_until
    assert [e["type"] for e in ledger_events(engine, "subscription.renewed")] == ["subscription.renewed"]


def test_activation_is_refused_outside_payable_statuses(client: TestClient[Any], engine: Engine) -> None:
    shop = make_shop(engine)
    plan = make_plan(engine, shop.product, type=PlanType.monthly, price="500.00")
    awaiting, _ = make_subscription(engine, shop.buyer, shop.product, plan, status=SubscriptionStatus.awaiting_approval)
    cancelled, _ = make_subscription(engine, shop.buyer_b, shop.product, plan, status=SubscriptionStatus.cancelled)
    before = row_counts(engine, *TABLES)
    for subscription_id in (awaiting.id, cancelled.id):
        with pytest.raises(Conflict) as raised:
            run(_url(engine), partial(_activate, subscription_id=subscription_id))
        assert raised.value.code == "subscription_not_activatable"
    assert row_counts(engine, *TABLES) == before


def test_activation_is_refused_when_the_licence_is_no_longer_in_force(client: TestClient[Any], engine: Engine) -> None:
    shop = make_shop(engine)
    plan = make_plan(engine, shop.product, type=PlanType.monthly, price="500.00")
    pending, _ = make_subscription(engine, shop.buyer, shop.product, plan, status=SubscriptionStatus.pending_payment)
    headers = act(client, shop, "owner")
    suspended = client.post(f"/api/licensing/licences/{shop.licence.id}/suspend", json={"reason": "Audit"}, headers=headers)
    assert suspended.status_code == 200, suspended.text
    before = row_counts(engine, *TABLES)
    with pytest.raises(Conflict) as raised:
        run(_url(engine), lambda s: services.activate_subscription(s, pending.id, None))
    assert raised.value.code == "licence_not_in_force"
    assert row_counts(engine, *TABLES) == before


def test_lists_are_scoped_and_filtered(client: TestClient[Any], engine: Engine) -> None:
    shop = make_shop(engine)
    other = make_shop(engine)  # another owner, operator and buyers
    plan = make_plan(engine, shop.product, type=PlanType.free)
    other_plan = make_plan(engine, other.product, type=PlanType.free)
    mine, _ = make_subscription(engine, shop.buyer, shop.product, plan)
    theirs, _ = make_subscription(engine, shop.buyer_b, shop.product, plan, status=SubscriptionStatus.cancelled)
    elsewhere, _ = make_subscription(engine, other.buyer, other.product, other_plan)

    def ids(party_shop: Shop, party: str, query: str = "") -> set[str]:
        act(client, party_shop, party)
        return {s["id"] for s in client.get(f"{BASE}{query}").json()["items"]}

    assert ids(shop, "buyer") == {str(mine.id)}
    assert ids(shop, "buyer_b") == {str(theirs.id)}
    assert ids(shop, "operator") == {str(mine.id), str(theirs.id)}
    assert ids(shop, "operator", "?status=cancelled") == {str(theirs.id)}
    assert ids(shop, "operator", f"?product_id={other.product.id}") == set()
    assert ids(shop, "owner") == {str(mine.id), str(theirs.id)}
    assert ids(other, "operator") == {str(elsewhere.id)}
    regulator = make_user(engine, make_org(engine, OrgKind.regulator))
    use_session(client, make_login_session(engine, regulator))
    assert {s["id"] for s in client.get(BASE).json()["items"]} == {str(mine.id), str(theirs.id), str(elsewhere.id)}
    page = client.get(f"{BASE}?limit=1&offset=1").json()
    assert len(page["items"]) == 1
    assert page["total"] == 3
    act(client, other, "owner")
    assert client.get(f"{BASE}/{mine.id}").status_code == 404


def test_subscribers_by_product_and_contracted_revenue(client: TestClient[Any], engine: Engine) -> None:
    shop = make_shop(engine)
    plan = make_plan(engine, shop.product, type=PlanType.monthly, price="300.00")
    idle = make_plan(engine, make_shop(engine).product)  # someone else's product
    make_subscription(engine, shop.buyer, shop.product, plan)
    make_subscription(engine, shop.buyer_b, shop.product, plan, status=SubscriptionStatus.expired)
    third = make_org(engine, OrgKind.buyer)
    make_subscription(engine, third, shop.product, plan, status=SubscriptionStatus.pending_payment)
    operator = _principal(shop, "operator")

    rows = run(_url(engine), lambda s: services.subscribers_by_product(s, operator))
    assert [(r.product_id, r.active, r.pending, r.ended, r.total) for r in rows] == [(shop.product.id, 1, 1, 1, 3)]
    assert idle.product_id not in {r.product_id for r in rows}

    revenue = run(_url(engine), lambda s: services.contracted_revenue_by_month(s, operator, months=6))
    now = utcnow()
    assert len(revenue.months) == 6
    # The factory starts subscriptions yesterday: this month, unless today is the first.
    started = now - timedelta(days=1)
    month = f"{started.year:04d}-{started.month:02d}"
    assert month in revenue.months
    assert [p.product_id for p in revenue.products] == [shop.product.id]
    amounts = dict(zip(revenue.months, revenue.products[0].amounts, strict=True))
    assert amounts[month] == "600.00"  # active + expired; the pending one never started
    assert sum(float(a) for a in revenue.totals) == 600.0
    buyer_view = run(_url(engine), lambda s: services.contracted_revenue_by_month(s, _principal(shop, "buyer_b")))
    assert [dict(zip(buyer_view.months, p.amounts, strict=True))[month] for p in buyer_view.products] == ["300.00"]
