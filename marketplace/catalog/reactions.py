"""How the catalog reacts to other domains' events (through the core publish/subscribe hook)."""

from __future__ import annotations

from sqlmodel.ext.asyncio.session import AsyncSession

from marketplace.core.events import DomainEvent


async def on_domain_event(session: AsyncSession, event: DomainEvent) -> None:
    """Keep products in step with their listing reviews (approved -> listed, rejected -> draft, delisted)."""
