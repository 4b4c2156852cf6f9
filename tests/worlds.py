"""Worlds built once and put back: the permission matrices' set-ups, recorded the first time and replayed after.

A matrix runs one test per route x party, each on the same world (organisations, sessions, a small market with real
Parquet contents). Building that world costs 0.2-0.4 s (dozens of commits, DuckDB writing Parquet, a ledger
session); putting the same rows back is one transaction of a few milliseconds.

``replayed(engine, name, build)`` runs ``build`` on an empty database the first time and records what it wrote:
every row of every table and every file it wrote under the data folder. Next time (in any test, in any order) the
database is empty again (``tests/conftest.py`` empties it after every test), and the recorded rows are inserted as
they were, the files written back if a test changed or removed them, and the process's catalog search index
forgotten. So each test still starts from the whole world and nothing else, and a write acts on its own fresh copy:
no test sees what another did. ``build`` must return plain values (ids, tokens, detached records), which are
deep-copied for each test.

Recordings are per database and name, and are made again after ``MAX_AGE_SECONDS`` so that the sessions and
terms they hold (an hour at least) stay current however long the run takes. When the database is not empty (a test
built something first) ``build`` simply runs: nothing is recorded nor replayed.
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, Table, text

from marketplace.catalog.search_index import forget_indexes
from marketplace.models import metadata

T = TypeVar("T")

#: A recording older than this is made again (sessions made by the factories last an hour).
MAX_AGE_SECONDS = 600.0


@dataclass(frozen=True)
class Recording:
    """What a build wrote: the world it returned, its rows table by table (parents first) and its files."""

    world: Any
    rows: tuple[tuple[Table, tuple[dict[str, Any], ...]], ...]
    files: tuple[tuple[Path, bytes], ...]
    made_at: float


_recordings: dict[tuple[str, str], Recording] = {}


def replayed(engine: Engine, name: str, build: Callable[[], T], *, data_dir: Path | None = None) -> T:
    """The world ``build`` makes, built once per database and ``name`` and put back as it was afterwards.

    ``data_dir``: the folder whose new files (contents, proofs, exports) belong to the world.
    """
    key = (engine.url.render_as_string(hide_password=True), name)
    if not _is_empty(engine):
        return build()
    recording = _recordings.get(key)
    if recording is None or time.monotonic() - recording.made_at > MAX_AGE_SECONDS:
        before = _files(data_dir)
        world = build()
        after = _files(data_dir)
        written = tuple((path, path.read_bytes()) for path, stamp in sorted(after.items()) if before.get(path) != stamp)
        _recordings[key] = Recording(copy.deepcopy(world), _rows(engine), written, time.monotonic())
        return world
    _put_back(engine, recording)
    return copy.deepcopy(recording.world)  # type: ignore[no-any-return]


def _tables() -> list[Table]:
    return list(metadata.sorted_tables)


def _is_empty(engine: Engine) -> bool:
    probes = " OR ".join(f'EXISTS (SELECT 1 FROM "{table.name}")' for table in _tables())
    with engine.connect() as conn:
        return not conn.execute(text(f"SELECT 1 WHERE {probes}")).first()


def _rows(engine: Engine) -> tuple[tuple[Table, tuple[dict[str, Any], ...]], ...]:
    recorded = []
    with engine.connect() as conn:
        for table in _tables():
            rows = tuple(dict(row) for row in conn.execute(table.select()).mappings())
            if rows:
                recorded.append((table, rows))
    return tuple(recorded)


def _put_back(engine: Engine, recording: Recording) -> None:
    with engine.begin() as conn:
        for table, rows in recording.rows:
            conn.execute(table.insert(), [dict(row) for row in rows])
    for path, payload in recording.files:
        if not path.exists() or path.read_bytes() != payload:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(payload)
    # The index of the catalog kept by this process may describe a later state of the same ids.
    forget_indexes()


def _files(folder: Path | None) -> dict[Path, tuple[int, int]]:
    """Every file under ``folder`` with its size and modification time."""
    if folder is None or not folder.exists():
        return {}
    found = {}
    for root, _dirs, names in os.walk(folder):
        for filename in names:
            path = Path(root) / filename
            stat = path.stat()
            found[path] = (stat.st_size, stat.st_mtime_ns)
    return found
