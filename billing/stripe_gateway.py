"""Stripe, through its official SDK, and only from this module.

Every call that creates something carries an idempotency key derived from our own record (``customer-<org>``,
``checkout-<invoice>``, ``refund-<payment>-<request key>``, ...), so a retried call never creates a second object.
Calls are blocking HTTP: services run them in a worker thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import stripe

from marketplace.core.errors import Conflict, InvalidInput
from marketplace.core.settings import Settings

#: The events billing acts on; others are acknowledged and ignored.
HANDLED_EVENTS = frozenset(
    {"checkout.session.completed", "invoice.paid", "invoice.payment_failed", "customer.subscription.deleted"}
)


@dataclass(frozen=True)
class CheckoutSession:
    """A Checkout Session created for one of our invoices."""

    id: str
    url: str


class GatewayError(Conflict):
    """Stripe refused or could not be reached (409 ``gateway_error``; nothing of ours was written)."""


class StripeGateway:
    """What billing asks of Stripe."""

    def __init__(self, settings: Settings) -> None:
        assert settings.stripe_api_key is not None
        self.webhook_secret = settings.stripe_webhook_secret.get_secret_value() if settings.stripe_webhook_secret else ""
        base = settings.stripe_api_base
        addresses = {"api": base, "connect": base, "files": base, "meter_events": base} if base else None
        self.client = stripe.StripeClient(
            settings.stripe_api_key.get_secret_value(),
            base_addresses=addresses,  # type: ignore[arg-type]
            max_network_retries=2,
        )

    def _call(self, what: str, call: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return call(*args, **kwargs)
        except stripe.StripeError as exc:
            raise GatewayError(f"Stripe refused to {what}: {exc.user_message or exc}", code="gateway_error") from exc

    # --- objects kept in step with ours -------------------------------------------------------------------------

    def create_customer(self, org_id: str, name: str) -> str:
        """A Customer for one buyer organisation."""
        customer = self._call(
            "create the customer",
            self.client.v1.customers.create,
            params={"name": name, "metadata": {"org_id": org_id}},
            options={"idempotency_key": f"customer-{org_id}"},
        )
        return str(customer.id)

    def create_price(
        self,
        *,
        local_key: str,
        plan_id: str,
        product_name: str,
        currency: str,
        unit_minor: int | None = None,
        unit_decimal: str | None = None,
        interval: str | None = None,
        meter_id: str | None = None,
    ) -> str:
        """A Product per plan and a Price for one amount of it (recurring monthly, or metered on our meter)."""
        product = self._call(
            "create the product",
            self.client.v1.products.create,
            params={"name": product_name, "metadata": {"plan_id": plan_id}},
            options={"idempotency_key": f"product-{plan_id}"},
        )
        params: dict[str, Any] = {
            "product": product.id,
            "currency": currency.lower(),
            "lookup_key": local_key,
            "metadata": {"plan_id": plan_id},
        }
        if unit_decimal is not None:
            params["unit_amount_decimal"] = unit_decimal
        else:
            params["unit_amount"] = unit_minor
        if interval is not None:
            params["recurring"] = {"interval": interval}
            if meter_id is not None:
                params["recurring"].update(usage_type="metered", meter=meter_id)
        price = self._call(
            "create the price", self.client.v1.prices.create, params=params, options={"idempotency_key": f"price-{local_key}"}
        )
        return str(price.id)

    def create_meter(self, event_name: str) -> str:
        """The meter our metered deliveries are reported to (summed per customer)."""
        meter = self._call(
            "create the meter",
            self.client.v1.billing.meters.create,
            params={
                "display_name": "Metered data deliveries",
                "event_name": event_name,
                "default_aggregation": {"formula": "sum"},
            },
            options={"idempotency_key": f"meter-{event_name}"},
        )
        return str(meter.id)

    # --- checkout ------------------------------------------------------------------------------------------------

    def create_checkout(
        self,
        *,
        invoice_id: str,
        subscription_id: str,
        customer_id: str,
        line_items: list[dict[str, Any]],
        mode: str,
        success_url: str,
        cancel_url: str,
    ) -> CheckoutSession:
        """A Checkout Session paying our invoice (``payment`` mode) or starting the subscription (``subscription``)."""
        metadata = {"invoice_id": invoice_id, "subscription_id": subscription_id}
        params: dict[str, Any] = {
            "mode": mode,
            "customer": customer_id,
            "line_items": line_items,
            "success_url": success_url,
            "cancel_url": cancel_url,
            "client_reference_id": invoice_id,
            "metadata": metadata,
        }
        if mode == "subscription":
            params["subscription_data"] = {"metadata": metadata}
        else:
            params["payment_intent_data"] = {"metadata": metadata}
        session = self._call(
            "open the checkout",
            self.client.v1.checkout.sessions.create,
            params=params,
            options={"idempotency_key": f"checkout-{invoice_id}"},
        )
        return CheckoutSession(id=str(session.id), url=str(session.url))

    def portal_url(self, customer_id: str, return_url: str) -> str:
        """A customer portal session (cards, invoices, cancellation at Stripe)."""
        session = self._call(
            "open the customer portal",
            self.client.v1.billing_portal.sessions.create,
            params={"customer": customer_id, "return_url": return_url},
        )
        return str(session.url)

    # --- payments -------------------------------------------------------------------------------------------------

    def payment_received(self, payment_intent_id: str) -> tuple[int, str, str] | None:
        """What Stripe says a payment intent received: (amount in minor units, currency, status); None if unknown."""
        try:
            intent = self.client.v1.payment_intents.retrieve(payment_intent_id)
        except stripe.InvalidRequestError as exc:
            if exc.http_status == 404:
                return None
            raise GatewayError(f"Stripe refused to read the payment: {exc.user_message or exc}", code="gateway_error") from exc
        except stripe.StripeError as exc:
            raise GatewayError(f"Stripe could not be read: {exc.user_message or exc}", code="gateway_error") from exc
        return int(intent.amount_received or 0), str(intent.currency).upper(), str(intent.status)

    def payment_fee(self, payment_intent_id: str) -> int | None:
        """Stripe's fee on a payment intent's charge (minor units), when its balance transaction is known."""
        intent = self._call(
            "read the payment",
            self.client.v1.payment_intents.retrieve,
            payment_intent_id,
            params={"expand": ["latest_charge.balance_transaction"]},
        )
        charge = intent.latest_charge
        transaction = getattr(charge, "balance_transaction", None) if charge is not None else None
        fee = getattr(transaction, "fee", None)
        return int(fee) if fee is not None else None

    def invoice_payment_intent(self, stripe_invoice_id: str) -> str | None:
        """The payment intent that paid a Stripe invoice."""
        invoice = self._call(
            "read the invoice", self.client.v1.invoices.retrieve, stripe_invoice_id, params={"expand": ["payments"]}
        )
        payments = getattr(invoice, "payments", None)
        for item in getattr(payments, "data", []) or []:
            payment = item.payment
            if getattr(payment, "type", None) == "payment_intent":
                intent = payment.payment_intent
                return str(getattr(intent, "id", intent))
        return None

    def subscription_status(self, stripe_subscription_id: str) -> str:
        """Stripe's current status of a subscription (``active``, ``past_due``, ``canceled``...)."""
        found = self._call("read the subscription", self.client.v1.subscriptions.retrieve, stripe_subscription_id)
        return str(found.status)

    def cancel_subscription(self, stripe_subscription_id: str) -> bool:
        """Cancel a Stripe subscription at once (no further invoices); False when Stripe no longer has it running."""
        try:
            self.client.v1.subscriptions.cancel(stripe_subscription_id)
        except stripe.InvalidRequestError as exc:
            if exc.http_status == 404:
                return False
            raise GatewayError(
                f"Stripe refused to cancel the subscription: {exc.user_message or exc}", code="gateway_error"
            ) from exc
        except stripe.StripeError as exc:
            raise GatewayError(
                f"Stripe could not cancel the subscription: {exc.user_message or exc}", code="gateway_error"
            ) from exc
        return True

    def refund(self, payment_reference: str, amount_minor: int, idempotency_key: str, reason: str) -> str:
        """Refund ``amount_minor`` of the payment intent ``payment_reference``; returns the refund's id."""
        refund = self._call(
            "refund",
            self.client.v1.refunds.create,
            params={"payment_intent": payment_reference, "amount": amount_minor, "metadata": {"reason": reason[:500]}},
            options={"idempotency_key": idempotency_key},
        )
        return str(refund.id)

    def report_usage(self, *, event_name: str, customer_id: str, value: int, identifier: str, timestamp: int) -> None:
        """One meter event; Stripe keeps one event per ``identifier`` (a repeated report is refused, not counted)."""
        try:
            self.client.v1.billing.meter_events.create(
                params={
                    "event_name": event_name,
                    "payload": {"stripe_customer_id": customer_id, "value": str(value)},
                    "identifier": identifier,
                    "timestamp": timestamp,
                },
                options={"idempotency_key": f"meter-event-{identifier}"},
            )
        except stripe.InvalidRequestError as exc:
            if "already exists" not in str(exc):
                raise GatewayError(f"Stripe refused the usage report: {exc.user_message or exc}", code="gateway_error") from exc

    # --- events ---------------------------------------------------------------------------------------------------

    def verify(self, payload: bytes, signature: str) -> dict[str, Any]:
        """The event of a webhook delivery, its signature checked on the raw body with the SDK's tolerance (400
        ``invalid_signature`` otherwise)."""
        if not signature:
            raise InvalidInput("The Stripe-Signature header is missing.", code="invalid_signature")
        try:
            event = stripe.Webhook.construct_event(payload, signature, self.webhook_secret)
        except stripe.SignatureVerificationError:
            raise InvalidInput("The Stripe signature does not match (or is too old).", code="invalid_signature") from None
        except ValueError:
            raise InvalidInput("The webhook body is not a Stripe event.", code="invalid_signature") from None
        result: dict[str, Any] = event.to_dict()
        return result

    def recent_events(self, since: int, types: list[str]) -> list[dict[str, Any]]:
        """Events created since ``since`` (unix seconds) of ``types``, oldest first (reconciliation)."""
        page = self._call(
            "list events", self.client.v1.events.list, params={"created": {"gte": since}, "types": types, "limit": 100}
        )
        events = [e.to_dict() for e in page.auto_paging_iter()]
        return sorted(events, key=lambda e: (e["created"], e["id"]))
