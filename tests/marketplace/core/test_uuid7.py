"""``uuid7``: RFC 9562 version 7 identifiers, ordered by their millisecond and unique."""

from __future__ import annotations

import time
import uuid

from marketplace.core.types import uuid7, uuid7_many


def test_version_variant_and_the_millisecond_they_carry() -> None:
    before = time.time_ns() // 1_000_000
    made = uuid7()
    after = time.time_ns() // 1_000_000
    assert made.version == 7
    assert made.variant == uuid.RFC_4122
    assert before <= made.int >> 80 <= after


def test_later_milliseconds_sort_later_and_none_repeat() -> None:
    first = [uuid7() for _ in range(2000)]
    time.sleep(0.002)
    second = [uuid7() for _ in range(2000)]
    assert max(str(u) for u in first) < min(str(u) for u in second)  # text order too (SQLite keeps them as hex)
    assert max(u.hex for u in first) < min(u.hex for u in second)
    assert len({*first, *second}) == 4000


def test_a_batch_carries_its_millisecond_and_no_two_are_alike() -> None:
    before = time.time_ns() // 1_000_000
    batch = uuid7_many(5000)
    after = time.time_ns() // 1_000_000
    assert len(batch) == 5000
    assert len(set(batch)) == 5000
    assert {u.version for u in batch} == {7}
    assert {u.variant for u in batch} == {uuid.RFC_4122}
    assert all(before <= u.int >> 80 <= after for u in batch)
    time.sleep(0.002)
    assert max(u.hex for u in batch) < uuid7().hex
    assert uuid7_many(0) == []
