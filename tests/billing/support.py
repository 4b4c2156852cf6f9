"""A shop for billing tests: an owner's licence (fee rate 0.12) to an operator, a listed product with a monthly
plan, qualified buyers with signed-in people, a subscription waiting for payment, and helpers to read back what
billing wrote."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from litestar.testing import TestClient
from sqlalchemy import Engine, insert
from sqlmodel import Session, select

from billing.models import Invoice, Payment, Refund, SettlementStatement
from licensing.models import Licence, PlanType
from marketplace.catalog.models import Plan
from marketplace.core.identity.models import Organisation
from marketplace.core.principal import OrgKind, Role
from marketplace.delivery.models import Delivery
from marketplace.subscriptions.models import Subscription, SubscriptionStatus
from tests.factories import make_login_session, make_org, make_user
from tests.helpers import use_session
from tests.marketplace.factories import make_plan, make_qualification, make_subscription
from tests.marketplace.subscriptions.support import Shop, make_shop

#: Every table a billing request may write (to check that a refused one wrote nothing).
TABLES = ("invoice", "payment", "refund", "settlement_statement", "subscription", "entitlement", "ledger_entry")


@dataclass
class BillingShop:
    """A ``Shop`` with a monthly plan of 1,000.00 and a subscription of buyer B waiting for payment."""

    shop: Shop
    plan: Plan
    pending: Subscription
    sessions: dict[str, str]

    @property
    def operator(self) -> Organisation:
        return self.shop.operator

    @property
    def licence(self) -> Licence:
        return self.shop.licence


def make_billing_shop(engine: Engine, *, price: str = "1000.00", plan_type: PlanType = PlanType.monthly) -> BillingShop:
    """A shop whose licence takes 12% (``fee_rate`` 0.12), with buyer B's ``pending_payment`` subscription."""
    shop = make_shop(engine)
    with Session(engine) as session:
        licence = session.get(Licence, shop.licence.id)
        assert licence is not None
        licence.fee_rate = "0.12"
        session.add(licence)
        session.commit()
    plan = make_plan(engine, shop.product, type=plan_type, price=price)
    make_qualification(engine, shop.buyer_b, shop.operator.id)
    pending, _ = make_subscription(engine, shop.buyer_b, shop.product, plan, status=SubscriptionStatus.pending_payment)
    sessions = dict(shop.sessions)
    sessions["operator_member"] = make_login_session(engine, make_user(engine, shop.operator, Role.member))
    sessions["other_operator"] = make_login_session(engine, make_user(engine, make_org(engine, OrgKind.operator)))
    sessions["regulator"] = make_login_session(engine, make_user(engine, make_org(engine, OrgKind.regulator)))
    return BillingShop(shop, plan, pending, sessions)


def act(client: TestClient[Any], billing: BillingShop, party: str) -> dict[str, str]:
    """Act as ``party``'s person; returns the headers for writes."""
    client.cookies.clear()
    return use_session(client, billing.sessions[party])


def checkout(client: TestClient[Any], billing: BillingShop, subscription_id: uuid.UUID | None = None) -> dict[str, Any]:
    """Buyer B checks out (by invoice); returns the invoice."""
    headers = act(client, billing, "buyer_b")
    answer = client.post(
        "/api/billing/checkout", json={"subscription_id": str(subscription_id or billing.pending.id)}, headers=headers
    )
    assert answer.status_code == 201, answer.text
    invoice: dict[str, Any] = answer.json()["invoice"]
    return invoice


def pay(client: TestClient[Any], billing: BillingShop, invoice: dict[str, Any], reference: str = "BOC-20261203-0001") -> Any:
    """The operator records the transfer of ``invoice``'s amount."""
    headers = act(client, billing, "operator")
    return client.post(
        f"/api/billing/invoices/{invoice['id']}/payments",
        json={"amount": invoice["amount"], "reference": reference},
        headers=headers,
    )


def stored(engine: Engine, model: Any, record_id: str | uuid.UUID) -> Any:
    """A record as stored."""
    with Session(engine) as session:
        return session.get(model, uuid.UUID(str(record_id)))


def all_of(engine: Engine, model: type[Invoice] | type[Payment] | type[Refund] | type[SettlementStatement]) -> list[Any]:
    """Every stored record of ``model``."""
    with Session(engine) as session:
        return list(session.exec(select(model)).all())


def metered_subscription(engine: Engine, shop: Shop, *, reduction: int = 0, buyer: Any = None) -> tuple[Subscription, Any]:
    """An active subscription to a metered plan of ``shop``'s product: fee 100.00, 1,000 free calls, 0.05 a call,
    at most 300.00 a month (with ``reduction`` percent off: fee 50.00 at 50)."""
    plan = make_plan(engine, shop.product, type=PlanType.metered, price="100.00")
    with Session(engine) as session:
        stored = session.get(Plan, plan.id)
        assert stored is not None
        stored.free_calls, stored.per_call_price, stored.monthly_cap = 1000, "0.05", "300.00"
        session.add(stored)
        session.commit()
        session.refresh(stored)
        plan = stored
    buyer = buyer or shop.buyer
    make_qualification(engine, buyer, shop.operator.id)
    subscription, entitlement = make_subscription(engine, buyer, shop.product, plan)
    if reduction:
        with Session(engine) as session:
            stored_sub = session.get(Subscription, subscription.id)
            assert stored_sub is not None
            stored_sub.reduction_percent, stored_sub.price = reduction, "50.00"
            session.add(stored_sub)
            session.commit()
            session.refresh(stored_sub)
            subscription = stored_sub
    return subscription, entitlement


def earlier_this_month(now: datetime) -> datetime:
    """A moment of this month at least an hour before ``now`` when the month allows (the factories add up to an
    hour of seconds to it)."""
    first = datetime(now.year, now.month, 1, tzinfo=UTC)
    return max(first, now - timedelta(hours=2)) if now - first > timedelta(hours=1, minutes=1) else first


def add_deliveries(engine: Engine, subscription: Subscription, entitlement: Any, count: int, at: datetime) -> None:
    """``count`` metered API deliveries of the subscription from ``at`` on (one a second, within an hour)."""
    rows = [
        {
            "id": uuid.uuid4(),
            "entitlement_id": entitlement.id,
            "subscription_id": subscription.id,
            "buyer_org_id": subscription.buyer_org_id,
            "operator_id": subscription.operator_id,
            "product_id": subscription.product_id,
            "mode": "api",
            "rows": 10,
            "bytes": 1000,
            "occurred_at": at + timedelta(seconds=i % 3600),
        }
        for i in range(count)
    ]
    with engine.begin() as conn:
        conn.execute(insert(Delivery.__table__), rows)  # type: ignore[attr-defined]
