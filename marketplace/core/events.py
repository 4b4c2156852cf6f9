"""Domain events and the publish/subscribe hook that lets core record them without importing upward.

Services build a :class:`DomainEvent` for every state change and ``await publish(session, event)``
inside the transaction of the change; the ledger (supervision) subscribes at app start-up and writes
the event in that same transaction, so a rolled-back change leaves no event.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession

from marketplace.core.principal import Principal
from marketplace.core.types import utcnow


@dataclass(frozen=True)
class Actor:
    """Who caused an event: a person, a program (API client) or the platform itself."""

    kind: str  # "user" | "client" | "system"
    id: str

    @classmethod
    def of(cls, principal: Principal | None) -> Actor:
        """The actor behind a caller (the system when there is none)."""
        if principal is None:
            return cls("system", "platform")
        if principal.client_id is not None:
            return cls("client", principal.client_id)
        return cls("user", str(principal.user_id))


@dataclass(frozen=True)
class DomainEvent:
    """A state change, described by metadata only (ids, amounts, counts, hashes, reasons): never data contents."""

    type: str  # past tense, e.g. "licence.granted"
    actor: Actor
    orgs: tuple[uuid.UUID, ...] = ()
    subjects: Mapping[str, str] = field(default_factory=dict)
    payload: Mapping[str, Any] = field(default_factory=dict)
    occurred_at: datetime = field(default_factory=utcnow)


Subscriber = Callable[[AsyncSession, DomainEvent], Awaitable[Any]]
_subscribers: list[Subscriber] = []


def subscribe(subscriber: Subscriber) -> None:
    """Register a subscriber once (idempotent: apps are built many times in one process)."""
    if subscriber not in _subscribers:
        _subscribers.append(subscriber)


async def publish(session: AsyncSession, event: DomainEvent) -> None:
    """Hand ``event`` to every subscriber, inside the caller's transaction (before it commits)."""
    for subscriber in _subscribers:
        await subscriber(session, event)
