"""Keeping access answers on PostgreSQL, exactly: a lease per delivery process, and changes that wait for it.

Every delivery call checks the current entitlement, subscription, product, licence and resource version (a
suspension stops the very next call). On SQLite a process knows locally whether anything was committed since its
last read (``PRAGMA data_version``); on PostgreSQL it cannot, so without more it must read at every call. This
module lets it keep answers and stay exact, across any number of processes:

- **Each delivery process holds a lease** (a ``delivery_process`` row). Every ``RENEW_EVERY_S``, and at once when
  told that access changed (``LISTEN delivery_access``), it renews it with one statement that sets
  ``cleared_before`` and ``lease_until`` from the database's clock at that moment. From the time it sends the
  renewal until the answer is in, it answers nothing from what it keeps; once the answer is in it uses only answers
  read (by the database's clock, ``statement_timestamp()`` of the read) at or after ``cleared_before``, and only
  while its lease runs by its own monotonic clock (measured from when it sent the renewal, less a margin).
- **A change to what grants access waits for every process** (``wait_for_delivery_processes``, run after the
  commit of any session that wrote one of ``ACCESS_TABLES``): it notes the database's clock after its commit
  (``changed_at``), notifies the processes, and returns once every process whose lease still runs has cleared past
  ``changed_at``, or the lease has run out (a process that died delays a change by one lease at most).

So when a suspension's answer reaches the data authority, no process will use an answer read before it: the next
call anywhere is refused. Answers of entitlements with a quota are never kept (their counters change at every call),
nor "no entitlement" answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from marketplace.core.commit_watch import watch_commits

log = logging.getLogger(__name__)

#: The tables whose rows decide whether a delivery call is allowed (usage counters and exports only matter to
#: entitlements with a quota, whose answers are never kept).
ACCESS_TABLES = frozenset({"entitlement", "subscription", "product", "licence", "data_resource", "resource_version"})
CHANNEL = "delivery_access"
#: How long a renewal holds the lease (seconds, the database's clock).
LEASE_S = 1.0
#: How often a process renews its lease when not told of a change.
RENEW_EVERY_S = 0.25
#: Taken off the lease by the process's own clock (clock rates, scheduling).
MARGIN_S = 0.2
#: How often a change checks whether every process has cleared past it.
POLL_S = 0.002

_RENEW = (
    "INSERT INTO delivery_process (id, label, cleared_before, lease_until) "
    "VALUES ($1, $2, clock_timestamp(), clock_timestamp() + $3 * interval '1 second') "
    "ON CONFLICT (id) DO UPDATE SET cleared_before = excluded.cleared_before, lease_until = excluded.lease_until "
    "RETURNING cleared_before"
)


class AccessLease:
    """One process's lease: whether it may answer from kept access answers now, and from which moment on."""

    def __init__(self, dsn: str, *, lease_s: float = LEASE_S, renew_every_s: float = RENEW_EVERY_S) -> None:
        self.id = uuid.uuid4()
        self.label = f"{socket.gethostname()}:{os.getpid()}"[:200]
        self.lease_s = lease_s
        self.renew_every_s = renew_every_s
        #: Answers read before this moment (the database's clock) are not used.
        self.cleared_before: datetime | None = None
        #: Renewals made (for tests and benchmarks).
        self.renewals = 0
        self._dsn = dsn
        self._valid_until = 0.0
        self._connection: Any = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._on_clear: list[Callable[[], None]] = []

    def on_clear(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` whenever kept answers stop being usable (at every renewal)."""
        self._on_clear.append(callback)

    def serving(self) -> bool:
        """Whether kept answers read at or after ``cleared_before`` may be used now."""
        return time.monotonic() < self._valid_until and self._connection is not None and not self._connection.is_closed()

    def usable(self, read_at: datetime) -> bool:
        """Whether an answer read at ``read_at`` (the database's clock) may be used now."""
        cleared = self.cleared_before
        return cleared is not None and read_at >= cleared and self.serving()

    def start(self) -> None:
        """Start holding the lease (on the running event loop)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._hold(), name="delivery-access-lease")

    async def renew(self) -> None:
        """Renew the lease now: nothing kept is used from now until the database has recorded the renewal."""
        connection = await self._connected()
        self._stop_serving()
        sent = time.monotonic()
        # Nothing was kept while the renewal ran (``usable`` was false), and a notification meanwhile cleared itself.
        self.cleared_before = await connection.fetchval(_RENEW, self.id, self.label, self.lease_s)
        self._valid_until = sent + self.lease_s - MARGIN_S
        self.renewals += 1

    def _stop_serving(self) -> None:
        self._valid_until = 0.0
        for callback in self._on_clear:
            callback()

    async def _connected(self) -> Any:
        import asyncpg  # type: ignore[import-untyped]

        if self._connection is None or self._connection.is_closed():
            self._stop_serving()
            self._connection = None
            connection = await asyncpg.connect(self._dsn)
            # Leases of processes that stopped without giving theirs up are of no use to anyone after a while.
            await connection.execute("DELETE FROM delivery_process WHERE lease_until < clock_timestamp() - interval '1 hour'")
            await connection.add_listener(CHANNEL, self._notified)
            connection.add_termination_listener(lambda _c: self._stop_serving())
            self._connection = connection
        return self._connection

    def _notified(self, *_args: Any) -> None:
        # Exactness comes from the next renewal, which the change waits for; stopping now also spares the calls
        # that arrive before it.
        self._stop_serving()
        self._wake.set()

    async def _hold(self) -> None:
        while True:
            try:
                self._wake.clear()
                await self.renew()
            except asyncio.CancelledError:
                raise
            except Exception:  # the database is away: keep trying, reading at every call meanwhile
                log.warning("delivery access lease not renewed; delivery reads access at every call", exc_info=True)
                await self._drop()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.renew_every_s)

    async def _drop(self) -> None:
        self._stop_serving()
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.terminate()

    async def close(self) -> None:
        """Give the lease up (changes no longer wait for this process) and close the connection."""
        self._stop_serving()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        connection, self._connection = self._connection, None
        if connection is not None and not connection.is_closed():
            try:
                await connection.execute("DELETE FROM delivery_process WHERE id = $1", self.id)
                await connection.close()
            except Exception:  # it will run out by itself
                connection.terminate()


_CHANGED = text("SELECT clock_timestamp() FROM pg_notify(:channel, '')").bindparams(channel=CHANNEL)
_WAITING = text("SELECT count(*) FROM delivery_process WHERE lease_until > clock_timestamp() AND cleared_before <= :changed_at")


async def wait_for_delivery_processes(
    engine: AsyncEngine, _tables: frozenset[str] = ACCESS_TABLES, *, limit_s: float = 5.0
) -> None:
    """After a commit that changed what grants access: return once every delivery process with a running lease has
    stopped using answers read before the change (PostgreSQL; nothing to wait for on SQLite)."""
    if engine.dialect.name != "postgresql":
        return
    async with engine.connect() as connection:
        changed_at = (await connection.execute(_CHANGED)).scalar_one()
        await connection.commit()  # the notification goes at commit
        deadline = time.monotonic() + limit_s
        pause = POLL_S
        # Each statement sees what was committed before it (read committed): one transaction serves every poll.
        while (await connection.execute(_WAITING, {"changed_at": changed_at})).scalar_one():
            if time.monotonic() > deadline:  # pragma: no cover - a lease is at most LEASE_S
                log.error("delivery processes did not confirm an access change within %.1f s", limit_s)
                break
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.05)
        await connection.rollback()


watch_commits("delivery_access", ACCESS_TABLES, wait_for_delivery_processes)
