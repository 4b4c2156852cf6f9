"""``insert_many`` / ``insert_rows`` (the driver-level executemany of metering and the ledger) store exactly what
SQLAlchemy's own insert stores, on both databases and through both drivers, and keep the NUL guard; ``add_to_rows``
bumps counters."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from enum import StrEnum
from typing import Any

import pytest
from sqlalchemy import BigInteger, Column, Engine, LargeBinary, MetaData, String, Table, Text, insert, select
from sqlalchemy import Uuid as SAUuid
from sqlalchemy.orm import Session
from sqlmodel.ext.asyncio.session import AsyncSession

from marketplace.core.db import add_to_rows, insert_many, insert_rows
from marketplace.core.errors import InvalidInput
from marketplace.core.types import UTCDateTime, enum_column
from tests.supervision.ledger_helpers import run


class Colour(StrEnum):
    red = "red"
    blue = "blue"


def _table() -> Table:
    return Table(
        f"insert_many_{uuid.uuid4().hex[:8]}",
        MetaData(),
        Column("id", SAUuid, primary_key=True),
        Column("at", UTCDateTime),
        Column("colour", enum_column(Colour).type),
        Column("label", String(40), nullable=True),
        Column("body", Text, nullable=True),
        Column("count", BigInteger),
        Column("digest", LargeBinary(32)),
    )


def _row(n: int, **changes: Any) -> dict[str, Any]:
    row = {
        "id": uuid.UUID(int=n),
        "at": datetime(2026, 12, 3, 14, 30, 5, 120 * n, tzinfo=timezone(timedelta(hours=8))),
        "colour": Colour.blue if n % 2 else Colour.red,
        "label": None if n == 3 else f"标签 {n}",
        "body": f'{{"n": {n}}}',
        "count": 2**40 + n,
        "digest": bytes([n]) * 32,
    }
    return {**row, **changes}


def _stored(engine: Engine, table: Table) -> list[tuple[Any, ...]]:
    # Each column as the database holds it (cast to text), so a difference in storage format shows.
    with engine.connect() as connection:
        columns = [c.cast(Text) if c.name != "digest" else c for c in table.c]
        return [tuple(r) for r in connection.execute(select(*columns).order_by(table.c.count))]


@pytest.mark.parametrize("rows", [1, 4])
def test_rows_are_stored_as_sqlalchemy_stores_them(engine: Engine, database_url: str, rows: int) -> None:
    ours, theirs = _table(), _table()
    for table in (ours, theirs):
        table.create(engine)
    try:
        batch = [_row(n) for n in range(1, rows + 1)]

        async def write(session: AsyncSession) -> None:
            await insert_many(session, ours, batch)
            await session.exec(insert(theirs), params=batch)  # type: ignore[call-overload]
            await session.commit()

        run(database_url, write)
        stored = _stored(engine, ours)
        assert len(stored) == rows
        assert stored == _stored(engine, theirs)
        with engine.connect() as connection:
            read = connection.execute(select(ours).order_by(ours.c.count)).mappings().all()
        assert [dict(r) for r in read] == [{**row, "at": row["at"].astimezone(UTC)} for row in batch]
    finally:
        for table in (ours, theirs):
            table.drop(engine)


def test_nul_text_is_refused_and_nothing_is_written(engine: Engine, database_url: str) -> None:
    table = _table()
    table.create(engine)
    try:

        async def write(session: AsyncSession) -> None:
            await insert_many(session, table, [_row(1), _row(2, body="a\x00b")])
            await session.commit()

        with pytest.raises(InvalidInput):
            run(database_url, write)
        assert _stored(engine, table) == []
    finally:
        table.drop(engine)


def test_naive_times_and_unknown_columns_are_refused(engine: Engine, database_url: str) -> None:
    table = _table()
    table.create(engine)
    try:

        async def naive(session: AsyncSession) -> None:
            await insert_many(session, table, [_row(1, at=datetime(2026, 12, 3, 14, 0))])

        async def unknown(session: AsyncSession) -> None:
            await insert_many(session, table, [{**_row(1), "colour; DROP TABLE x": "red"}])

        with pytest.raises(ValueError, match="naive"):
            run(database_url, naive)
        with pytest.raises(KeyError):
            run(database_url, unknown)
        assert _stored(engine, table) == []
    finally:
        table.drop(engine)


def test_a_sync_session_of_the_sync_driver_stores_the_same(engine: Engine) -> None:
    """Metering's writer thread inserts through the sync driver (sqlite3, psycopg: another paramstyle than asyncpg)."""
    ours, theirs = _table(), _table()
    for table in (ours, theirs):
        table.create(engine)
    try:
        batch = [_row(n) for n in range(1, 4)]
        with Session(engine) as session:
            insert_rows(session, ours, batch)
            session.execute(insert(theirs), batch)
            session.commit()
        assert len(_stored(engine, ours)) == 3
        assert _stored(engine, ours) == _stored(engine, theirs)
    finally:
        for table in (ours, theirs):
            table.drop(engine)


def _counters() -> Table:
    return Table(
        f"add_to_rows_{uuid.uuid4().hex[:8]}",
        MetaData(),
        Column("owner", SAUuid, primary_key=True),
        Column("month", String(7), primary_key=True),
        Column("calls", BigInteger, nullable=False),
        Column("rows", BigInteger, nullable=False),
    )


def test_add_to_rows_inserts_missing_counters_and_adds_to_existing_ones(engine: Engine, database_url: str) -> None:
    table = _counters()
    table.create(engine)
    keys = ("owner", "month")
    first, second = uuid.UUID(int=1), uuid.UUID(int=2)
    try:
        with Session(engine) as session:
            add_to_rows(session, table, keys, [{"owner": first, "month": "2026-11", "calls": 2, "rows": 10}])
            session.commit()

        async def write(session: AsyncSession) -> None:
            await session.run_sync(
                add_to_rows,
                table,
                keys,
                [
                    {"owner": first, "month": "2026-11", "calls": 3, "rows": 5},
                    {"owner": first, "month": "2026-12", "calls": 1, "rows": 1},
                    {"owner": second, "month": "2026-11", "calls": 7, "rows": 0},
                ],
            )
            await session.commit()

        run(database_url, write)
        with engine.connect() as connection:
            stored = {(r.owner, r.month): (r.calls, r.rows) for r in connection.execute(select(table))}
        assert stored == {(first, "2026-11"): (5, 15), (first, "2026-12"): (1, 1), (second, "2026-11"): (7, 0)}
    finally:
        table.drop(engine)


def test_the_sync_driver_keeps_the_nul_guard_and_writes_nothing(engine: Engine) -> None:
    """On PostgreSQL the sync driver's rows go by COPY, which runs no statement events: the guard must still hold."""
    table = _table()
    table.create(engine)
    try:
        with Session(engine) as session:
            with pytest.raises(InvalidInput):
                insert_rows(session, table, [_row(1), _row(2, label="a\x00b")])
            session.rollback()
        assert _stored(engine, table) == []
    finally:
        table.drop(engine)
