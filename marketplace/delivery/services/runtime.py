"""What delivery keeps per running app: the meter (group commit), the rate limiter, the projection cache and the
pseudonymisation key. Created by ``delivery_lifespan`` (``marketplace.delivery.api``) at start-up and closed at
shutdown (the meter flushes what it holds); created on first use when the lifespan is not wired.
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from licensing.privacy import pseudonym_key
from marketplace.core.db import Database, is_sqlite
from marketplace.core.keys import derived_key
from marketplace.core.ratelimit import RateLimiter, create_rate_limiter
from marketplace.core.settings import Settings
from marketplace.delivery.services.access_lease import AccessLease
from marketplace.delivery.services.metering import Meter
from marketplace.delivery.services.projections import ProjectionCache, key_digest, projection_cache

STATE_KEY = "delivery_runtime"

#: What a read's rows are turned into (kept as such on SQLite).
Shape = Callable[[list[Any]], Any]


class GroupReads:
    """Concurrent reads of the same key share one read of the database, and stay exact: a caller is only ever given
    the answer of a read that *started after it arrived*, so it sees every change committed before its call.

    The first caller starts a read at once. Callers arriving while that read runs wait together for the next one,
    which starts when the running one ends and answers all of them (group commit, for reads). Under a burst of calls
    for one key this makes one read per read's duration instead of one per call; a lone caller reads at once.
    """

    def __init__(self) -> None:
        self._running: dict[Any, asyncio.Future[Any]] = {}
        self._next: dict[Any, asyncio.Future[Any]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        #: Reads made (for tests and benchmarks).
        self.reads = 0

    async def read(self, key: Any, read: Callable[[], Awaitable[Any]]) -> Any:
        """The answer of ``read()`` for ``key``, from a read that started after this call."""
        if key not in self._running:
            answer = self._running[key] = _answer_future()
            task = asyncio.ensure_future(self._drive(key, answer, read))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        else:  # the running read may predate this call: wait for the next one
            following = self._next.get(key)
            if following is None:
                following = self._next[key] = _answer_future()
            answer = following
        return await asyncio.shield(answer)

    async def _drive(self, key: Any, answer: asyncio.Future[Any], read: Callable[[], Awaitable[Any]]) -> None:
        while True:
            self.reads += 1
            try:
                answer.set_result(await read())
            except asyncio.CancelledError:
                answer.cancel()
                self._next.pop(key, answer).cancel()
                del self._running[key]
                raise
            except Exception as exc:  # every caller waiting for this read gets its failure
                answer.set_exception(exc)
            following = self._next.pop(key, None)
            if following is None:
                del self._running[key]
                return
            self._running[key] = answer = following


def _answer_future() -> asyncio.Future[Any]:
    answer: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    # A failure nobody waits for any more (its callers went away) is not an error to log.
    answer.add_done_callback(lambda done: done.cancelled() or done.exception())
    return answer


class StateReader:
    """A connection of delivery's own for the one read every call makes (the access state), outside any session:
    saves the session's pool checkout (and its ping) and SQLAlchemy's round trips on the request path.

    - SQLite: a read-only connection of the standard driver, read **on the event loop**: a read of a few indexed
      pages of a WAL database takes tens of microseconds and never waits for a writer, less than handing it to a
      thread and back. Should the database answer "busy" (a checkpoint in progress), the read is retried once in a
      worker thread that may wait. Answers are kept until the database changes: ``PRAGMA data_version`` changes
      whenever any other connection (of this process or another) commits, and this connection never writes, so a
      kept answer is exactly what a new read would return (a suspension committed before a call is seen by it).
    - PostgreSQL: a small asyncpg pool (a queue of four connections, prepared statements cached per connection).
      Answers the caller allows to keep (``keep``) are kept under the process's access lease (``access_lease``):
      used only while the lease runs and only if read after the lease last cleared them, which a change to what
      grants access waits for in every process before it is reported done.
    """

    #: How long a read on the event loop may wait for a lock before it is moved to a thread (milliseconds).
    LOOP_BUSY_TIMEOUT_MS = 0
    #: PostgreSQL connections of the reader.
    CONNECTIONS = 4
    #: Answers kept between two changes of the database at most.
    MAX_ANSWERS = 10_000

    def __init__(self, url: str, *, keep_answers: bool = True) -> None:
        self.url = url
        self.keep_answers = keep_answers
        #: The access lease kept answers are used under (PostgreSQL, once connected).
        self.lease: AccessLease | None = None
        #: Calls answered from a kept answer (PostgreSQL; for tests and benchmarks).
        self.kept_answers_used = 0
        self.dialect_name = "sqlite" if is_sqlite(url) else "postgresql"
        self._sqlite: sqlite3.Connection | None = None
        self._data_version: int | None = None
        self._answers: dict[tuple[Any, ...], Any] = {}
        self._pool: asyncio.Queue[Any] | None = None
        self._lock = asyncio.Lock()
        self._group_reads = GroupReads()

    @functools.cached_property
    def dialect(self) -> Any:
        """The SQLAlchemy dialect statements are compiled for (qmark for SQLite, $n for asyncpg)."""
        if self.dialect_name == "sqlite":
            from sqlalchemy.dialects.sqlite import aiosqlite

            return aiosqlite.dialect()
        from sqlalchemy.dialects.postgresql import asyncpg

        return asyncpg.dialect()  # type: ignore[no-untyped-call]

    def _sqlite_connection(self, busy_timeout_ms: int) -> sqlite3.Connection:
        connection = sqlite3.connect(make_url(self.url).database or "", isolation_level=None, check_same_thread=False)
        connection.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        connection.execute("PRAGMA query_only=ON")
        return connection

    async def _connect(self) -> None:
        if self.dialect_name == "sqlite":
            self._sqlite = self._sqlite_connection(self.LOOP_BUSY_TIMEOUT_MS)
        else:
            # A few connections taken from and given back to a queue, each opened on first use and opened again
            # after a failure: nothing changes a session's state on them (reads only), so asyncpg's pool machinery
            # (a task and a reset round trip per release) is not needed.
            self._pool = asyncio.Queue()
            for _ in range(self.CONNECTIONS):
                self._pool.put_nowait(None)
            if self.keep_answers:
                self.lease = AccessLease(self._dsn())
                self.lease.on_clear(self._answers.clear)
                self.lease.start()

    def _read_on_loop(self, connection: sqlite3.Connection, sql: str, values: list[Any], shape: Shape) -> Any:
        version = connection.execute("PRAGMA data_version").fetchone()[0]
        if version != self._data_version or len(self._answers) >= self.MAX_ANSWERS:
            self._answers.clear()
            self._data_version = version
        key = (sql, tuple(values))
        if key in self._answers:
            return self._answers[key]
        found = self._answers[key] = shape(connection.execute(sql, values).fetchall())
        return found

    def _read_waiting(self, sql: str, values: list[Any], shape: Shape) -> Any:
        connection = self._sqlite_connection(10_000)
        try:
            return shape(connection.execute(sql, values).fetchall())
        finally:
            connection.close()

    def _dsn(self) -> str:
        return make_url(self.url).set(drivername="postgresql").render_as_string(hide_password=False)

    async def fetch(self, sql: str, values: list[Any], shape: Shape = list, keep: Callable[[Any], bool] | None = None) -> Any:
        """``shape`` of the rows of one read (values positional, UUIDs as each database takes them). The shaped
        answer may be one kept from an earlier read: do not change it. On SQLite answers are kept while the
        database is unchanged; on PostgreSQL only answers ``keep`` accepts, which must have a ``read_at`` (the
        database's ``statement_timestamp()``), under the access lease."""
        if self._sqlite is None and self._pool is None:
            async with self._lock:
                if self._sqlite is None and self._pool is None:
                    await self._connect()
        if self._sqlite is not None:
            values = [v.hex if isinstance(v, uuid.UUID) else v for v in values]
            try:
                return self._read_on_loop(self._sqlite, sql, values, shape)
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorcode not in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                    raise
                return await asyncio.to_thread(self._read_waiting, sql, values, shape)
        key = (sql, tuple(values), shape)
        lease = self.lease if keep is not None else None
        if lease is not None:
            kept = self._answers.get(key)
            if kept is not None and lease.usable(kept.read_at):
                self.kept_answers_used += 1
                return kept
        found = await self._group_reads.read(key, functools.partial(self._fetch_postgresql, sql, values, shape))
        if lease is not None and keep is not None and keep(found) and lease.usable(found.read_at):
            if len(self._answers) >= self.MAX_ANSWERS:
                self._answers.clear()
            self._answers[key] = found
        return found

    async def _fetch_postgresql(self, sql: str, values: list[Any], shape: Shape) -> Any:
        import asyncpg  # type: ignore[import-untyped]

        pool = self._pool
        assert pool is not None
        connection = await pool.get()
        try:
            if connection is None or connection.is_closed():
                connection = await asyncpg.connect(self._dsn())
            return shape(await connection.fetch(sql, *values))
        except (OSError, asyncpg.InterfaceError, asyncpg.PostgresConnectionError):
            if connection is not None:
                connection.terminate()
            connection = None
            raise
        finally:
            if self._pool is pool:
                pool.put_nowait(connection)
            elif connection is not None:  # closed meanwhile
                await connection.close()

    async def close(self) -> None:
        """Give the lease up and close the connection or pool."""
        if self.lease is not None:
            lease, self.lease = self.lease, None
            await lease.close()
        if self._sqlite is not None:
            self._sqlite.close()
            self._sqlite = None
        if self._pool is not None:
            pool, self._pool = self._pool, None
            while not pool.empty():
                connection = pool.get_nowait()
                if connection is not None:
                    await connection.close()


@dataclass
class DeliveryRuntime:
    """Delivery's per-app state (one per event loop)."""

    settings: Settings
    database: Database
    meter: Meter
    limiter: RateLimiter
    projections: ProjectionCache
    pseudonym_key: bytes
    pseudonym_key_digest: str
    cursor_key: bytes
    link_key: bytes
    loop: asyncio.AbstractEventLoop
    state_reader: StateReader
    #: Where resource contents are stored (``settings.resolved_data_dir``, worked out once).
    data_dir: Path
    #: Page reads in progress (``rows._read_once``), by page-cache key.
    page_reads: dict[Any, asyncio.Future[Any]] = field(default_factory=dict)

    @classmethod
    def start(cls, settings: Settings, database: Database) -> DeliveryRuntime:
        """Create the runtime for the running event loop."""
        key = pseudonym_key(settings)
        return cls(
            settings=settings,
            database=database,
            meter=Meter(database),
            limiter=create_rate_limiter(settings.redis_url),
            projections=projection_cache(settings.var_dir / "cache" / "projections", key, memory_mb=settings.sandbox_memory_mb),
            pseudonym_key=key,
            pseudonym_key_digest=key_digest(key),
            cursor_key=derived_key(settings, "rows-cursor"),
            link_key=derived_key(settings, "export-link"),
            loop=asyncio.get_running_loop(),
            state_reader=StateReader(database.url, keep_answers=settings.delivery_access_lease),
            data_dir=settings.resolved_data_dir,
        )

    async def close(self) -> None:
        """Flush the meter and release the rate limiter's connections."""
        try:
            await self.meter.close()
        finally:
            await self.limiter.close()
            await self.state_reader.close()


def runtime_of(state: Any) -> DeliveryRuntime:
    """The app's delivery runtime (``state`` is ``app.state``), created for this event loop when missing."""
    runtime: DeliveryRuntime | None = state.get(STATE_KEY) if hasattr(state, "get") else getattr(state, STATE_KEY, None)
    loop = asyncio.get_running_loop()
    if runtime is None or runtime.loop is not loop or runtime.database is not state.db:
        runtime = DeliveryRuntime.start(state.settings, state.db)
        state[STATE_KEY] = runtime
    return runtime
