"""Usage billing: hand-computed charges with free calls and the monthly maximum, a usage invoice per finished month,
every delivery billed exactly once when a run is stopped halfway and run again, and Stripe's meter told once."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import Engine, text
from sqlmodel import Session

from billing.models import Gateway, GatewayObject, Invoice, InvoiceKind, UsageCharge
from billing.services import usage
from billing.services.stripe_checkout import METER_EVENT
from billing.stripe_gateway import StripeGateway
from marketplace.app import connect_domains
from marketplace.core.db import Database
from marketplace.core.settings import Settings
from marketplace.core.types import utcnow
from marketplace.subscriptions.models import SubscriptionStatus
from tests.billing.stripe_fake import StripeFake
from tests.billing.support import add_deliveries, all_of, earlier_this_month, make_billing_shop, metered_subscription
from tests.conftest import make_settings
from tests.licensing.factories import ledger_events
from tests.marketplace.factories import make_subscription


def test_pricing_respects_free_calls_and_the_monthly_maximum() -> None:
    # Fee 100.00, 1,000 free calls, 0.05 a call, at most 300.00 a month (so at most 4,000 charged calls).
    price = usage.Pricing(free_calls=1000, per_call=Decimal(5), fee=10000, cap=Decimal(30000))
    assert [price.units(n) for n in (0, 999, 1000, 1001, 1500, 5000, 5001, 100000)] == [0, 0, 0, 1, 500, 4000, 4000, 4000]
    assert [price.amount(n) for n in (1000, 1001, 1500, 5000, 100000)] == [0, 5, 2500, 20000, 20000]
    # Half a fen a call (0.005 CNY) rounds half up on the month's total, not per call.
    half = usage.Pricing(free_calls=0, per_call=Decimal("0.5"), fee=0, cap=None)
    assert [half.amount(n) for n in (1, 2, 3, 1001)] == [1, 1, 2, 501]


def _last_month(now: datetime) -> datetime:
    first = datetime(now.year, now.month, 1, tzinfo=UTC)
    return (first - timedelta(days=10)).replace(day=15, hour=9)


def _run(
    settings: Settings,
    gateway: StripeGateway | None = None,
    after_commit: Callable[[UsageCharge], None] | None = None,
    now: datetime | None = None,
) -> usage.UsageRun:
    connect_domains()

    async def main() -> usage.UsageRun:
        database = Database(settings.resolved_database_url, pool_size=2)
        try:
            async with database.session() as session:
                return await usage.bill_usage(session, now or utcnow(), settings, gateway, after_commit=after_commit)
        finally:
            await database.dispose()

    return asyncio.run(main())


def _unbilled(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM delivery WHERE billed_at IS NULL")).scalar_one())


def test_a_month_is_charged_in_steps_up_to_its_maximum_and_invoiced_once(settings: Settings, engine: Engine) -> None:
    billing = make_billing_shop(engine)
    subscription, entitlement = metered_subscription(engine, billing.shop)
    now = utcnow()
    month = datetime(now.year, now.month, 1, tzinfo=UTC)
    add_deliveries(engine, subscription, entitlement, 1500, earlier_this_month(now))
    first = _run(settings)
    assert (first.charges, first.calls, first.amount_minor, first.invoices) == (1, 1500, 2500, 0)
    add_deliveries(engine, subscription, entitlement, 5000, earlier_this_month(now))
    second = _run(settings)
    # 6,500 calls: 5,500 over the free ones, but the maximum (300.00 - 100.00 fee) allows 4,000: 200.00 in all.
    assert (second.charges, second.calls, second.amount_minor, second.invoices) == (1, 5000, 17500, 0)
    charges = sorted(all_of(engine, UsageCharge), key=lambda c: c.calls)
    assert [(c.calls, c.billable_calls, c.amount_minor, c.gateway) for c in charges] == [
        (1500, 500, 2500, Gateway.invoice),
        (5000, 3500, 17500, Gateway.invoice),
    ]
    assert _unbilled(engine) == 0
    # The month is invoiced the day after it ends (deliveries from then on are the next month's).
    after = (month + timedelta(days=32)).replace(day=2)
    closing = _run(settings, now=after)
    assert (closing.charges, closing.invoices) == (0, 1)
    [invoice] = [i for i in all_of(engine, Invoice) if i.kind is InvoiceKind.usage]
    assert invoice.amount_minor == 20000
    assert invoice.period_start == datetime(month.year, month.month, 1, tzinfo=UTC)
    assert {c.invoice_id for c in all_of(engine, UsageCharge)} == {invoice.id}
    # Run again: nothing new is charged or invoiced.
    again = _run(settings, now=after)
    assert (again.charges, again.invoices) == (0, 0)
    assert len([i for i in all_of(engine, Invoice) if i.kind is InvoiceKind.usage]) == 1
    events = ledger_events(engine, "usage.billed")
    assert [(e["payload"]["calls"], e["payload"]["amount"]) for e in events] == [(1500, "25.00"), (5000, "175.00")]
    assert ledger_events(engine, "invoice.issued")[-1]["payload"]["amount"] == "200.00"


def test_the_current_month_is_charged_but_not_invoiced_before_it_ends(settings: Settings, engine: Engine) -> None:
    billing = make_billing_shop(engine)
    subscription, entitlement = metered_subscription(engine, billing.shop, reduction=50)
    add_deliveries(engine, subscription, entitlement, 1003, earlier_this_month(utcnow()))
    run = _run(settings)
    # Half price: 0.025 a call, 3 calls over the free ones: 7.5 fen, rounded half up.
    assert (run.charges, run.calls, run.amount_minor, run.invoices) == (1, 1003, 8, 0)
    assert [i for i in all_of(engine, Invoice) if i.kind is InvoiceKind.usage] == []


def test_a_run_stopped_halfway_and_run_again_bills_every_delivery_once(settings: Settings, engine: Engine) -> None:
    billing = make_billing_shop(engine)
    month = _last_month(utcnow())
    made = []
    for buyer in (billing.shop.buyer, billing.shop.buyer_b):
        subscription, entitlement = metered_subscription(engine, billing.shop, buyer=buyer)
        add_deliveries(engine, subscription, entitlement, 1200, month)
        add_deliveries(engine, subscription, entitlement, 300, earlier_this_month(utcnow()))
        made.append(subscription)

    class Stopped(Exception):
        pass

    def stop(_charge: UsageCharge) -> None:
        raise Stopped

    with pytest.raises(Stopped):
        _run(settings, after_commit=stop)
    assert len(all_of(engine, UsageCharge)) == 1
    assert _unbilled(engine) == 4 * 1500 // 2 - 1200
    _run(settings)
    assert _unbilled(engine) == 0
    charges = all_of(engine, UsageCharge)
    for subscription in made:
        mine = [c for c in charges if c.subscription_id == subscription.id]
        assert sum(c.calls for c in mine) == 1500
        # 1,200 last month (200 charged: 10.00) and 300 this month (none over the free calls).
        assert sorted((c.calls, c.amount_minor) for c in mine) == [(300, 0), (1200, 1000)]
    assert len(ledger_events(engine, "usage.billed")) == len(charges) == 4


def test_stripe_subscriptions_are_reported_to_the_meter_once(settings: Settings, engine: Engine) -> None:
    with StripeFake() as fake:
        stripe_settings = make_settings(
            settings.resolved_database_url,
            settings.var_dir,
            stripe_api_key="sk_test_usage",
            stripe_webhook_secret="whsec_usage",
            stripe_api_base=fake.base_url,
        )
        gateway = StripeGateway(stripe_settings)
        billing = make_billing_shop(engine)
        subscription, entitlement = metered_subscription(engine, billing.shop)
        with Session(engine) as session:
            session.add(
                GatewayObject(gateway=Gateway.stripe, kind="subscription", local_key=str(subscription.id), external_id="sub_test")
            )
            session.commit()
        add_deliveries(engine, subscription, entitlement, 1250, earlier_this_month(utcnow()))

        def stop(_charge: UsageCharge) -> None:
            raise RuntimeError("stopped before reporting")

        with pytest.raises(RuntimeError):
            _run(stripe_settings, gateway, after_commit=stop)
        [charge] = all_of(engine, UsageCharge)
        assert (charge.gateway, charge.billable_calls, charge.reported_at) == (Gateway.stripe, 250, None)
        _run(stripe_settings, gateway)
        _run(stripe_settings, gateway)
        customer = next(o for o in all_of_objects(engine) if o.kind == "customer").external_id
        assert fake.meter_total(customer, METER_EVENT) == 250
        assert len(fake.meter_events(customer=customer)) == 1
        assert all_of(engine, UsageCharge)[0].reported_at is not None
        assert fake.errors == []


def all_of_objects(engine: Engine) -> list[GatewayObject]:
    with Session(engine) as session:
        from sqlmodel import select

        return list(session.exec(select(GatewayObject)).all())


def test_subscriptions_that_are_not_metered_are_left_alone(settings: Settings, engine: Engine) -> None:
    billing = make_billing_shop(engine)
    subscription, entitlement = make_subscription(
        engine, billing.shop.buyer, billing.shop.product, billing.plan, status=SubscriptionStatus.active
    )
    add_deliveries(engine, subscription, entitlement, 2, earlier_this_month(utcnow()))
    run = _run(settings)
    assert run.charges == 0
    assert _unbilled(engine) == 2
