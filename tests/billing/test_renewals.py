"""Renewals by invoice: the renewal invoice is issued before the period ends, an unpaid one turns the subscription
past due with the plan's grace period (deliveries go on until it ends), and paying it renews the entitlement to the
end of the period it was issued for. Refunds of transfers: partial, full with the end of access, and too much."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

from litestar.testing import TestClient
from sqlalchemy import Engine
from sqlmodel import Session

from billing.models import Invoice, InvoiceKind, InvoiceStatus
from billing.services import issue_renewals, mark_overdue
from marketplace.catalog.models import Plan
from marketplace.core.db import Database
from marketplace.core.settings import Settings
from marketplace.core.types import utcnow
from marketplace.subscriptions.models import SubscriptionStatus
from tests.billing.support import TABLES, act, all_of, checkout, make_billing_shop, pay, stored
from tests.helpers import assert_problem
from tests.licensing.factories import ledger_events, row_counts
from tests.marketplace.subscriptions.support import stored_entitlement, stored_subscription


def _periodic(settings: Settings, now: datetime) -> tuple[list[Any], list[Any]]:
    async def main() -> tuple[list[Any], list[Any]]:
        database = Database(settings.resolved_database_url, pool_size=2)
        try:
            async with database.session() as session:
                issued = await issue_renewals(session, settings, now)
            async with database.session() as session:
                overdue = await mark_overdue(session, now)
            return issued, overdue
        finally:
            await database.dispose()

    return asyncio.run(main())


def test_an_unpaid_renewal_turns_past_due_with_grace_and_payment_renews(
    client: TestClient[Any], settings: Settings, engine: Engine
) -> None:
    billing = make_billing_shop(engine)
    with Session(engine) as session:
        plan = session.get(Plan, billing.plan.id)
        assert plan is not None
        plan.grace_days = 5
        session.add(plan)
        session.commit()
    first = checkout(client, billing)
    assert pay(client, billing, first).status_code == 201
    until = stored_entitlement(engine, billing.pending.id).valid_until  # type: ignore[union-attr]
    # Too early: nothing to renew yet; within the notice period: one renewal invoice, due when the period ends.
    assert _periodic(settings, until - timedelta(days=10)) == ([], [])
    issued, overdue = _periodic(settings, until - timedelta(days=3))
    assert len(issued) == 1
    assert overdue == []
    renewal = stored(engine, Invoice, issued[0])
    assert (renewal.kind, renewal.status, renewal.amount_minor) == (InvoiceKind.renewal, InvoiceStatus.open, 100000)
    assert (renewal.period_start, renewal.due_at) == (until, until)
    assert _periodic(settings, until - timedelta(days=2)) == ([], [])  # re-run: nothing new
    # The period ends unpaid: overdue, subscription past due, access until the grace ends.
    issued, overdue = _periodic(settings, until + timedelta(hours=1))
    assert (issued, overdue) == ([], [renewal.id])
    subscription = stored_subscription(engine, billing.pending.id)
    assert subscription.status is SubscriptionStatus.past_due
    entitlement = stored_entitlement(engine, billing.pending.id)
    assert entitlement is not None
    assert entitlement.valid_until == until + timedelta(days=5)
    assert [e["payload"]["grace_until"] for e in ledger_events(engine, "subscription.past_due")] == [
        (until + timedelta(days=5)).isoformat()
    ]
    # The buyer pays late: active again, the entitlement runs to the end of the renewed period.
    paid = pay(client, billing, {"id": str(renewal.id), "amount": "1000.00"}, reference="LATE-1")
    assert paid.status_code == 201, paid.text
    assert stored_subscription(engine, billing.pending.id).status is SubscriptionStatus.active
    assert stored_entitlement(engine, billing.pending.id).valid_until == renewal.period_end  # type: ignore[union-attr]
    assert [e["type"] for e in ledger_events(engine, "subscription.")] == [
        "subscription.activated",
        "subscription.past_due",
        "subscription.activated",
    ]


def test_refunds_of_a_transfer(client: TestClient[Any], engine: Engine) -> None:
    billing = make_billing_shop(engine)
    payment = pay(client, billing, checkout(client, billing)).json()
    url = f"/api/billing/payments/{payment['id']}/refunds"
    member = act(client, billing, "operator_member")
    before = row_counts(engine, *TABLES)
    assert_problem(client.post(url, json={"amount": "10.00", "reason": "x"}, headers=member), 403, "role_not_allowed")
    headers = act(client, billing, "operator")
    for body, status, code in (
        ({"amount": "1000.01", "reason": "Too much"}, 409, "refund_exceeds_payment"),
        ({"amount": "0.00", "reason": "Nothing"}, 400, "invalid_amount"),
        ({"amount": "10.00", "reason": "  "}, 400, "invalid_input"),
        ({"amount": "10.00", "reason": "Part", "end_access": True}, 400, "end_access_needs_full_refund"),
    ):
        assert_problem(client.post(url, json=body, headers=headers), status, code)
    assert row_counts(engine, *TABLES) == before
    part = client.post(url, json={"amount": "100.00", "reason": "Outage on the 3rd"}, headers=headers)
    assert part.status_code == 201, part.text
    assert stored_subscription(engine, billing.pending.id).status is SubscriptionStatus.active
    assert_problem(
        client.post(url, json={"amount": "900.01", "reason": "Too much"}, headers=headers), 409, "refund_exceeds_payment"
    )
    rest = client.post(url, json={"reason": "Withdrawn", "end_access": True}, headers=headers)
    assert rest.status_code == 201, rest.text
    assert rest.json()["amount"] == "900.00"
    assert stored_subscription(engine, billing.pending.id).status is SubscriptionStatus.revoked
    entitlement = stored_entitlement(engine, billing.pending.id)
    assert entitlement is not None
    assert entitlement.ended_at is not None
    assert_problem(client.post(url, json={"amount": "0.01", "reason": "More"}, headers=headers), 409, "refund_exceeds_payment")
    one = client.get(f"/api/billing/payments/{payment['id']}").json()
    assert one["payment"]["refunded"] == "1000.00"
    assert [r["amount"] for r in one["refunds"]] == ["100.00", "900.00"]
    assert [e["payload"]["full"] for e in ledger_events(engine, "payment.refunded")] == [False, False]
    assert len(all_of(engine, Invoice)) == 1
    assert utcnow() >= entitlement.ended_at
