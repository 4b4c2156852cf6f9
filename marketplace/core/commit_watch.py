"""Sessions that know which tables their transaction wrote, and watchers awaited after a commit that wrote theirs.

A domain registers a watcher for the tables it cares about (``watch_commits``); every session made by
``marketplace.core.db.Database`` notes the tables its flushes and DML statements write, and after a commit that
wrote one of a watcher's tables it awaits the watcher before ``commit()`` returns. Delivery uses this so that a
change to what grants access (a licence suspended, a subscription ended) is reported done only once every delivery
process has stopped using what it read before the change.

Writes through ``text()`` and rows written straight through the driver (``insert_rows``, ``insert_many``) are not
seen; nothing writes a watched table that way (delivery's watched tables are written by the ORM only).
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import ORMExecuteState, UOWTransaction
from sqlalchemy.orm import Session as OrmSession
from sqlmodel import Session
from sqlmodel.ext.asyncio.session import AsyncSession

#: ``Session.info`` key of the tables written since the last commit or rollback.
WRITTEN = "written_tables"

AfterCommit = Callable[[AsyncEngine, frozenset[str]], Awaitable[None]]


@dataclass(frozen=True)
class CommitWatcher:
    """``after_commit(engine, written tables)`` is awaited after every commit that wrote one of ``tables``."""

    name: str
    tables: frozenset[str]
    after_commit: AfterCommit


_WATCHERS: dict[str, CommitWatcher] = {}


def watch_commits(name: str, tables: frozenset[str], after_commit: AfterCommit) -> None:
    """Register (or replace) the watcher called ``name``."""
    _WATCHERS[name] = CommitWatcher(name, tables, after_commit)


def unwatch_commits(name: str) -> None:
    """Remove the watcher called ``name`` (if registered)."""
    _WATCHERS.pop(name, None)


class TrackedSession(Session):
    """A sync session noting the tables its transaction writes (``info[WRITTEN]``)."""


def _note(session: OrmSession, table: Any) -> None:
    name = getattr(table, "name", None)
    if isinstance(name, str):
        session.info.setdefault(WRITTEN, set()).add(name)


@event.listens_for(TrackedSession, "after_flush")
def _note_flushed(session: Session, _flush: UOWTransaction) -> None:
    for instance in itertools.chain(session.new, session.dirty, session.deleted):
        _note(session, getattr(type(instance), "__table__", None))


@event.listens_for(TrackedSession, "do_orm_execute")
def _note_statement(state: ORMExecuteState) -> None:
    if state.is_insert or state.is_update or state.is_delete:
        _note(state.session, getattr(state.statement, "table", None))


@event.listens_for(TrackedSession, "after_rollback")
def _forget_rolled_back(session: Session) -> None:
    session.info.pop(WRITTEN, None)


class WatchedSession(AsyncSession):
    """The application's async session: after a commit that wrote a watched table, awaits its watchers."""

    sync_session_class = TrackedSession

    async def commit(self) -> None:
        """Commit, then await the watchers of the tables the transaction wrote."""
        await super().commit()
        written = self.sync_session.info.pop(WRITTEN, None)
        if not written:
            return
        tables = frozenset(written)
        for watcher in tuple(_WATCHERS.values()):
            if watcher.tables & tables:
                bind = self.bind
                assert isinstance(bind, AsyncEngine)
                await watcher.after_commit(bind, tables)
