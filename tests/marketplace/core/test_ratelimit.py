"""Token-bucket rate limits: the in-process limiter on a fake clock, the Redis one on the private Redis."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Iterator

import pytest

from marketplace.core.errors import InvalidInput
from marketplace.core.ratelimit import (
    Decision,
    MemoryRateLimiter,
    RateLimiter,
    RedisRateLimiter,
    create_rate_limiter,
    lease_size,
)
from tests import settings as test_settings


class FakeClock:
    """Monotonic seconds that move only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _takes(limiter: RateLimiter, key: str, count: int, *, rate_per_s: float, burst: int, cost: int = 1) -> list[Decision]:
    async def main() -> list[Decision]:
        return [await limiter.take(key, rate_per_s=rate_per_s, burst=burst, cost=cost) for _ in range(count)]

    return asyncio.run(main())


# --- in-process ---------------------------------------------------------------------------------


def test_memory_allows_the_burst_then_refuses_with_the_wait_until_a_token() -> None:
    limiter = MemoryRateLimiter(clock=FakeClock())
    decisions = _takes(limiter, "feed", 4, rate_per_s=2.0, burst=3)
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.remaining for d in decisions] == [2, 1, 0, 0]
    assert decisions[0].retry_after_s == 0.0
    assert decisions[3].retry_after_s == pytest.approx(0.5)


def test_memory_refills_over_time_up_to_the_burst() -> None:
    clock = FakeClock()
    limiter = MemoryRateLimiter(clock=clock)
    assert [d.allowed for d in _takes(limiter, "feed", 3, rate_per_s=2.0, burst=3)] == [True, True, True]
    clock.now += 0.25  # half a token: still refused, a quarter second to go
    (early,) = _takes(limiter, "feed", 1, rate_per_s=2.0, burst=3)
    assert (early.allowed, early.remaining) == (False, 0)
    assert early.retry_after_s == pytest.approx(0.25)
    clock.now += 0.25
    (refilled,) = _takes(limiter, "feed", 1, rate_per_s=2.0, burst=3)
    assert refilled.allowed
    assert refilled.remaining == 0
    clock.now += 3600  # a long pause refills to the burst, not beyond
    decisions = _takes(limiter, "feed", 4, rate_per_s=2.0, burst=3)
    assert [d.allowed for d in decisions] == [True, True, True, False]


def test_memory_keys_are_independent() -> None:
    limiter = MemoryRateLimiter(clock=FakeClock())
    assert [d.allowed for d in _takes(limiter, "buyer-a", 3, rate_per_s=1.0, burst=2)] == [True, True, False]
    assert [d.allowed for d in _takes(limiter, "buyer-b", 2, rate_per_s=1.0, burst=2)] == [True, True]


def test_memory_cost_above_one_takes_several_tokens() -> None:
    clock = FakeClock()
    limiter = MemoryRateLimiter(clock=clock)
    decisions = _takes(limiter, "bulk", 3, rate_per_s=1.0, burst=10, cost=4)
    assert [(d.allowed, d.remaining) for d in decisions] == [(True, 6), (True, 2), (False, 2)]
    assert decisions[2].retry_after_s == pytest.approx(2.0)
    clock.now += 2.0
    (after,) = _takes(limiter, "bulk", 1, rate_per_s=1.0, burst=10, cost=4)
    assert (after.allowed, after.remaining) == (True, 0)


def test_memory_concurrent_takes_never_exceed_the_burst() -> None:
    limiter = MemoryRateLimiter(clock=FakeClock())

    async def main() -> list[Decision]:
        return await asyncio.gather(*(limiter.take("shared", rate_per_s=1.0, burst=10) for _ in range(50)))

    assert sum(d.allowed for d in asyncio.run(main())) == 10


def test_memory_forgets_buckets_once_full_again() -> None:
    clock = FakeClock()
    limiter = MemoryRateLimiter(clock=clock)
    _takes(limiter, "old", 1, rate_per_s=1.0, burst=1)
    clock.now += 5
    for index in range(MemoryRateLimiter._SWEEP_EVERY):
        _takes(limiter, f"k{index}", 1, rate_per_s=1000.0, burst=1)
    assert "old" not in limiter._buckets
    # forgetting a full bucket changes nothing: it answers as a full one
    (again,) = _takes(limiter, "old", 1, rate_per_s=1.0, burst=1)
    assert again.allowed


@pytest.mark.parametrize(
    ("key", "rate", "burst", "cost"),
    [
        ("k", 0.0, 1, 1),
        ("k", -1.0, 1, 1),
        ("k", float("nan"), 1, 1),
        ("k", float("inf"), 1, 1),
        ("k", 1.0, 0, 1),
        ("k", 1.0, 1, 0),
        ("k", 1.0, 2, 3),
        ("", 1.0, 1, 1),
    ],
)
def test_bad_inputs_are_refused(key: str, rate: float, burst: int, cost: int) -> None:
    limiter = MemoryRateLimiter(clock=FakeClock())
    with pytest.raises(InvalidInput):
        asyncio.run(limiter.take(key, rate_per_s=rate, burst=burst, cost=cost))


def test_create_rate_limiter_is_in_process_without_redis() -> None:
    assert isinstance(create_rate_limiter(None), MemoryRateLimiter)
    assert isinstance(create_rate_limiter(""), MemoryRateLimiter)


# --- Redis ----------------------------------------------------------------------------------------


@pytest.fixture
def redis_url() -> str:
    """The private Redis started by deploy/with_services.py (required in CI and under the postgres profile)."""
    url = test_settings.redis_url()
    if url is None:
        if os.environ.get("CI") or test_settings.database_profile() == "postgres":
            pytest.fail("MARKET_TEST_REDIS_URL is not set: run the suite through `make test` (deploy/with_services.py)")
        pytest.skip("needs the private Redis of `make test` (MARKET_TEST_REDIS_URL)")
    return url


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test alone (both profiles may share one Redis server); its keys are removed afterwards."""
    import redis

    name = f"test:ratelimit:{uuid.uuid4().hex}:"
    yield name
    client = redis.Redis.from_url(redis_url)
    try:
        for key in client.scan_iter(match=name + "*"):
            client.delete(key)
    finally:
        client.close()


def _redis_takes(url: str, prefix: str, key: str, count: int, *, rate_per_s: float, burst: int, cost: int = 1) -> list[Decision]:
    async def main() -> list[Decision]:
        limiter = RedisRateLimiter(url, prefix=prefix)
        try:
            return [await limiter.take(key, rate_per_s=rate_per_s, burst=burst, cost=cost) for _ in range(count)]
        finally:
            await limiter.close()

    return asyncio.run(main())


@pytest.mark.integration
def test_redis_allows_the_burst_then_refuses_then_refills(redis_url: str, prefix: str) -> None:
    decisions = _redis_takes(redis_url, prefix, "feed", 4, rate_per_s=0.001, burst=3)
    assert [(d.allowed, d.remaining) for d in decisions] == [(True, 2), (True, 1), (True, 0), (False, 0)]
    assert decisions[3].retry_after_s == pytest.approx(1000.0, rel=0.01)

    (first, refused) = _redis_takes(redis_url, prefix, "fast", 2, rate_per_s=20.0, burst=1)
    assert first.allowed
    assert not refused.allowed
    assert 0 < refused.retry_after_s <= 0.05
    time.sleep(0.1)
    (refilled,) = _redis_takes(redis_url, prefix, "fast", 1, rate_per_s=20.0, burst=1)
    assert refilled.allowed


@pytest.mark.integration
def test_redis_cost_above_one_and_expiry_of_the_bucket(redis_url: str, prefix: str) -> None:
    import redis

    decisions = _redis_takes(redis_url, prefix, "bulk", 3, rate_per_s=0.01, burst=10, cost=4)
    assert [(d.allowed, d.remaining) for d in decisions] == [(True, 6), (True, 2), (False, 2)]
    assert decisions[2].retry_after_s == pytest.approx(200.0, rel=0.01)
    client = redis.Redis.from_url(redis_url)
    try:
        # 8 tokens missing at 0.01/s: full again (and forgotten) in about 800 s
        assert 790_000 < client.pttl(prefix + "bulk") <= 800_000
    finally:
        client.close()


@pytest.mark.integration
def test_redis_is_atomic_under_concurrency_and_keys_are_isolated(redis_url: str, prefix: str) -> None:
    async def main() -> tuple[list[Decision], list[Decision]]:
        # two limiters (two connection pools, as two processes would have), 25 concurrent takes each
        limiters = [RedisRateLimiter(redis_url, prefix=prefix) for _ in range(2)]
        try:
            shared = await asyncio.gather(*(limiters[i % 2].take("shared", rate_per_s=0.001, burst=10) for i in range(50)))
            other = await asyncio.gather(*(limiters[0].take("other", rate_per_s=0.001, burst=10) for _ in range(3)))
            return list(shared), list(other)
        finally:
            for limiter in limiters:
                await limiter.close()

    shared, other = asyncio.run(main())
    assert sum(d.allowed for d in shared) == 10
    assert sorted(d.remaining for d in shared if d.allowed) == list(range(10))
    assert all(d.retry_after_s > 0 for d in shared if not d.allowed)
    assert [d.allowed for d in other] == [True, True, True]


@pytest.mark.integration
def test_redis_refuses_bad_inputs_and_is_chosen_by_url(redis_url: str, prefix: str) -> None:
    async def main() -> None:
        limiter = create_rate_limiter(redis_url)
        try:
            assert isinstance(limiter, RedisRateLimiter)
            with pytest.raises(InvalidInput):
                await limiter.take(prefix + "k", rate_per_s=1.0, burst=2, cost=3)
            with pytest.raises(InvalidInput):
                await limiter.take(prefix + "k", rate_per_s=0.0, burst=2)
        finally:
            await limiter.close()

    asyncio.run(main())


def test_lease_sizes_leave_small_buckets_alone() -> None:
    assert lease_size(0.001, 10, 1) == 1
    assert lease_size(100.0, 19, 1) == 1
    assert lease_size(1000.0, 1000, 1) == 50  # a twentieth of a second's refill
    assert lease_size(1_000_000.0, 1_000_000, 1) == 100  # at most 100
    assert lease_size(1000.0, 100, 4) == 10  # a tenth of the burst
    assert lease_size(1000.0, 100, 30) == 30  # never less than the call costs


@pytest.mark.integration
def test_redis_leases_tokens_to_busy_callers_and_never_gives_more_than_the_bucket(redis_url: str, prefix: str) -> None:
    async def main() -> tuple[int, int, float]:
        limiters = [RedisRateLimiter(redis_url, prefix=prefix) for _ in range(2)]  # as two processes would have

        async def caller(limiter: RedisRateLimiter) -> int:
            return sum([(await limiter.take("busy", rate_per_s=100.0, burst=200)).allowed for _ in range(50)])

        try:
            started = time.monotonic()
            allowed = await asyncio.gather(*(caller(limiters[i % 2]) for i in range(20)))
            elapsed = time.monotonic() - started
            return sum(allowed), sum(x.redis_calls for x in limiters), elapsed
        finally:
            for limiter in limiters:
                await limiter.close()

    allowed, redis_calls, elapsed = asyncio.run(main())
    assert 200 <= allowed <= 200 + 100 * elapsed + 1
    assert redis_calls < 1000  # leases of 5 spared most round trips to Redis


@pytest.mark.integration
def test_redis_leases_lapse(redis_url: str, prefix: str) -> None:
    now = [1000.0]

    async def main() -> list[int]:
        limiter = RedisRateLimiter(redis_url, prefix=prefix, clock=lambda: now[0])
        calls = []
        try:
            for step in (0.0, 0.1, 0.1, 0.6):  # leased at the first take, spent locally, lapsed after half a second
                now[0] += step
                assert (await limiter.take("lapsing", rate_per_s=1000.0, burst=1000)).allowed
                calls.append(limiter.redis_calls)
        finally:
            await limiter.close()
        return calls

    assert asyncio.run(main()) == [1, 1, 1, 2]
