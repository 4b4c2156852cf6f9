"""Paying through Stripe Checkout: our invoice first, then Stripe's Customer, Product, Price and Checkout Session,
each created once (idempotency keys from our records; the ids kept in ``GatewayObject``)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy.exc import IntegrityError
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from billing.models import Gateway, GatewayObject, Invoice
from billing.services.invoices import (
    _payable_subscription,
    _require_buyer_person,
    issue_first_invoice,
    open_first_invoice,
    void_invoice,
)
from billing.services.money import minor_fraction, to_minor
from billing.stripe_gateway import StripeGateway
from licensing.models import PlanType
from marketplace.catalog.models import Plan
from marketplace.core.errors import Conflict
from marketplace.core.events import Actor
from marketplace.core.identity.models import Organisation
from marketplace.core.principal import Principal
from marketplace.core.settings import Settings
from marketplace.subscriptions.models import Subscription

#: The meter event name of metered deliveries.
METER_EVENT = "market_data_calls"


async def gateway_object(
    session: AsyncSession, gateway: StripeGateway, kind: str, local_key: str, create: Callable[[], str]
) -> str:
    """The Stripe id of one of our objects, created through ``create`` (idempotent at Stripe) the first time."""
    found = (
        await session.exec(
            select(GatewayObject).where(
                GatewayObject.gateway == Gateway.stripe, GatewayObject.kind == kind, GatewayObject.local_key == local_key
            )
        )
    ).first()
    if found is not None:
        return found.external_id
    external_id = await asyncio.to_thread(create)
    try:
        async with session.begin_nested():
            session.add(GatewayObject(gateway=Gateway.stripe, kind=kind, local_key=local_key, external_id=external_id))
    except IntegrityError:
        pass  # another request stored it meanwhile: Stripe gave both the same object (same idempotency key)
    return external_id


async def customer_of(session: AsyncSession, gateway: StripeGateway, org_id: uuid.UUID) -> str:
    """The Stripe Customer of a buyer organisation."""
    org = await session.get(Organisation, org_id)
    assert org is not None
    return await gateway_object(session, gateway, "customer", str(org_id), lambda: gateway.create_customer(str(org_id), org.name))


async def meter_of(session: AsyncSession, gateway: StripeGateway) -> str:
    """The Stripe meter of metered deliveries."""
    return await gateway_object(session, gateway, "meter", METER_EVENT, lambda: gateway.create_meter(METER_EVENT))


async def _line_items(
    session: AsyncSession, gateway: StripeGateway, plan: Plan, subscription: Subscription
) -> list[dict[str, object]]:
    amount = to_minor(subscription.price, subscription.currency)
    interval = None if plan.type is PlanType.one_off else "month"
    key = f"plan-{plan.id}-{subscription.currency}-{amount}-{interval or 'once'}"
    price = await gateway_object(
        session,
        gateway,
        "price",
        key,
        lambda: gateway.create_price(
            local_key=key,
            plan_id=str(plan.id),
            product_name=plan.name,
            currency=subscription.currency,
            unit_minor=amount,
            interval=interval,
        ),
    )
    items: list[dict[str, object]] = [{"price": price, "quantity": 1}]
    if plan.type is PlanType.metered and plan.per_call_price:
        meter = await meter_of(session, gateway)
        # The per-call price in minor units, with its fraction (Stripe takes up to 12 decimals).
        per_call = f"{minor_fraction(plan.per_call_price, subscription.currency):f}"
        metered_key = f"plan-{plan.id}-{subscription.currency}-metered-{per_call}"
        metered = await gateway_object(
            session,
            gateway,
            "price",
            metered_key,
            lambda: gateway.create_price(
                local_key=metered_key,
                plan_id=str(plan.id),
                product_name=plan.name,
                currency=subscription.currency,
                unit_decimal=per_call,
                interval="month",
                meter_id=meter,
            ),
        )
        items.append({"price": metered})
    return items


async def checkout_by_stripe(
    session: AsyncSession, principal: Principal, settings: Settings, gateway: StripeGateway, subscription_id: uuid.UUID
) -> Invoice:
    """The buyer pays a ``pending_payment`` subscription through Stripe Checkout: our invoice (gateway ``stripe``)
    and a Checkout Session (``payment`` mode for one-off plans, ``subscription`` for monthly and metered ones, which
    Stripe then renews). Asking again answers the same invoice and page; an open invoice of another method is
    voided. Refusals as for the invoice method, and 409 ``gateway_error`` when Stripe refuses (nothing kept)."""
    _require_buyer_person(principal)
    subscription = await _payable_subscription(session, principal, subscription_id)
    existing = await open_first_invoice(session, subscription.id)
    if existing is not None and existing.gateway is Gateway.stripe and existing.checkout_url:
        return existing
    if existing is not None:
        await void_invoice(session, existing, Actor.of(principal), "The buyer chose to pay through Stripe instead.")
    invoice = await issue_first_invoice(
        session, subscription, Gateway.stripe, due_in=timedelta(days=1), actor=Actor.of(principal), created_by=principal.user_id
    )
    plan = await session.get(Plan, subscription.plan_id)
    assert plan is not None
    customer = await customer_of(session, gateway, subscription.buyer_org_id)
    items = await _line_items(session, gateway, plan, subscription)
    base = settings.issuer
    checkout = await asyncio.to_thread(
        lambda: gateway.create_checkout(
            invoice_id=str(invoice.id),
            subscription_id=str(subscription.id),
            customer_id=customer,
            line_items=items,
            mode="payment" if plan.type is PlanType.one_off else "subscription",
            success_url=f"{base}/buyer/subscriptions/{subscription.id}?paid=1",
            cancel_url=f"{base}/buyer/subscriptions/{subscription.id}",
        )
    )
    invoice.external_id = checkout.id
    invoice.checkout_url = checkout.url
    session.add(invoice)
    try:
        await session.commit()
    except IntegrityError:
        await session.rollback()
        raise Conflict("The subscription was checked out at the same time; reload it.", code="checkout_in_progress") from None
    await session.refresh(invoice)
    return invoice


async def portal_link(session: AsyncSession, principal: Principal, settings: Settings, gateway: StripeGateway | None) -> str:
    """A Stripe customer portal page for the buyer's organisation (cards, Stripe invoices, cancellation); 409
    ``method_not_available`` without Stripe."""
    _require_buyer_person(principal)
    if gateway is None:
        raise Conflict("Payment through Stripe is not available here.", code="method_not_available")
    customer = await customer_of(session, gateway, principal.org_id)
    await session.commit()
    return await asyncio.to_thread(gateway.portal_url, customer, f"{settings.issuer}/buyer")
