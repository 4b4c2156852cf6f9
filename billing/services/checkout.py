"""Checkout: the buyer's choice of payment method for a subscription waiting for payment."""

from __future__ import annotations

import uuid

from sqlmodel.ext.asyncio.session import AsyncSession

from billing.models import Gateway, Invoice
from billing.services.invoices import checkout_by_invoice
from billing.services.stripe_checkout import checkout_by_stripe
from billing.stripe_gateway import StripeGateway
from marketplace.core.errors import Conflict
from marketplace.core.principal import Principal
from marketplace.core.settings import Settings


async def checkout(
    session: AsyncSession,
    principal: Principal,
    settings: Settings,
    gateway: StripeGateway | None,
    subscription_id: uuid.UUID,
    method: Gateway,
) -> Invoice:
    """Issue (or answer again) the invoice of a ``pending_payment`` subscription, paid by ``method``. Stripe without
    its configuration is 409 ``method_not_available``."""
    if method is Gateway.stripe:
        if gateway is None:
            raise Conflict("Payment through Stripe is not available here; pay by invoice.", code="method_not_available")
        return await checkout_by_stripe(session, principal, settings, gateway, subscription_id)
    return await checkout_by_invoice(session, principal, settings, subscription_id)
