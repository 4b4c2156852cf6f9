"""A small counter cache for throttles and rate limits: Redis when configured, in-process otherwise."""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Cache(Protocol):
    """Expiring integer counters."""

    async def incr(self, key: str, ttl_seconds: int) -> int:
        """Add one to ``key`` (creating it with ``ttl_seconds`` to live) and return the new value."""
        ...

    async def get_int(self, key: str) -> int:
        """The counter's value, 0 when absent or expired."""
        ...

    async def ttl(self, key: str) -> int:
        """Seconds until ``key`` expires, 0 when absent."""
        ...

    async def delete(self, key: str) -> None:
        """Forget ``key``."""
        ...

    async def put_text(self, key: str, value: str, ttl_seconds: int) -> None:
        """Keep ``value`` under ``key`` for at most ``ttl_seconds``."""
        ...

    async def pop_text(self, key: str) -> str | None:
        """Take the value under ``key`` (it is gone afterwards), or None."""
        ...

    async def ping(self) -> bool:
        """Whether the cache answers."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


class MemoryCache:
    """In-process counters for the embedded default (one process)."""

    def __init__(self) -> None:
        self._values: dict[str, tuple[int, float]] = {}
        self._texts: dict[str, tuple[str, float]] = {}
        self._lock = asyncio.Lock()

    def _live(self, key: str) -> tuple[int, float] | None:
        entry = self._values.get(key)
        if entry is None:
            return None
        if entry[1] <= time.monotonic():
            del self._values[key]
            return None
        return entry

    async def incr(self, key: str, ttl_seconds: int) -> int:
        async with self._lock:
            entry = self._live(key)
            value, expires = entry if entry else (0, time.monotonic() + ttl_seconds)
            self._values[key] = (value + 1, expires)
            return value + 1

    async def get_int(self, key: str) -> int:
        entry = self._live(key)
        return entry[0] if entry else 0

    async def ttl(self, key: str) -> int:
        entry = self._live(key)
        return max(1, int(entry[1] - time.monotonic())) if entry else 0

    async def delete(self, key: str) -> None:
        self._values.pop(key, None)

    async def put_text(self, key: str, value: str, ttl_seconds: int) -> None:
        self._texts[key] = (value, time.monotonic() + ttl_seconds)

    async def pop_text(self, key: str) -> str | None:
        entry = self._texts.pop(key, None)
        return entry[0] if entry and entry[1] > time.monotonic() else None

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        self._values.clear()
        self._texts.clear()


class RedisCache:
    """Counters in Redis, shared by every web process and worker."""

    def __init__(self, url: str, *, prefix: str = "market:") -> None:
        from redis.asyncio import Redis

        self._redis = Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self._prefix = prefix

    async def incr(self, key: str, ttl_seconds: int) -> int:
        full = self._prefix + key
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.incr(full)
            pipe.expire(full, ttl_seconds, nx=True)
            value, _ = await pipe.execute()
        return int(value)

    async def get_int(self, key: str) -> int:
        value = await self._redis.get(self._prefix + key)
        return int(value) if value is not None else 0

    async def ttl(self, key: str) -> int:
        return max(0, int(await self._redis.ttl(self._prefix + key)))

    async def delete(self, key: str) -> None:
        await self._redis.delete(self._prefix + key)

    async def put_text(self, key: str, value: str, ttl_seconds: int) -> None:
        await self._redis.set(self._prefix + key, value.encode(), ex=ttl_seconds)

    async def pop_text(self, key: str) -> str | None:
        value = await self._redis.getdel(self._prefix + key)
        if value is None:
            return None
        return value.decode() if isinstance(value, bytes) else str(value)

    async def ping(self) -> bool:
        try:
            return bool(await self._redis.ping())
        except Exception:
            return False

    async def close(self) -> None:
        await self._redis.aclose()


def create_cache(redis_url: str | None) -> Cache:
    """Redis counters when a URL is configured, in-process counters otherwise."""
    return RedisCache(redis_url) if redis_url else MemoryCache()
