"""Metering with group commit: every successful delivery becomes a ``Delivery`` row, a bump of its entitlement's
``UsageCounter`` for the month and a ``delivery.recorded`` ledger event; refused calls are counted and recorded as
``delivery.refused`` events (one per flush per entitlement, code and mode, with a count).

The request path never waits for the database write: it hands the delivery to the process's :class:`Meter`, which
writes everything buffered in one transaction (one ``supervision.services.append_many`` for all the events, in a
writer thread of its own on a sync engine) at most ``max_delay_s`` (5 ms) after the first buffered item, or as soon
as ``max_batch`` are waiting. A flush has a fixed
cost of a few ms (one transaction, the ledger lock); under load the next flush therefore waits up to three times the
last one's duration (at most 50 ms), so metering takes at most about a quarter of the process's time and the
batches grow instead. The app's shutdown flushes what is left (``delivery_lifespan`` in ``marketplace.delivery.api``).

Quota counts what is still in the buffer: ``reserve`` adds a call (and the rows it may deliver) to the pending usage
of the entitlement before the data is read, ``record`` settles it to what was delivered, and the pending usage goes
away only once the flush that wrote it has committed. A check reads the committed counter and then the pending usage
of this process. ``epoch`` works as a sequence lock: it turns odd just before a flush commits and even again once
the flushed usage has left the buffer, so a check whose counter read did not happen wholly within one even epoch
reads again (nothing is counted twice or missed, even when the commit is visible before the flush has settled). Other processes' buffers are not visible: with
several web processes a quota can be overrun by what the others deliver within one flush interval.

Files (exports) are metered by the export task in its own transaction: :func:`record_deliveries_now`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from types import MappingProxyType
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session
from sqlmodel.ext.asyncio.session import AsyncSession

import supervision.services as ledger
from licensing.models import DeliveryMode
from marketplace.core.db import Database, add_to_rows, create_sync_engine, insert_rows
from marketplace.core.events import Actor, DomainEvent
from marketplace.core.types import utcnow, uuid7_many
from marketplace.delivery.models import Delivery, UsageCounter, UsageDay

log = logging.getLogger(__name__)

#: How long a delivery may wait in the buffer, and how many make a flush at once.
MAX_DELAY_S = 0.005
MAX_BATCH = 500
#: Under load a flush (one transaction, a fixed cost of a few ms) waits at least this many times the last flush's
#: duration after it, so that metering takes at most about a quarter of the process's time and batches grow instead.
FLUSH_SPACING = 3.0
#: ... but never longer than this.
MAX_SPACING_S = 0.05
#: A failed flush is retried this many times (with the items kept), then dropped with an error in the log.
FLUSH_ATTEMPTS = 5
#: Client ids named in one refusal event at most.
MAX_CLIENTS_NAMED = 10


def month_of(moment: datetime) -> str:
    """The usage month (UTC) of a moment: ``"2026-12"``."""
    return _month_text(moment.year, moment.month)


@functools.lru_cache(maxsize=64)
def _month_text(year: int, month: int) -> str:
    return f"{year:04d}-{month:02d}"


@functools.lru_cache(maxsize=4096)
def _delivery_subjects(
    entitlement_id: uuid.UUID, subscription_id: uuid.UUID, product_id: uuid.UUID, licence_id: uuid.UUID
) -> Mapping[str, str]:
    # The same for every delivery of an entitlement: kept (read-only) instead of four UUIDs written out per call.
    return MappingProxyType(
        {
            "entitlement": str(entitlement_id),
            "subscription": str(subscription_id),
            "product": str(product_id),
            "licence": str(licence_id),
        }
    )


@dataclass(slots=True)
class MeteredDelivery:
    """One successful delivery, as metered: metadata only. Made for every delivery call, so not frozen (see
    ``Grant``): treat it as read-only once handed to the meter."""

    entitlement_id: uuid.UUID
    subscription_id: uuid.UUID
    buyer_org_id: uuid.UUID
    operator_id: uuid.UUID
    owner_org_id: uuid.UUID
    product_id: uuid.UUID
    licence_id: uuid.UUID
    mode: DeliveryMode
    rows: int
    bytes: int
    actor: Actor
    client_id: str | None
    occurred_at: datetime = field(default_factory=utcnow)
    #: A few more metadata for the ledger event (e.g. an export id, a query's hash); never data.
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def month(self) -> str:
        """The usage month this delivery counts in."""
        return month_of(self.occurred_at)

    @property
    def day(self) -> date:
        """The day (UTC) this delivery is charted on."""
        return self.occurred_at.astimezone(UTC).date()

    def event(self) -> DomainEvent:
        """The ``delivery.recorded`` ledger event."""
        return DomainEvent(
            "delivery.recorded",
            self.actor,
            orgs=(self.buyer_org_id, self.operator_id, self.owner_org_id),
            subjects=_delivery_subjects(self.entitlement_id, self.subscription_id, self.product_id, self.licence_id),
            payload={"mode": self.mode.value, "rows": self.rows, "bytes": self.bytes, **self.details},
            occurred_at=self.occurred_at,
        )


@dataclass(frozen=True)
class RefusalKey:
    """What refusals are counted by: the buyer, the product, the entitlement (if one was found), the code, the mode."""

    buyer_org_id: uuid.UUID
    product_id: uuid.UUID
    entitlement_id: uuid.UUID | None
    code: str
    mode: DeliveryMode


@dataclass
class RefusalTally:
    """Refusals of one key since the last flush."""

    count: int
    first_at: datetime
    last_at: datetime
    orgs: tuple[uuid.UUID, ...]
    subjects: dict[str, str]
    actors: list[Actor]


@dataclass
class PendingUsage:
    """Usage of an entitlement in a month that is reserved or buffered but not yet committed."""

    calls: int = 0
    rows: int = 0
    bytes: int = 0


def refusal_event(key: RefusalKey, tally: RefusalTally) -> DomainEvent:
    """The ``delivery.refused`` event of one tally."""
    actors = {(a.kind, a.id): a for a in tally.actors}
    actor = next(iter(actors.values())) if len(actors) == 1 else Actor("system", "platform")
    clients = sorted(a.id for a in actors.values() if a.kind == "client")[:MAX_CLIENTS_NAMED]
    return DomainEvent(
        "delivery.refused",
        actor,
        orgs=tally.orgs,
        subjects=tally.subjects,
        payload={
            "code": key.code,
            "mode": key.mode.value,
            "count": tally.count,
            "first_at": tally.first_at.isoformat(),
            "last_at": tally.last_at.isoformat(),
            "clients": clients,
            "callers": len(actors),
        },
        occurred_at=tally.last_at,
    )


async def write_deliveries(
    session: AsyncSession, deliveries: Sequence[MeteredDelivery], refusals: Sequence[tuple[RefusalKey, RefusalTally]] = ()
) -> list[int]:
    """Write deliveries (rows, counters) and their events plus refusal events in the caller's transaction.

    One ``record_many`` appends every event under one ledger lock; each ``Delivery`` row keeps its event's index.
    Returns the ledger indices of the deliveries' events. The caller commits.
    """
    if not deliveries and not refusals:
        return []
    return await session.run_sync(write_metered, deliveries, refusals)


def write_metered(
    session: Session, deliveries: Sequence[MeteredDelivery], refusals: Sequence[tuple[RefusalKey, RefusalTally]] = ()
) -> list[int]:
    """:func:`write_deliveries` in a sync session (the meter's writer thread, or an async session's own)."""
    events = [d.event() for d in deliveries] + [refusal_event(k, t) for k, t in refusals]
    if not events:
        return []
    indices = ledger.append_many(session, events)
    if deliveries:
        insert_rows(
            session,
            Delivery.__table__,  # type: ignore[attr-defined]
            [
                {
                    "id": key,  # time-ordered: appended to the key's index, not written on a random page of it
                    "entitlement_id": d.entitlement_id,
                    "subscription_id": d.subscription_id,
                    "buyer_org_id": d.buyer_org_id,
                    "operator_id": d.operator_id,
                    "product_id": d.product_id,
                    "client_id": d.client_id,
                    "mode": d.mode,
                    "rows": d.rows,
                    "bytes": d.bytes,
                    "ledger_index": index,
                    "occurred_at": d.occurred_at,
                }
                for d, index, key in zip(deliveries, indices, uuid7_many(len(deliveries)), strict=False)
            ],
        )
        usage: dict[tuple[uuid.UUID, str], PendingUsage] = {}
        days: dict[tuple[date, uuid.UUID, uuid.UUID, uuid.UUID, str], PendingUsage] = {}
        for d in deliveries:
            for pending in (
                usage.setdefault((d.entitlement_id, d.month), PendingUsage()),
                days.setdefault((d.day, d.product_id, d.buyer_org_id, d.operator_id, d.mode.value), PendingUsage()),
            ):
                pending.calls += 1
                pending.rows += d.rows
                pending.bytes += d.bytes
        _bump_counters(session, usage, days)
    return indices[: len(deliveries)]


def _bump_counters(
    session: Session,
    usage: dict[tuple[uuid.UUID, str], PendingUsage],
    days: dict[tuple[date, uuid.UUID, uuid.UUID, uuid.UUID, str], PendingUsage],
) -> None:
    # In a fixed order: two flushes of several processes never deadlock each other.
    add_to_rows(
        session,
        UsageCounter.__table__,  # type: ignore[attr-defined]
        ("entitlement_id", "month"),
        [
            {"entitlement_id": entitlement_id, "month": month, "calls": p.calls, "rows": p.rows, "bytes": p.bytes}
            for (entitlement_id, month), p in sorted(usage.items(), key=lambda item: (str(item[0][0]), item[0][1]))
        ],
    )
    add_to_rows(
        session,
        UsageDay.__table__,  # type: ignore[attr-defined]
        ("day", "product_id", "buyer_org_id", "operator_id", "mode"),
        [
            {"day": k[0], "product_id": k[1], "buyer_org_id": k[2], "operator_id": k[3], "mode": k[4]}
            | {"calls": p.calls, "rows": p.rows, "bytes": p.bytes}
            for k, p in sorted(days.items(), key=lambda item: (item[0][0], str(item[0][1]), str(item[0][2]), item[0][4]))
        ],
    )


async def record_deliveries_now(session: AsyncSession, deliveries: Sequence[MeteredDelivery]) -> list[int]:
    """Meter deliveries in the caller's transaction, without the buffer (export tasks). The caller commits."""
    return await write_deliveries(session, deliveries)


class Meter:
    """The process's buffer of deliveries and refusals, flushed in one transaction every few ms (group commit)."""

    def __init__(self, database: Database, *, max_delay_s: float = MAX_DELAY_S, max_batch: int = MAX_BATCH) -> None:
        self._database = database
        self.max_delay_s = max_delay_s
        self.max_batch = max_batch
        self._deliveries: list[MeteredDelivery] = []
        self._refusals: dict[RefusalKey, RefusalTally] = {}
        self._pending: dict[tuple[uuid.UUID, str], PendingUsage] = {}
        self._wake = asyncio.Event()
        self._full = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._flush_lock = asyncio.Lock()
        # Flushes run whole in one writer thread of their own, on a sync engine: the transaction's dozen statements
        # and its commit cost one hand-off instead of one each (an async driver hops threads at every statement).
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="delivery-meter")
        self._engine: Engine | None = None
        self._attempts = 0
        self._last_flush_s = 0.0
        #: Odd while a flush is committing, even otherwise; changes at every commit (see the module docstring).
        self.epoch = 0
        self._settled = asyncio.Event()
        self._settled.set()
        #: Figures for tests and benchmarks: flushes done, deliveries and refusal events written, items dropped.
        self.stats = {"flushes": 0, "deliveries": 0, "refusal_events": 0, "dropped": 0}

    # --- quota ----------------------------------------------------------------------------------------------------

    def stable(self, epoch: int) -> bool:
        """True when no flush has committed, or was committing, since ``epoch`` was read: a committed counter read in
        between and the pending usage read now add up exactly."""
        return epoch == self.epoch and epoch % 2 == 0

    async def settled(self, timeout_s: float = 1.0) -> None:
        """Wait (at most ``timeout_s``) until no flush is committing."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._settled.wait(), timeout_s)

    def _begin_commit(self) -> None:
        # In the writer thread, just before the commit: odd until the flushed usage has left the buffer.
        if self.epoch % 2 == 0:
            self.epoch += 1

    def _end_commit(self) -> None:
        if self.epoch % 2 == 1:
            self.epoch += 1
        self._settled.set()

    def pending(self, entitlement_id: uuid.UUID, month: str) -> PendingUsage:
        """Usage of the entitlement in ``month`` not yet committed (reserved or buffered in this process)."""
        return self._pending.get((entitlement_id, month)) or PendingUsage()

    def reserve(self, entitlement_id: uuid.UUID, month: str, *, calls: int = 1, rows: int = 0) -> None:
        """Count a call (and the rows it may deliver) before delivering it."""
        pending = self._pending.setdefault((entitlement_id, month), PendingUsage())
        pending.calls += calls
        pending.rows += rows

    def release(self, entitlement_id: uuid.UUID, month: str, *, calls: int = 1, rows: int = 0) -> None:
        """Give back a reservation whose delivery did not happen."""
        self._settle(entitlement_id, month, calls, rows, 0)

    def _settle(self, entitlement_id: uuid.UUID, month: str, calls: int, rows: int, bytes_: int) -> None:
        pending = self._pending.get((entitlement_id, month))
        if pending is None:
            return
        pending.calls -= calls
        pending.rows -= rows
        pending.bytes -= bytes_
        if pending.calls <= 0 and pending.rows <= 0:
            del self._pending[(entitlement_id, month)]

    # --- buffering ---------------------------------------------------------------------------------------------------

    def record(self, delivery: MeteredDelivery, *, reserved_month: str, reserved_rows: int) -> None:
        """Buffer a delivery whose call was reserved (with ``reserved_rows``) in ``reserved_month``."""
        key = (delivery.entitlement_id, reserved_month)
        pending = self._pending.setdefault(key, PendingUsage())
        pending.rows += delivery.rows - reserved_rows
        pending.bytes += delivery.bytes
        if reserved_month != delivery.month:  # the month turned during the call: move the reservation
            self._settle(delivery.entitlement_id, reserved_month, 1, delivery.rows, delivery.bytes)
            self.reserve(delivery.entitlement_id, delivery.month, calls=1, rows=delivery.rows)
            self._pending[(delivery.entitlement_id, delivery.month)].bytes += delivery.bytes
        self._deliveries.append(delivery)
        self._poke()

    def refuse(
        self,
        key: RefusalKey,
        actor: Actor,
        *,
        orgs: tuple[uuid.UUID, ...],
        subjects: dict[str, str],
    ) -> None:
        """Count a refused call (recorded as one ``delivery.refused`` event per key and flush)."""
        now = utcnow()
        tally = self._refusals.get(key)
        if tally is None:
            self._refusals[key] = RefusalTally(1, now, now, orgs, subjects, [actor])
        else:
            tally.count += 1
            tally.last_at = now
            if len(tally.actors) < MAX_CLIENTS_NAMED and actor not in tally.actors:
                tally.actors.append(actor)
        self._poke()

    def _poke(self) -> None:
        if self._task is None and not self._closed:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="delivery-meter")
        if self._task is not None:
            self._wake.set()
            if len(self._deliveries) >= self.max_batch:
                self._full.set()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if not self._closed and len(self._deliveries) < self.max_batch:
                wait = max(self.max_delay_s, min(FLUSH_SPACING * self._last_flush_s, MAX_SPACING_S))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._full.wait(), wait)
            self._full.clear()
            try:
                await self.flush()
            except Exception:  # logged in flush; the items stay for the next attempt
                await asyncio.sleep(min(0.05 * self._attempts, 1.0))
                self._wake.set()
            if self._closed and not self._deliveries and not self._refusals:
                return

    async def flush(self) -> int:
        """Write everything buffered in one transaction now; returns how many deliveries were written."""
        async with self._flush_lock:
            deliveries, refusals = self._deliveries, self._refusals
            if not deliveries and not refusals:
                return 0
            self._deliveries, self._refusals = [], {}
            started = time.perf_counter()
            self._settled.clear()
            try:
                write = functools.partial(self._write_and_commit, deliveries, list(refusals.items()))
                await asyncio.get_running_loop().run_in_executor(self._writer, write)
            except Exception:
                self._end_commit()
                self._attempts += 1
                if self._attempts >= FLUSH_ATTEMPTS:
                    log.exception("dropping %d metered deliveries after %d failed flushes", len(deliveries), self._attempts)
                    self.stats["dropped"] += len(deliveries) + len(refusals)
                    self._attempts = 0
                    for d in deliveries:
                        self._settle(d.entitlement_id, d.month, 1, d.rows, d.bytes)
                else:
                    log.exception("metering flush failed (attempt %d); retrying", self._attempts)
                    self._deliveries[:0] = deliveries
                    for key, tally in refusals.items():
                        later = self._refusals.pop(key, None)
                        if later is not None:
                            tally.count += later.count
                            tally.last_at = later.last_at
                        self._refusals[key] = tally
                raise
            self._attempts = 0
            self._last_flush_s = time.perf_counter() - started
            for d in deliveries:
                self._settle(d.entitlement_id, d.month, 1, d.rows, d.bytes)
            self._end_commit()
            self.stats["flushes"] += 1
            self.stats["deliveries"] += len(deliveries)
            self.stats["refusal_events"] += len(refusals)
            return len(deliveries)

    def _write_and_commit(self, deliveries: list[MeteredDelivery], refusals: list[tuple[RefusalKey, RefusalTally]]) -> None:
        """One flush's transaction, in the writer thread."""
        if self._engine is None:
            self._engine = create_sync_engine(self._database.url, keep_connections=True)
        with Session(self._engine) as session:
            write_metered(session, deliveries, refusals)
            self._begin_commit()
            session.commit()

    def _dispose(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    async def close(self) -> None:
        """Flush what is left and stop (app shutdown)."""
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            self._wake.set()
            self._full.set()
            try:
                await asyncio.wait_for(task, timeout=10)
            except Exception:
                log.exception("the meter did not stop cleanly")
        try:
            for _ in range(FLUSH_ATTEMPTS):
                try:
                    await self.flush()
                    return
                except Exception:
                    await asyncio.sleep(0.05)
        finally:
            # The engine's connections belong to the writer thread (SQLite's are bound to the thread that opened them).
            await asyncio.get_running_loop().run_in_executor(self._writer, self._dispose)
            self._writer.shutdown(wait=False)
