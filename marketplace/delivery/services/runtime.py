"""What delivery keeps per running app: the meter (group commit), the rate limiter, the projection cache and the
pseudonymisation key. Created by ``delivery_lifespan`` (``marketplace.delivery.api``) at start-up and closed at
shutdown (the meter flushes what it holds); created on first use when the lifespan is not wired.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from dataclasses import dataclass
from typing import Any

from licensing.privacy import pseudonym_key
from marketplace.core.db import Database
from marketplace.core.ratelimit import RateLimiter, create_rate_limiter
from marketplace.core.settings import Settings
from marketplace.delivery.services.metering import Meter
from marketplace.delivery.services.projections import ProjectionCache, key_digest, projection_cache

STATE_KEY = "delivery_runtime"


def derived_key(settings: Settings, purpose: str) -> bytes:
    """A key for one purpose (export links, cursors, fingerprints), derived from ``settings.secret_key``."""
    secret = settings.secret_key.get_secret_value().encode()
    return hmac.new(secret, f"market.delivery.{purpose}".encode(), hashlib.sha256).digest()


def fingerprint_key(settings: Settings) -> bytes:
    """The key of the per-subscription fingerprints of file exports (``fingerprint.trace_export`` needs it)."""
    return derived_key(settings, "export-fingerprint")


@dataclass
class DeliveryRuntime:
    """Delivery's per-app state (one per event loop)."""

    settings: Settings
    database: Database
    meter: Meter
    limiter: RateLimiter
    projections: ProjectionCache
    pseudonym_key: bytes
    pseudonym_key_digest: str
    cursor_key: bytes
    link_key: bytes
    loop: asyncio.AbstractEventLoop

    @classmethod
    def start(cls, settings: Settings, database: Database) -> DeliveryRuntime:
        """Create the runtime for the running event loop."""
        key = pseudonym_key(settings)
        return cls(
            settings=settings,
            database=database,
            meter=Meter(database),
            limiter=create_rate_limiter(settings.redis_url),
            projections=projection_cache(settings.var_dir / "cache" / "projections", key, memory_mb=settings.sandbox_memory_mb),
            pseudonym_key=key,
            pseudonym_key_digest=key_digest(key),
            cursor_key=derived_key(settings, "rows-cursor"),
            link_key=derived_key(settings, "export-link"),
            loop=asyncio.get_running_loop(),
        )

    async def close(self) -> None:
        """Flush the meter and release the rate limiter's connections."""
        try:
            await self.meter.close()
        finally:
            await self.limiter.close()


def runtime_of(state: Any) -> DeliveryRuntime:
    """The app's delivery runtime (``state`` is ``app.state``), created for this event loop when missing."""
    runtime: DeliveryRuntime | None = state.get(STATE_KEY) if hasattr(state, "get") else getattr(state, STATE_KEY, None)
    loop = asyncio.get_running_loop()
    if runtime is None or runtime.loop is not loop or runtime.database is not state.db:
        runtime = DeliveryRuntime.start(state.settings, state.db)
        state[STATE_KEY] = runtime
    return runtime
