"""API delivery: pages of rows of a product's masked projection, with fields chosen among the entitled ones,
equality filters on them, and an opaque cursor.

A cursor holds the product, the projection's cache key and a row position, signed (HMAC with a key derived from
the secret key): a tampered cursor is refused with 400 ``invalid_cursor``, and so is a cursor of older contents
(the resource got a new version: start again). Pages are read from the materialised projection
(:mod:`.projections`) with one DuckDB query on a cursor of its own, off the event loop.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import csv
import functools
import hashlib
import hmac
import io
import threading
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

import msgspec

from licensing.models import DeliveryMode, FieldType
from licensing.privacy import quote_identifier
from licensing.schemas import MaskingAction
from marketplace.core.errors import InvalidInput
from marketplace.core.principal import Principal
from marketplace.delivery.services.access import Grant, check_access
from marketplace.delivery.services.metering import MeteredDelivery
from marketplace.delivery.services.projections import TABLE, Masking, Projection
from marketplace.delivery.services.runtime import DeliveryRuntime

MAX_LIMIT = 1000
DEFAULT_LIMIT = 100
MAX_FILTERS = 10
Format = Literal["json", "csv"]

_json = msgspec.json.Encoder(decimal_format="string")


@dataclass(frozen=True)
class RowsQuery:
    """What a rows call asks for, validated against the grant."""

    fields: tuple[str, ...]
    filters: tuple[tuple[str, Any], ...]
    limit: int
    position: int
    format: Format


@dataclass(frozen=True)
class RowsPage:
    """An encoded page: the body, its media type, how many rows it holds and the cursor of the next page."""

    body: bytes
    media_type: str
    rows: int
    next_cursor: str | None


# --- parsing -------------------------------------------------------------------------------------------------------------


def choose_fields(grant: Grant, fields: str | None) -> tuple[str, ...]:
    """The fields asked for (``a,b``) among the entitled ones; all entitled fields when none are named."""
    if fields is None or not fields.strip():
        return grant.fields
    chosen = tuple(dict.fromkeys(f.strip() for f in fields.split(",") if f.strip()))
    outside = [f for f in chosen if f not in grant.fields]
    if outside:
        raise InvalidInput(
            f"Not a permitted field: {', '.join(outside)}. Permitted: {', '.join(grant.fields)}.",
            code="field_not_permitted",
            fields=outside,
        )
    return chosen


def _filter_type(masking: Masking, name: str) -> FieldType:
    # Only kept fields are delivered in their own type; pseudonymised and generalised ones are text.
    rule = next(r for r in masking.rules if r.field == name)
    if rule.action is not MaskingAction.keep:
        return FieldType.string
    return next(f.type for f in masking.fields if f.name == name)


def _typed(kind: FieldType, name: str, text: str) -> Any:
    try:
        if kind is FieldType.integer:
            return int(text)
        if kind is FieldType.decimal:
            value = Decimal(text)
            if not value.is_finite():
                raise InvalidOperation
            return value
        if kind is FieldType.boolean:
            lowered = text.lower()
            if lowered not in ("true", "false"):
                raise ValueError(text)
            return lowered == "true"
        if kind is FieldType.date:
            return date.fromisoformat(text)
        if kind is FieldType.timestamp:
            return datetime.fromisoformat(text)
    except (ValueError, InvalidOperation):
        raise InvalidInput(f"Filter {name}: {text!r} is not a valid {kind.value}.", code="invalid_filter", field=name) from None
    return text


def parse_filters(
    permitted: Sequence[str], masking: Masking, filters: Sequence[str] | dict[str, Any]
) -> tuple[tuple[str, Any], ...]:
    """Equality filters ``field:value`` (or a mapping field -> value) on ``permitted`` fields, with typed values."""
    pairs: list[tuple[str, str]] = []
    if isinstance(filters, dict):
        for name, value in filters.items():
            if value is None or isinstance(value, list | dict):
                raise InvalidInput(f"Filter {name}: give one value (text, number or boolean).", code="invalid_filter", field=name)
            pairs.append((str(name), str(value).lower() if isinstance(value, bool) else str(value)))
    else:
        for item in filters:
            name, sep, value = item.partition(":")
            if not sep or not name.strip():
                raise InvalidInput(f"A filter is field:value, not {item!r}.", code="invalid_filter")
            pairs.append((name.strip(), value))
    if len(pairs) > MAX_FILTERS:
        raise InvalidInput(f"At most {MAX_FILTERS} filters.", code="invalid_filter")
    outside = [name for name, _ in pairs if name not in permitted]
    if outside:
        raise InvalidInput(
            f"Cannot filter on {', '.join(outside)}: not a permitted field. Permitted: {', '.join(permitted)}.",
            code="field_not_permitted",
            fields=outside,
        )
    return tuple((name, _typed(_filter_type(masking, name), name, value)) for name, value in pairs)


# --- cursors ---------------------------------------------------------------------------------------------------------------


def _tag(key: bytes, payload: str) -> str:
    return hmac.new(key, payload.encode(), hashlib.sha256).hexdigest()[:32]


# Cursors are worked out once per distinct input (many programs page through the same products): both functions
# are pure, and their caches hold only cursors this process issued or accepted.
@functools.lru_cache(maxsize=16_384)
def encode_cursor(key: bytes, product_id: uuid.UUID, cache_key: str, position: int) -> str:
    """An opaque, signed cursor pointing at ``position`` of a projection."""
    payload = f"{product_id.hex}.{cache_key}.{position}"
    return base64.urlsafe_b64encode(f"{payload}.{_tag(key, payload)}".encode()).decode().rstrip("=")


@functools.lru_cache(maxsize=16_384)
def _verified_cursor(key: bytes, cursor: str) -> tuple[str, str, int] | None:
    """The product (hex), contents and position of a cursor whose signature holds; None when it does not."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        product_hex, cursor_cache_key, position_text, tag = text.split(".")
        position = int(position_text)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return None
    payload = f"{product_hex}.{cursor_cache_key}.{position_text}"
    if not hmac.compare_digest(tag, _tag(key, payload)) or position < 0:
        return None
    return product_hex, cursor_cache_key, position


def decode_cursor(key: bytes, cursor: str, product_id: uuid.UUID, cache_key: str) -> int:
    """The position a cursor points at; 400 ``invalid_cursor`` when it was altered, is another product's, or
    belongs to older contents."""
    verified = _verified_cursor(key, cursor)
    if verified is None or verified[0] != product_id.hex:
        raise InvalidInput("The cursor is not valid: use next_cursor as given.", code="invalid_cursor")
    if verified[1] != cache_key:
        raise InvalidInput("The product's contents changed since this cursor was issued: start again.", code="invalid_cursor")
    return verified[2]


# --- reading and encoding -------------------------------------------------------------------------------------------------


def _page_sql(fields: Sequence[str], filters: Sequence[tuple[str, Any]]) -> str:
    columns = ", ".join(quote_identifier(f) for f in fields)
    where = "".join(f" AND {quote_identifier(name)} = ?" for name, _ in filters)
    # One thread scans the table in its stored order, so the first rows at or after the position come first.
    return f"SELECT rowid, {columns} FROM {TABLE} WHERE rowid >= ?{where} LIMIT ?"  # noqa: S608 - quoted identifiers


#: A page read also reads the pages after it, up to this many rows in all: one DuckDB query costs about a
#: millisecond whatever its size up to a thousand rows, and a program paging through a product asks for them next.
READ_AHEAD_ROWS = 1000


def read_pages(projection: Projection, query: RowsQuery) -> list[tuple[int, list[tuple[Any, ...]], int | None]]:
    """The page at ``query.position`` and the pages after it (see ``READ_AHEAD_ROWS``): for each, the position a
    cursor carries to it, its rows (without their positions) and the position of the next page (None at the end)."""
    pages = max(1, READ_AHEAD_ROWS // query.limit)
    sql = _page_sql(query.fields, query.filters)
    parameters = [query.position, *(value for _, value in query.filters), query.limit * pages + 1]
    cursor = projection.cursor()
    try:
        found = cursor.execute(sql, parameters).fetchall()
    finally:
        cursor.close()
    answer: list[tuple[int, list[tuple[Any, ...]], int | None]] = []
    position = query.position
    for start in range(0, max(len(found), 1), query.limit):  # one (empty) page when nothing is left
        end = start + query.limit
        following = int(found[end][0]) if len(found) > end else None
        answer.append((position, [row[1:] for row in found[start:end]], following))
        if following is None or len(answer) == pages:
            break
        position = following
    return answer


def _csv_text(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, date | datetime):
        return value.isoformat()
    return value


@dataclass(frozen=True)
class EncodedRows:
    """A page's rows, encoded (JSON array of objects, or CSV with its header), and where the next page starts."""

    data: bytes
    rows: int
    following: int | None


def encode_rows(query: RowsQuery, rows: list[tuple[Any, ...]], following: int | None) -> EncodedRows:
    """The rows as a JSON array of objects or as CSV (header, then rows)."""
    if query.format == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\r\n")
        writer.writerow(query.fields)
        writer.writerows([[_csv_text(v) for v in row] for row in rows])
        return EncodedRows(buffer.getvalue().encode(), len(rows), following)
    names = query.fields
    return EncodedRows(_json.encode([dict(zip(names, row, strict=True)) for row in rows]), len(rows), following)


def page_of(query: RowsQuery, encoded: EncodedRows, next_cursor: str | None) -> RowsPage:
    """The answer: JSON ``{"items": [...], "next_cursor": ...}`` or the CSV text."""
    if query.format == "csv":
        return RowsPage(encoded.data, "text/csv; charset=utf-8", encoded.rows, next_cursor)
    body = b'{"items":' + encoded.data + b',"next_cursor":' + _json.encode(next_cursor) + b"}"
    return RowsPage(body, "application/json", encoded.rows, next_cursor)


def read_encoded(projection: Projection, query: RowsQuery) -> list[tuple[RowsQuery, EncodedRows]]:
    """Read and encode the page of ``query`` and those after it, each with its own query (blocking: run it off
    the event loop)."""
    encoded = []
    for position, rows, following in read_pages(projection, query):
        page_query = replace(query, position=position)
        encoded.append((page_query, encode_rows(page_query, rows, following)))
    return encoded


class PageCache:
    """Encoded pages of materialised projections, least recently used first out, within a byte budget.

    A projection's contents never change (its cache key is a content address), so neither do its pages: an entry
    is never stale, and a product's new contents simply have other keys.
    """

    def __init__(self, budget_bytes: int = 64 * 1024 * 1024) -> None:
        self._budget = budget_bytes
        self._used = 0
        self._pages: OrderedDict[tuple[Any, ...], EncodedRows] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(cache_key: str, query: RowsQuery) -> tuple[Any, ...]:
        """The entry of a query on a projection."""
        return (cache_key, query.fields, query.filters, query.position, query.limit, query.format)

    def get(self, key: tuple[Any, ...]) -> EncodedRows | None:
        """A cached page, or None."""
        with self._lock:
            found = self._pages.get(key)
            if found is None:
                self.misses += 1
                return None
            self._pages.move_to_end(key)
            self.hits += 1
            return found

    def put(self, key: tuple[Any, ...], page: EncodedRows) -> None:
        """Keep a page (pages larger than an eighth of the budget are not kept)."""
        size = len(page.data) + 200
        if size > self._budget // 8:
            return
        with self._lock:
            previous = self._pages.pop(key, None)
            if previous is not None:
                self._used -= len(previous.data) + 200
            self._pages[key] = page
            self._used += size
            while self._used > self._budget and self._pages:
                _, evicted = self._pages.popitem(last=False)
                self._used -= len(evicted.data) + 200


#: The process's page cache (shared by every app: pages are content-addressed).
PAGES = PageCache()


async def _read(runtime: DeliveryRuntime, grant: Grant, query: RowsQuery) -> EncodedRows:
    projection = runtime.projections.opened(grant.spec)
    if projection is None:
        projection = await asyncio.to_thread(runtime.projections.open, grant.spec)
    pages = await asyncio.to_thread(read_encoded, projection, query)
    for page_query, page in pages:
        PAGES.put(PageCache.key(grant.spec.cache_key, page_query), page)
    return pages[0][1]


async def _read_once(runtime: DeliveryRuntime, grant: Grant, query: RowsQuery) -> EncodedRows:
    """Read a page not in the cache; callers asking for the same page meanwhile wait for this read instead of
    reading it again (programs paging through a product in step would otherwise all read every page)."""
    key = PageCache.key(grant.spec.cache_key, query)
    reading = runtime.page_reads.get(key)
    if reading is None:
        reading = runtime.page_reads[key] = asyncio.ensure_future(_read(runtime, grant, query))

        def done(future: asyncio.Future[EncodedRows]) -> None:
            runtime.page_reads.pop(key, None)
            if not future.cancelled():
                future.exception()  # retrieved here too: every waiter may have gone

        reading.add_done_callback(done)
    return await asyncio.shield(reading)


async def fetch_rows(
    runtime: DeliveryRuntime,
    principal: Principal,
    product_id: uuid.UUID,
    *,
    fields: str | None = None,
    filters: Sequence[str] = (),
    limit: int = DEFAULT_LIMIT,
    cursor: str | None = None,
    fmt: Format = "json",
) -> RowsPage:
    """One metered page of rows for ``principal`` (access checked, quota reserved, delivery buffered in the meter).

    The page holds at most ``limit`` rows, and never more than the entitlement's rows left this month.
    """
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput(f"limit is between 1 and {MAX_LIMIT}.", code="invalid_input")
    grant = await check_access(runtime, principal, product_id, DeliveryMode.api, rows_wanted=limit)
    page_limit = limit if grant.rows_left is None else min(limit, grant.rows_left)
    try:
        query = RowsQuery(
            fields=choose_fields(grant, fields),
            filters=parse_filters(grant.fields, grant.spec.masking, filters),
            limit=page_limit,
            position=decode_cursor(runtime.cursor_key, cursor, product_id, grant.spec.cache_key) if cursor else 0,
            format=fmt,
        )
        encoded = PAGES.get(PageCache.key(grant.spec.cache_key, query)) or await _read_once(runtime, grant, query)
        following = encoded.following
        next_cursor = (
            None if following is None else encode_cursor(runtime.cursor_key, product_id, grant.spec.cache_key, following)
        )
        page = page_of(query, encoded, next_cursor)
    except BaseException:
        runtime.meter.release(grant.entitlement_id, grant.month, rows=page_limit)
        raise
    runtime.meter.record(
        MeteredDelivery(
            entitlement_id=grant.entitlement_id,
            subscription_id=grant.subscription_id,
            buyer_org_id=grant.buyer_org_id,
            operator_id=grant.operator_id,
            owner_org_id=grant.owner_org_id,
            product_id=grant.product_id,
            licence_id=grant.licence_id,
            mode=DeliveryMode.api,
            rows=page.rows,
            bytes=len(page.body),
            actor=grant.actor,
            client_id=grant.client_id,
        ),
        reserved_month=grant.month,
        reserved_rows=page_limit,
    )
    return page
