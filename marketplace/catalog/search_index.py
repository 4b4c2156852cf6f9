"""The catalog search's in-memory accelerator: facet bitmaps, frequent words' bitmaps and sort orders, one per
process and database, always as fresh as the last committed catalog change.

Positions. Every listed product (row of ``product_search``) has a position: oldest listing (``listed_at``, then
row id) first, so a new listing takes the next position and "newest first" is "highest position first". A set of
products is a Python ``int`` with one bit per position: ``&`` intersects, ``bit_count()`` counts (both in C).

Bitmaps kept: ``alive`` (every listed product), one per facet value (department, operator, domain, mode, grade,
plan type) and, for the words found in at least ``FREQUENT_MIN_DOCS`` documents (and at least
``FREQUENT_FRACTION`` of them, at most ``MAX_FREQUENT_WORDS`` words), one over the documents containing the word
and one over those whose names contain it. Rarer words are asked of the database's full-text engine (FTS5 on
SQLite, ``tsvector`` on PostgreSQL), whose answer is small by definition; ``search.py`` does that. Orders by price
and by name are position lists sorted once; a page is the first members of the result met along the list (or, for
a small result, its members sorted directly).

Freshness. ``catalog_search_state`` holds an epoch (random, new whenever the row is made) and a version, bumped by
``search.reindex_product`` in the writer's transaction together with one ``catalog_search_change`` row naming the
product. Every search reads the state (one small query on its own connection, so it sees committed changes only):
same epoch and version -> the index is used as is; a later version -> the changed products' rows are read again
and applied (copy on write, so a search running meanwhile keeps its snapshot); another epoch, a gap in the change
log, a listing older than the newest one, or many changes -> rebuilt from ``product_search``. Without a state row
(an emptied database) the index is rebuilt for every search and not kept.
"""

from __future__ import annotations

import asyncio
import bisect
import unicodedata
import uuid
import weakref
from array import array
from collections import defaultdict, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlmodel.ext.asyncio.session import AsyncSession

#: A word gets bitmaps when this many documents (and this share of them) contain it.
FREQUENT_MIN_DOCS = 256
FREQUENT_FRACTION = 0.005
#: The most words with bitmaps (each costs two bitmaps of one bit per product).
MAX_FREQUENT_WORDS = 1024
#: More changed products than this since the index's version: rebuild instead of applying them one by one.
MAX_APPLIED_CHANGES = 500
#: Facets of which a product has exactly one value; ``plan_type`` has any number.
FACETS = ("department", "operator", "domain", "mode", "grade", "plan_type")

_COLUMNS = (
    "id, product_id, listed_at, department_id, operator_id, domain, mode, grade, plan_types, price_cents, sort_name, "
    "terms, name_terms"
)


def uuid_hex(value: Any) -> str:
    """A UUID column's value as 32 lower-case hex digits (SQLite stores that; PostgreSQL returns UUID objects)."""
    if isinstance(value, str):
        return value.replace("-", "").lower()
    return str(value).replace("-", "")


def bits_of(positions: Iterable[int], size: int) -> int:
    """The bitmap of ``positions`` (each < ``size``)."""
    buffer = bytearray((size + 7) >> 3)
    for p in positions:
        buffer[p >> 3] |= 1 << (p & 7)
    return int.from_bytes(buffer, "little")


def _bitmap_from_ranks(ranks: list[int], size: int) -> int:
    """The bitmap whose bit ``size - 1 - r`` is set for each rank ``r`` (rank 0 = the highest position): the ranks
    are written as '1' characters of a binary numeral, all in C."""
    digits = bytearray(b"0") * size
    deque(map(digits.__setitem__, ranks, repeat(49)), maxlen=0)
    return int(digits, 2) if size else 0


def positions_of(bitmap: int) -> list[int]:
    """The positions set in ``bitmap``, highest first."""
    digits = bin(bitmap)
    top = len(digits) - 3  # the position of the first digit after '0b'
    found: list[int] = []
    if bitmap <= 0:
        return found
    i = digits.find("1", 2)
    while i >= 0:
        found.append(top - (i - 2))
        i = digits.find("1", i + 1)
    return found


def highest(bitmap: int, offset: int, count: int) -> list[int]:
    """Positions number ``offset`` to ``offset + count - 1`` of ``bitmap``, counted from the highest position."""
    if bitmap <= 0 or count <= 0:
        return []
    digits = bin(bitmap)
    top = len(digits) - 3
    start = 2
    chunk = 4096
    while offset > 0:  # skip whole chunks of ones by counting them in C
        ones = digits.count("1", start, start + chunk)
        if ones > offset or start + chunk >= len(digits):
            break
        offset -= ones
        start += chunk
    found: list[int] = []
    i = digits.find("1", start)
    while i >= 0 and len(found) < count:
        if offset > 0:
            offset -= 1
        else:
            found.append(top - (i - 2))
        i = digits.find("1", i + 1)
    return found


def first_in_order(bitmap: int, order: Sequence[int], keys: Sequence[Any], size: int, offset: int, count: int) -> list[int]:
    """Members of ``bitmap`` number ``offset`` to ``offset + count - 1`` in ``order`` (positions sorted by ``keys``):
    a small result is sorted directly; a large one is met walking the order and testing its bytes."""
    total = bitmap.bit_count()
    if offset >= total or count <= 0:
        return []
    if total * 16 < len(order):
        members = sorted(positions_of(bitmap), key=keys.__getitem__)
        return members[offset : offset + count]
    data = bitmap.to_bytes((size + 7) >> 3, "little")
    found: list[int] = []
    skip = offset
    for p in order:
        if data[p >> 3] >> (p & 7) & 1:
            if skip:
                skip -= 1
            else:
                found.append(p)
                if len(found) == count:
                    break
    return found


@dataclass
class CatalogIndex:
    """One snapshot of the listed catalog as bitmaps (see the module's description)."""

    epoch: str | None
    version: int
    size: int = 0  #: the next free position
    alive: int = 0
    product_ids: list[Any] = field(default_factory=list)  #: position -> product id as stored (None: a hole)
    listing_keys: list[Any] = field(default_factory=list)  #: position -> (listed_at, row id) as stored
    newest: Any = None  #: the highest listing key placed so far
    price_keys: list[Any] = field(default_factory=list)
    name_keys: list[Any] = field(default_factory=list)
    #: ``product_search`` row id -> position (-1: none); an array, so that a copy is one memcpy
    position_of_row: array[int] = field(default_factory=lambda: array("q"))
    #: product id (hex) -> position; used only by ``applied`` (under the lock), which updates it in place
    position_of_product: dict[str, int] = field(default_factory=dict)
    facets: dict[str, dict[str, int]] = field(default_factory=lambda: {f: {} for f in FACETS})
    words: dict[str, int] = field(default_factory=dict)
    name_words: dict[str, int] = field(default_factory=dict)
    #: every word seen, and its form without diacritics (sorted; a superset of the catalog's words after changes)
    vocabulary: list[str] = field(default_factory=list)
    price_order: list[int] = field(default_factory=list)
    name_order: list[int] = field(default_factory=list)

    # --- answering ----------------------------------------------------------------------------------------

    def word_bitmaps(self, word: str, *, prefix: bool) -> tuple[int, int, list[str]] | None:
        """The documents containing ``word`` (or, with ``prefix``, a word starting with it) and those whose names do,
        from bitmaps, plus the words matched that have no bitmap (the database must be asked for those); None when
        the word is not frequent (the database must be asked for the word itself)."""
        if not prefix:
            if word in self.words:
                return self.words[word], self.name_words.get(word, 0), []
            return None
        start = bisect.bisect_left(self.vocabulary, word)
        end = bisect.bisect_left(self.vocabulary, word + "\U0010ffff")
        matched = self.vocabulary[start:end]
        frequent = [w for w in matched if w in self.words]
        if not frequent:
            return None
        rare = [w for w in matched if w not in self.words]
        docs = 0
        names = 0
        for w in frequent:
            docs |= self.words[w]
            names |= self.name_words.get(w, 0)
        return docs, names, rare

    def facet_counts(self, bitmap: int) -> dict[str, dict[str, int]]:
        """Each facet value's number of products in ``bitmap`` (exact)."""
        return {
            facet: {value: n for value, bits in values.items() if (n := (bitmap & bits).bit_count())}
            for facet, values in self.facets.items()
        }

    def filtered(self, filters: dict[str, str]) -> int:
        """The listed products having every facet value of ``filters``."""
        result = self.alive
        for facet, value in filters.items():
            result &= self.facets[facet].get(_facet_value(facet, value), 0)
        return result

    def rows_to_bitmap(self, row_ids: Iterable[int]) -> int:
        """The bitmap of the ``product_search`` rows given by id (rows the index does not know are left out: they
        were committed after its version, or are not committed)."""
        found, known = self.position_of_row, len(self.position_of_row)
        return bits_of((p for r in row_ids if (i := int(r)) < known and (p := found[i]) >= 0), self.size)

    # --- building -------------------------------------------------------------------------------------------

    @classmethod
    def build(cls, epoch: str | None, version: int, rows: Sequence[Sequence[Any]]) -> CatalogIndex:
        """The index of ``rows`` (``product_search`` columns as in ``_COLUMNS``, newest listing first)."""
        index = cls(epoch=epoch, version=version)
        n = len(rows)
        index.size = n
        index.product_ids = [None] * n
        index.listing_keys = [None] * n
        index.price_keys = [None] * n
        index.name_keys = [None] * n
        facet_ranks: dict[str, dict[str, list[int]]] = {f: defaultdict(list) for f in FACETS}
        word_ranks: dict[str, list[int]] = defaultdict(list)
        name_ranks: dict[str, list[int]] = defaultdict(list)
        hexes: dict[tuple[str, Any], str] = {}
        for rank, row in enumerate(rows):
            position = n - 1 - rank
            row_id, product_id, listed_at = int(row[0]), row[1], row[2]
            index.product_ids[position] = product_id
            index.listing_keys[position] = (listed_at, row_id)
            index.price_keys[position] = (row[9] is None, row[9] or 0, row_id)
            index.name_keys[position] = (row[10], row_id)
            _set_row(index.position_of_row, row_id, position)
            index.position_of_product[uuid_hex(product_id)] = position
            for facet, value in zip(FACETS[:5], row[3:8], strict=True):
                key = hexes.get((facet, value))
                if key is None:
                    key = hexes[(facet, value)] = _facet_value(facet, value)
                facet_ranks[facet][key].append(rank)
            for plan_type in row[8].split():
                facet_ranks["plan_type"][plan_type].append(rank)
            for word in set(row[11].split()):
                word_ranks[word].append(rank)
            for word in set(row[12].split()):
                name_ranks[word].append(rank)
        index.alive = (1 << n) - 1
        index.newest = index.listing_keys[-1] if n else None
        for facet, values in facet_ranks.items():
            index.facets[facet] = {value: _bitmap_from_ranks(ranks, n) for value, ranks in values.items()}
        threshold = max(FREQUENT_MIN_DOCS, int(n * FREQUENT_FRACTION))
        frequent = sorted((w for w, ranks in word_ranks.items() if len(ranks) >= threshold), key=lambda w: -len(word_ranks[w]))
        for word in frequent[:MAX_FREQUENT_WORDS]:
            index.words[word] = _bitmap_from_ranks(word_ranks[word], n)
            if word in name_ranks:
                index.name_words[word] = _bitmap_from_ranks(name_ranks[word], n)
        index.vocabulary = sorted({*word_ranks, *(f for w in word_ranks if (f := _folded(w)) != w)})
        index.price_order = sorted(range(n), key=index.price_keys.__getitem__)
        index.name_order = sorted(range(n), key=index.name_keys.__getitem__)
        return index

    def applied(self, version: int, changed: Sequence[str], rows: Sequence[Sequence[Any]]) -> CatalogIndex | None:
        """A new index: this one with the products ``changed`` (hex ids) now as in ``rows`` (their current
        ``product_search`` rows; a changed product without a row is no longer listed). None when a new listing is
        older than the newest one (positions would move): the caller rebuilds."""
        new = CatalogIndex(
            epoch=self.epoch,
            version=version,
            size=self.size,
            alive=self.alive,
            product_ids=list(self.product_ids),
            listing_keys=list(self.listing_keys),
            price_keys=list(self.price_keys),
            name_keys=list(self.name_keys),
            position_of_row=array("q", self.position_of_row),
            position_of_product=self.position_of_product,
            facets={f: dict(v) for f, v in self.facets.items()},
            words=dict(self.words),
            name_words=dict(self.name_words),
            vocabulary=list(self.vocabulary),
            price_order=list(self.price_order),
            name_order=list(self.name_order),
        )
        old = {p: new.position_of_product[p] for p in changed if p in new.position_of_product}
        if old:
            keep = ~bits_of(old.values(), new.size)
            new.alive &= keep
            for values in new.facets.values():
                for value in values:
                    values[value] &= keep
            for bitmaps in (new.words, new.name_words):
                for word in bitmaps:
                    bitmaps[word] &= keep
            for product, gone in old.items():
                _remove_sorted(new.price_order, gone, new.price_keys)
                _remove_sorted(new.name_order, gone, new.name_keys)
                del new.position_of_product[product]
                _set_row(new.position_of_row, new.listing_keys[gone][1], -1)
                new.product_ids[gone] = None
        newest = self.newest
        additions: dict[tuple[str, str], list[int]] = defaultdict(list)
        placed: list[int] = []
        for row in sorted(rows, key=lambda r: (r[2], int(r[0]))):
            row_id, product = int(row[0]), uuid_hex(row[1])
            key = (row[2], row_id)
            position = old.get(product)
            if position is None or new.listing_keys[position] != key:
                if newest is not None and key <= newest:
                    return None
                position = new.size
                new.size += 1
                new.product_ids.append(None)
                new.listing_keys.append(None)
                new.price_keys.append(None)
                new.name_keys.append(None)
                newest = key
            new.product_ids[position] = row[1]
            new.listing_keys[position] = key
            new.price_keys[position] = (row[9] is None, row[9] or 0, row_id)
            new.name_keys[position] = (row[10], row_id)
            _set_row(new.position_of_row, row_id, position)
            new.position_of_product[product] = position
            placed.append(position)
            for facet, value in zip(FACETS[:5], row[3:8], strict=True):
                additions[("facet:" + facet, _facet_value(facet, value))].append(position)
            for plan_type in row[8].split():
                additions[("facet:plan_type", plan_type)].append(position)
            for word in set(row[11].split()):
                if word in new.words:
                    additions[("word", word)].append(position)
                else:
                    _insert_sorted(new.vocabulary, word)
                    if (folded := _folded(word)) != word:
                        _insert_sorted(new.vocabulary, folded)
            for word in set(row[12].split()):
                if word in new.words:
                    additions[("name", word)].append(position)
            bisect.insort(new.price_order, position, key=new.price_keys.__getitem__)
            bisect.insort(new.name_order, position, key=new.name_keys.__getitem__)
        new.newest = newest
        new.alive |= bits_of(placed, new.size)
        for (kind, value), positions in additions.items():
            bits = bits_of(positions, new.size)
            if kind == "word":
                new.words[value] |= bits
            elif kind == "name":
                new.name_words[value] = new.name_words.get(value, 0) | bits
            else:
                facet = kind.removeprefix("facet:")
                new.facets[facet][value] = new.facets[facet].get(value, 0) | bits
        return new


def _folded(word: str) -> str:
    """``word`` without diacritics, as SQLite's FTS5 tokenizer indexes it (``hôpital`` -> ``hopital``): the
    vocabulary holds both, so a prefix finds every word the database would (the folded one has no bitmap)."""
    if word.isascii():
        return word
    return "".join(c for c in unicodedata.normalize("NFKD", word) if not unicodedata.combining(c))


def _facet_value(facet: str, value: Any) -> str:
    if facet in ("department", "operator"):
        return uuid_hex(value)
    return str(value).lower() if facet == "grade" else str(value)


def _set_row(positions: array[int], row_id: int, position: int) -> None:
    if row_id >= len(positions):
        positions.extend(repeat(-1, row_id + 1 - len(positions)))
    positions[row_id] = position


def _remove_sorted(order: list[int], position: int, keys: list[Any]) -> None:
    i = bisect.bisect_left(order, keys[position], key=keys.__getitem__)
    while i < len(order) and order[i] != position:
        i += 1
    if i < len(order):
        del order[i]


def _insert_sorted(words: list[str], word: str) -> None:
    i = bisect.bisect_left(words, word)
    if i == len(words) or words[i] != word:
        words.insert(i, word)


# --- keeping one index per process and database ---------------------------------------------------------------

_indexes: dict[str, CatalogIndex] = {}
_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, asyncio.Lock]] = weakref.WeakKeyDictionary()


def _lock(key: str) -> asyncio.Lock:
    per_loop = _locks.setdefault(asyncio.get_running_loop(), {})
    return per_loop.setdefault(key, asyncio.Lock())


async def _state(conn: AsyncConnection) -> tuple[str | None, int]:
    row = (await conn.execute(text("SELECT epoch, version FROM catalog_search_state WHERE id = 1"))).first()
    return (None, 0) if row is None else (str(row[0]), int(row[1]))


async def _rows(conn: AsyncConnection, where: str = "", params: dict[str, Any] | None = None) -> list[Sequence[Any]]:
    statement = f"SELECT {_COLUMNS} FROM product_search {where} ORDER BY listed_at DESC, id DESC"  # noqa: S608
    return list((await conn.execute(text(statement), params or {})).all())


async def _rebuild(conn: AsyncConnection, epoch: str | None, version: int) -> CatalogIndex:
    rows = await _rows(conn)
    return await asyncio.to_thread(CatalogIndex.build, epoch, version, rows)


async def _apply_changes(conn: AsyncConnection, index: CatalogIndex, version: int) -> CatalogIndex | None:
    changes = (
        await conn.execute(
            text("SELECT product_id FROM catalog_search_change WHERE revision > :mine AND revision <= :now"),
            {"mine": index.version, "now": version},
        )
    ).all()
    if len(changes) != version - index.version:  # pruned (or not yet visible): start again
        return None
    changed = list(dict.fromkeys(uuid_hex(c[0]) for c in changes))
    if len(changed) > MAX_APPLIED_CHANGES:
        return None
    rows: list[Sequence[Any]] = []
    sample = changes[0][0] if changes else None
    for i in range(0, len(changed), 200):
        part = changed[i : i + 200]
        names = ", ".join(f":p{j}" for j in range(len(part)))
        values = {f"p{j}": (p if isinstance(sample, str) else uuid.UUID(hex=p)) for j, p in enumerate(part)}
        rows += await _rows(conn, f"WHERE product_id IN ({names})", values)
    return index.applied(version, changed, rows)


def _engine(session: AsyncSession) -> AsyncEngine:
    bind = session.bind
    if not isinstance(bind, AsyncEngine):  # pragma: no cover - the application's sessions are bound to an engine
        raise TypeError("catalog search needs a session bound to an AsyncEngine")
    return bind


async def current_index(session: AsyncSession) -> CatalogIndex:
    """The index of the catalog as last committed, brought up to date first if needed (see the module)."""
    engine = _engine(session)
    key = engine.url.render_as_string(hide_password=True)
    async with engine.connect() as conn:
        epoch, version = await _state(conn)
        index = _indexes.get(key)
        if index is not None and epoch is not None and index.epoch == epoch and index.version == version:
            return index
        async with _lock(key):
            await conn.rollback()  # a fresh snapshot (SQLite keeps the first one for the whole transaction)
            index = _indexes.get(key)
            epoch, version = await _state(conn)
            if epoch is None:
                _indexes.pop(key, None)
                return await _rebuild(conn, None, 0)
            if index is not None and index.epoch == epoch and index.version >= version:
                return index  # brought up to date while this search waited
            _indexes.pop(key, None)  # kept again only once brought up to date (an apply updates shared maps in place)
            updated = None
            if index is not None and index.epoch == epoch and index.version < version:
                updated = await _apply_changes(conn, index, version)
            if updated is None:
                updated = await _rebuild(conn, epoch, version)
            _indexes[key] = updated
            return updated


def forget_indexes() -> None:
    """Drop every kept index (tests use it to start a second, cold 'process')."""
    _indexes.clear()
