"""The masked projection of a product, materialised once per (contents, masking, key) into a DuckDB file.

Every delivery mode reads a product's projection (``licensing.privacy.projection_query``) over its resource's
current Parquet version. Computing it costs a full read of the contents and two SHA-256 per pseudonymised value,
so it is done once and kept: a DuckDB database file ``<product>-<key>.duckdb`` under ``var/cache/projections``
holding one table ``data`` with the delivered columns, in the contents' row order (DuckDB's ``rowid`` is the row
number, which cursors point at).

The file name is content-addressed: the key is a hash of the Parquet file's content hash and location, the
resource's field list, the product's masking rules and a digest of the pseudonymisation key. Whatever changes
what is delivered changes the key, so a cached file is never stale; it is merely unused once the product moves
on (older files of the product are removed when a new one is built).

Readers open the file read-only with external access switched off (no file, extension or network reads), the
configuration locked, one thread and the sandbox's memory limit; each query runs on a cursor of its own.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import threading
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import duckdb

from licensing.privacy import projection_query
from licensing.schemas import FieldSpec, MaskingRule
from marketplace.delivery.sandbox import numeric_columns

log = logging.getLogger(__name__)

TABLE = "data"
#: How many projection files stay open in one process.
OPEN_FILES = 32


@dataclass(frozen=True)
class Masking:
    """A resource's fields and a product's masking rules, parsed once per distinct text."""

    fields: tuple[FieldSpec, ...]
    rules: tuple[MaskingRule, ...]
    #: The delivered columns, in field order.
    columns: tuple[str, ...]
    #: Delivered columns holding numbers (the sandbox's sum/avg/... may read them).
    numeric: tuple[str, ...]
    #: A digest of both texts (part of the cache key).
    digest: str


@lru_cache(maxsize=512)
def parse_masking(fields_json: str, rules_json: str) -> Masking:
    """Parse a resource's ``fields_json`` and a product's ``rules_json`` (memoised by their text)."""
    fields = tuple(FieldSpec.model_validate(f) for f in json.loads(fields_json))
    rules = tuple(MaskingRule.model_validate(r) for r in json.loads(rules_json))
    delivered = {r.field for r in rules if r.action.value != "drop"}
    columns = tuple(f.name for f in fields if f.name in delivered)
    digest = hashlib.sha256(f"{fields_json}\x1f{rules_json}".encode()).hexdigest()
    return Masking(fields, rules, columns, numeric_columns(fields, rules), digest)


@dataclass(frozen=True)
class ProjectionSpec:
    """What a product delivers: the Parquet contents of its resource's current version, masked by its rules."""

    product_id: uuid.UUID
    parquet_path: Path
    content_hash: str
    masking: Masking
    key_digest: str = field(repr=False)

    @functools.cached_property
    def cache_key(self) -> str:
        """Content address of the materialised projection."""
        text = "\x1f".join((str(self.parquet_path), self.content_hash, self.masking.digest, self.key_digest))
        return hashlib.sha256(text.encode()).hexdigest()[:32]


@dataclass
class Projection:
    """An open, read-only materialised projection: its connection and column types."""

    spec: ProjectionSpec
    connection: duckdb.DuckDBPyConnection
    #: Column name -> DuckDB type name (e.g. ``VARCHAR``, ``BIGINT``, ``DECIMAL(10,2)``).
    types: dict[str, str]
    rows: int

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A connection of its own for one query (DuckDB connections are not shared between threads)."""
        return self.connection.cursor()


def key_digest(key: bytes) -> str:
    """A digest of the pseudonymisation key, so that a new key gives new cache files (the key is not derivable)."""
    return hashlib.sha256(b"market.projection-cache\x1f" + key).hexdigest()[:32]


class ProjectionCache:
    """Materialised projections under ``root``, opened read-only and kept open (at most ``OPEN_FILES``)."""

    def __init__(self, root: Path, key: bytes, *, memory_mb: int = 512, threads: int = 1) -> None:
        self.root = root
        self._key = key
        self._memory_mb = memory_mb
        self._threads = threads
        self._open: OrderedDict[str, Projection] = OrderedDict()
        self._lock = threading.Lock()
        self._building: dict[str, threading.Lock] = {}

    def path_of(self, spec: ProjectionSpec) -> Path:
        """Where ``spec``'s projection is (or will be) kept."""
        return self.root / f"{spec.product_id}-{spec.cache_key}.duckdb"

    def opened(self, spec: ProjectionSpec) -> Projection | None:
        """The projection of ``spec`` if it is already open (never blocks: safe on the event loop)."""
        with self._lock:
            return self._open.get(spec.cache_key)

    def open(self, spec: ProjectionSpec) -> Projection:
        """The materialised projection of ``spec``, built first if needed (blocking: call it off the event loop)."""
        cache_key = spec.cache_key
        with self._lock:
            found = self._open.get(cache_key)
            if found is not None:
                self._open.move_to_end(cache_key)
                return found
            building = self._building.setdefault(cache_key, threading.Lock())
        with building:
            with self._lock:
                found = self._open.get(cache_key)
                if found is not None:
                    return found
            path = self.path_of(spec)
            if not path.exists():
                self._build(spec, path)
            projection = self._connect(spec, path)
            with self._lock:
                self._open[cache_key] = projection
                while len(self._open) > OPEN_FILES:
                    self._open.popitem(last=False)
                self._building.pop(cache_key, None)
            return projection

    def _build(self, spec: ProjectionSpec, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        query = projection_query(spec.parquet_path, spec.masking.fields, spec.masking.rules, self._key)
        try:
            with duckdb.connect(str(temporary)) as con:
                con.execute(f"SET memory_limit = '{max(self._memory_mb, 256)}MB'")
                con.execute(f"CREATE TABLE {TABLE} AS {query.sql}", query.parameters)
                con.execute("CHECKPOINT")
            os.replace(temporary, path)
        finally:
            temporary.unlink(missing_ok=True)
            Path(str(temporary) + ".wal").unlink(missing_ok=True)
        for older in path.parent.glob(f"{spec.product_id}-*.duckdb"):
            if older != path:
                older.unlink(missing_ok=True)
        log.info("materialised the projection of product %s (%s)", spec.product_id, spec.cache_key)

    def _connect(self, spec: ProjectionSpec, path: Path) -> Projection:
        config: dict[str, str | bool | int | float | list[str]] = {
            "access_mode": "READ_ONLY",
            "enable_external_access": False,
            "autoinstall_known_extensions": False,
            "autoload_known_extensions": False,
            "threads": self._threads,
            "memory_limit": f"{self._memory_mb}MB",
        }
        con = duckdb.connect(str(path), read_only=True, config=config)
        con.execute("SET lock_configuration = true")
        described = con.execute(f"DESCRIBE {TABLE}").fetchall()
        (rows,) = con.execute(f"SELECT count(*) FROM {TABLE}").fetchone() or (0,)  # noqa: S608 - a constant
        return Projection(spec=spec, connection=con, types={str(r[0]): str(r[1]) for r in described}, rows=int(rows))

    def forget(self) -> None:
        """Close every open projection (files stay on disk)."""
        with self._lock:
            projections = list(self._open.values())
            self._open.clear()
        for projection in projections:
            projection.connection.close()


_caches: dict[tuple[Path, str], ProjectionCache] = {}
_caches_lock = threading.Lock()


def projection_cache(root: Path, key: bytes, *, memory_mb: int) -> ProjectionCache:
    """The process's cache of projections under ``root`` (one per folder and key, shared by every app)."""
    ident = (root.resolve(), key_digest(key))
    with _caches_lock:
        cache = _caches.get(ident)
        if cache is None:
            cache = _caches[ident] = ProjectionCache(root, key, memory_mb=memory_mb)
        return cache


def entitled_columns(masking: Masking, entitled: Sequence[str]) -> tuple[str, ...]:
    """The columns a buyer may receive: those of the projection the entitlement names, in projection order."""
    allowed = set(entitled)
    return tuple(c for c in masking.columns if c in allowed)
