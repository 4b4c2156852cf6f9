"""File delivery fingerprints: every subscription's CSV or Parquet export differs a little, so a leaked copy names its source.

Pure: stdlib and DuckDB only, no database session, no web layer. :func:`write_fingerprinted_export` writes an
export carrying two marks; :func:`trace_export` reads a leaked file and names the subscription whose marks it
carries, or ``None``.

Keys. ``k_s = HMAC-SHA-256(key, subscription_id)`` (hex) is the per-subscription secret. Per-row choices are
``SHA-256(k_s || 0x1f || label || 0x1f || identity)`` computed inside DuckDB (which has no HMAC function); ``k_s``
is a secret 256-bit prefix and the hashed strings have a fixed layout, so length extension buys an attacker
nothing here. A row's *identity* is its non-fractional columns (text, integers, dates...) cast to text and
joined with 0x1f (NULL as the empty string): these columns are never altered, so the identity of a row is the
same in the source, in every subscription's file, and in a CSV or Parquet copy of any of them.

Marks.
(a) Metadata: Parquet files carry the key-value metadata ``market.fingerprint`` = ``v1:`` + a keyed token
    (HMAC of the subscription id, truncated to 128 bits; the id itself is not disclosed). Trivially stripped by
    rewriting the file, and CSV has no metadata, so it is only a fallback.
(b) Data, decimal columns (the robust mark): for each DECIMAL column with a scale >= 1, a keyed quarter of the
    rows is *selected*; for each selected cell a keyed bit says whether the last digit (the value in units of
    ``10**-scale``) must be even or odd. When it already has that parity the value is untouched, otherwise it
    moves by exactly one unit, up or down by a keyed coin (down/up if the step would overflow the column's
    precision). So about 1 cell in 8 changes, by at most :data:`TOLERANCE_UNITS` unit in the last printed
    digit (e.g. 0.01 for DECIMAL(10,2)); sums move by a zero-mean noise of about ``0.35 * sqrt(rows)`` units.
    Integers, text, dates, floats and NULLs are never changed. Reading the mark needs no reference copy: the
    parity of every selected cell is compared with the candidate's bits.
(c) Data, row order: rows are written in a keyed order (sorted by a per-subscription hash of their identity).
    Costless and surviving any subset that keeps the relative order, but destroyed by re-sorting; it is the
    only data mark when an export has no decimal column.

Decision rule (:func:`trace_export`). For every candidate: ``z_parity = (agree - n/2) / sqrt(n/4)`` over the
``n`` selected, non-NULL decimal cells found in the file, and ``z_order = (ascents - m/2) / sqrt(m/4)`` over the
``m`` adjacent row pairs. For a file that is not that candidate's, both counts are (at most) binomial with
p = 1/2 (the bits are keyed, independent of the data and of other subscriptions' bits; the number of ascents
of a random order has an even smaller variance), so ``evidence = max(z_parity, z_order)`` exceeds the default
threshold :data:`DEFAULT_THRESHOLD_Z` = 6 with probability below 2e-9 per candidate. The traced subscription is
the one candidate whose evidence reaches the threshold; if two or more do (e.g. a file merged from several
subscriptions' copies) the answer is ``None``, as it is when none does - except that when no data mark is
conclusive and the Parquet metadata token matches exactly one candidate, that candidate is returned.
:func:`score_export` exposes the per-candidate figures for an investigator.

Limits. A copy needs enough marked cells: the correct candidate's ``z_parity`` is about ``sqrt(n)``, so at least
~40 selected cells (~150 rows with one decimal column) are needed; a re-sorted copy of fewer rows cannot be
traced. Rounding decimals to fewer places, adding noise of one unit, dropping or renaming the decimal columns,
or editing the identity columns (renaming a column is harmless, its values matter) erase the data marks of the
affected rows; several colluding subscribers can compare their copies, find the differing cells and average
or randomise them. Tracing a CSV infers the mark columns (values all like ``-12.34``) and their scale (the
largest number of decimals seen) unless ``mark_columns`` / ``id_columns`` are given; a float column looks
like a decimal in CSV and is then only noise that lowers the evidence, so the export task should pass the
projection's column names when it knows them. Work is linear in the rows: tracing hashes every row once per
candidate in Python.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Literal

import duckdb

from marketplace.core.errors import InvalidInput

Format = Literal["csv", "parquet"]

METADATA_KEY = "market.fingerprint"
TOLERANCE_UNITS = 1
"""A marked decimal value differs from the source by at most this many units of its last digit."""
DEFAULT_THRESHOLD_Z = 6.0
SELECT_SIXTEENTHS = 4
"""A row's decimal cell is selected for the mark when the first hex digit of its hash is below this (1/4)."""

_SEP = "\x1f"
_HEX = "0123456789abcdef"
_DECIMAL_TYPE = re.compile(r"^DECIMAL\((\d+),\s*(\d+)\)$")
_FLOAT_TYPES = {"FLOAT", "DOUBLE", "REAL"}
_DECIMAL_TEXT = re.compile(r"^[+-]?\d+(\.\d+)?$")


def subscription_secret(key: bytes, subscription_id: str) -> str:
    """Return ``HMAC-SHA-256(key, subscription_id)`` as hex: the per-subscription fingerprint secret."""
    _check_key(key)
    if not subscription_id:
        raise InvalidInput("subscription_id must not be empty")
    return hmac.new(key, subscription_id.encode(), hashlib.sha256).hexdigest()


def metadata_token(key: bytes, subscription_id: str) -> str:
    """Return the ``market.fingerprint`` metadata value of a subscription's Parquet export."""
    _check_key(key)
    digest = hmac.new(key, f"{METADATA_KEY}{_SEP}{subscription_id}".encode(), hashlib.sha256).hexdigest()
    return "v1:" + digest[:32]


def fingerprint_query(
    con: duckdb.DuckDBPyConnection, source: str | Path, subscription_id: str, key: bytes
) -> tuple[str, list[str], list[str]]:
    """Build the SELECT that returns ``source`` with the subscription's data marks, in its keyed order.

    ``source`` is a Parquet file (a :class:`~pathlib.Path` or a string ending in ``.parquet``) or a SELECT
    statement run on ``con``. Returns ``(sql, id_columns, mark_columns)``.
    """
    secret = subscription_secret(key, subscription_id)
    src = _source_sql(source)
    try:
        described = con.execute(f"DESCRIBE SELECT * FROM {src}").fetchall()  # noqa: S608 - source is trusted
    except duckdb.Error as exc:
        raise InvalidInput(f"cannot read the export source: {exc}") from exc
    columns = [(str(row[0]), str(row[1])) for row in described]
    id_columns = [name for name, typ in columns if not _is_fractional(typ)]
    mark_columns = [name for name, typ in columns if _decimal_scale(typ)]
    if not id_columns:
        raise InvalidInput("an export needs at least one non-fractional column to identify its rows")
    ident = "concat_ws(chr(31), " + ", ".join(f"coalesce(CAST({_qi(c)} AS VARCHAR), '')" for c in id_columns) + ")"
    select = []
    for name, typ in columns:
        scale = _decimal_scale(typ)
        select.append(_marked_expr(name, typ, scale, secret) if scale else _qi(name))
    order = f"sha256({_ql(secret + _SEP + 'order' + _SEP)} || __fp_ident)"
    sql = (
        f"SELECT {', '.join(select)} FROM (SELECT *, {ident} AS __fp_ident FROM {src}) AS __fp "  # noqa: S608
        f"ORDER BY {order}, __fp_ident"
    )
    return sql, id_columns, mark_columns


def write_fingerprinted_export(
    source: str | Path,
    out_path: str | Path,
    fmt: Format,
    subscription_id: str,
    key: bytes,
    *,
    con: duckdb.DuckDBPyConnection | None = None,
) -> Path:
    """Write ``source`` to ``out_path`` as CSV (with header) or Parquet, fingerprinted for ``subscription_id``.

    ``source`` is a Parquet file path or a SELECT statement (run on ``con`` when given, so it may name the
    caller's tables). See the module docstring for the marks; Parquet files also carry ``market.fingerprint``.
    """
    fmt = _check_format(fmt)
    own = con is None
    conn = duckdb.connect() if con is None else con
    try:
        sql, _, _ = fingerprint_query(conn, source, subscription_id, key)
        target = Path(out_path)
        if fmt == "parquet":
            options = f"FORMAT parquet, KV_METADATA {{{_ql(METADATA_KEY)}: {_ql(metadata_token(key, subscription_id))}}}"
        else:
            options = "FORMAT csv, HEADER true"
        conn.execute(f"COPY ({sql}) TO {_ql(str(target))} ({options})")
        return target
    finally:
        if own:
            conn.close()


@dataclass(frozen=True)
class CandidateScore:
    """How strongly a leaked file carries one subscription's marks."""

    subscription_id: str
    parity_agree: int
    parity_cells: int
    order_ascents: int
    order_pairs: int
    metadata_match: bool

    @property
    def z_parity(self) -> float:
        """Standard score of the decimal-parity agreement against chance (p = 1/2)."""
        return _z(self.parity_agree, self.parity_cells)

    @property
    def z_order(self) -> float:
        """Standard score of the keyed-order ascents against chance (p = 1/2)."""
        return _z(self.order_ascents, self.order_pairs)

    @property
    def evidence(self) -> float:
        """The stronger of the two data marks' standard scores."""
        return max(self.z_parity, self.z_order)


def score_export(
    path: str | Path,
    fmt: Format,
    candidates: Iterable[str],
    key: bytes,
    *,
    id_columns: Sequence[str] | None = None,
    mark_columns: Sequence[str] | None = None,
) -> list[CandidateScore]:
    """Score every candidate subscription against the file at ``path``, strongest evidence first.

    ``candidates`` is any iterable of subscription ids (a mapping keyed by id works too). ``id_columns`` and
    ``mark_columns`` override the inferred identity and decimal columns; a mark column may be given as
    ``"name:scale"`` to fix its scale.
    """
    fmt = _check_format(fmt)
    _check_key(key)
    names, rows, types, token = _read_leak(Path(path), fmt)
    marks = _mark_columns(names, rows, types, mark_columns)
    mark_set = {m for m, _ in marks}
    ids = list(id_columns) if id_columns is not None else [n for n in names if n not in mark_set and not _is_fractional(types[n])]
    missing = [c for c in [*ids, *mark_set] if c not in names]
    if missing:
        raise InvalidInput(f"columns not in the file: {', '.join(missing)}")
    id_idx = [names.index(c) for c in ids]
    idents = [_SEP.join(row[i] or "" for i in id_idx) for row in rows]
    cells: list[tuple[str, list[tuple[int, int]]]] = []  # per mark column: (row number, parity of last digit)
    for name, scale in marks:
        col = names.index(name)
        parities = [(r, p) for r, row in enumerate(rows) if (p := _parity(row[col], scale)) is not None]
        cells.append((name, parities))
    scores = []
    for sub in dict.fromkeys(candidates):
        secret = subscription_secret(key, sub)
        agree = total = 0
        for name, parities in cells:
            prefix = secret + _SEP + "col:" + name + _SEP
            for r, parity in parities:
                digest = hashlib.sha256((prefix + idents[r]).encode()).hexdigest()
                if _HEX.index(digest[0]) < SELECT_SIXTEENTHS:
                    total += 1
                    agree += parity == _HEX.index(digest[1]) % 2
        order_prefix = secret + _SEP + "order" + _SEP
        order_keys = [hashlib.sha256((order_prefix + ident).encode()).hexdigest() for ident in idents]
        ascents = sum(a <= b for a, b in itertools.pairwise(order_keys))
        meta = token is not None and hmac.compare_digest(token, metadata_token(key, sub))
        scores.append(CandidateScore(sub, agree, total, ascents, max(len(idents) - 1, 0), meta))
    return sorted(scores, key=lambda s: (-s.evidence, not s.metadata_match, s.subscription_id))


def trace_export(
    path: str | Path,
    fmt: Format,
    candidates: Iterable[str],
    key: bytes,
    *,
    id_columns: Sequence[str] | None = None,
    mark_columns: Sequence[str] | None = None,
    threshold_z: float = DEFAULT_THRESHOLD_Z,
) -> str | None:
    """Name the subscription whose fingerprint the leaked file at ``path`` carries, or ``None``.

    The rule (module docstring): the one candidate whose data evidence reaches ``threshold_z``; ``None`` if
    several do; if none does, the one candidate matching the Parquet metadata token, else ``None``.
    """
    scores = score_export(path, fmt, candidates, key, id_columns=id_columns, mark_columns=mark_columns)
    clear = [s for s in scores if s.evidence >= threshold_z]
    if len(clear) == 1:
        return clear[0].subscription_id
    if clear:
        return None
    by_meta = [s for s in scores if s.metadata_match]
    return by_meta[0].subscription_id if len(by_meta) == 1 else None


def _check_key(key: bytes) -> None:
    if len(key) < 16:
        raise InvalidInput("the fingerprint key must be at least 16 bytes")


def _check_format(fmt: str) -> Format:
    if fmt == "csv":
        return "csv"
    if fmt == "parquet":
        return "parquet"
    raise InvalidInput(f"unknown export format {fmt!r}; expected 'csv' or 'parquet'")


def _qi(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _ql(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _source_sql(source: str | Path) -> str:
    if isinstance(source, Path) or source.strip().lower().endswith(".parquet"):
        return f"read_parquet({_ql(str(source))})"
    return f"({source}) AS __fp_src"


def _decimal_scale(typ: str) -> int:
    match = _DECIMAL_TYPE.match(typ.upper())
    return int(match.group(2)) if match else 0


def _is_fractional(typ: str) -> bool:
    return _decimal_scale(typ) > 0 or typ.upper() in _FLOAT_TYPES


def _marked_expr(name: str, typ: str, scale: int, secret: str) -> str:
    col = _qi(name)
    digest = f"sha256({_ql(secret + _SEP + 'col:' + name + _SEP)} || __fp_ident)"

    def nibble(pos: int) -> str:
        return f"(instr('{_HEX}', substr({digest}, {pos}, 1)) - 1)"

    unit = f"CAST({_ql('0.' + '0' * (scale - 1) + '1')} AS {typ})"
    step = f"(CASE WHEN {nibble(3)} % 2 = 0 THEN 1 ELSE -1 END)"
    moved = f"coalesce(TRY_CAST({col} + {step} * {unit} AS {typ}), CAST({col} - {step} * {unit} AS {typ}))"
    wrong = f"CAST(right(CAST({col} AS VARCHAR), 1) AS INTEGER) % 2 <> {nibble(2)} % 2"
    return f"CASE WHEN {col} IS NOT NULL AND {nibble(1)} < {SELECT_SIXTEENTHS} AND {wrong} THEN {moved} ELSE {col} END AS {col}"


def _read_leak(path: Path, fmt: Format) -> tuple[list[str], list[tuple[str | None, ...]], dict[str, str], str | None]:
    """Read a leaked file as text columns; return names, rows, column types and the metadata token."""
    con = duckdb.connect()
    try:
        token: str | None = None
        if fmt == "parquet":
            src = f"read_parquet({_ql(str(path))})"
            for _, k, v in con.execute(f"SELECT * FROM parquet_kv_metadata({_ql(str(path))})").fetchall():  # noqa: S608
                if bytes(k).decode(errors="replace") == METADATA_KEY:
                    token = bytes(v).decode(errors="replace")
        else:
            src = f"read_csv({_ql(str(path))}, header = true, all_varchar = true)"
        described = con.execute(f"DESCRIBE SELECT * FROM {src}").fetchall()  # noqa: S608
        names = [str(row[0]) for row in described]
        types = {str(row[0]): str(row[1]) for row in described}
        select = ", ".join(f"CAST({_qi(n)} AS VARCHAR)" for n in names)
        rows = con.execute(f"SELECT {select} FROM {src}").fetchall()  # noqa: S608
    except duckdb.Error as exc:
        raise InvalidInput(f"cannot read the file as {fmt}: {exc}") from exc
    finally:
        con.close()
    return names, rows, types, token


def _mark_columns(
    names: list[str], rows: list[tuple[str | None, ...]], types: dict[str, str], given: Sequence[str] | None
) -> list[tuple[str, int]]:
    """Return (column, scale) pairs: given (``name`` or ``name:scale``), else decimals, else decimal-looking text."""
    result: list[tuple[str, int]] = []
    if given is not None:
        for spec in given:
            name, _, fixed = spec.rpartition(":") if ":" in spec else (spec, "", "")
            scale = int(fixed) if fixed else _decimal_scale(types.get(name, "")) or _text_scale(rows, names, name)
            result.append((name, scale))
        return result
    for col, name in enumerate(names):
        found = _decimal_scale(types[name])
        if found:
            result.append((name, found))
        elif types[name] == "VARCHAR":
            values = [row[col] for row in rows if row[col] not in (None, "")]
            if values and all(_DECIMAL_TEXT.match(v.strip()) for v in values if v) and any("." in v for v in values if v):
                result.append((name, _text_scale(rows, names, name)))
    return result


def _text_scale(rows: list[tuple[str | None, ...]], names: list[str], name: str) -> int:
    if name not in names:
        return 0
    col = names.index(name)
    return max((len(v.strip().partition(".")[2]) for row in rows if (v := row[col])), default=0)


def _parity(text: str | None, scale: int) -> int | None:
    if text is None or not text.strip() or scale <= 0:
        return None
    try:
        scaled = Decimal(text.strip()).scaleb(scale)
    except InvalidOperation:
        return None
    if scaled != scaled.to_integral_value():
        return None
    return abs(int(scaled)) % 2


def _z(hits: int, trials: int) -> float:
    if trials <= 0:
        return 0.0
    return (hits - trials / 2) / math.sqrt(trials / 4)
