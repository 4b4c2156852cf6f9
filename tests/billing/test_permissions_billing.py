"""Permission matrix of the billing routes: every party, the exact status each gets.

The world: the owner's licence (fee rate 0.12) to the operator with two listed products, each with a monthly plan
of 1,000.00. Buyer A, qualified with the operator, has two subscriptions that were waiting for payment: the first
checked out by invoice (an open invoice, not paid), the second checked out and paid by a recorded bank transfer (a
payment of 1,000.00, with its ledger entry). The operator's draft settlement statement of the current month exists.
Everything is made through billing's services, as buyer A's and the operator's administrators.

Choices: only a person of the buyer checks out (buyer B does not see buyer A's subscription: 404); only the
operator records transfers, refunds, and issues statements; the owner reads the invoices and payments under its
licences, computes drafts naming the operator and acknowledges issued statements (the draft is not issued: 409);
buyers never see statements (403); another buyer's invoice or payment is not found (404). Regulators and auditors
read everything and write nothing. The Stripe webhook is CSRF-exempt and authenticated by its signature, not by
cookies: Stripe is not configured in tests, so it answers 400 ``webhook_not_configured`` to anyone, except that the
central read-only rule runs first and refuses a regulator's or an auditor's session (403 ``read_only_party``);
Stripe never sends one, and nothing is written either way.

The world is built once and its rows put back before every test (``tests.worlds.replayed``): each test, read or
write, starts from its own fresh copy of the same world.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import TestClient
from sqlalchemy import Engine, text
from sqlmodel.ext.asyncio.session import AsyncSession

from billing import services
from licensing.models import Grade, PlanType
from marketplace.core.events import Actor
from marketplace.core.http import CSRF_HEADER
from marketplace.core.identity.models import Organisation
from marketplace.core.principal import OrgKind, Principal, Role
from marketplace.core.settings import Settings
from marketplace.core.types import utcnow
from marketplace.subscriptions.models import SubscriptionStatus
from tests.conftest import TEST_ORIGIN
from tests.helpers import csrf, shared_app
from tests.licensing.factories import make_licence, make_resource, row_counts
from tests.marketplace.core.test_permissions import PARTIES, Case, World, _by, build_world
from tests.marketplace.factories import make_plan, make_product, make_qualification, make_subscription
from tests.marketplace.subscriptions.support import FIELDS, RULES
from tests.supervision.ledger_helpers import run
from tests.worlds import replayed

SUBSCRIPTION = "{subscription_id:uuid}"
INVOICE = "{invoice_id:uuid}"
PAYMENT = "{payment_id:uuid}"
STATEMENT = "{statement_id:uuid}"
BILLING = "/api/billing"
SETTLEMENTS = "/api/billing/settlements"
WEBHOOK = "/api/billing/webhooks/stripe"
PERIOD = f"{utcnow():%Y-%m}"
TABLES = ("invoice", "payment", "refund", "settlement_statement", "subscription", "entitlement")
_references = itertools.count(1)


@dataclass
class BillingWorld:
    """The core world and the records the routes act on."""

    world: World
    operator_id: str
    open_subscription_id: str
    open_invoice_id: str
    paid_invoice_id: str
    payment_id: str
    statement_id: str


def _checkout(_party: str, world: Any) -> dict[str, str]:
    return {"subscription_id": world.open_subscription_id}


def _transfer(_party: str, _world: Any) -> dict[str, str]:
    return {"amount": "1000.00", "reference": f"BOC-MATRIX-{uuid.uuid4().hex[:8]}-{next(_references)}"}


def _refund(_party: str, _world: Any) -> dict[str, str]:
    return {"amount": "1.00", "reason": "Goodwill"}


def _settle(party: str, world: Any) -> dict[str, str]:
    body = {"period": PERIOD}
    if party == "owner":
        body["operator_id"] = world.operator_id
    return body


def _empty(_party: str, _world: Any) -> dict[str, str]:
    return {}


BUYER_CHECKS_OUT = _by(401, 403, 403, 201, 404, 403, 403)
#: The matrix's auditor has no engagement in force: 403 ``outside_engagement`` (in scope: test_auditor_scope.py).
EVERY_READER = _by(401, 200, 200, 200, 200, 200, 403)
BUYER_A_RECORD = _by(401, 200, 200, 200, 404, 200, 403)
OPERATOR_WRITES = _by(401, 403, 201, 403, 403, 403, 403)
STATEMENT_READ = _by(401, 200, 200, 403, 403, 200, 403)

CASES: list[Case] = [
    Case("POST", f"{BILLING}/checkout", BUYER_CHECKS_OUT, json=_checkout),
    # Stripe is not configured in tests: buyers' people get 409 method_not_available.
    Case("POST", f"{BILLING}/portal", _by(401, 403, 403, 409, 409, 403, 403)),
    Case("GET", f"{BILLING}/invoices", EVERY_READER),
    Case("GET", f"{BILLING}/invoices?status=open", EVERY_READER),
    Case("GET", f"{BILLING}/invoices/{INVOICE}", BUYER_A_RECORD),
    Case("GET", f"{BILLING}/invoices/{INVOICE}/pdf", BUYER_A_RECORD),
    Case("POST", f"{BILLING}/invoices/{INVOICE}/payments", OPERATOR_WRITES, json=_transfer),
    Case("GET", f"{BILLING}/payments/{PAYMENT}", BUYER_A_RECORD),
    Case("POST", f"{BILLING}/payments/{PAYMENT}/refunds", OPERATOR_WRITES, json=_refund),
    Case("GET", f"{BILLING}/receipts/{PAYMENT}", BUYER_A_RECORD),
    Case("GET", SETTLEMENTS, STATEMENT_READ),
    Case("GET", f"{SETTLEMENTS}?period={PERIOD}", STATEMENT_READ),
    Case("POST", f"{SETTLEMENTS}/run", _by(401, 200, 200, 403, 403, 403, 403), json=_settle),
    Case("GET", f"{SETTLEMENTS}/{STATEMENT}", STATEMENT_READ),
    Case("GET", f"{SETTLEMENTS}/{STATEMENT}/csv", STATEMENT_READ),
    Case("GET", f"{SETTLEMENTS}/{STATEMENT}/pdf", STATEMENT_READ),
    Case("POST", f"{SETTLEMENTS}/{STATEMENT}/issue", _by(401, 403, 200, 403, 403, 403, 403), json=_empty),
    Case("POST", f"{SETTLEMENTS}/{STATEMENT}/acknowledge", _by(401, 409, 403, 403, 403, 403, 403), json=_empty),
    Case("POST", WEBHOOK, _by(400, 400, 400, 400, 400, 403, 403)),
]

#: The problem code each refusal that is not a party check must carry.
EXPECTED_CODES = {
    ("POST", f"{BILLING}/checkout", "buyer_b"): "subscription_not_found",
    ("GET", f"{BILLING}/invoices/{INVOICE}", "buyer_b"): "invoice_not_found",
    ("GET", f"{BILLING}/invoices/{INVOICE}/pdf", "buyer_b"): "invoice_not_found",
    ("GET", f"{BILLING}/payments/{PAYMENT}", "buyer_b"): "payment_not_found",
    ("GET", f"{BILLING}/receipts/{PAYMENT}", "buyer_b"): "payment_not_found",
    ("POST", f"{SETTLEMENTS}/{STATEMENT}/acknowledge", "owner"): "statement_not_issued",
}


def _principal(conn: Any, email: str) -> Principal:
    user_id, org_id, name, kind = conn.execute(
        text(
            "SELECT u.id, o.id, o.name, o.kind FROM user_account u JOIN organisation o ON o.id = u.org_id WHERE u.email = :email"
        ),
        {"email": email},
    ).one()
    return Principal(
        org_id=uuid.UUID(str(org_id)),
        org_kind=OrgKind(str(kind)),
        org_name=str(name),
        user_id=uuid.UUID(str(user_id)),
        email=email,
        role=Role.admin,
    )


def _build(engine: Engine, settings: Settings) -> BillingWorld:
    world = build_world(engine)
    with engine.connect() as conn:
        buyer = _principal(conn, world.emails["buyer_a"])
        operator_admin = _principal(conn, world.emails["operator"])
        owner_id = conn.execute(text("SELECT id FROM organisation WHERE kind = 'owner'")).scalar_one()
    owner = Organisation(id=uuid.UUID(str(owner_id)), name="owner", kind=OrgKind.owner)
    operator = Organisation(id=operator_admin.org_id, name=operator_admin.org_name, kind=OrgKind.operator)
    buyer_a = Organisation(id=buyer.org_id, name=buyer.org_name, kind=OrgKind.buyer)
    resource = make_resource(engine, owner, fields=FIELDS, grade=Grade.L2)
    licence = make_licence(engine, owner, operator, [resource], fee_rate="0.12")
    first = make_product(engine, licence, resource, rules=RULES)
    second = make_product(engine, licence, resource, rules=RULES)
    make_qualification(engine, buyer_a, operator.id)
    to_open, _ = make_subscription(
        engine,
        buyer_a,
        first,
        make_plan(engine, first, type=PlanType.monthly, price="1000.00"),
        status=SubscriptionStatus.pending_payment,
    )
    to_pay, _ = make_subscription(
        engine,
        buyer_a,
        second,
        make_plan(engine, second, type=PlanType.monthly, price="1000.00"),
        status=SubscriptionStatus.pending_payment,
    )
    database_url = engine.url.render_as_string(hide_password=False)

    async def checkout(session: AsyncSession, subscription_id: uuid.UUID) -> str:
        invoice = await services.checkout_by_invoice(session, buyer, settings, subscription_id)
        return str(invoice.id)

    async def pay(session: AsyncSession, invoice_id: str) -> str:
        payment = await services.record_transfer(
            session, operator_admin, uuid.UUID(invoice_id), amount="1000.00", reference="BOC-MATRIX-WORLD"
        )
        return str(payment.id)

    async def settle(session: AsyncSession) -> list[str]:
        statements = await services.run_settlement(session, operator.id, PERIOD, Actor.of(None))
        return [str(s.id) for s in statements]

    open_invoice_id = run(database_url, lambda session: checkout(session, to_open.id))
    paid_invoice_id = run(database_url, lambda session: checkout(session, to_pay.id))
    payment_id = run(database_url, lambda session: pay(session, paid_invoice_id))
    statement_ids = run(database_url, settle)
    assert len(statement_ids) == 1, statement_ids
    return BillingWorld(
        world=world,
        operator_id=str(operator.id),
        open_subscription_id=str(to_open.id),
        open_invoice_id=open_invoice_id,
        paid_invoice_id=paid_invoice_id,
        payment_id=payment_id,
        statement_id=statement_ids[0],
    )


def _request(client: TestClient[Litestar], case: Case, party: str, world: BillingWorld) -> Any:
    path = (
        case.path.replace(INVOICE, world.open_invoice_id)
        .replace(PAYMENT, world.payment_id)
        .replace(STATEMENT, world.statement_id)
    )
    kwargs: dict[str, Any] = {"follow_redirects": False}
    if path == WEBHOOK:
        # Stripe's raw body, without a signature nor a CSRF token (the route is exempt).
        kwargs["content"] = b"{}"
        kwargs["headers"] = {"content-type": "application/json"}
    elif case.method != "GET":
        kwargs["headers"] = {CSRF_HEADER: csrf(client)}
        if case.json is not None:
            json_body: Callable[[str, Any], Any] = case.json
            kwargs["json"] = json_body(party, world)
    return client.request(case.method, path, **kwargs)


def _state(engine: Engine) -> dict[str, Any]:
    """What a refused write must leave as it was, beyond the row counts."""
    with engine.connect() as conn:
        return {
            "subscriptions": sorted(conn.execute(text("SELECT id, status FROM subscription")).all()),
            "invoices": sorted(conn.execute(text("SELECT id, status FROM invoice")).all()),
            "payments": conn.execute(text("SELECT id, refunded_minor FROM payment")).all(),
            "statements": conn.execute(text("SELECT id, status, computed_at FROM settlement_statement")).all(),
        }


@pytest.mark.parametrize("party", PARTIES)
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_billing_route_answers_each_party_exactly(settings: Settings, engine: Engine, case: Case, party: str) -> None:
    world = replayed(engine, __name__, lambda: _build(engine, settings), data_dir=settings.resolved_data_dir)
    before = row_counts(engine, *TABLES)
    state = _state(engine)
    with TestClient(app=shared_app(settings), base_url=TEST_ORIGIN) as client:
        if party != "anonymous":
            client.cookies.set("market_session", world.world.sessions[party])
        response = _request(client, case, party, world)
    expected = case.expected[party]
    assert response.status_code == expected, f"{case.id} as {party}: {response.status_code} {response.text[:300]}"
    if response.status_code >= 400:
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["code"]
        code = EXPECTED_CODES.get((case.method, case.path, party))
        if code is not None:
            assert response.json()["code"] == code
        if case.path == WEBHOOK and response.status_code == 400:
            assert response.json()["code"] == "webhook_not_configured"
    if response.status_code == 403 and party in ("regulator", "auditor") and case.method == "POST":
        assert "read_only_party" in response.text
    # A refused write changes nothing.
    if case.method == "POST" and response.status_code >= 400:
        assert row_counts(engine, *TABLES) == before
        assert _state(engine) == state
