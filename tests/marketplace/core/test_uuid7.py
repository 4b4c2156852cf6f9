"""``uuid7``: RFC 9562 version 7 identifiers, ordered by their millisecond and unique."""

from __future__ import annotations

import time
import uuid

from marketplace.core.types import uuid7


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
