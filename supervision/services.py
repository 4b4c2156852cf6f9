"""The ledger: append events in the caller's transaction, serve roots and RFC 9162 proofs from stored
subtree hashes, sign checkpoints, and check the stored log against them.
"""

from __future__ import annotations

import base64
import functools
import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, timedelta
from typing import Any, TypeVar

from sqlalchemy import TextClause, func, text
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from marketplace.core.db import insert_rows
from marketplace.core.errors import InvalidInput, NotFound
from marketplace.core.events import DomainEvent
from marketplace.core.types import utcnow
from supervision import merkle
from supervision.canonical import SAFE_INTEGER, canonical_json, canonical_text, is_plain
from supervision.models import LedgerCheckpoint, LedgerEntry, LedgerHead, LedgerNode, SupervisionAlert
from supervision.note import Checkpoint, NoteError, open_checkpoint
from supervision.signing import LedgerSigner

T = TypeVar("T")
#: Most entries one read may return.
MAX_ENTRIES_PER_READ = 1000


class LedgerCorrupt(RuntimeError):
    """The stored log is missing hashes it must have: it was changed outside the ledger."""


def canonical_event(index: int, event: DomainEvent) -> bytes:
    """The exact bytes of a leaf: the event as RFC 8785 canonical JSON, with its index."""
    payload = dict(event.payload)
    plain = -SAFE_INTEGER <= index <= SAFE_INTEGER and is_plain(payload)
    if plain:
        # The common case (metadata made of text and safe integers): the actor, orgs and subjects of a busy source
        # repeat from one event to the next, so their canonical text is kept; the document is put together in the
        # canonical order of its keys (actor, index, orgs, payload, subjects, time, type).
        try:
            subjects = _canonical_subjects(tuple(event.subjects.items()))
            if subjects is not None:
                return (
                    f'{{"actor":{_canonical_actor(event.actor.kind, event.actor.id)},"index":{index},'
                    f'"orgs":{_canonical_orgs(tuple(event.orgs))},"payload":{canonical_text(payload)},'
                    f'"subjects":{subjects},"time":"{_event_time(event)}","type":{canonical_text(event.type)}}}'
                ).encode()
        except (TypeError, UnicodeEncodeError):  # unhashable subjects, a lone surrogate: the general path decides
            pass
    document: dict[str, Any] = {
        "index": index,
        "type": event.type,
        "time": _event_time(event),
        "actor": {"kind": event.actor.kind, "id": event.actor.id},
        "orgs": sorted(str(org) for org in event.orgs),
        "subjects": {key: str(value) for key, value in event.subjects.items()},
        "payload": payload,
    }
    # Everything but the payload is text, a safe integer or lists and objects of text with ASCII keys.
    return canonical_json(document, plain=(plain and all(key.isascii() for key in document["subjects"])) or None)


def _event_time(event: DomainEvent) -> str:
    return event.occurred_at.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


@functools.lru_cache(maxsize=4096)
def _canonical_actor(kind: str, actor_id: str) -> str:
    return canonical_text({"kind": kind, "id": actor_id})


@functools.lru_cache(maxsize=4096)
def _canonical_orgs(orgs: tuple[Any, ...]) -> str:
    return canonical_text(sorted(str(org) for org in orgs))


@functools.lru_cache(maxsize=4096)
def _canonical_subjects(items: tuple[tuple[str, Any], ...]) -> str | None:
    """The subjects' canonical text, or None when a key is not ASCII (RFC 8785 then orders keys by UTF-16 units)."""
    subjects = {key: str(value) for key, value in items}
    if not all(key.isascii() for key in subjects):
        return None
    return canonical_text(subjects)


#: Takes the row lock first (PostgreSQL) or the write lock (SQLite): appends are serialised, so indices are
#: contiguous and a rolled-back transaction gives its indices back.
_HEAD_LOCK = text("UPDATE ledger_head SET size = size WHERE id = 1 RETURNING size, frontier")
_HEAD_WRITE = text("UPDATE ledger_head SET size = :size, frontier = :frontier WHERE id = 1")


def _lock_head(session: Session) -> tuple[int, str]:
    """Lock the ledger's head row and read it: the tree size and its frontier (JSON)."""
    connection = session.connection()
    row = connection.execute(_HEAD_LOCK).first()
    if row is None:  # the head row is created with the schema; recreate it if it was removed
        insert = postgresql_insert if connection.dialect.name == "postgresql" else sqlite_insert
        connection.execute(insert(LedgerHead).values(id=1, size=0, frontier="[]").on_conflict_do_nothing())
        row = connection.execute(_HEAD_LOCK).one()
    return int(row[0]), str(row[1])


#: Called with the (sync) session and the events of every append (before the commit), e.g. to run the alert rules
#: after it.
AppendWatcher = Callable[[Session, Sequence[DomainEvent]], None]
_append_watchers: list[AppendWatcher] = []


def watch_appends(watcher: AppendWatcher) -> None:
    """Register ``watcher`` once (idempotent: apps are built many times in one process)."""
    if watcher not in _append_watchers:
        _append_watchers.append(watcher)


async def record(session: AsyncSession, event: DomainEvent) -> int:
    """Append ``event`` to the ledger in the caller's transaction; returns its index. The caller commits."""
    return (await record_many(session, [event]))[0]


async def record_many(session: AsyncSession, events: Sequence[DomainEvent]) -> list[int]:
    """Append several events under one lock (group commit for high-rate sources); the caller commits."""
    if not events:
        return []
    return await session.run_sync(append_many, events)


def append_many(session: Session, events: Sequence[DomainEvent]) -> list[int]:
    """:func:`record_many` in a sync session: of a sync engine (metering's writer thread), or an async session's own.
    The caller commits."""
    if not events:
        return []
    session.flush()  # the caller's pending changes first, as an ORM query would (their errors surface here)
    size, stored_frontier = _lock_head(session)
    frontier: list[tuple[int, bytes]] = [(level, bytes.fromhex(value)) for level, value in json.loads(stored_frontier)]
    indices = []
    # Plain rows written with one executemany per table (no ORM objects: a metering flush appends hundreds).
    entries: list[dict[str, Any]] = []
    nodes: list[dict[str, Any]] = []
    for event in events:
        index = size
        leaf_input = canonical_event(index, event)
        value = merkle.leaf_hash(leaf_input)
        entries.append(
            {
                "leaf_index": index,
                "event_type": event.type,
                "occurred_at": event.occurred_at,
                "leaf_input": leaf_input.decode(),
                "leaf_hash": value,
            }
        )
        height, current = 0, value
        while frontier and frontier[-1][0] == height:
            current = merkle.node_hash(frontier.pop()[1], current)
            height += 1
            nodes.append({"level": height, "position": index >> height, "hash": current})
        frontier.append((height, current))
        size += 1
        indices.append(index)
    session.connection().execute(
        _HEAD_WRITE, {"size": size, "frontier": json.dumps([[level, value.hex()] for level, value in frontier])}
    )
    insert_rows(session, LedgerEntry.__table__, entries)  # type: ignore[attr-defined]
    insert_rows(session, LedgerNode.__table__, nodes)  # type: ignore[attr-defined]
    for watcher in _append_watchers:
        watcher(session, events)
    return indices


def _root_of_frontier(frontier: Sequence[tuple[int, bytes]]) -> bytes:
    if not frontier:
        return merkle.EMPTY_ROOT
    current = frontier[-1][1]
    for _level, value in reversed(frontier[:-1]):
        current = merkle.node_hash(value, current)
    return current


async def head(session: AsyncSession) -> tuple[int, bytes]:
    """The current tree size and root, without reading any leaf."""
    connection = await session.connection()
    row = (await connection.execute(_HEAD_READ)).first()
    if row is None:
        return 0, merkle.EMPTY_ROOT
    frontier = [(level, bytes.fromhex(value)) for level, value in json.loads(row.frontier)]
    return row.size, _root_of_frontier(frontier)


_HEAD_READ = text("SELECT size, frontier FROM ledger_head WHERE id = 1")


@functools.lru_cache(maxsize=512)
def _hash_read(leaves: int, nodes: int) -> TextClause:
    """One statement reading the head's size, ``leaves`` leaf hashes and ``nodes`` subtree hashes.

    Its text depends only on the two counts, so the database and SQLAlchemy prepare it once per shape
    (a proof at a million leaves has one of a few dozen shapes). Subtree hashes are OR-ed primary-key
    point lookups: SQLite plans a row-value ``(level, position) IN (...)`` as a full scan.
    """
    parts = ["SELECT -1 AS level, size AS position, NULL AS hash FROM ledger_head WHERE id = 1"]
    if leaves:
        wanted = ", ".join(f":x{i}" for i in range(leaves))
        parts.append(f"SELECT 0, leaf_index, leaf_hash FROM ledger_entry WHERE leaf_index IN ({wanted})")  # noqa: S608 (placeholders)
    if nodes:
        keys = " OR ".join(f"(level = :l{i} AND position = :p{i})" for i in range(nodes))
        parts.append(f"SELECT level, position, hash FROM ledger_node WHERE {keys}")  # noqa: S608 (placeholders)
    return text(" UNION ALL ".join(parts))


_PLACEHOLDER = re.compile(r":([a-z]\d+)")


@functools.lru_cache(maxsize=512)
def _numbered(sql: str) -> tuple[str, tuple[str, ...]]:
    """``:x0``-style placeholders as asyncpg's ``$1``, and the names in their order."""
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        names.append(match.group(1))
        return f"${len(names)}"

    return _PLACEHOLDER.sub(number, sql), tuple(names)


async def _fetch_all(session: AsyncSession, statement: TextClause, params: dict[str, int]) -> Sequence[Sequence[Any]]:
    """Rows of a read on the session's connection (inside its transaction, if one is open), straight
    through the driver: one hop to aiosqlite's thread (``execute_fetchall``) instead of SQLAlchemy's
    four, or one asyncpg prepared statement, cached by asyncpg. This is half of a proof's time."""
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    driver: Any = raw.driver_connection
    if connection.dialect.name == "sqlite":
        return list(await driver.execute_fetchall(statement.text, params))
    if connection.dialect.driver == "asyncpg":
        sql, names = _numbered(statement.text)
        return list(await driver.fetch(sql, *(params[name] for name in names)))
    return list(await connection.execute(statement, params))


async def _with_stored_hashes(session: AsyncSession, size: int, compute: Callable[[Callable[[int, int], bytes]], T]) -> T:
    """Run ``compute`` over the tree of ``size`` entries with the subtree hashes it needs, read in one round trip.

    ``compute`` runs twice: once to learn which hashes it needs (it depends only on the sizes asked
    for), then with the hashes, after ``size`` is checked against the size read in the same statement.
    """
    needed: set[tuple[int, int]] = set()

    def collect(level: int, position: int) -> bytes:
        needed.add((level, position))
        return bytes(merkle.HASH_SIZE)

    compute(collect)
    leaves = [position for level, position in needed if level == 0]
    nodes = [key for key in needed if key[0]]
    params: dict[str, int] = {f"x{i}": position for i, position in enumerate(leaves)}
    for i, (level, position) in enumerate(nodes):
        params[f"l{i}"], params[f"p{i}"] = level, position
    stored: dict[tuple[int, int], bytes] = {}
    current = 0
    for level, position, value in await _fetch_all(session, _hash_read(len(leaves), len(nodes)), params):
        if level < 0:
            current = position
        else:
            stored[(level, position)] = bytes(value)
    if not 0 <= size <= current:
        raise InvalidInput(f"The ledger has {current} entries; there is no tree of size {size}.", code="tree_size_out_of_range")

    def lookup(level: int, position: int) -> bytes:
        try:
            return stored[(level, position)]
        except KeyError:
            raise LedgerCorrupt(f"subtree hash missing at level {level}, position {position}") from None

    return compute(lookup)


async def root_at(session: AsyncSession, size: int) -> bytes:
    """The root of the tree of the first ``size`` entries, in one read of O(log n) hashes."""
    if size < 0:
        raise InvalidInput(f"There is no tree of size {size}.", code="tree_size_out_of_range")
    return await _with_stored_hashes(
        session, size, lambda perfect: merkle.range_hash(0, size, perfect) if size else merkle.EMPTY_ROOT
    )


async def inclusion_proof(session: AsyncSession, index: int, tree_size: int) -> list[bytes]:
    """RFC 9162 inclusion proof of entry ``index`` in the tree of ``tree_size`` entries."""
    if not 0 <= index < tree_size:
        await _with_stored_hashes(session, tree_size, lambda _perfect: None)  # names a size out of range first
        raise InvalidInput(f"Entry {index} is not in a tree of size {tree_size}.", code="index_out_of_range")
    return await _with_stored_hashes(
        session,
        tree_size,
        lambda perfect: merkle.inclusion_proof(index, tree_size, lambda a, b: merkle.range_hash(a, b, perfect)),
    )


async def inclusion_proofs(session: AsyncSession, indices: Sequence[int], tree_size: int) -> dict[int, list[bytes]]:
    """RFC 9162 inclusion proofs of several entries in the tree of ``tree_size`` entries, in one read of the
    subtree hashes they need (a page of events shown with their proofs costs one round trip, not one per event)."""
    wanted = sorted(set(indices))
    if any(not 0 <= index < tree_size for index in wanted):
        raise InvalidInput(f"Every entry must be in the tree of size {tree_size}.", code="index_out_of_range")
    if not wanted:
        return {}
    return await _with_stored_hashes(
        session,
        tree_size,
        lambda perfect: {
            index: merkle.inclusion_proof(index, tree_size, lambda a, b: merkle.range_hash(a, b, perfect)) for index in wanted
        },
    )


async def consistency_proof(session: AsyncSession, first: int, second: int) -> list[bytes]:
    """RFC 9162 consistency proof between the trees of ``first`` and ``second`` entries (0 < first <= second)."""
    if not 0 < first <= second:
        await _with_stored_hashes(session, second, lambda _perfect: None)
        raise InvalidInput("A consistency proof needs 0 < first <= second.", code="tree_size_out_of_range")
    return await _with_stored_hashes(
        session, second, lambda perfect: merkle.consistency_proof(first, second, lambda a, b: merkle.range_hash(a, b, perfect))
    )


async def read_entries(session: AsyncSession, start: int, end: int) -> list[LedgerEntry]:
    """Entries ``[start, end)``, at most :data:`MAX_ENTRIES_PER_READ` of them."""
    if start < 0 or end < start:
        raise InvalidInput("Give 0 <= start <= end.", code="invalid_range")
    end = min(end, start + MAX_ENTRIES_PER_READ)
    rows = await session.exec(
        select(LedgerEntry)
        .where(col(LedgerEntry.leaf_index) >= start, col(LedgerEntry.leaf_index) < end)
        .order_by(col(LedgerEntry.leaf_index))
    )
    return list(rows.all())


async def get_entry(session: AsyncSession, index: int) -> LedgerEntry:
    """One entry by index."""
    entry = await session.get(LedgerEntry, index)
    if entry is None:
        raise NotFound(f"No ledger entry {index}.", code="entry_not_found")
    return entry


async def latest_checkpoint(session: AsyncSession) -> LedgerCheckpoint | None:
    """The most recent signed checkpoint."""
    rows = await session.exec(
        select(LedgerCheckpoint).order_by(col(LedgerCheckpoint.size).desc(), col(LedgerCheckpoint.id).desc()).limit(1)
    )
    return rows.first()


async def list_checkpoints(session: AsyncSession) -> list[LedgerCheckpoint]:
    """Every checkpoint, oldest first."""
    rows = await session.exec(select(LedgerCheckpoint).order_by(col(LedgerCheckpoint.size), col(LedgerCheckpoint.id)))
    return list(rows.all())


async def sign_checkpoint(session: AsyncSession, signer: LedgerSigner) -> LedgerCheckpoint:
    """Sign the current tree head, unless the latest checkpoint already covers it. Commits."""
    size, root = await head(session)
    latest = await latest_checkpoint(session)
    if latest is not None and latest.size == size and latest.root_hash == root:
        return latest
    note = signer.sign(Checkpoint(origin=signer.origin, size=size, root=root))
    checkpoint = LedgerCheckpoint(size=size, root_hash=root, note=note)
    session.add(checkpoint)
    await session.commit()
    return checkpoint


@dataclass
class SelfCheck:
    """What the self-check found: ``ok`` and, if not, the first problem."""

    ok: bool
    checked_entries: int
    checkpoints: int
    problems: list[str] = field(default_factory=list)


async def _stored_leaves(session: AsyncSession, size: int, batch: int = 5000) -> Iterable[tuple[int, str, bytes]]:
    out: list[tuple[int, str, bytes]] = []
    for start in range(0, size, batch):
        rows = await session.exec(
            select(LedgerEntry.leaf_index, LedgerEntry.leaf_input, LedgerEntry.leaf_hash)
            .where(col(LedgerEntry.leaf_index) >= start, col(LedgerEntry.leaf_index) < min(size, start + batch))
            .order_by(col(LedgerEntry.leaf_index))
        )
        out.extend(rows.all())
    return out


async def _check_stored_nodes(session: AsyncSession, tree: merkle.MemoryTree) -> list[str]:
    """Every stored subtree hash inside the checked tree equals the one recomputed from the entries."""
    rows = await session.exec(select(LedgerNode.level, LedgerNode.position, LedgerNode.hash))
    seen = 0
    for level, position, value in rows.all():
        if (position + 1) << level > tree.size:
            continue  # beyond the last checkpoint: checked next time
        seen += 1
        if tree.perfect(level, position) != value:
            return [f"stored subtree hash at level {level}, position {position} disagrees with the entries"]
    expected = sum(tree.size >> level for level in range(1, tree.size.bit_length()))
    if seen != expected:
        return [f"{expected - seen} stored subtree hashes are missing"]
    return []


async def self_check(session: AsyncSession, signer: LedgerSigner) -> SelfCheck:
    """Recompute the log from the stored leaf inputs and check it against every signed checkpoint.

    Detects edited, deleted, inserted or reordered entries, stored hashes that disagree with their
    inputs, and checkpoints whose signature or root do not hold. Raises an alert when anything is off.
    """
    checkpoints = await list_checkpoints(session)
    size = checkpoints[-1].size if checkpoints else 0
    problems: list[str] = []
    roots: dict[int, bytes] = {}
    wanted = {cp.size for cp in checkpoints}
    tree = merkle.MemoryTree()
    if 0 in wanted:
        roots[0] = merkle.EMPTY_ROOT
    for expected_index, (index, leaf_input, stored_hash) in enumerate(await _stored_leaves(session, size)):
        if index != expected_index:
            problems.append(f"entry {expected_index} is missing")
            break
        data = leaf_input.encode()
        computed = merkle.leaf_hash(data)
        if computed != stored_hash:
            problems.append(f"entry {index}: stored leaf hash does not match its contents")
            break
        try:
            claimed_index = json.loads(data)["index"]
        except (ValueError, KeyError, TypeError):
            claimed_index = None
        if claimed_index != index:
            problems.append(f"entry {index}: its contents name index {claimed_index}")
            break
        tree.append_hash(computed)
        if tree.size in wanted:
            roots[tree.size] = tree.root()
    if not problems and tree.size < size:
        problems.append(f"entry {tree.size} is missing")
    if not problems:
        head_size, _root = await head(session)
        count, highest = (
            await session.exec(select(func.count(), func.max(LedgerEntry.leaf_index)).select_from(LedgerEntry))
        ).one()
        if count != head_size or (highest if highest is not None else -1) != head_size - 1:
            problems.append(f"the log holds {count} entries up to index {highest}, but its head says {head_size}")
    if not problems:
        for cp in checkpoints:
            try:
                opened = open_checkpoint(cp.note, signer.verifier, origin=signer.origin)
            except NoteError as exc:
                problems.append(f"checkpoint at size {cp.size}: {exc}")
                break
            if (opened.size, opened.root) != (cp.size, cp.root_hash):
                problems.append(f"checkpoint at size {cp.size}: stored size or root differ from the signed note")
                break
            if roots.get(cp.size) != cp.root_hash:
                problems.append(f"checkpoint at size {cp.size}: the stored entries do not give its root")
                break
        if not problems:
            problems.extend(await _check_stored_nodes(session, tree))
    result = SelfCheck(ok=not problems, checked_entries=tree.size, checkpoints=len(checkpoints), problems=problems)
    if problems:
        from supervision.alerts import raise_self_check_failure  # alerts records through this module

        await session.rollback()
        await raise_self_check_failure(session, problems, tree.size)
    return result


def entry_view(entry: LedgerEntry) -> dict[str, Any]:
    """An entry as the interface shows it: index, base64 of the exact hashed bytes, and the event decoded."""
    raw = entry.leaf_input.encode()
    return {"index": entry.leaf_index, "leaf_input": base64.b64encode(raw).decode(), "event": json.loads(raw)}


async def count_alerts(session: AsyncSession, rule: str) -> int:
    """How many alerts of ``rule`` were raised."""
    return int(
        (await session.exec(select(func.count()).select_from(SupervisionAlert).where(SupervisionAlert.rule == rule))).one()
    )


async def daily_growth(session: AsyncSession, days: int = 30) -> list[tuple[str, int]]:
    """Entries recorded per day over the last ``days`` days (oldest first), for the growth chart."""
    since = utcnow() - timedelta(days=days)
    day = func.date(LedgerEntry.occurred_at)
    rows = await session.exec(
        select(day, func.count()).where(col(LedgerEntry.occurred_at) >= since).group_by(day).order_by(day)  # type: ignore[call-overload]
    )
    return [(str(d), int(n)) for d, n in rows.all()]
