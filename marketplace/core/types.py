"""Column types and small helpers shared by every domain's tables."""

from __future__ import annotations

import os
import time
import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Column, DateTime
from sqlalchemy import Enum as SAEnum
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


def uuid7() -> uuid.UUID:
    """A time-ordered UUID (RFC 9562 version 7: 48 bits of Unix milliseconds, then 74 random bits).

    For the keys of append-only records written many times a second (metered deliveries): new keys land at the end
    of the primary-key index instead of on a random page of it, so a write touches fewer pages. Only ordered to the
    millisecond; never use one as a secret."""
    return uuid7_many(1)[0]


def uuid7_many(count: int) -> list[uuid.UUID]:
    """``count`` time-ordered UUIDs (see :func:`uuid7`), with one read of the system's random source for all."""
    time_bits = (time.time_ns() // 1_000_000 & ((1 << 48) - 1)) << 80 | 0x7 << 76 | 0b10 << 62
    random = os.urandom(10 * count)  # 80 bits each: 12 for rand_a, 62 for rand_b, 6 unused
    ids = []
    for start in range(0, 10 * count, 10):
        rand = int.from_bytes(random[start : start + 10], "big")
        ids.append(uuid.UUID(int=time_bits | ((rand >> 62) & 0xFFF) << 64 | rand & ((1 << 62) - 1)))
    return ids


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC and always returned timezone-aware (SQLite keeps no zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; use timezone-aware UTC times")
        return value.astimezone(UTC)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        moment: datetime = value
        if moment.tzinfo is None:
            return moment.replace(tzinfo=UTC)
        return moment.astimezone(UTC)


def enum_column(
    enum_cls: type[StrEnum], *, index: bool = False, nullable: bool = False, primary_key: bool = False
) -> Column[Any]:
    """A column storing a StrEnum by its value (VARCHAR, no database enum type) and reading it back as the enum."""
    return Column(
        SAEnum(enum_cls, native_enum=False, length=32, values_callable=lambda members: [m.value for m in members]),
        index=index,
        nullable=nullable,
        primary_key=primary_key,
    )
