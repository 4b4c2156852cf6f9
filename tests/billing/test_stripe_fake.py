"""The Stripe fake behaves like Stripe for our billing flows, driven through the real `stripe` SDK (nothing patched)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
import stripe

from tests.billing.stripe_fake import StripeFake, parse_form

API_KEY = "sk_test_billing_fake_0001"
WEBHOOK_SECRET = "whsec_test_fake_secret"


@pytest.fixture
def fake() -> Iterator[StripeFake]:
    """A fresh fake per test, on its own free port."""
    with StripeFake() as running:
        yield running
        assert running.errors == [], running.errors[0] if running.errors else ""


@pytest.fixture
def client(fake: StripeFake) -> stripe.StripeClient:
    """The real SDK, pointed at the fake the way billing will be configured."""
    base = fake.base_url
    return stripe.StripeClient(API_KEY, base_addresses={"api": base, "connect": base, "files": base, "meter_events": base})


def _price(client: stripe.StripeClient, *, recurring: dict[str, Any] | None = None, amount: int = 1500) -> stripe.Price:
    product = client.v1.products.create({"name": "Weather feed"})
    params: dict[str, Any] = {"product": product.id, "currency": "usd", "unit_amount": amount}
    if recurring:
        params["recurring"] = recurring
    return client.v1.prices.create(params)  # type: ignore[arg-type]


def _paid_payment(fake: StripeFake, client: stripe.StripeClient, amount: int = 5000) -> stripe.PaymentIntent:
    price = _price(client, amount=amount)
    session = client.v1.checkout.sessions.create({"mode": "payment", "line_items": [{"price": price.id, "quantity": 1}]})
    fake.complete_checkout(session.id)
    intent_id = client.v1.checkout.sessions.retrieve(session.id).payment_intent
    assert isinstance(intent_id, str)
    return client.v1.payment_intents.retrieve(intent_id)


# --- the wire ---------------------------------------------------------------------------------------------------------


def test_bracket_notation_parses_into_nested_dicts_and_lists() -> None:
    parsed = parse_form("metadata[plan]=pro&line_items[0][price]=p1&line_items[0][quantity]=2&expand[]=a&expand[]=b&note=")
    assert parsed == {
        "metadata": {"plan": "pro"},
        "line_items": [{"price": "p1", "quantity": "2"}],
        "expand": ["a", "b"],
        "note": "",
    }


def test_the_fake_listens_on_a_free_loopback_port_and_stops() -> None:
    with StripeFake() as one, StripeFake() as two:
        assert one.base_url.startswith("http://127.0.0.1:")
        assert one.base_url != two.base_url
        url = one.base_url
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/v1/events", timeout=2)


def test_a_bad_api_key_is_the_sdks_authentication_error(fake: StripeFake) -> None:
    with pytest.raises(stripe.AuthenticationError) as raised:
        fake.client("sk_live_not_a_test_key_1234").v1.customers.create({"email": "a@example.com"})
    assert raised.value.http_status == 401
    assert "Invalid API Key provided: sk_live_" in str(raised.value)
    assert "not_a_test" not in str(raised.value)  # masked, as Stripe does
    assert fake.created_count("customer") == 0


def test_an_unknown_parameter_is_refused_as_stripe_does(client: stripe.StripeClient) -> None:
    with pytest.raises(stripe.InvalidRequestError) as raised:
        client.v1.customers.create({"emial": "a@example.com"})  # type: ignore[arg-type]
    assert (raised.value.code, raised.value.param) == ("parameter_unknown", "emial")


# --- customers, products, prices --------------------------------------------------------------------------------------


def test_customer_product_and_price_are_created_and_retrieved(fake: StripeFake, client: stripe.StripeClient) -> None:
    customer = client.v1.customers.create({"email": "buyer@example.com", "name": "Ada", "metadata": {"account": "42"}})
    assert customer.id.startswith("cus_")
    assert (customer.object, customer.livemode) == ("customer", False)
    assert customer.metadata is not None
    assert customer.metadata.to_dict() == {"account": "42"}
    assert abs(customer.created - time.time()) < 5
    assert client.v1.customers.retrieve(customer.id).email == "buyer@example.com"

    updated = client.v1.customers.update(customer.id, {"metadata": {"account": "", "tier": "gold"}})
    assert updated.metadata is not None
    assert updated.metadata.to_dict() == {"tier": "gold"}  # "" unsets a key, others merge

    product = client.v1.products.create({"name": "Weather feed", "metadata": {"dataset": "d1"}})
    price = client.v1.prices.create(
        {
            "product": product.id,
            "currency": "EUR",
            "unit_amount_decimal": Decimal("0.5"),
            "recurring": {"interval": "month"},
            "lookup_key": "weather_monthly",
        }
    )
    assert product.id.startswith("prod_")
    assert price.id.startswith("price_")
    assert (price.currency, price.type, price.unit_amount, price.unit_amount_decimal) == (
        "eur",
        "recurring",
        None,
        Decimal("0.5"),
    )
    assert price.recurring is not None
    assert (price.recurring.interval, price.recurring.usage_type) == ("month", "licensed")
    assert client.v1.prices.retrieve(price.id).product == product.id

    found = client.v1.prices.list({"lookup_keys": ["weather_monthly"], "expand": ["data.product"]})
    assert [p.id for p in found.data] == [price.id]
    assert found.data[0].product.name == "Weather feed"  # type: ignore[union-attr]
    assert client.v1.prices.list({"product": product.id, "active": False}).data == []
    assert [e["type"] for e in fake.events()] == ["customer.created", "customer.updated", "product.created", "price.created"]


def test_an_unknown_id_is_the_sdks_invalid_request_error_with_404(client: stripe.StripeClient) -> None:
    with pytest.raises(stripe.InvalidRequestError) as raised:
        client.v1.customers.retrieve("cus_doesnotexist")
    assert raised.value.http_status == 404
    assert (raised.value.code, raised.value.param) == ("resource_missing", "id")
    assert "No such customer: 'cus_doesnotexist'" in str(raised.value)
    product = client.v1.products.create({"name": "Feed"})
    with pytest.raises(stripe.InvalidRequestError, match="No such price"):
        client.v1.prices.retrieve(product.id)  # an id of another kind is not a price


def test_a_price_referring_to_a_missing_product_is_a_400(client: stripe.StripeClient) -> None:
    with pytest.raises(stripe.InvalidRequestError) as raised:
        client.v1.prices.create({"product": "prod_missing", "currency": "usd", "unit_amount": 100})
    assert (raised.value.http_status, raised.value.param) == (400, "product")


# --- idempotency ------------------------------------------------------------------------------------------------------


def test_the_same_idempotency_key_and_parameters_replay_the_first_answer(fake: StripeFake, client: stripe.StripeClient) -> None:
    params: dict[str, Any] = {"email": "once@example.com", "metadata": {"order": "7"}}
    first = client.v1.customers.create(params, {"idempotency_key": "order-7-customer"})  # type: ignore[arg-type]
    second = client.v1.customers.create(params, {"idempotency_key": "order-7-customer"})  # type: ignore[arg-type]
    assert first.id == second.id
    assert fake.created_count("customer") == 1
    assert len(fake.events("customer.created")) == 1
    assert second.last_response is not None
    assert second.last_response.headers["Idempotent-Replayed"] == "true"


def test_the_same_idempotency_key_with_other_parameters_is_an_idempotency_error(
    fake: StripeFake, client: stripe.StripeClient
) -> None:
    client.v1.customers.create({"email": "a@example.com"}, {"idempotency_key": "k1"})
    with pytest.raises(stripe.IdempotencyError) as raised:
        client.v1.customers.create({"email": "b@example.com"}, {"idempotency_key": "k1"})
    assert raised.value.http_status == 400
    assert raised.value.error is not None
    assert raised.value.error.type == "idempotency_error"
    with pytest.raises(stripe.IdempotencyError):
        client.v1.products.create({"name": "x"}, {"idempotency_key": "k1"})  # another endpoint
    assert fake.created_count("customer") == 1
    assert fake.created_count("product") == 0


# --- checkout, payment intents, subscriptions, invoices ---------------------------------------------------------------


def test_payment_checkout_completes_into_a_succeeded_payment_intent(fake: StripeFake, client: stripe.StripeClient) -> None:
    customer = client.v1.customers.create({"email": "buyer@example.com"})
    price = _price(client, amount=2500)
    session = client.v1.checkout.sessions.create(
        {
            "mode": "payment",
            "customer": customer.id,
            "line_items": [{"price": price.id, "quantity": 2}],
            "success_url": "https://market.test/paid?session={CHECKOUT_SESSION_ID}",
            "cancel_url": "https://market.test/cancel",
            "client_reference_id": "order-9",
            "metadata": {"order": "9"},
            "payment_intent_data": {"metadata": {"order": "9"}},
        }
    )
    assert session.id.startswith("cs_test_")
    assert session.url == f"{fake.base_url}/pay/{session.id}"
    assert (session.status, session.payment_status, session.amount_total, session.currency) == ("open", "unpaid", 5000, "usd")
    assert session.payment_intent is None

    events = fake.complete_checkout(session.id, fee=175)
    assert [e["type"] for e in events] == ["payment_intent.succeeded", "checkout.session.completed"]
    assert events[-1]["data"]["object"]["client_reference_id"] == "order-9"

    paid = client.v1.checkout.sessions.retrieve(session.id, {"expand": ["line_items"]})
    assert (paid.status, paid.payment_status) == ("complete", "paid")
    assert paid.line_items is not None
    assert paid.line_items.data[0].quantity == 2
    intent = client.v1.payment_intents.retrieve(
        paid.payment_intent,  # type: ignore[arg-type]
        {"expand": ["latest_charge.balance_transaction"]},
    )
    assert intent.id.startswith("pi_")
    assert (intent.status, intent.amount, intent.amount_received, intent.customer) == ("succeeded", 5000, 5000, customer.id)
    assert intent.metadata.to_dict() == {"order": "9"}
    charge = intent.latest_charge
    assert isinstance(charge, stripe.Charge)
    assert charge.id.startswith("ch_")
    assert charge.paid
    transaction = charge.balance_transaction
    assert isinstance(transaction, stripe.BalanceTransaction)
    assert (transaction.amount, transaction.fee, transaction.net) == (5000, 175, 4825)


def test_subscription_checkout_creates_an_active_subscription_with_a_paid_invoice(
    fake: StripeFake, client: stripe.StripeClient
) -> None:
    price = _price(client, amount=1500, recurring={"interval": "month"})
    session = client.v1.checkout.sessions.create(
        {
            "mode": "subscription",
            "customer_email": "subscriber@example.com",
            "line_items": [{"price": price.id, "quantity": 1}],
            "subscription_data": {"metadata": {"plan": "weather"}},
        }
    )
    events = fake.complete_checkout(session.id)
    assert [e["type"] for e in events] == [
        "customer.created",
        "customer.subscription.created",
        "payment_intent.succeeded",
        "invoice.paid",
        "checkout.session.completed",
    ]
    done = client.v1.checkout.sessions.retrieve(session.id)
    assert (done.status, done.payment_status) == ("complete", "paid")
    assert isinstance(done.customer, str)
    assert done.customer.startswith("cus_")

    subscription = client.v1.subscriptions.retrieve(done.subscription)  # type: ignore[arg-type]
    assert subscription.id.startswith("sub_")
    assert (subscription.status, subscription.customer, subscription.metadata.to_dict()) == (
        "active",
        done.customer,
        {"plan": "weather"},
    )
    item = subscription["items"].data[0]
    assert item.price.id == price.id
    assert 28 * 86400 <= item.current_period_end - item.current_period_start <= 31 * 86400

    invoice = client.v1.invoices.retrieve(subscription.latest_invoice, {"expand": ["payments"]})  # type: ignore[arg-type]
    assert invoice.id.startswith("in_")
    assert (invoice.status, invoice.amount_paid, invoice.billing_reason) == ("paid", 1500, "subscription_create")
    assert invoice.parent is not None
    assert invoice.parent.subscription_details is not None
    assert invoice.parent.subscription_details.subscription == subscription.id
    line = invoice.lines.data[0]
    assert (line.amount, line.period.start, line.period.end) == (1500, item.current_period_start, item.current_period_end)
    assert invoice.payments is not None
    intent_id = invoice.payments.data[0].payment.payment_intent
    assert client.v1.payment_intents.retrieve(intent_id).status == "succeeded"  # type: ignore[arg-type]
    assert [i.id for i in client.v1.invoices.list({"subscription": subscription.id}).data] == [invoice.id]


def test_renewal_pays_a_cycle_invoice_and_a_failed_renewal_leaves_it_open(fake: StripeFake, client: stripe.StripeClient) -> None:
    price = _price(client, amount=900, recurring={"interval": "month"})
    customer = client.v1.customers.create({"email": "s@example.com"})
    session = client.v1.checkout.sessions.create(
        {"mode": "subscription", "customer": customer.id, "line_items": [{"price": price.id, "quantity": 1}]}
    )
    fake.complete_checkout(session.id)
    subscription_id = client.v1.checkout.sessions.retrieve(session.id).subscription
    assert isinstance(subscription_id, str)
    first_end = client.v1.subscriptions.retrieve(subscription_id)["items"].data[0].current_period_end

    renewed = fake.renew_subscription(subscription_id)
    assert [e["type"] for e in renewed] == ["customer.subscription.updated", "payment_intent.succeeded", "invoice.paid"]
    subscription = client.v1.subscriptions.retrieve(subscription_id)
    assert subscription["items"].data[0].current_period_start == first_end
    cycle = client.v1.invoices.retrieve(subscription.latest_invoice)  # type: ignore[arg-type]
    assert (cycle.billing_reason, cycle.status, cycle.amount_paid) == ("subscription_cycle", "paid", 900)

    failed = fake.fail_renewal(subscription_id)
    assert {e["type"] for e in failed} >= {"invoice.payment_failed", "customer.subscription.updated"}
    subscription = client.v1.subscriptions.retrieve(subscription_id)
    assert subscription.status == "past_due"
    unpaid = client.v1.invoices.retrieve(subscription.latest_invoice)  # type: ignore[arg-type]
    assert (unpaid.status, unpaid.amount_paid, unpaid.amount_remaining) == ("open", 0, 900)
    invoices = client.v1.invoices.list({"customer": customer.id, "limit": 2})
    assert [i.id for i in invoices.data] == [unpaid.id, cycle.id]
    assert invoices.has_more


def test_cancelling_a_subscription(fake: StripeFake, client: stripe.StripeClient) -> None:
    price = _price(client, recurring={"interval": "month"})
    session = client.v1.checkout.sessions.create({"mode": "subscription", "line_items": [{"price": price.id, "quantity": 1}]})
    fake.complete_checkout(session.id)
    subscription_id = client.v1.checkout.sessions.retrieve(session.id).subscription
    assert isinstance(subscription_id, str)

    scheduled = client.v1.subscriptions.update(subscription_id, {"cancel_at_period_end": True})
    assert scheduled.cancel_at_period_end
    assert scheduled.cancel_at == scheduled["items"].data[0].current_period_end
    canceled = client.v1.subscriptions.cancel(subscription_id)
    assert (canceled.status, canceled.cancellation_details.reason) == ("canceled", "cancellation_requested")  # type: ignore[union-attr]
    assert fake.events("customer.subscription.deleted")[0]["data"]["object"]["id"] == subscription_id
    with pytest.raises(stripe.InvalidRequestError, match="A canceled subscription can only update"):
        client.v1.subscriptions.update(subscription_id, {"cancel_at_period_end": False})
    with pytest.raises(stripe.InvalidRequestError) as raised:
        client.v1.subscriptions.cancel(subscription_id)
    assert raised.value.http_status == 404


def test_checkout_refuses_a_recurring_price_in_payment_mode(client: stripe.StripeClient) -> None:
    price = _price(client, recurring={"interval": "month"})
    with pytest.raises(stripe.InvalidRequestError, match="passed a recurring price"):
        client.v1.checkout.sessions.create({"mode": "payment", "line_items": [{"price": price.id, "quantity": 1}]})


def test_the_pay_page_completes_the_session_and_redirects(fake: StripeFake, client: stripe.StripeClient) -> None:
    price = _price(client)
    session = client.v1.checkout.sessions.create(
        {
            "mode": "payment",
            "line_items": [{"price": price.id, "quantity": 1}],
            "success_url": "https://m.test/ok?s={CHECKOUT_SESSION_ID}",
        }
    )
    assert session.url is not None
    assert httpx.get(session.url).status_code == 200
    answer = httpx.post(session.url)
    assert (answer.status_code, answer.headers["location"]) == (303, f"https://m.test/ok?s={session.id}")
    assert client.v1.checkout.sessions.retrieve(session.id).payment_status == "paid"


def test_billing_portal_session_points_at_the_fake(fake: StripeFake, client: stripe.StripeClient) -> None:
    customer = client.v1.customers.create({"email": "p@example.com"})
    portal = client.v1.billing_portal.sessions.create({"customer": customer.id, "return_url": "https://m.test/account"})
    assert portal.id.startswith("bps_")
    assert portal.url.startswith(f"{fake.base_url}/portal/")
    assert httpx.get(portal.url).status_code == 200


# --- events -----------------------------------------------------------------------------------------------------------


def test_events_are_listed_newest_first_and_page_with_auto_paging_iter(fake: StripeFake, client: stripe.StripeClient) -> None:
    for n in range(5):
        client.v1.customers.create({"email": f"c{n}@example.com"})
    page = client.v1.events.list({"limit": 2})
    assert page["object"] == "list"
    assert page.url == "/v1/events"
    assert page.has_more
    emails = [e.data.object["email"] for e in page.data]
    assert emails == ["c4@example.com", "c3@example.com"]
    every = [e.id for e in client.v1.events.list({"limit": 2}).auto_paging_iter()]
    assert every == [e["id"] for e in reversed(fake.events())]
    assert len(every) == len(set(every)) == 5

    newest, *_ = every
    earlier = client.v1.events.list({"ending_before": every[3], "limit": 2})
    assert [e.id for e in earlier.data] == every[1:3]
    assert earlier.has_more
    assert client.v1.events.retrieve(newest).type == "customer.created"


def test_events_filter_on_created_and_type(fake: StripeFake, client: stripe.StripeClient) -> None:
    client.v1.customers.create({"email": "old@example.com"})
    later = fake.advance_clock(120)
    customer = client.v1.customers.create({"email": "new@example.com"})
    client.v1.customers.update(customer.id, {"name": "New"})
    recent = client.v1.events.list({"created": {"gte": later}})
    assert [e.type for e in recent.data] == ["customer.updated", "customer.created"]
    assert [e.type for e in client.v1.events.list({"type": "customer.updated"}).data] == ["customer.updated"]
    assert len(client.v1.events.list({"types": ["customer.created"]}).data) == 2
    assert len(client.v1.events.list({"type": "customer.*"}).data) == 3


# --- billing meters ---------------------------------------------------------------------------------------------------


def test_meter_events_are_summed_per_customer_and_a_repeated_identifier_is_refused(
    fake: StripeFake, client: stripe.StripeClient
) -> None:
    meter = client.v1.billing.meters.create(
        {
            "display_name": "API rows",
            "event_name": "rows_delivered",
            "default_aggregation": {"formula": "sum"},
            "customer_mapping": {"event_payload_key": "stripe_customer_id", "type": "by_id"},
            "value_settings": {"event_payload_key": "value"},
        }
    )
    assert meter.id.startswith("mtr_")
    assert meter.object == "billing.meter"
    assert [m.id for m in client.v1.billing.meters.list().data] == [meter.id]
    buyer = client.v1.customers.create({"email": "m@example.com"}).id
    other = client.v1.customers.create({"email": "o@example.com"}).id

    def send(identifier: str, value: int, customer: str = buyer) -> stripe.billing.MeterEvent:
        payload = {"stripe_customer_id": customer, "value": str(value)}
        return client.v1.billing.meter_events.create(
            {"event_name": "rows_delivered", "payload": payload, "identifier": identifier}
        )

    first = send("delivery-1", 120)
    assert (first.object, first.identifier, first.payload["value"]) == ("billing.meter_event", "delivery-1", "120")
    send("delivery-2", 30)
    send("delivery-3", 999, customer=other)
    with pytest.raises(stripe.InvalidRequestError, match="An event already exists with identifier delivery-1"):
        send("delivery-1", 120)
    assert fake.meter_total(buyer, "rows_delivered") == 150
    assert fake.meter_total(other, "rows_delivered") == 999
    assert fake.created_count("billing.meter_event") == 3


def test_a_metered_subscription_bills_the_periods_usage_at_renewal(fake: StripeFake, client: stripe.StripeClient) -> None:
    meter = client.v1.billing.meters.create(
        {"display_name": "Rows", "event_name": "rows", "default_aggregation": {"formula": "sum"}}
    )
    price = _price(client, amount=2, recurring={"interval": "month", "usage_type": "metered", "meter": meter.id})
    customer = client.v1.customers.create({"email": "u@example.com"}).id
    session = client.v1.checkout.sessions.create(
        {"mode": "subscription", "customer": customer, "line_items": [{"price": price.id}]}
    )
    fake.complete_checkout(session.id)
    subscription_id = client.v1.checkout.sessions.retrieve(session.id).subscription
    assert isinstance(subscription_id, str)
    first = client.v1.invoices.retrieve(client.v1.subscriptions.retrieve(subscription_id).latest_invoice)  # type: ignore[arg-type]
    assert (first.amount_paid, first.status) == (0, "paid")  # usage is billed in arrears

    for n, value in enumerate([40, 60]):
        client.v1.billing.meter_events.create(
            {"event_name": "rows", "payload": {"stripe_customer_id": customer, "value": str(value)}, "identifier": f"r{n}"}
        )
    fake.renew_subscription(subscription_id)
    cycle = client.v1.invoices.retrieve(client.v1.subscriptions.retrieve(subscription_id).latest_invoice)  # type: ignore[arg-type]
    assert (cycle.amount_paid, cycle.lines.data[0].quantity) == (200, 100)


# --- refunds ----------------------------------------------------------------------------------------------------------


def test_refunds_partial_then_the_rest_then_none_left(fake: StripeFake, client: stripe.StripeClient) -> None:
    intent = _paid_payment(fake, client, amount=5000)
    partial = client.v1.refunds.create({"payment_intent": intent.id, "amount": 2000, "reason": "requested_by_customer"})
    assert partial.id.startswith("re_")
    assert (partial.amount, partial.status, partial.payment_intent, partial.currency) == (2000, "succeeded", intent.id, "usd")
    assert client.v1.refunds.retrieve(partial.id).amount == 2000

    with pytest.raises(stripe.InvalidRequestError) as too_much:
        client.v1.refunds.create({"payment_intent": intent.id, "amount": 3001})
    assert too_much.value.param == "amount"
    assert "Refund amount ($30.01) is greater than unrefunded amount on charge ($30.00)" in str(too_much.value)

    rest = client.v1.refunds.create({"charge": intent.latest_charge})  # type: ignore[arg-type]
    assert rest.amount == 3000
    charge = client.v1.charges.retrieve(intent.latest_charge)  # type: ignore[arg-type]
    assert (charge.amount_refunded, charge.refunded) == (5000, True)

    with pytest.raises(stripe.InvalidRequestError) as none_left:
        client.v1.refunds.create({"payment_intent": intent.id, "amount": 1})
    assert none_left.value.code == "charge_already_refunded"
    assert [e["type"] for e in fake.events()][-4:] == ["refund.created", "charge.refunded"] * 2


# --- webhooks ---------------------------------------------------------------------------------------------------------


def test_signed_payloads_are_accepted_by_the_sdk_and_tampering_is_not(fake: StripeFake, client: stripe.StripeClient) -> None:
    client.v1.customers.create({"email": "w@example.com"})
    event = fake.events("customer.created")[0]
    payload = fake.webhook_payload(event)

    verified = stripe.Webhook.construct_event(payload, fake.sign(payload, WEBHOOK_SECRET), WEBHOOK_SECRET)
    assert (verified.id, verified.type) == (event["id"], "customer.created")
    assert verified.data.object["email"] == "w@example.com"
    assert client.construct_event(payload, fake.sign(payload, WEBHOOK_SECRET), WEBHOOK_SECRET).id == event["id"]

    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(payload, fake.sign(payload, "whsec_someone_else"), WEBHOOK_SECRET)
    stale = fake.sign(payload, WEBHOOK_SECRET, timestamp=int(time.time()) - 301)
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(payload, stale, WEBHOOK_SECRET)
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(
            payload.replace(b"w@example.com", b"x@example.com"), fake.sign(payload, WEBHOOK_SECRET), WEBHOOK_SECRET
        )


def test_deliver_posts_a_signed_event_to_a_webhook_url(fake: StripeFake, client: stripe.StripeClient) -> None:
    received: list[tuple[bytes, str]] = []

    class Endpoint(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((body, self.headers["Stripe-Signature"]))
            self.send_response(200)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Endpoint)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        client.v1.customers.create({"email": "hook@example.com"})
        event = fake.events()[0]
        response = fake.deliver(event, f"http://127.0.0.1:{server.server_address[1]}/stripe/webhook", WEBHOOK_SECRET)
    finally:
        server.shutdown()
        server.server_close()
    assert response.status_code == 200
    body, signature = received[0]
    assert stripe.Webhook.construct_event(body, signature, WEBHOOK_SECRET).id == event["id"]


def test_reset_forgets_everything(fake: StripeFake, client: stripe.StripeClient) -> None:
    customer = client.v1.customers.create({"email": "r@example.com"})
    fake.reset()
    assert fake.created_count("customer") == 0
    assert fake.events() == []
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.customers.retrieve(customer.id)
