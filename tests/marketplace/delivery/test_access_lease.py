"""Access answers kept under a lease (PostgreSQL), and commits that wait for every delivery process.

The cross-process check (a suspension through one server process refusing the next call through another) is in
``tests/integration/test_delivery_processes.py``; here are the parts: which commits wait, when kept answers are
used, a listener killed, a process gone without a word, and answers that are never kept.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from sqlalchemy import Engine, text
from sqlalchemy import update as sa_update
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlmodel import col

from licensing.models import Licence, LicenceStatus
from marketplace.core.commit_watch import unwatch_commits, watch_commits
from marketplace.core.db import Database, async_url
from marketplace.core.identity.models import Organisation
from marketplace.core.settings import Settings
from marketplace.core.types import utcnow
from marketplace.delivery.services.access import read_state
from marketplace.delivery.services.access_lease import AccessLease, wait_for_delivery_processes
from marketplace.delivery.services.metering import month_of
from marketplace.delivery.services.runtime import StateReader
from marketplace.subscriptions.models import Entitlement
from tests import settings as test_settings
from tests.marketplace.delivery.support import terminate_backends, update
from tests.marketplace.factories import make_market

needs_postgres = pytest.mark.skipif(
    test_settings.database_profile() != "postgres",
    reason="the access lease is PostgreSQL's (on SQLite, PRAGMA data_version keeps answers exact: test_access.py)",
)


def test_a_commit_that_wrote_a_watched_table_awaits_its_watchers(settings: Settings, engine: Engine) -> None:
    market = make_market(engine, settings.resolved_data_dir)
    seen: list[frozenset[str]] = []

    async def watcher(_engine: AsyncEngine, tables: frozenset[str]) -> None:
        seen.append(tables)

    async def main() -> None:
        database = Database(async_url(str(settings.database_url)))
        try:
            async with database.session() as session:  # a changed record, flushed by the ORM
                licence = await session.get(Licence, market.licence.id)
                assert licence is not None
                licence.status = LicenceStatus.suspended
                session.add(licence)
                await session.commit()
            async with database.session() as session:  # a statement
                await session.exec(  # type: ignore[call-overload]
                    sa_update(Licence).where(col(Licence.id) == market.licence.id).values(status=LicenceStatus.granted)
                )
                await session.commit()
            async with database.session() as session:  # another table only
                org = await session.get(Organisation, market.owner.id)
                assert org is not None
                org.name = "Renamed authority"
                session.add(org)
                await session.commit()
            async with database.session() as session:  # rolled back, then a commit of nothing
                await session.exec(  # type: ignore[call-overload]
                    sa_update(Licence).where(col(Licence.id) == market.licence.id).values(status=LicenceStatus.revoked)
                )
                await session.rollback()
                await session.commit()
        finally:
            await database.dispose()

    watch_commits("test-licence", frozenset({"licence"}), watcher)
    try:
        asyncio.run(main())
    finally:
        unwatch_commits("test-licence")
    assert [("licence" in tables) for tables in seen] == [True, True]
    with engine.connect() as connection:
        status = connection.execute(text("SELECT status FROM licence")).scalar_one()
    assert status == LicenceStatus.granted.value


def _run(engine_url: str, body: Callable[[StateReader, AsyncEngine], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        reader = StateReader(async_url(engine_url))
        changes = create_async_engine(async_url(engine_url))
        try:
            return await body(reader, changes)
        finally:
            await reader.close()
            await changes.dispose()

    return asyncio.run(main())


async def _until(condition: Callable[[], bool], within_s: float = 5.0) -> None:
    deadline = time.monotonic() + within_s
    while not condition():
        assert time.monotonic() < deadline, "not within the time allowed"
        await asyncio.sleep(0.01)


@needs_postgres
def test_kept_answers_are_used_under_the_lease_and_changes_are_seen_at_once(settings: Settings, engine: Engine) -> None:
    market = make_market(engine, settings.resolved_data_dir)
    month = month_of(utcnow())

    async def body(reader: StateReader, changes: AsyncEngine) -> None:
        first = await read_state(reader, market.buyer_a.id, market.product.id, month)
        assert first.licence_status == LicenceStatus.granted.value
        lease = reader.lease
        assert lease is not None
        await _until(lease.serving)
        for _ in range(20):
            row = await read_state(reader, market.buyer_a.id, market.product.id, month)
        assert row.licence_status == LicenceStatus.granted.value
        assert reader.kept_answers_used >= 15  # a renewal or two may come between
        assert lease.usable(row.read_at)
        for status in (LicenceStatus.suspended, LicenceStatus.granted, LicenceStatus.revoked):
            async with changes.begin() as connection:
                await connection.execute(sa_update(Licence).where(col(Licence.id) == market.licence.id).values(status=status))
            await wait_for_delivery_processes(changes)
            assert (await read_state(reader, market.buyer_a.id, market.product.id, month)).licence_status == status.value

    _run(str(settings.database_url), body)


@needs_postgres
def test_entitlements_with_a_quota_and_missing_ones_are_never_kept(settings: Settings, engine: Engine) -> None:
    market = make_market(engine, settings.resolved_data_dir)
    update(engine, Entitlement, market.entitlement.id, quota_calls=1000)
    month = month_of(utcnow())

    async def body(reader: StateReader, _changes: AsyncEngine) -> tuple[int, int]:
        await read_state(reader, market.buyer_a.id, market.product.id, month)
        assert reader.lease is not None
        await _until(reader.lease.serving)
        for _ in range(10):
            assert (await read_state(reader, market.buyer_a.id, market.product.id, month)).quota_calls == 1000
            assert await read_state(reader, market.buyer_b.id, market.product.id, month) is None
        return reader.kept_answers_used, reader._group_reads.reads

    kept, reads = _run(str(settings.database_url), body)
    assert kept == 0
    assert reads == 21


@needs_postgres
def test_a_killed_listener_stops_kept_answers_until_the_lease_is_held_again(settings: Settings, engine: Engine) -> None:
    market = make_market(engine, settings.resolved_data_dir)
    month = month_of(utcnow())

    async def body(reader: StateReader, _changes: AsyncEngine) -> None:
        await read_state(reader, market.buyer_a.id, market.product.id, month)
        lease = reader.lease
        assert lease is not None
        await _until(lease.serving)
        await read_state(reader, market.buyer_a.id, market.product.id, month)
        assert terminate_backends(engine, "delivery_process") == 1
        await _until(lambda: not lease.serving(), within_s=1.0)
        used = reader.kept_answers_used
        for _ in range(3):
            await read_state(reader, market.buyer_a.id, market.product.id, month)
        renewals = lease.renewals
        if not lease.serving():  # read while the lease is not held: from the database
            assert reader.kept_answers_used == used
        await _until(lambda: lease.serving() and lease.renewals > renewals)  # held again on a new connection
        await read_state(reader, market.buyer_a.id, market.product.id, month)
        await read_state(reader, market.buyer_a.id, market.product.id, month)
        assert reader.kept_answers_used > used

    _run(str(settings.database_url), body)


@needs_postgres
def test_a_change_waits_for_every_live_lease_and_for_a_silent_one_no_longer_than_its_lease(
    settings: Settings, engine: Engine
) -> None:
    dsn = async_url(str(settings.database_url)).replace("postgresql+asyncpg://", "postgresql://", 1)

    async def main() -> dict[str, Any]:
        quick = AccessLease(dsn)
        # Renews only when told of a change (its own timer would take a minute).
        told = AccessLease(dsn, renew_every_s=60.0, lease_s=30.0)
        changes = create_async_engine(async_url(str(settings.database_url)))
        try:
            quick.start()
            told.start()
            await _until(lambda: quick.serving() and told.serving())
            async with changes.connect() as connection:
                before = (await connection.execute(text("SELECT clock_timestamp()"))).scalar_one()
            await wait_for_delivery_processes(changes)
            cleared = {"quick": quick.cleared_before, "told": told.cleared_before, "before": before}
            # A process that stopped without a word: its lease runs for 0.8 s more, and it never clears.
            async with changes.begin() as connection:
                await connection.execute(
                    text(
                        "INSERT INTO delivery_process (id, label, cleared_before, lease_until) VALUES "
                        "(gen_random_uuid(), 'gone', clock_timestamp() - interval '1 minute', "
                        "clock_timestamp() + interval '0.8 second')"
                    )
                )
            started = time.monotonic()
            await wait_for_delivery_processes(changes)
            cleared["waited_s"] = time.monotonic() - started
            async with changes.connect() as connection:
                cleared["gone_ran_out"] = (
                    await connection.execute(
                        text("SELECT bool_and(lease_until <= clock_timestamp()) FROM delivery_process WHERE label = 'gone'")
                    )
                ).scalar_one()
            await told.close()
            async with changes.connect() as connection:
                cleared["rows_left"] = (
                    await connection.execute(text("SELECT count(*) FROM delivery_process WHERE label <> 'gone'"))
                ).scalar_one()
            return cleared
        finally:
            await quick.close()
            await told.close()
            await changes.dispose()

    cleared = asyncio.run(main())
    assert cleared["quick"] > cleared["before"]
    assert cleared["told"] > cleared["before"]  # renewed because it was told, long before its timer
    assert cleared["gone_ran_out"] is True  # the change waited until the silent process's lease ran out
    assert cleared["waited_s"] < 5.0  # and then went on (5 s is the most a change ever waits)
    assert cleared["rows_left"] == 1  # a lease given up is gone at once: only the quick one's row is left
