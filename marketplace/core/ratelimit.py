"""Token-bucket rate limits for data delivery calls: Redis when configured, in-process otherwise.

A bucket holds at most ``burst`` tokens and refills at ``rate_per_s`` tokens a second; a call
costing ``cost`` tokens is allowed when the bucket holds that many, and otherwise told how long
to wait. An absent bucket is a full one, so state is kept only while a bucket is below full.

With Redis, a process may take a few tokens more than a call costs (a lease: at most a tenth of
the burst and a twentieth of a second's refill, 100 at most) and spend them on its next calls
without asking Redis, for half a second at most; what it has not spent by then lapses. A bucket
therefore never gives more than its limit, and a small bucket (burst under 20) is never leased.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from marketplace.core.errors import InvalidInput


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer to one ``take``: whether it is allowed, whole tokens left, and seconds to wait if refused."""

    allowed: bool
    remaining: int
    retry_after_s: float


class RateLimiter(Protocol):
    """Token buckets keyed by caller-chosen strings."""

    async def take(self, key: str, *, rate_per_s: float, burst: int, cost: int = 1) -> Decision:
        """Take ``cost`` tokens from the bucket ``key`` (``burst`` at most, refilled at ``rate_per_s``)."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


def validate(key: str, rate_per_s: float, burst: int, cost: int) -> None:
    """Refuse a bucket that cannot work: raises ``InvalidInput``."""
    if not key:
        raise InvalidInput("a rate limit key must not be empty")
    if not (isinstance(rate_per_s, int | float) and math.isfinite(rate_per_s) and rate_per_s > 0):
        raise InvalidInput(f"rate_per_s must be a finite number above 0, not {rate_per_s!r}")
    if isinstance(burst, bool) or not isinstance(burst, int) or burst < 1:
        raise InvalidInput(f"burst must be an integer of at least 1, not {burst!r}")
    if isinstance(cost, bool) or not isinstance(cost, int) or cost < 1:
        raise InvalidInput(f"cost must be an integer of at least 1, not {cost!r}")
    if cost > burst:
        raise InvalidInput(f"cost ({cost}) must not exceed burst ({burst}): such a call could never be allowed")


def _refill_and_take(tokens: float, elapsed: float, rate_per_s: float, burst: int, cost: int) -> tuple[float, Decision]:
    """The bucket's new level and the decision, after ``elapsed`` seconds of refill."""
    tokens = min(float(burst), tokens + max(0.0, elapsed) * rate_per_s)
    if tokens >= cost:
        tokens -= cost
        return tokens, Decision(allowed=True, remaining=math.floor(tokens), retry_after_s=0.0)
    return tokens, Decision(allowed=False, remaining=math.floor(tokens), retry_after_s=(cost - tokens) / rate_per_s)


class MemoryRateLimiter:
    """In-process buckets for the embedded default (one process).

    ``take`` has no await point inside its critical section, and a thread lock guards it too, so
    concurrent tasks (and threads) see each bucket change atomically. ``clock`` (monotonic seconds)
    can be replaced in tests.
    """

    _SWEEP_EVERY = 1024

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        # key -> (tokens, last refill time, time at which the bucket is full again)
        self._buckets: dict[str, tuple[float, float, float]] = {}
        self._lock = threading.Lock()
        self._calls = 0

    async def take(self, key: str, *, rate_per_s: float, burst: int, cost: int = 1) -> Decision:
        """Take ``cost`` tokens from the bucket ``key`` (``burst`` at most, refilled at ``rate_per_s``)."""
        validate(key, rate_per_s, burst, cost)
        with self._lock:
            now = self._clock()
            entry = self._buckets.get(key)
            tokens, last = (float(burst), now) if entry is None else (entry[0], entry[1])
            tokens, decision = _refill_and_take(tokens, now - last, rate_per_s, burst, cost)
            self._buckets[key] = (tokens, now, now + (burst - tokens) / rate_per_s)
            self._calls += 1
            if self._calls % self._SWEEP_EVERY == 0:
                self._sweep(now)
            return decision

    def _sweep(self, now: float) -> None:
        """Forget buckets that are full again (the same as absent)."""
        for key in [key for key, (_, _, full_at) in self._buckets.items() if full_at <= now]:
            del self._buckets[key]

    async def close(self) -> None:
        """Forget every bucket."""
        with self._lock:
            self._buckets.clear()


# Atomic refill-and-take. The clock is Redis's own ``TIME`` (read inside the script), so every web
# process and worker shares one clock whatever their hosts' clocks say. Scripts calling TIME are
# replicated by effects (the default since Redis 5). Numbers go out as strings: Redis would
# truncate Lua floats to integers. The hash expires when the bucket would be full again.
_TAKE_SCRIPT = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local lease = tonumber(ARGV[4])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil or ts == nil then
  tokens = burst
  ts = now
end
local elapsed = now - ts
if elapsed < 0 then elapsed = 0 end
tokens = math.min(burst, tokens + elapsed * rate)
local allowed = 0
local retry = 0
local taken = 0
if tokens >= cost then
  taken = math.max(cost, math.min(lease, math.floor(tokens)))
  tokens = tokens - taken
  allowed = 1
else
  retry = (cost - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens), 'ts', string.format('%.6f', now))
redis.call('PEXPIRE', KEYS[1], math.max(1, math.ceil((burst - tokens) / rate * 1000)))
return {allowed, string.format('%.17g', tokens), string.format('%.17g', retry), taken}
"""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def lease_size(rate_per_s: float, burst: int, cost: int) -> int:
    """Tokens one Redis call may take for a call of ``cost`` (see the module docstring)."""
    return max(cost, min(burst // 10, int(rate_per_s * RedisRateLimiter.LEASE_OF_A_SECOND), RedisRateLimiter.MAX_LEASE))


class RedisRateLimiter:
    """Buckets in Redis, shared by every web process and worker; each take from Redis is one atomic Lua script,
    and busy buckets are leased a few tokens at a time (see the module docstring)."""

    #: A lease is at most this share of a second's refill ...
    LEASE_OF_A_SECOND = 0.05
    #: ... and of these many tokens.
    MAX_LEASE = 100
    #: Leased tokens not spent within this many seconds lapse.
    LEASE_SECONDS = 0.5

    def __init__(self, url: str, *, prefix: str = "market:ratelimit:", clock: Callable[[], float] = time.monotonic) -> None:
        from redis.asyncio import Redis

        self._redis = Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self._prefix = prefix
        self._script = self._redis.register_script(_TAKE_SCRIPT)
        self._clock = clock
        # key -> (tokens leased and not spent, time they lapse, tokens Redis held after the lease)
        self._leases: dict[str, tuple[int, float, int]] = {}
        self.redis_calls = 0

    async def take(self, key: str, *, rate_per_s: float, burst: int, cost: int = 1) -> Decision:
        """Take ``cost`` tokens from the bucket ``key`` (``burst`` at most, refilled at ``rate_per_s``)."""
        validate(key, rate_per_s, burst, cost)
        now = self._clock()
        lease = self._leases.get(key)
        if lease is not None:
            if lease[1] > now and lease[0] >= cost:
                self._leases[key] = (lease[0] - cost, lease[1], lease[2])
                return Decision(allowed=True, remaining=lease[0] - cost + lease[2], retry_after_s=0.0)
            if lease[1] <= now:
                del self._leases[key]
        size = lease_size(rate_per_s, burst, cost)
        self.redis_calls += 1
        allowed, tokens, retry, taken = await self._script(
            keys=[self._prefix + key], args=[repr(float(rate_per_s)), burst, cost, size]
        )
        left_in_redis = math.floor(float(_text(tokens)))
        extra = int(taken) - cost if int(allowed) == 1 else 0
        if extra > 0:
            if len(self._leases) >= 10_000:
                self._leases = {k: v for k, v in self._leases.items() if v[1] > now}
            held = self._leases.get(key)
            kept = held[0] if held is not None and held[1] > now else 0
            self._leases[key] = (kept + extra, now + self.LEASE_SECONDS, left_in_redis)
        return Decision(
            allowed=int(allowed) == 1,
            remaining=left_in_redis + extra,
            retry_after_s=float(_text(retry)),
        )

    async def close(self) -> None:
        """Release connections."""
        self._leases.clear()
        await self._redis.aclose()


def create_rate_limiter(redis_url: str | None) -> RateLimiter:
    """Redis buckets when a URL is configured, in-process buckets otherwise."""
    return RedisRateLimiter(redis_url) if redis_url else MemoryRateLimiter()
