"""Helpers for ledger tests: run service calls on the test database, make events."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from sqlmodel.ext.asyncio.session import AsyncSession

from marketplace.core.db import Database
from marketplace.core.events import Actor, DomainEvent

T = TypeVar("T")


def run(database_url: str, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """Run ``work`` in a fresh session on the test database."""

    async def main() -> T:
        database = Database(database_url, pool_size=2)
        try:
            async with database.session() as session:
                return await work(session)
        finally:
            await database.dispose()

    return asyncio.run(main())


def event(n: int, **payload: Any) -> DomainEvent:
    """A test event."""
    return DomainEvent(
        type="test.happened",
        actor=Actor("system", "tests"),
        orgs=(uuid.UUID(int=n),),
        subjects={"thing": f"t{n}"},
        payload={"n": n, **payload},
    )
