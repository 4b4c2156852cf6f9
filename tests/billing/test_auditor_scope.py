"""Auditors read invoices, payments and settlement statements only inside their firm's engagements in force.

An invoice is covered when its operator is covered and it was issued within the engagement's period (UTC days,
inclusive); a payment when its invoice is; a settlement statement when its operator is covered and its month overlaps
the period. Outside by operator, by period, and after expiry: 403 ``outside_engagement``, recorded in the ledger; a
record that does not exist stays 404.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from litestar.testing import TestClient
from sqlalchemy import Engine
from sqlmodel import Session

from billing.models import Gateway, Invoice, InvoiceKind, InvoiceStatus, Payment, SettlementStatement
from marketplace.core.identity.models import Organisation
from marketplace.core.principal import OrgKind
from marketplace.subscriptions.models import Subscription
from tests.factories import make_login_session, make_org, make_user
from tests.helpers import assert_problem, use_session
from tests.marketplace.factories import make_plan, make_subscription
from tests.marketplace.subscriptions.support import make_shop
from tests.marketplace.subscriptions.test_auditor_scope import grant
from tests.supervision.auditor_scope import (
    assert_all_refused_in_order,
    assert_refused_and_recorded,
    expire_engagements,
    refusals,
    sign_in_auditor_without_engagement,
)

INVOICES = "/api/billing/invoices"
PAYMENTS = "/api/billing/payments"
SETTLEMENTS = "/api/billing/settlements"
#: Starts and ends mid-month: the months of March to May overlap it.
PERIOD = (date(2026, 3, 15), date(2026, 5, 10))


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


#: name: (covered operator?, issued at) and whether the engagement covers it.
INVOICED: dict[str, tuple[bool, datetime, bool]] = {
    "issued_first_day": (True, _at("2026-03-15 00:10"), True),
    "issued_last_day": (True, _at("2026-05-10 23:50"), True),
    "other_operator": (False, _at("2026-04-01 12:00"), False),
    "issued_the_day_before": (True, _at("2026-03-14 23:50"), False),
    "issued_the_day_after": (True, _at("2026-05-11 00:10"), False),
}
#: name: (covered operator?, month) and whether the engagement covers it.
SETTLED: dict[str, tuple[bool, str, bool]] = {
    "first_month": (True, "2026-03", True),
    "last_month": (True, "2026-05", True),
    "other_operator": (False, "2026-04", False),
    "month_before": (True, "2026-02", False),
    "month_after": (True, "2026-06", False),
}


def _invoice(subscription: Subscription, owner: Organisation, issued: datetime, n: int) -> Invoice:
    return Invoice(
        number=f"INV-AUD-{uuid.uuid4().hex[:8]}-{n}",
        gateway=Gateway.invoice,
        kind=InvoiceKind.renewal,
        status=InvoiceStatus.paid,
        buyer_org_id=subscription.buyer_org_id,
        operator_id=subscription.operator_id,
        owner_org_id=owner.id,
        subscription_id=subscription.id,
        product_id=subscription.product_id,
        plan_id=subscription.plan_id,
        licence_id=subscription.licence_id,
        currency="CNY",
        amount_minor=100000,
        lines_json=json.dumps([]),
        period_start=issued,
        period_end=issued + timedelta(days=30),
        issued_at=issued,
        due_at=issued + timedelta(days=14),
        paid_at=issued,
    )


def _statement(operator_id: uuid.UUID, owner: Organisation, month: str) -> SettlementStatement:
    return SettlementStatement(
        number=f"STM-AUD-{uuid.uuid4().hex[:8]}",
        operator_id=operator_id,
        owner_org_id=owner.id,
        period=month,
        currency="CNY",
        gross_minor=100000,
        refunds_minor=0,
        fees_minor=0,
        franchise_fee_minor=12000,
        net_minor=88000,
        lines_json="[]",
        mismatches_json="[]",
    )


@pytest.fixture
def world(client: TestClient[Any], engine: Engine) -> dict[str, Any]:
    covered, other = make_shop(engine), make_shop(engine)
    subscriptions = {
        is_covered: make_subscription(engine, shop.buyer, shop.product, make_plan(engine, shop.product))[0]
        for is_covered, shop in ((True, covered), (False, other))
    }
    made: dict[str, Any] = {"invoices": {}, "payments": {}, "statements": {}}
    with Session(engine) as session:
        for n, (name, (is_covered, issued, _in)) in enumerate(INVOICED.items()):
            shop = covered if is_covered else other
            invoice = _invoice(subscriptions[is_covered], shop.owner, issued, n)
            session.add(invoice)
            session.flush()
            payment = Payment(
                invoice_id=invoice.id,
                subscription_id=invoice.subscription_id,
                buyer_org_id=invoice.buyer_org_id,
                operator_id=invoice.operator_id,
                owner_org_id=invoice.owner_org_id,
                licence_id=invoice.licence_id,
                gateway=Gateway.invoice,
                reference=f"BOC-AUD-{uuid.uuid4().hex[:8]}",
                currency="CNY",
                amount_minor=invoice.amount_minor,
                received_at=issued,
            )
            session.add(payment)
            made["invoices"][name], made["payments"][name] = str(invoice.id), str(payment.id)
        for name, (is_covered, month, _in) in SETTLED.items():
            shop = covered if is_covered else other
            statement = _statement(shop.operator.id, shop.owner, month)
            session.add(statement)
            made["statements"][name] = str(statement.id)
        session.commit()
    auditor = make_org(engine, OrgKind.auditor)
    grant(client, engine, auditor, [covered.operator], PERIOD)
    made["auditor"] = auditor
    use_session(client, make_login_session(engine, make_user(engine, auditor)))
    return made


def _ids(client: TestClient[Any], path: str) -> set[str]:
    answer = client.get(path)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    return {item["id"] for item in (body["items"] if isinstance(body, dict) else body)}


def _inside(table: dict[str, Any], ids: dict[str, str]) -> set[str]:
    return {ids[name] for name, spec in table.items() if spec[-1]}


def test_lists_hold_only_what_the_engagement_covers(client: TestClient[Any], engine: Engine, world: dict[str, Any]) -> None:
    assert _ids(client, INVOICES) == _inside(INVOICED, world["invoices"])
    assert _ids(client, f"{INVOICES}?status=paid") == _inside(INVOICED, world["invoices"])
    assert _ids(client, SETTLEMENTS) == _inside(SETTLED, world["statements"])
    assert _ids(client, f"{SETTLEMENTS}?period=2026-02") == set()
    # A regulator still reads every one.
    client.cookies.clear()
    use_session(client, make_login_session(engine, make_user(engine, make_org(engine, OrgKind.regulator))))
    assert _ids(client, INVOICES) == set(world["invoices"].values())
    assert _ids(client, SETTLEMENTS) == set(world["statements"].values())


@pytest.mark.parametrize("name", list(INVOICED))
def test_one_invoice_and_its_payment(client: TestClient[Any], engine: Engine, world: dict[str, Any], name: str) -> None:
    paths = [f"{INVOICES}/{world['invoices'][name]}", f"{PAYMENTS}/{world['payments'][name]}"]
    for path in paths:
        if INVOICED[name][2]:
            before = refusals(engine)
            answer = client.get(path)
            assert answer.status_code == 200, answer.text
            assert refusals(engine) == before
        else:
            assert_refused_and_recorded(client, engine, world["auditor"], path)


@pytest.mark.parametrize("name", list(SETTLED))
def test_one_statement(client: TestClient[Any], engine: Engine, world: dict[str, Any], name: str) -> None:
    path = f"{SETTLEMENTS}/{world['statements'][name]}"
    if SETTLED[name][2]:
        answer = client.get(path)
        assert answer.status_code == 200, answer.text
        assert answer.json()["period"] == SETTLED[name][1]
    else:
        assert_refused_and_recorded(client, engine, world["auditor"], path)


def test_what_does_not_exist_is_404_and_not_recorded(client: TestClient[Any], engine: Engine, world: dict[str, Any]) -> None:
    before = refusals(engine)
    assert_problem(client.get(f"{INVOICES}/{uuid.uuid4()}"), 404, "invoice_not_found")
    assert_problem(client.get(f"{PAYMENTS}/{uuid.uuid4()}"), 404, "payment_not_found")
    assert_problem(client.get(f"{SETTLEMENTS}/{uuid.uuid4()}"), 404, "statement_not_found")
    assert refusals(engine) == before


def test_nothing_after_expiry(client: TestClient[Any], engine: Engine, world: dict[str, Any]) -> None:
    expire_engagements(engine, world["auditor"])
    paths = [
        INVOICES,
        SETTLEMENTS,
        f"{INVOICES}/{world['invoices']['issued_first_day']}",
        f"{PAYMENTS}/{world['payments']['issued_first_day']}",
        f"{SETTLEMENTS}/{world['statements']['first_month']}",
    ]
    assert_all_refused_in_order(client, engine, paths)


def test_an_auditor_without_engagement_reads_nothing(client: TestClient[Any], engine: Engine, world: dict[str, Any]) -> None:
    sign_in_auditor_without_engagement(client, engine)
    before = refusals(engine)
    for path in (INVOICES, SETTLEMENTS, f"{INVOICES}/{world['invoices']['issued_first_day']}"):
        assert_problem(client.get(path), 403, "outside_engagement")
    assert refusals(engine) - before == 3
