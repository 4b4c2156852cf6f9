"""Stripe's webhook events: verified on the raw body, stored once with their effect, safe to receive twice, at
once, or out of order."""

from __future__ import annotations

from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession

from marketplace.core.errors import InvalidInput
from marketplace.core.settings import Settings


async def receive(session: AsyncSession, settings: Settings, gateway: Any, payload: bytes, signature: str) -> str:
    """Verify and process one delivery of a Stripe event; returns what was done (``processed``, ``duplicate``,
    ``ignored``)."""
    if settings.stripe_webhook_secret is None or gateway is None:
        raise InvalidInput("Stripe is not configured on this platform.", code="webhook_not_configured")
    raise InvalidInput("Not yet.", code="webhook_not_configured")
