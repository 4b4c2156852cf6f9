"""``GroupReads``: concurrent reads of one key share a read, and a caller only gets a read that started after it came."""

from __future__ import annotations

import asyncio

import pytest

from marketplace.delivery.services.runtime import GroupReads


class Source:
    """A value changed by writers; each read takes a moment and reports the value it saw when it started."""

    def __init__(self) -> None:
        self.value = 0
        self.started: list[int] = []

    async def read(self) -> int:
        seen = self.value
        self.started.append(seen)
        await asyncio.sleep(0.01)
        return seen


def test_callers_during_a_read_share_the_next_one_and_see_what_was_written_before_they_came() -> None:
    async def main() -> tuple[list[int], list[int], int]:
        source, group = Source(), GroupReads()
        first = asyncio.ensure_future(group.read("k", source.read))
        await asyncio.sleep(0.001)  # the first read is running, with value 0
        source.value = 1  # committed before the next callers arrive
        later = [asyncio.ensure_future(group.read("k", source.read)) for _ in range(5)]
        answers = await asyncio.gather(first, *later)
        return answers, source.started, group.reads

    answers, started, reads = asyncio.run(main())
    assert answers == [0, 1, 1, 1, 1, 1]  # none of the five got the read that began before the write
    assert started == [0, 1]
    assert reads == 2


def test_keys_are_read_apart_and_failures_reach_every_waiting_caller() -> None:
    async def main() -> tuple[list[object], int]:
        group = GroupReads()
        calls = 0

        async def failing() -> int:
            nonlocal calls
            calls += 1
            await asyncio.sleep(0.005)
            raise OSError("connection lost")

        async def fine() -> int:
            await asyncio.sleep(0.001)
            return 7

        results = await asyncio.gather(
            group.read("a", failing), group.read("a", failing), group.read("b", fine), return_exceptions=True
        )
        again = await group.read("a", fine)  # a failed read leaves nothing behind
        return [*results, again], calls

    results, calls = asyncio.run(main())
    assert [type(r) for r in results[:2]] == [OSError, OSError]
    assert results[2:] == [7, 7]
    assert calls == 2  # the second caller waited for a read of its own, which failed too


def test_a_caller_that_goes_away_does_not_stop_the_shared_read() -> None:
    async def main() -> tuple[int, int]:
        source, group = Source(), GroupReads()
        first = asyncio.ensure_future(group.read("k", source.read))
        await asyncio.sleep(0.001)
        leaving = asyncio.ensure_future(group.read("k", source.read))
        staying = asyncio.ensure_future(group.read("k", source.read))
        await asyncio.sleep(0.001)
        leaving.cancel()
        with pytest.raises(asyncio.CancelledError):
            await leaving
        return await first, await staying

    assert asyncio.run(main()) == (0, 0)
