"""Permission matrix of the billing pages: every page route (GET and POST) x the seven parties, the exact status.

The world is the billing API's matrix world (``tests.billing.test_permissions_billing``): the owner's licence (fee
rate 0.12) to the operator; buyer A's subscription checked out by invoice (an open invoice) and a second one paid by
a recorded transfer (a payment of 1,000.00 with its ledger entry); the operator's draft statement of this month.

Choices: pages answer an anonymous visitor with the way to sign in (303 to /login), a party the page is not for
with 403, a record outside the caller's scope with 404 (buyer B never sees buyer A's invoice, payment or
subscription), and a form the service refuses with the page again carrying the refusal and the service's status
(the owner acknowledging a draft: 409). A form that went through answers 303 (post/redirect/get); checking out a
subscription that already has its invoice goes on to that invoice. Invoices and receipts are documents for every
party the billing services let read them: buyer A, the operator, the owner under whose licence they fall,
regulators and auditors. The operator's billing console and the owner's settlements are theirs alone; regulators
and auditors read neither (the supervision console is another page) and never write (403 ``read_only_party``).

The world is built once and its rows put back before every test (``tests.worlds.replayed``).
"""

from __future__ import annotations

import itertools
import uuid
from typing import Any

import pytest
from litestar.testing import TestClient
from sqlalchemy import Engine, text

from marketplace.core.settings import Settings
from marketplace.core.types import utcnow
from tests.billing.test_permissions_billing import BillingWorld
from tests.billing.test_permissions_billing import _build as build_billing_world
from tests.conftest import TEST_ORIGIN
from tests.helpers import csrf, shared_app
from tests.licensing.factories import row_counts
from tests.marketplace.core.test_permissions import PARTIES, Case, _by
from tests.worlds import replayed

SUBSCRIPTION = "{subscription_id:uuid}"
INVOICE = "{invoice_id:uuid}"
PAYMENT = "{payment_id:uuid}"
STATEMENT = "{statement_id:uuid}"
PERIOD = f"{utcnow():%Y-%m}"
TABLES = ("invoice", "payment", "refund", "settlement_statement", "subscription", "entitlement", "ledger_entry")
_references = itertools.count(1)


def _transfer(_party: str, _world: Any) -> dict[str, str]:
    return {"amount": "1000.00", "reference": f"BOC-PAGES-{uuid.uuid4().hex[:8]}-{next(_references)}"}


def _refund(_party: str, _world: Any) -> dict[str, str]:
    return {"amount": "1.00", "reason": "Goodwill", "request_key": uuid.uuid4().hex}


def _owner_settles(_party: str, world: Any) -> dict[str, str]:
    return {"operator_id": world.operator_id, "period": PERIOD}


def _empty(_party: str, _world: Any) -> dict[str, str]:
    return {}


BUYERS = _by(303, 403, 403, 200, 200, 403, 403)
#: The matrix's auditor has no engagement in force: 403 ``outside_engagement`` (in scope: test_auditor_scope.py).
BUYER_A_RECORD = _by(303, 200, 200, 200, 404, 200, 403)
OPERATOR = _by(303, 403, 200, 403, 403, 403, 403)
OPERATOR_WRITES = _by(303, 403, 303, 403, 403, 403, 403)
OWNER = _by(303, 200, 403, 403, 403, 403, 403)

CASES: list[Case] = [
    Case(
        "POST",
        f"/buyer/subscriptions/{SUBSCRIPTION}/checkout",
        _by(303, 403, 403, 303, 404, 403, 403),
        form=lambda _p, _w: {"method": "invoice"},
    ),
    Case("GET", "/buyer/invoices", BUYERS),
    Case("GET", f"/billing/invoices/{INVOICE}", BUYER_A_RECORD),
    Case("GET", f"/billing/receipts/{PAYMENT}", BUYER_A_RECORD),
    Case("GET", "/operator/billing", OPERATOR),
    Case("POST", f"/operator/billing/invoices/{INVOICE}/transfer", OPERATOR_WRITES, form=_transfer),
    Case("POST", f"/operator/billing/payments/{PAYMENT}/refund", OPERATOR_WRITES, form=_refund),
    Case("POST", "/operator/billing/settlements", OPERATOR_WRITES, form=lambda _p, _w: {"period": PERIOD}),
    Case("POST", f"/operator/billing/settlements/{STATEMENT}/issue", OPERATOR_WRITES, form=_empty),
    Case("GET", "/owner/settlements", OWNER),
    Case("POST", "/owner/settlements", _by(303, 303, 403, 403, 403, 403, 403), form=_owner_settles),
    # The statement is a draft: the owner's acknowledgement is refused on its page (409).
    Case("POST", f"/owner/settlements/{STATEMENT}/acknowledge", _by(303, 409, 403, 403, 403, 403, 403), form=_empty),
]


def _path(case: Case, world: BillingWorld) -> str:
    return (
        case.path.replace(SUBSCRIPTION, world.open_subscription_id)
        .replace(INVOICE, world.open_invoice_id)
        .replace(PAYMENT, world.payment_id)
        .replace(STATEMENT, world.statement_id)
    )


def _state(engine: Engine) -> dict[str, Any]:
    """What a refused form must leave as it was, beyond the row counts."""
    with engine.connect() as conn:
        return {
            "subscriptions": sorted(conn.execute(text("SELECT id, status FROM subscription")).all()),
            "invoices": sorted(conn.execute(text("SELECT id, status FROM invoice")).all()),
            "payments": sorted(conn.execute(text("SELECT id, refunded_minor FROM payment")).all()),
            "statements": sorted(conn.execute(text("SELECT id, status, computed_at FROM settlement_statement")).all()),
        }


@pytest.mark.parametrize("party", PARTIES)
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_billing_page_answers_each_party_exactly(settings: Settings, engine: Engine, case: Case, party: str) -> None:
    world = replayed(engine, __name__, lambda: build_billing_world(engine, settings), data_dir=settings.resolved_data_dir)
    before = row_counts(engine, *TABLES)
    state = _state(engine)
    with TestClient(app=shared_app(settings), base_url=TEST_ORIGIN) as client:
        if party != "anonymous":
            client.cookies.set("market_session", world.world.sessions[party])
        kwargs: dict[str, Any] = {"follow_redirects": False}
        if case.method == "POST":
            assert case.form is not None
            kwargs["data"] = {**case.form(party, world), "_csrf_token": csrf(client)}  # type: ignore[arg-type]
        response = client.request(case.method, _path(case, world), **kwargs)
    expected = case.expected[party]
    assert response.status_code == expected, f"{case.id} as {party}: {response.status_code} {response.text[:300]}"
    if expected == 303 and party == "anonymous":
        assert response.headers["location"].startswith("/login")
    if response.status_code == 403 and party in ("regulator", "auditor") and case.method == "POST":
        assert "read_only_party" in response.text
    elif response.status_code >= 400:
        assert response.headers["content-type"].startswith("text/html")  # the page, with the refusal on it
    # A refused form changes nothing, not even the ledger; a page read changes no business record.
    if case.method == "POST" and response.status_code >= 400:
        assert row_counts(engine, *TABLES) == before
    if case.method == "GET" or response.status_code >= 400:
        assert _state(engine) == state
