"""Ledger benchmark: group-commit appends, inclusion-proof latency at 1M leaves, offline verification.

Run from the repository root (README.md beside this file says what each figure means):

    .venv/bin/python bench/ledger/bench.py                       # SQLite, PostgreSQL and verification
    .venv/bin/python bench/ledger/bench.py --db sqlite --quick   # a small run, to check it works

PostgreSQL runs inside ``deploy/with_services.py``; without ``MARKET_TEST_POSTGRES_URL`` the script
re-executes itself through it. Everything it creates (databases, files) lives in a temporary
folder and a private server, both removed at the end.
"""

# ruff: noqa: S311  (seeded random numbers make the same events and indices on every run; nothing secret)

from __future__ import annotations

import argparse
import asyncio
import base64
import gc
import hashlib
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import insert, text, update
from sqlalchemy.engine import make_url
from sqlmodel import SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

from marketplace.core.db import Database, create_sync_engine
from marketplace.core.events import Actor, DomainEvent
from marketplace.migrations import upgrade
from supervision import merkle, services
from supervision.export import FORMAT, export_lines
from supervision.note import Checkpoint
from supervision.signing import LedgerSigner

REPO = Path(__file__).resolve().parents[2]
ORIGIN = "bench.market.example/ledger"
ENTRY = SQLModel.metadata.tables["ledger_entry"]
NODE = SQLModel.metadata.tables["ledger_node"]
HEAD = SQLModel.metadata.tables["ledger_head"]
#: Events recorded through ``record_many`` and bulk-loaded alike, to check the loader writes what the ledger writes.
CHECK_EVENTS = 1337
BASE_TIME = datetime(2026, 1, 1, tzinfo=UTC)
EVENT_KINDS = (
    ("licence.granted", "licence"),
    ("subscription.created", "subscription"),
    ("delivery.completed", "delivery"),
    ("payment.captured", "invoice"),
    ("listing.approved", "product"),
    ("sandbox.query_run", "query"),
)

#: (event type, occurred_at, leaf input) of one entry, as the ledger stores it.
Record = tuple[str, datetime, bytes]


def say(message: str) -> None:
    """A progress line on stderr (the results table goes to stdout)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def require(condition: bool, message: str) -> None:
    """Stop the benchmark when a correctness check fails: a fast wrong ledger is worth nothing."""
    if not condition:
        raise RuntimeError(f"check failed: {message}")


# --- events ---------------------------------------------------------------------------------------


def make_event(index: int, rng: random.Random) -> DomainEvent:
    """A plausible platform event (metadata only), about 300 bytes of canonical JSON."""
    kind, subject = EVENT_KINDS[index % len(EVENT_KINDS)]
    return DomainEvent(
        type=kind,
        actor=Actor("user", str(uuid.UUID(int=rng.getrandbits(128)))),
        orgs=(uuid.UUID(int=rng.getrandbits(128)),),
        subjects={subject: str(uuid.UUID(int=rng.getrandbits(128)))},
        payload={"amount_cents": rng.randrange(1_000_000), "rows": rng.randrange(100_000), "mode": "api"},
        occurred_at=BASE_TIME + timedelta(seconds=index),
    )


def make_events(start: int, stop: int) -> list[DomainEvent]:
    """Events ``start..stop-1``, the same on every run."""
    rng = random.Random(start)
    return [make_event(index, rng) for index in range(start, stop)]


def _records_chunk(bounds: tuple[int, int]) -> list[Record]:
    start, stop = bounds
    return [(e.type, e.occurred_at, services.canonical_event(start + i, e)) for i, e in enumerate(make_events(start, stop))]


def make_records(count: int, workers: int = 2, chunk: int = 50_000) -> list[Record]:
    """The entries of a ledger of ``count`` events, built with :func:`services.canonical_event` on every core."""
    bounds = [(start, min(count, start + chunk)) for start in range(0, count, chunk)]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return [record for part in pool.map(_records_chunk, bounds) for record in part]


def records_of(events: Sequence[DomainEvent]) -> list[Record]:
    """The entries the ledger writes for ``events`` appended to an empty log."""
    return [(e.type, e.occurred_at, services.canonical_event(i, e)) for i, e in enumerate(events)]


def frontier_json(tree: merkle.MemoryTree) -> str:
    """``ledger_head.frontier`` for the whole tree: its perfect subtrees, left to right, as ``record_many`` keeps them."""
    frontier, offset = [], 0
    for level in reversed(range(tree.size.bit_length())):
        if tree.size >> level & 1:
            frontier.append((level, tree.perfect(level, offset >> level)))
            offset += 1 << level
    return json.dumps([[level, value.hex()] for level, value in frontier])


def node_rows(tree: merkle.MemoryTree) -> Iterable[tuple[int, int, bytes]]:
    """Every ``ledger_node`` row of the tree: (level, position, hash) of each perfect subtree above the leaves."""
    for level in range(1, tree.size.bit_length()):
        for position in range(tree.size >> level):
            yield level, position, tree.perfect(level, position)


# --- backends -------------------------------------------------------------------------------------


class Backend:
    """A database kind: make a fresh migrated database, bulk-load a ledger into it, drop it."""

    name = ""

    def create(self, label: str) -> str:
        raise NotImplementedError

    def bulk_load(self, url: str, records: Sequence[Record], tree: merkle.MemoryTree) -> None:
        raise NotImplementedError

    def drop(self, url: str) -> None:
        raise NotImplementedError

    def settings(self) -> str:
        return ""


class SQLiteBackend(Backend):
    """SQLite files in the work folder, as the embedded default configures them (WAL, synchronous FULL)."""

    name = "sqlite"

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir

    def create(self, label: str) -> str:
        url = f"sqlite:///{self.workdir / label}.db"
        upgrade(url)
        return url

    def bulk_load(self, url: str, records: Sequence[Record], tree: merkle.MemoryTree) -> None:
        # Core inserts through the ledger's own column types, so stored values (times above all) are the ORM's.
        engine = create_sync_engine(url)
        try:
            with engine.begin() as conn:
                for start in range(0, len(records), 20_000):
                    rows = [
                        {
                            "leaf_index": index,
                            "event_type": kind,
                            "occurred_at": when,
                            "leaf_input": leaf.decode(),
                            "leaf_hash": tree.perfect(0, index),
                        }
                        for index, (kind, when, leaf) in enumerate(records[start : start + 20_000], start)
                    ]
                    conn.execute(insert(ENTRY), rows)
                nodes = [{"level": level, "position": position, "hash": value} for level, position, value in node_rows(tree)]
                for start in range(0, len(nodes), 50_000):
                    conn.execute(insert(NODE), nodes[start : start + 50_000])
                conn.execute(update(HEAD).where(HEAD.c.id == 1).values(size=tree.size, frontier=frontier_json(tree)))
        finally:
            engine.dispose()

    def drop(self, url: str) -> None:
        database = make_url(url).database or ""
        for suffix in ("", "-wal", "-shm"):
            Path(database + suffix).unlink(missing_ok=True)

    def settings(self) -> str:
        engine = create_sync_engine(f"sqlite:///{self.workdir / 'settings'}.db")
        try:
            with engine.connect() as conn:
                shown: list[Any] = [
                    conn.exec_driver_sql(f"PRAGMA {name}").scalar() for name in ("journal_mode", "synchronous", "busy_timeout")
                ]
                version = conn.exec_driver_sql("SELECT sqlite_version()").scalar()
        finally:
            engine.dispose()
            self.drop(f"sqlite:///{self.workdir / 'settings'}.db")
        synchronous = ("OFF", "NORMAL", "FULL", "EXTRA")[int(shown[1])]
        return f"SQLite {version}, as marketplace.core.db connects: journal_mode={shown[0]}, synchronous={synchronous}, busy_timeout={shown[2]} ms"


class PostgresBackend(Backend):
    """Databases on the private server of ``deploy/with_services.py``.

    That server runs with fsync and full_page_writes off (set on its command line, so they cannot be
    switched back on from SQL): commits do not wait for the disk. ``synchronous_commit`` is per
    database, so it is put back to its default (on) for every database made here.
    """

    name = "postgres"

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url

    def _url(self, database: str) -> str:
        return str(make_url(self.admin_url).set(database=database).render_as_string(hide_password=False))

    def create(self, label: str) -> str:
        name = f"bench_{label}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            conn.execute(f'CREATE DATABASE "{name}"')
            conn.execute(f'ALTER DATABASE "{name}" SET synchronous_commit = on')
        url = self._url(name)
        upgrade(url)
        return url

    def bulk_load(self, url: str, records: Sequence[Record], tree: merkle.MemoryTree) -> None:
        with psycopg.connect(url) as conn:
            with conn.cursor() as cur:
                columns = "leaf_index, event_type, occurred_at, leaf_input, leaf_hash"
                with cur.copy(f"COPY ledger_entry ({columns}) FROM STDIN") as copy:
                    for index, (kind, when, leaf) in enumerate(records):
                        copy.write_row((index, kind, when, leaf.decode(), tree.perfect(0, index)))
                with cur.copy("COPY ledger_node (level, position, hash) FROM STDIN") as copy:
                    for row in node_rows(tree):
                        copy.write_row(row)
                cur.execute("UPDATE ledger_head SET size = %s, frontier = %s WHERE id = 1", (tree.size, frontier_json(tree)))
            conn.commit()
            conn.autocommit = True
            conn.execute("VACUUM ANALYZE")  # what autovacuum does soon after a bulk insert, done now so every run is alike

    def drop(self, url: str) -> None:
        name = make_url(url).database
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def settings(self) -> str:
        names = ("server_version", "fsync", "full_page_writes", "shared_buffers")
        with psycopg.connect(self.admin_url) as conn:
            shown = {name: conn.execute(f"SHOW {name}").fetchone()[0] for name in names}  # type: ignore[index]
        return (
            f"PostgreSQL {shown['server_version']} (deploy/with_services.py: fsync={shown['fsync']}, "
            f"full_page_writes={shown['full_page_writes']}, shared_buffers={shown['shared_buffers']}), synchronous_commit=on"
        )


# --- checks ---------------------------------------------------------------------------------------


def dump_ledger(url: str) -> tuple[list[Any], list[Any], list[Any]]:
    """The three ledger tables, row by row, as the database holds them."""
    engine = create_sync_engine(url)
    try:
        with engine.connect() as conn:
            tables = (
                "SELECT leaf_index, event_type, occurred_at, leaf_input, leaf_hash FROM ledger_entry ORDER BY leaf_index",
                "SELECT level, position, hash FROM ledger_node ORDER BY level, position",
                "SELECT id, size, frontier FROM ledger_head ORDER BY id",
            )
            dumped = [
                [tuple(bytes(v) if isinstance(v, memoryview) else v for v in row) for row in conn.execute(text(q))]
                for q in tables
            ]
    finally:
        engine.dispose()
    return dumped[0], dumped[1], dumped[2]


async def record_in_batches(url: str, events: Sequence[DomainEvent], batch: int) -> None:
    """Append ``events`` with ``record_many``, one transaction per batch."""
    database = Database(url, pool_size=1)
    try:
        for start in range(0, len(events), batch):
            async with database.session() as session:
                await services.record_many(session, events[start : start + batch])
                await session.commit()
    finally:
        await database.dispose()


def check_loader(backend: Backend) -> None:
    """The bulk loader must leave exactly the rows that ``record_many`` leaves for the same events."""
    events = make_events(0, CHECK_EVENTS)
    recorded = backend.create("recorded")
    loaded = backend.create("loaded")
    try:
        asyncio.run(record_in_batches(recorded, events, 97))
        records = records_of(events)
        backend.bulk_load(loaded, records, merkle.MemoryTree([merkle.leaf_hash(leaf) for _k, _w, leaf in records]))
        expected, got = dump_ledger(recorded), dump_ledger(loaded)
        for table, want, have in zip(("ledger_entry", "ledger_node", "ledger_head"), expected, got, strict=True):
            require(want == have, f"{backend.name}: bulk-loaded {table} differs from what record_many writes")
    finally:
        backend.drop(recorded)
        backend.drop(loaded)


async def check_proofs(url: str, tree: merkle.MemoryTree, rng: random.Random) -> None:
    """The loaded ledger serves the head, roots and proofs the in-memory tree gives."""
    size = tree.size
    database = Database(url, pool_size=1)
    try:
        async with database.session() as session:
            require(await services.head(session) == (size, tree.root()), "head of the loaded ledger")
            for tree_size in (1, size // 2 + 1, size):
                require(await services.root_at(session, tree_size) == tree.root(tree_size), f"root at {tree_size}")
            for index in [0, size - 1, *rng.sample(range(size), 20)]:
                path = await services.inclusion_proof(session, index, size)
                require(path == tree.inclusion_proof(index, size), f"inclusion proof of {index}")
                merkle.verify_inclusion(index, size, tree.perfect(0, index), path, tree.root())
            for first in (1, rng.randrange(1, size), size - 1):
                proof = await services.consistency_proof(session, first, size)
                merkle.verify_consistency(first, size, tree.root(first), tree.root(), proof)
    finally:
        await database.dispose()


async def check_appended(url: str, tree: merkle.MemoryTree) -> int:
    """After concurrent appends: contiguous entries, right hashes, and a head, nodes and proofs that agree with them."""
    start = tree.size
    database = Database(url, pool_size=1)
    try:
        async with database.session() as session:
            size, root = await services.head(session)
            rows = (
                await session.exec(  # type: ignore[call-overload]
                    text("SELECT leaf_index, leaf_input, leaf_hash FROM ledger_entry WHERE leaf_index >= :s ORDER BY leaf_index"),
                    params={"s": start},
                )
            ).all()
            require([row[0] for row in rows] == list(range(start, size)), "appended entries are contiguous")
            for index, leaf_input, leaf_hash in rows:
                require(bytes(leaf_hash) == merkle.leaf_hash(leaf_input.encode()), f"leaf hash of {index}")
                require(json.loads(leaf_input)["index"] == index, f"entry {index} names its own index")
            whole = merkle.MemoryTree([tree.perfect(0, i) for i in range(start)] + [bytes(row[2]) for row in rows])
            require(root == whole.root(), "head root after appends")
            nodes = (await session.exec(text("SELECT count(*) FROM ledger_node"))).one()[0]  # type: ignore[call-overload]
            require(nodes == sum(size >> level for level in range(1, size.bit_length())), "number of stored subtree hashes")
            for index in random.Random(size).sample(range(start, size), min(20, size - start)):
                require(await services.inclusion_proof(session, index, size) == whole.inclusion_proof(index), f"proof of {index}")
            proof = await services.consistency_proof(session, start, size)
            merkle.verify_consistency(start, size, tree.root(), root, proof)
    finally:
        await database.dispose()
    return size - start


# --- measurements ---------------------------------------------------------------------------------


def percentile(samples: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


Prover = Callable[[AsyncSession, int, int], Awaitable[list[bytes]]]


async def time_proofs(url: str, size: int, count: int, provers: Sequence[Prover]) -> list[list[float]]:
    """Milliseconds of ``prove(session, index, size)`` for ``count`` random indices, for each prover.

    One warm session; the provers take turns on the same indices, so a slow moment of the machine
    falls on both alike.
    """
    rng = random.Random(count)
    database = Database(url, pool_size=1)
    samples: list[list[float]] = [[] for _ in provers]
    try:
        async with database.session() as session:
            for _ in range(200):  # warm: connection, statement caches
                for prove in provers:
                    await prove(session, rng.randrange(size), size)
            for index in [rng.randrange(size) for _ in range(count)]:
                for prove, times in zip(provers, samples, strict=True):
                    begin = time.perf_counter_ns()
                    await prove(session, index, size)
                    times.append((time.perf_counter_ns() - begin) / 1e6)
    finally:
        await database.dispose()
    return samples


@dataclass
class Appends:
    """What one append run did."""

    events: int
    transactions: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.events / self.seconds


async def time_appends(url: str, events: Sequence[DomainEvent], writers: int, batch: int, limit_s: float) -> Appends:
    """``writers`` concurrent tasks append ``events`` in transactions of ``batch`` (``record`` when 1); stops at ``limit_s``."""
    database = Database(url, pool_size=writers)

    async def transaction(part: Sequence[DomainEvent]) -> None:
        async with database.session() as session:
            if len(part) == 1:
                await services.record(session, part[0])
            else:
                await services.record_many(session, part)
            await session.commit()

    async def writer(share: Sequence[DomainEvent], deadline: float) -> tuple[int, int]:
        done = transactions = 0
        for start in range(0, len(share), batch):
            if time.perf_counter() > deadline:
                break
            part = share[start : start + batch]
            await transaction(part)
            done, transactions = done + len(part), transactions + 1
        return done, transactions

    try:
        shares = [events[k::writers] for k in range(writers)]
        await asyncio.gather(*(transaction([share[0]]) for share in shares))  # open every connection first
        shares = [share[1:] for share in shares]
        begin = time.perf_counter()
        counts = await asyncio.gather(*(writer(share, begin + limit_s) for share in shares))
        seconds = time.perf_counter() - begin
    finally:
        await database.dispose()
    return Appends(sum(c[0] for c in counts), sum(c[1] for c in counts), seconds)


@dataclass
class BackendResult:
    """Figures for one database."""

    name: str
    settings: str
    load_s: float = 0.0
    proofs_ms: list[float] = field(default_factory=list)
    group: Appends | None = None
    single: Appends | None = None


def run_backend(
    backend: Backend, records: Sequence[Record], tree: merkle.MemoryTree, options: argparse.Namespace
) -> BackendResult:
    """Loader check, bulk load, proof check and timing, then appends (group commit and one per transaction) and their check."""
    result = BackendResult(backend.name, backend.settings())
    say(f"{backend.name}: checking the bulk loader against record_many ({CHECK_EVENTS} events)")
    check_loader(backend)
    url = backend.create("ledger")
    try:
        say(f"{backend.name}: bulk-loading {tree.size:,} entries")
        begin = time.perf_counter()
        backend.bulk_load(url, records, tree)
        result.load_s = time.perf_counter() - begin
        say(f"{backend.name}: loaded in {result.load_s:.1f} s; checking head, roots and proofs against MemoryTree")
        rng = random.Random(9162)
        asyncio.run(check_proofs(url, tree, rng))
        say(f"{backend.name}: timing {options.proofs} inclusion proofs at tree size {tree.size:,}")
        (result.proofs_ms,) = asyncio.run(time_proofs(url, tree.size, options.proofs, [services.inclusion_proof]))
        fresh = make_events(tree.size, tree.size + options.appends + options.single + 2 * options.writers)
        group, single = fresh[: options.appends + options.writers], fresh[options.appends + options.writers :]
        say(f"{backend.name}: {options.appends:,} appends, {options.writers} writers, record_many of {options.batch} + commit")
        result.group = asyncio.run(time_appends(url, group, options.writers, options.batch, options.limit))
        say(f"{backend.name}: {result.group.rate:,.0f} events/s; now {options.single:,} appends of one event per transaction")
        result.single = asyncio.run(time_appends(url, single, options.writers, 1, options.limit))
        say(f"{backend.name}: {result.single.rate:,.0f} events/s; checking the appended ledger")
        appended = asyncio.run(check_appended(url, tree))
        require(appended == result.group.events + result.single.events + 2 * options.writers, "every append is in the log")
    finally:
        backend.drop(url)
    return result


# --- offline verification -------------------------------------------------------------------------


def export_bytes(
    records: Sequence[Record], tree: merkle.MemoryTree, signer: LedgerSigner, sizes: Sequence[int]
) -> Iterable[bytes]:
    """A ``market-ledger-export/1`` file, byte for byte as :func:`supervision.export.export_lines` writes it."""
    header = {"format": FORMAT, "origin": signer.origin, "vkey": signer.vkey, "size": tree.size, "checkpoints": len(sizes)}
    yield (json.dumps(header, separators=(",", ":")) + "\n").encode()
    for start in range(0, len(records), 5000):
        chunk = records[start : start + 5000]
        yield "".join(
            f'{{"index":{index},"leaf_input":"{base64.b64encode(leaf).decode()}"}}\n'
            for index, (_k, _w, leaf) in enumerate(chunk, start)
        ).encode()
    for size in sizes:
        note = signer.sign(Checkpoint(origin=signer.origin, size=size, root=tree.root(size)))
        yield (json.dumps({"checkpoint": note}, ensure_ascii=False, separators=(",", ":")) + "\n").encode()


async def _exported(url: str, signer: LedgerSigner) -> bytes:
    database = Database(url, pool_size=1)
    try:
        async with database.session() as session:
            await services.sign_checkpoint(session, signer)
            await session.commit()
        return b"".join([line async for line in export_lines(database.session, signer)])
    finally:
        await database.dispose()


@dataclass
class Timed:
    """Wall and CPU seconds of one run (CPU counts the processes it waited for, not their fork server's children)."""

    wall: float
    cpu: float


def verify_cli(path: Path, *extra: str) -> tuple[Timed, subprocess.CompletedProcess[bytes]]:
    """``python -m supervision.verify FILE --quiet``, interpreter start and worker processes included."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    begin = time.perf_counter()
    command = [sys.executable, "-m", "supervision.verify", str(path), "--quiet", *extra]
    done = subprocess.run(command, cwd=REPO, capture_output=True, check=False)  # noqa: S603
    wall = time.perf_counter() - begin
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return Timed(wall, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime), done


def verify_has_jobs() -> bool:
    """Whether the verifier takes ``--jobs`` (then it is also timed on one process)."""
    command = [sys.executable, "-m", "supervision.verify", "--help"]
    return b"--jobs" in subprocess.run(command, cwd=REPO, capture_output=True, check=False).stdout  # noqa: S603


def check_export_and_verifier(workdir: Path, signer: LedgerSigner) -> None:
    """The file written here equals the platform's export, the verifier accepts it and rejects a tampered copy."""
    backend = SQLiteBackend(workdir)
    url = backend.create("export-check")
    try:
        events = make_events(0, CHECK_EVENTS)
        asyncio.run(record_in_batches(url, events, 97))
        records = records_of(events)
        tree = merkle.MemoryTree([merkle.leaf_hash(leaf) for _k, _w, leaf in records])
        exported = asyncio.run(_exported(url, signer))
    finally:
        backend.drop(url)
    written = b"".join(export_bytes(records, tree, signer, [tree.size]))
    require(written == exported, "the benchmark's export file differs from supervision.export")
    good, bad = workdir / "small.jsonl", workdir / "tampered.jsonl"
    good.write_bytes(written)
    lines = written.split(b"\n")
    entry = json.loads(lines[500])
    leaf = base64.b64decode(entry["leaf_input"]).replace(b'"mode":"api"', b'"mode":"apx"')
    lines[500] = json.dumps(
        {"index": entry["index"], "leaf_input": base64.b64encode(leaf).decode()}, separators=(",", ":")
    ).encode()
    bad.write_bytes(b"\n".join(lines))
    _timed, done = verify_cli(good)
    require(done.returncode == 0, f"verify rejects a good export: {done.stdout!r} {done.stderr!r}")
    _timed, done = verify_cli(bad)
    require(done.returncode != 0, "verify accepts an export with an edited entry")


def bare_hashing(leaves: Sequence[bytes]) -> tuple[Timed, bytes]:
    """Bare hashlib over every leaf input, then the RFC 9162 tree over the leaf hashes."""
    sha256 = hashlib.sha256
    begin, cpu = time.perf_counter(), time.process_time()
    hashes = [sha256(b"\x00" + leaf).digest() for leaf in leaves]
    root = merkle.root_of(hashes)
    return Timed(time.perf_counter() - begin, time.process_time() - cpu), root


def read_and_decode(path: Path) -> Timed:
    """Only reading the export, parsing each line and decoding base64: no hashing (where a verifier's time goes)."""
    begin, cpu = time.perf_counter(), time.process_time()
    with path.open("rb") as lines:
        next(lines)
        for line in lines:
            document = json.loads(line)
            if "leaf_input" in document:
                base64.b64decode(document["leaf_input"])
    return Timed(time.perf_counter() - begin, time.process_time() - cpu)


@dataclass
class VerifyResult:
    """Offline verification figures (medians of ``repeat`` runs)."""

    entries: int
    file_mb: float
    cli: list[Timed] = field(default_factory=list)
    serial: list[Timed] = field(default_factory=list)
    bare: list[Timed] = field(default_factory=list)
    parse: list[Timed] = field(default_factory=list)
    startup: Timed | None = None
    missing: str = ""

    @staticmethod
    def median(runs: Sequence[Timed]) -> Timed:
        return Timed(statistics.median(r.wall for r in runs), statistics.median(r.cpu for r in runs))

    def ratio(self, runs: Sequence[Timed]) -> float:
        return self.median(runs).wall / self.median(self.bare).wall


def run_verify(records: Sequence[Record], tree: merkle.MemoryTree, workdir: Path, repeat: int) -> VerifyResult:
    """Time ``python -m supervision.verify`` on an export of every entry against bare hashing of the same leaves."""
    result = VerifyResult(entries=tree.size, file_mb=0.0)
    if not (REPO / "supervision" / "verify.py").exists():
        result.missing = "supervision/verify.py does not exist"
        return result
    signer = LedgerSigner(ORIGIN, Ed25519PrivateKey.generate())
    say("verify: checking the export writer against supervision.export and the verifier on a tampered copy")
    check_export_and_verifier(workdir, signer)
    path = workdir / "export.jsonl"
    sizes = sorted({tree.size // 4, tree.size // 2, 3 * tree.size // 4, tree.size} - {0})
    say(f"verify: writing an export of {tree.size:,} entries with checkpoints at {sizes}")
    with path.open("wb") as out:
        for chunk in export_bytes(records, tree, signer, sizes):
            out.write(chunk)
    result.file_mb = path.stat().st_size / 1e6
    leaves = [leaf for _k, _w, leaf in records]
    serial = verify_has_jobs()
    result.startup, _done = verify_cli(path, "--help")
    for run in range(repeat):
        say(f"verify: run {run + 1} of {repeat}")
        for extra, runs in [((), result.cli), *([(("--jobs", "1"), result.serial)] if serial else [])]:
            timed, done = verify_cli(path, *extra)
            require(done.returncode == 0, f"verify rejects the export: {done.stdout[-500:]!r} {done.stderr[-500:]!r}")
            runs.append(timed)
        timed, root = bare_hashing(leaves)
        require(root == tree.root(), "bare hashing gives the tree's root")
        result.bare.append(timed)
        result.parse.append(read_and_decode(path))
    path.unlink()
    return result


# --- report ---------------------------------------------------------------------------------------


def table(results: Sequence[BackendResult], verify: VerifyResult | None, options: argparse.Namespace, size: int) -> str:
    """The figures as a Markdown table."""
    names = [r.name for r in results]
    lines = [f"| measure | {' | '.join(names)} | target |", f"|---|{'---:|' * len(names)}---|"]

    def row(label: str, values: Iterable[str], target: str = "") -> None:
        lines.append(f"| {label} | {' | '.join(values)} | {target} |")

    if results:
        group = [r.group for r in results]
        single = [r.single for r in results]
        row(
            f"appends/s, group commit ({options.writers} writers, `record_many` of {options.batch} + commit)",
            (f"**{a.rate:,.0f}** {'✅' if a.rate >= 2000 else '❌'}" if a else "-" for a in group),
            ">= 2,000/s",
        )
        row(
            "  events / transactions / seconds",
            (f"{a.events:,} / {a.transactions:,} / {a.seconds:.1f}" if a else "-" for a in group),
        )
        row(
            f"appends/s, one event per transaction ({options.writers} writers, `record` + commit)",
            (f"{a.rate:,.0f} ({a.events:,} in {a.seconds:.1f} s)" if a else "-" for a in single),
            "comparison",
        )
        row(f"inclusion proof p50 (ms), tree size {size:,}", (f"{percentile(r.proofs_ms, 0.50):.3f}" for r in results))
        p99 = [percentile(r.proofs_ms, 0.99) for r in results]
        row(
            f"inclusion proof **p99** (ms), {len(results[0].proofs_ms):,} random indices",
            (f"**{v:.3f}** {'✅' if v <= 1.0 else '❌'}" for v in p99),
            "<= 1 ms",
        )
        row("inclusion proof max (ms)", (f"{max(r.proofs_ms):.3f}" for r in results))
        row(f"bulk load of {size:,} entries + subtree hashes (s, setup)", (f"{r.load_s:.1f}" for r in results))
    out = "\n".join(lines)
    if verify is not None:
        out += "\n\n"
        if verify.missing:
            out += f"Offline verification: not measured ({verify.missing}).\n"
        else:
            cli, bare, parse = (verify.median(runs) for runs in (verify.cli, verify.bare, verify.parse))
            ok = "✅" if verify.ratio(verify.cli) <= 2.0 else "❌"
            rows = [
                f"| offline verification of {verify.entries:,} entries ({verify.file_mb:.0f} MB export), median of {len(verify.cli)} | wall s | CPU s | target |",
                "|---|---:|---:|---|",
                f"| `python -m supervision.verify FILE --quiet` (whole process, its default jobs) | {cli.wall:.2f} | n/a (a) | |",
                f"| bare `hashlib.sha256(b'\\x00' + leaf)` + `merkle.root_of`, in memory, one core | {bare.wall:.2f} | {bare.cpu:.2f} | |",
                f"| **ratio** verify / bare hashing (wall) | **{verify.ratio(verify.cli):.2f}x** {ok} | | <= 2x |",
            ]
            if verify.serial:
                one = verify.median(verify.serial)
                rows += [
                    f"| (info) `... --quiet --jobs 1` (one process) | {one.wall:.2f} | {one.cpu:.2f} | |",
                    f"| (info) ratio with `--jobs 1` / bare hashing | {verify.ratio(verify.serial):.2f}x | | |",
                ]
            if verify.startup is not None:
                start = verify.startup
                rows.append(f"| (info) of which interpreter start + imports (`--help`) | {start.wall:.2f} | {start.cpu:.2f} | |")
            rows.append(
                f"| (info) reading the file + `json.loads` + base64 per line, no hashing | {parse.wall:.2f} | {parse.cpu:.2f} | |"
            )
            out += "\n".join(rows)
            out += (
                "\n\n(a) the verifier's worker processes are forked by a fork server, whose CPU time is not"
                " reported to this process; wall time is the measure.\n"
            )
    for r in results:
        out += f"\n{r.name}: {r.settings}"
    return out + "\n"


# --- main -----------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", choices=("sqlite", "postgres", "both"), default="both", help="databases to measure (both)")
    parser.add_argument("--leaves", type=int, help="ledger size for proofs and verification (1,000,000; --quick: 50,000)")
    parser.add_argument("--quick", action="store_true", help="small sizes, to check the benchmark runs")
    parser.add_argument("--appends", type=int, help="events appended with group commit (20,000; --quick: 2,000)")
    parser.add_argument("--single", type=int, help="events appended one per transaction (2,000; --quick: 400)")
    parser.add_argument("--writers", type=int, default=4, help="concurrent appending tasks (4)")
    parser.add_argument("--batch", type=int, default=50, help="events per group-commit transaction (50)")
    parser.add_argument("--proofs", type=int, help="inclusion proofs timed (2,000; --quick: 300)")
    parser.add_argument("--repeat", type=int, help="verification runs, median reported (3; --quick: 1)")
    parser.add_argument("--limit", type=float, default=120.0, help="seconds after which an append run stops")
    parser.add_argument("--no-verify", action="store_true", help="skip the offline verification part")
    parser.add_argument("--workdir", type=Path, help="where files go (default: a temporary folder, removed)")
    options = parser.parse_args(argv)
    quick = options.quick
    defaults = {
        "leaves": (1_000_000, 50_000),
        "appends": (20_000, 2_000),
        "single": (2_000, 400),
        "proofs": (2_000, 300),
        "repeat": (3, 1),
    }
    for name, (full, small) in defaults.items():
        if getattr(options, name) is None:
            setattr(options, name, small if quick else full)
    return options


def main(argv: Sequence[str]) -> int:
    options = parse_args(argv)
    admin_url = os.environ.get("MARKET_TEST_POSTGRES_URL")
    if options.db != "sqlite" and not admin_url:
        say("no MARKET_TEST_POSTGRES_URL: running again inside deploy/with_services.py")
        command = [sys.executable, str(REPO / "deploy" / "with_services.py"), "--no-redis", "--"]
        os.execv(sys.executable, [*command, sys.executable, str(Path(__file__).resolve()), *argv])  # noqa: S606
    workdir = options.workdir or Path(tempfile.mkdtemp(prefix="ledger-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    backends: list[Callable[[], Backend]] = []
    if options.db in ("sqlite", "both"):
        backends.append(lambda: SQLiteBackend(workdir))
    if options.db in ("postgres", "both"):
        backends.append(lambda: PostgresBackend(str(admin_url)))
    started = time.perf_counter()
    try:
        say(f"building {options.leaves:,} canonical entries with services.canonical_event")
        records = make_records(options.leaves)
        tree = merkle.MemoryTree([merkle.leaf_hash(leaf) for _k, _w, leaf in records])
        gc.collect()
        gc.freeze()  # a server does not hold a million leaves in memory: keep them out of the timed code's collections
        results = []
        for make_backend in backends:
            results.append(run_backend(make_backend(), records, tree, options))
        verify = None if options.no_verify else run_verify(records, tree, workdir, options.repeat)
    finally:
        if options.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    print(
        f"\nLedger benchmark, {stamp}, {os.cpu_count()} cores, Python {sys.version.split()[0]}, "
        f"{time.perf_counter() - started:.0f} s, load average at the end {load}\n"
    )
    print(table(results, verify, options, options.leaves))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
