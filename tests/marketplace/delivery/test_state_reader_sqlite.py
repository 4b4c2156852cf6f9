"""Delivery's SQLite state reader keeps answers while the database is unchanged (``PRAGMA data_version``), and sees
every commit: of another connection, of another process, and of a writer committing without pause while it reads.
It runs on a SQLite file of its own in both test profiles (the PostgreSQL reader is covered by ``test_access``)."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

from marketplace.delivery.services.runtime import StateReader

SQL = "SELECT status, version FROM licence_state WHERE id = ?"


def _database(path: Path) -> None:
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("CREATE TABLE licence_state (id INTEGER PRIMARY KEY, status TEXT, version INTEGER)")
    connection.execute("CREATE TABLE meter (id INTEGER PRIMARY KEY, n INTEGER)")
    connection.execute("INSERT INTO licence_state VALUES (1, 'granted', 0)")
    connection.close()


def _set(path: Path, status: str, version: int) -> None:
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("UPDATE licence_state SET status = ?, version = ? WHERE id = 1", (status, version))
    connection.close()


def _shape(rows: list[tuple[str, int]]) -> tuple[str, int]:
    return rows[0]


def test_kept_answers_are_not_read_again_until_another_connection_commits(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    _database(path)
    statements: list[str] = []

    async def main() -> list[tuple[str, int]]:
        reader = StateReader(f"sqlite+aiosqlite:///{path}")
        seen = [await reader.fetch(SQL, [1], _shape)]
        assert reader._sqlite is not None
        reader._sqlite.set_trace_callback(statements.append)
        seen.append(await reader.fetch(SQL, [1], _shape))
        seen.append(await reader.fetch(SQL, [1], _shape))
        kept_reads = [s for s in statements if s.startswith("SELECT")]
        _set(path, "suspended", 1)
        seen.append(await reader.fetch(SQL, [1], _shape))
        changed_reads = [s for s in statements if s.startswith("SELECT")]
        await reader.close()
        assert kept_reads == [], "an unchanged database is answered from the kept answer"
        assert len(changed_reads) == 1, "a commit elsewhere sends the next read to SQLite"
        return seen

    assert asyncio.run(main()) == [("granted", 0), ("granted", 0), ("granted", 0), ("suspended", 1)]


def test_a_commit_of_another_process_is_seen_by_the_next_read(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    _database(path)
    script = (
        "import sqlite3, sys\n"
        "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
        "c.execute(\"UPDATE licence_state SET status = 'revoked', version = 7 WHERE id = 1\")\n"
    )

    async def main() -> list[tuple[str, int]]:
        reader = StateReader(f"sqlite+aiosqlite:///{path}")
        try:
            seen = [await reader.fetch(SQL, [1], _shape), await reader.fetch(SQL, [1], _shape)]
            await asyncio.to_thread(subprocess.run, [sys.executable, "-c", script, str(path)], check=True, timeout=60)
            seen.append(await reader.fetch(SQL, [1], _shape))
            return seen
        finally:
            await reader.close()

    assert asyncio.run(main()) == [("granted", 0), ("granted", 0), ("revoked", 7)]


def test_reads_beside_a_busy_writer_never_go_back_in_time(tmp_path: Path) -> None:
    """A writer commits a rising version (and meter rows between) without pause; every read returns a version at
    least as new as the last commit finished before the read began."""
    path = tmp_path / "state.db"
    _database(path)
    committed = 0
    stop = threading.Event()

    def write() -> None:
        nonlocal committed
        connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        connection.execute("PRAGMA busy_timeout=10000")
        version = 0
        while not stop.is_set() and version < 400:
            version += 1
            connection.execute("INSERT INTO meter (n) VALUES (?)", (version,))
            connection.execute("UPDATE licence_state SET version = ? WHERE id = 1", (version,))
            committed = version
        connection.close()

    async def main() -> int:
        reader = StateReader(f"sqlite+aiosqlite:///{path}")
        checked = 0
        writer = threading.Thread(target=write)
        writer.start()
        try:
            while writer.is_alive():
                floor = committed
                _, version = await reader.fetch(SQL, [1], _shape)
                assert version >= floor
                checked += 1
        finally:
            stop.set()
            writer.join()
            await reader.close()
        return checked

    assert asyncio.run(main()) > 0
    final = sqlite3.connect(path).execute("SELECT version FROM licence_state").fetchone()[0]
    assert final == committed
