"""What delivery keeps per running app: the meter (group commit), the rate limiter, the projection cache and the
pseudonymisation key. Created by ``delivery_lifespan`` (``marketplace.delivery.api``) at start-up and closed at
shutdown (the meter flushes what it holds); created on first use when the lifespan is not wired.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import make_url

from licensing.privacy import pseudonym_key
from marketplace.core.db import Database, is_sqlite
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


class StateReader:
    """A connection of delivery's own for the one read every call makes (the access state), outside any session:
    a long-lived aiosqlite connection in autocommit (each read sees everything committed), or a small asyncpg pool
    (prepared statements cached per connection). Saves the session's pool checkout (and its ping) and
    SQLAlchemy's round trips on the request path."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.dialect_name = "sqlite" if is_sqlite(url) else "postgresql"
        self._sqlite: Any = None
        self._pool: Any = None
        self._lock = asyncio.Lock()

    @functools.cached_property
    def dialect(self) -> Any:
        """The SQLAlchemy dialect statements are compiled for (qmark for SQLite, $n for asyncpg)."""
        if self.dialect_name == "sqlite":
            from sqlalchemy.dialects.sqlite import aiosqlite

            return aiosqlite.dialect()
        from sqlalchemy.dialects.postgresql import asyncpg

        return asyncpg.dialect()  # type: ignore[no-untyped-call]

    async def _connect(self) -> None:
        if self.dialect_name == "sqlite":
            import aiosqlite

            database = make_url(self.url).database or ""
            self._sqlite = await aiosqlite.connect(database, isolation_level=None)
            await self._sqlite.execute("PRAGMA busy_timeout=10000")
            await self._sqlite.execute("PRAGMA query_only=ON")
        else:
            import asyncpg  # type: ignore[import-untyped]

            dsn = make_url(self.url).set(drivername="postgresql").render_as_string(hide_password=False)
            self._pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4)

    async def fetch(self, sql: str, values: list[Any]) -> list[Any]:
        """Rows of one read (values positional, UUIDs as each database takes them)."""
        if self._sqlite is None and self._pool is None:
            async with self._lock:
                if self._sqlite is None and self._pool is None:
                    await self._connect()
        if self._sqlite is not None:
            return list(await self._sqlite.execute_fetchall(sql, [v.hex if isinstance(v, uuid.UUID) else v for v in values]))
        return list(await self._pool.fetch(sql, *values))

    async def close(self) -> None:
        """Close the connection or pool."""
        if self._sqlite is not None:
            await self._sqlite.close()
            self._sqlite = None
        if self._pool is not None:
            await self._pool.close()
            self._pool = None


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
    state_reader: StateReader

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
            state_reader=StateReader(database.url),
        )

    async def close(self) -> None:
        """Flush the meter and release the rate limiter's connections."""
        try:
            await self.meter.close()
        finally:
            await self.limiter.close()
            await self.state_reader.close()


def runtime_of(state: Any) -> DeliveryRuntime:
    """The app's delivery runtime (``state`` is ``app.state``), created for this event loop when missing."""
    runtime: DeliveryRuntime | None = state.get(STATE_KEY) if hasattr(state, "get") else getattr(state, STATE_KEY, None)
    loop = asyncio.get_running_loop()
    if runtime is None or runtime.loop is not loop or runtime.database is not state.db:
        runtime = DeliveryRuntime.start(state.settings, state.db)
        state[STATE_KEY] = runtime
    return runtime
