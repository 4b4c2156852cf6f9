"""A resource's contents: check an uploaded CSV or Parquet file against the resource's fields and store it as
Parquet. Pure file work with DuckDB, no database.

DuckDB reads and writes out of core (a memory limit and a spill folder are set), so a file of any size is
checked and converted without ever being held in Python memory. Python itself only streams the bytes once
through an incremental UTF-8 decoder (CSV) and once through SHA-256 (the stored file).

Accepted input:

- **CSV**: a header row naming the columns, UTF-8 (a byte order mark is fine), comma separated, ``"`` quotes
  (``""`` inside a quoted value). Blank lines are skipped; an empty cell is a missing value (NULL).
  Values of the typed fields may have surrounding spaces; text values are kept exactly.
- **Parquet**: columns of a type that converts to the field's type (see ``_parquet_conversion``); text
  columns are read with the CSV rules.

Types of the stored Parquet file (one column per field, in the schema's order): string -> VARCHAR,
integer -> BIGINT, decimal -> DOUBLE (a binary floating point number: exact decimals are not kept, which is
acceptable for the statistics and reference data the platform serves), boolean -> BOOLEAN
(true/false, t/f, yes/no, y/n, 1/0, any case), date -> DATE (ISO ``YYYY-MM-DD``), timestamp -> TIMESTAMP
(ISO ``YYYY-MM-DD[ T]HH:MM[:SS[.ffffff]]``; a value with an offset or ``Z`` is converted to UTC, one without
is stored as given).

Row numbers in problems count data rows from 1 after the header (blank lines and rows that cannot be read
as CSV are not counted); CSV lines that cannot be read at all are named by their line in the file.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import duckdb

from licensing.models import FieldType
from licensing.schemas import FieldSpec
from marketplace.core.errors import InvalidInput

SourceFormat = Literal["csv", "parquet"]
Progress = Callable[[int, int], None]

#: DuckDB's own memory ceiling per conversion; beyond it, DuckDB spills to a temporary folder.
MEMORY_LIMIT = "256MB"
CHUNK_BYTES = 1024 * 1024
EXAMPLES = 3
EXAMPLE_CHARS = 40

DUCKDB_TYPES: dict[FieldType, str] = {
    FieldType.string: "VARCHAR",
    FieldType.integer: "BIGINT",
    FieldType.decimal: "DOUBLE",
    FieldType.boolean: "BOOLEAN",
    FieldType.date: "DATE",
    FieldType.timestamp: "TIMESTAMP",
}
_TYPE_WORDS: dict[FieldType, str] = {
    FieldType.string: "text",
    FieldType.integer: "a whole number",
    FieldType.decimal: "a number",
    FieldType.boolean: "true or false",
    FieldType.date: "an ISO date, YYYY-MM-DD",
    FieldType.timestamp: "an ISO timestamp, YYYY-MM-DD HH:MM:SS",
}
_INTEGER_TYPES = frozenset(
    {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT"}
)
_FLOAT_TYPES = frozenset({"FLOAT", "DOUBLE"})
_TIMESTAMP_TYPES = frozenset({"TIMESTAMP", "TIMESTAMP_S", "TIMESTAMP_MS", "TIMESTAMP_NS", "TIMESTAMP WITH TIME ZONE"})


class ContentsRejected(InvalidInput):
    """The uploaded contents do not match the resource's fields; ``problems`` lists every problem found."""

    code = "contents_do_not_match_schema"
    title = "Contents do not match the schema"

    def __init__(self, problems: Sequence[str]) -> None:
        listed = list(problems)
        noun = "problem" if len(listed) == 1 else "problems"
        super().__init__(f"The contents do not match the resource's fields ({len(listed)} {noun}); nothing was stored.")
        self.extra["problems"] = listed

    @property
    def problems(self) -> list[str]:
        """Every problem found, in words the uploader can act on."""
        return list(self.extra["problems"])


@dataclass(frozen=True)
class StoredContents:
    """What was stored: rows, size of the Parquet file and its SHA-256 (hex)."""

    row_count: int
    byte_size: int
    content_hash: str


def store_contents(
    source: Path,
    source_format: SourceFormat,
    fields: Sequence[FieldSpec],
    destination: Path,
    progress: Progress | None = None,
) -> StoredContents:
    """Check ``source`` against ``fields`` and write it to ``destination`` as Parquet (the fields, in order).

    Raises :class:`ContentsRejected` listing every problem found; then nothing exists at ``destination``
    (the file is written beside it under a temporary name and renamed only once it is complete).
    ``progress(done, total)`` is called with the bytes of ``source`` checked so far.
    """
    if not fields:
        raise ValueError("a resource has at least one field")
    destination.parent.mkdir(parents=True, exist_ok=True)
    total = source.stat().st_size
    with tempfile.TemporaryDirectory(prefix=".store-", dir=destination.parent) as work:
        written = Path(work) / "contents.parquet"
        with _connect(Path(work)) as con:
            try:
                if source_format == "csv":
                    problems = _convert_csv(con, source, fields, written, total, progress)
                elif source_format == "parquet":
                    problems = _convert_parquet(con, source, fields, written)
                else:
                    raise ValueError(f"unknown source format {source_format!r}")
            except (duckdb.InvalidInputException, duckdb.IOException, duckdb.ConversionException) as exc:
                # A damaged file that passed the first checks (e.g. a Parquet file with a corrupt page).
                problems = [f"the file cannot be read as {source_format}: {str(exc).splitlines()[0]}"]
        if problems:
            raise ContentsRejected(problems)
        byte_size, content_hash = _size_and_hash(written)
        with _connect(Path(work)) as con:
            row_count = _scalar(con, "SELECT count(*) FROM read_parquet(?)", [str(written)])
        os.replace(written, destination)
    if progress is not None:
        progress(total, total)
    return StoredContents(row_count=row_count, byte_size=byte_size, content_hash=content_hash)


def read_fields_of_parquet(path: Path) -> list[tuple[str, str]]:
    """The (column name, DuckDB type) pairs of a Parquet file, in order."""
    with _connect(None) as con:
        rows = con.execute(
            "SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM read_parquet(?))", [str(path)]
        ).fetchall()
    return [(str(name), str(kind)) for name, kind in rows]


def sha256_of(path: Path) -> str:
    """SHA-256 (hex) of a file, read in chunks."""
    return _size_and_hash(path)[1]


# --- DuckDB ---------------------------------------------------------------------------------------


def _connect(spill: Path | None) -> duckdb.DuckDBPyConnection:
    config: dict[str, Any] = {
        "memory_limit": MEMORY_LIMIT,
        "autoinstall_known_extensions": False,
        "autoload_known_extensions": False,
    }
    if spill is not None:
        config["temp_directory"] = str(spill / "spill")
    con = duckdb.connect(":memory:", config=config)
    con.execute("SET TimeZone = 'UTC'")
    return con


def _scalar(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | None = None) -> int:
    # fetchall, not fetchone: a result left open keeps DuckDB from finishing the scan (and its rejects table).
    return int(con.execute(sql, params or []).fetchall()[0][0])


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _text_conversion(value: str, kind: FieldType) -> str:
    """SQL turning a text value (already trimmed, NULL when blank) into ``kind``; NULL when it does not convert."""
    if kind is FieldType.string:
        return value
    if kind is FieldType.integer:
        return f"CASE WHEN regexp_full_match({value}, '[+-]?[0-9]+') THEN TRY_CAST({value} AS BIGINT) END"
    if kind is FieldType.decimal:
        pattern = r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?"
        return f"CASE WHEN regexp_full_match({value}, '{pattern}') THEN TRY_CAST({value} AS DOUBLE) END"
    if kind is FieldType.boolean:
        return (
            f"CASE WHEN lower({value}) IN ('true', 't', 'yes', 'y', '1') THEN true "
            f"WHEN lower({value}) IN ('false', 'f', 'no', 'n', '0') THEN false END"
        )
    if kind is FieldType.date:
        return f"CASE WHEN regexp_full_match({value}, '[0-9]{{4}}-[0-9]{{2}}-[0-9]{{2}}') THEN TRY_CAST({value} AS DATE) END"
    pattern = r"[0-9]{4}-[0-9]{2}-[0-9]{2}([T ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,9})?)?)?(Z|[+-][0-9]{2}(:?[0-9]{2})?)?"
    # TimeZone is UTC: values without an offset stay as given, values with one are moved to UTC.
    return f"CASE WHEN regexp_full_match({value}, '{pattern}') THEN TRY_CAST(TRY_CAST({value} AS TIMESTAMPTZ) AS TIMESTAMP) END"


def _text_source(column: str, kind: FieldType) -> str:
    """The value a text column contributes: exact for strings, trimmed and blank-as-missing otherwise."""
    return column if kind is FieldType.string else f"NULLIF(trim({column}), '')"


@dataclass(frozen=True)
class _Check:
    """One present field: the SQL of its source value (NULL = missing) and of its converted value."""

    field: FieldSpec
    source: str
    converted: str


def _bad_values(con: duckdb.DuckDBPyConnection, relation: str, row: str, checks: Sequence[_Check]) -> list[str]:
    """One problem per field holding values that do not convert: how many, and the first few with their row."""
    if not checks:
        return []
    selects = []
    for check in checks:
        bad = f"({check.source}) IS NOT NULL AND ({check.converted}) IS NULL"
        example = f"CAST({check.source} AS VARCHAR)"
        selects.append(f"count(*) FILTER (WHERE {bad})")
        selects.append(f"min_by(struct_pack(r := {row}, v := {example}), {row}, {EXAMPLES}) FILTER (WHERE {bad})")
    result = con.execute(f"SELECT {', '.join(selects)} FROM {relation}").fetchall()[0]  # noqa: S608 - built from _ident and _literal only
    problems = []
    for index, check in enumerate(checks):
        count, examples = int(result[2 * index]), result[2 * index + 1] or []
        if count:
            shown = ", ".join(f"row {int(e['r'])}: {_show(e['v'])}" for e in examples)
            problems.append(
                f"column '{check.field.name}' ({check.field.type.value}): {_plural(count, 'bad value')} "
                f"(expected {_TYPE_WORDS[check.field.type]}), e.g. {shown}"
            )
    return problems


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _show(value: Any) -> str:
    text = str(value)
    return repr(text if len(text) <= EXAMPLE_CHARS else text[:EXAMPLE_CHARS] + "…")


def _column_problems(fields: Sequence[FieldSpec], names: Sequence[str], what: str) -> list[str]:
    """Missing, unexpected and duplicate columns of ``names`` against the schema's fields."""
    problems = []
    seen: dict[str, int] = {}
    for name in names:
        seen[name] = seen.get(name, 0) + 1
    for name, times in seen.items():
        if times > 1 and name:
            problems.append(f"duplicate column name: '{name}' appears {times} times in the {what}")
    expected = {f.name for f in fields}
    for field in fields:
        if field.name not in seen:
            problems.append(f"missing column: '{field.name}' ({field.type.value}) is in the schema but not in the {what}")
    lowered = {f.name.lower(): f.name for f in fields}
    for name in seen:
        if name and name not in expected:
            hint = lowered.get(name.lower())
            suffix = f" (did you mean '{hint}'? names are case-sensitive)" if hint else ""
            problems.append(f"unexpected column: '{name}' is in the {what} but not in the schema{suffix}")
    return problems


def _copy(con: duckdb.DuckDBPyConnection, select: str, target: Path) -> None:
    con.execute(f"COPY ({select}) TO {_literal(str(target))} (FORMAT parquet, COMPRESSION zstd)")


def _size_and_hash(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as stream:
        while chunk := stream.read(CHUNK_BYTES):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


# --- CSV ------------------------------------------------------------------------------------------


def _utf8_problem(source: Path, total: int, progress: Progress | None) -> str | None:
    """Stream the file through an incremental UTF-8 decoder; the first invalid byte's offset and line, if any."""
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    offset = 0
    newlines = 0
    with source.open("rb") as stream:
        while True:
            chunk = stream.read(CHUNK_BYTES)
            final = not chunk
            try:
                decoder.decode(chunk, final=final)
            except UnicodeDecodeError as exc:
                # exc.start indexes the decoder's pending bytes followed by this chunk.
                pending = len(exc.object) - len(chunk)
                at = max(offset - pending + exc.start, 0)
                line = newlines + chunk[: max(exc.start - pending, 0)].count(b"\n") + 1
                bad = exc.object[exc.start : exc.start + 1].hex()
                return (
                    f"the file is not valid UTF-8: byte 0x{bad} at byte offset {at} (line {line}) "
                    "cannot be decoded; save the file as UTF-8 and upload it again"
                )
            if final:
                return None
            offset += len(chunk)
            newlines += chunk.count(b"\n")
            if progress is not None:
                progress(offset, total)


def _read_header(source: Path) -> list[str] | None:
    """The header row's names (stripped), or None when the file holds nothing."""
    with source.open("r", encoding="utf-8-sig", errors="replace", newline="") as stream:
        try:
            return [name.strip() for name in next(csv.reader(stream))]
        except StopIteration:
            return None


def _header_problems(header: list[str] | None) -> list[str]:
    if header is None:
        return ["the file is empty: a header row naming the columns is required"]
    if not any(header):
        return ["the header row is empty: the first line must name the columns, separated by commas"]
    return [f"the header's column {position} has no name" for position, name in enumerate(header, start=1) if not name]


def _read_csv(source: Path, width: int) -> str:
    columns = "{" + ", ".join(f"'c{i}': 'VARCHAR'" for i in range(width)) + "}"
    return (
        f"read_csv({_literal(str(source))}, header = true, auto_detect = false, delim = ',', quote = '\"', "
        f"escape = '\"', columns = {columns}, store_rejects = true)"
    )


def _unreadable_rows(con: duckdb.DuckDBPyConnection, width: int) -> list[str]:
    """Lines DuckDB could not split into the header's columns (it skipped them and kept them aside)."""
    problems = []
    for wrong_width in (True, False):
        where = "error_type::VARCHAR IN ('TOO MANY COLUMNS', 'MISSING COLUMNS')"
        where = where if wrong_width else f"NOT ({where})"
        count = _scalar(con, f"SELECT count(DISTINCT line) FROM reject_errors WHERE {where}")  # noqa: S608 - built from _ident and _literal only
        if not count:
            continue
        rows = con.execute(
            f"SELECT line, any_value(error_type::VARCHAR), any_value(csv_line) FROM reject_errors WHERE {where} "  # noqa: S608 - built from _ident and _literal only
            "GROUP BY line ORDER BY line LIMIT ?",
            [EXAMPLES],
        ).fetchall()
        if wrong_width:
            shown = ", ".join(f"line {int(r[0])} has {_plural(_width(r[2]), 'value')}" for r in rows)
            problems.append(f"{_plural(count, 'line')} without the header's {width} values, e.g. {shown}")
        else:
            shown = ", ".join(f"line {int(r[0])} ({str(r[1]).lower()})" for r in rows)
            problems.append(f"{_plural(count, 'line')} that cannot be read as CSV (check the quotes), e.g. {shown}")
    return problems


def _width(line: str | None) -> int:
    try:
        return len(next(csv.reader(io.StringIO(line or ""))))
    except (StopIteration, csv.Error):
        return 0


def _convert_csv(
    con: duckdb.DuckDBPyConnection,
    source: Path,
    fields: Sequence[FieldSpec],
    target: Path,
    total: int,
    progress: Progress | None,
) -> list[str]:
    encoding = _utf8_problem(source, total, progress)
    header = _read_header(source)
    problems = [encoding] if encoding else []
    problems += _header_problems(header)
    if header is None or not any(header):
        return problems
    problems += _column_problems(fields, header, "header")
    if encoding:
        return problems  # DuckDB would stumble over the same bytes; the encoding must be fixed first
    position: dict[str, int] = {}
    for index, name in enumerate(header):
        position.setdefault(name, index)
    present = [f for f in fields if f.name in position]
    values = {f.name: _text_source(f"c{position[f.name]}", f.type) for f in present}
    checks = [_Check(f, values[f.name], _text_conversion(f"({values[f.name]})", f.type)) for f in present]
    # Rows are numbered in file order (DuckDB preserves insertion order); rows DuckDB cannot split go aside.
    con.execute(f"CREATE TEMP VIEW rows AS SELECT row_number() OVER () AS __row, * FROM {_read_csv(source, len(header))}")  # noqa: S608 - built from _ident and _literal only
    if checks:
        problems += _bad_values(con, "rows", "__row", checks)
    else:
        con.execute("SELECT count(*) FROM rows").fetchall()
    problems += _unreadable_rows(con, len(header))
    if problems:
        return problems
    select = ", ".join(f"CAST({c.converted} AS {DUCKDB_TYPES[c.field.type]}) AS {_ident(c.field.name)}" for c in checks)
    _copy(con, f"SELECT {select} FROM {_read_csv(source, len(header))}", target)  # noqa: S608 - built from _ident and _literal only
    return _unreadable_rows(con, len(header))


# --- Parquet --------------------------------------------------------------------------------------


def _parquet_problem(source: Path) -> str | None:
    """Whether the file carries Parquet's magic bytes at both ends."""
    size = source.stat().st_size
    with source.open("rb") as stream:
        head = stream.read(4)
        if size >= 12:
            stream.seek(size - 4)
            tail = stream.read(4)
        else:
            tail = b""
    if head == b"PAR1" and tail == b"PAR1":
        return None
    return "the file is not Parquet (it lacks the PAR1 markers); upload a Parquet file or choose CSV"


def _top_level_names(con: duckdb.DuckDBPyConnection, source: Path) -> list[str]:
    """The file's top-level column names exactly as written (DuckDB renames duplicates when reading)."""
    nodes = con.execute("SELECT name, coalesce(num_children, 0) FROM parquet_schema(?)", [str(source)]).fetchall()
    names: list[str] = []
    index = 1  # node 0 is the root
    while index < len(nodes):
        names.append(str(nodes[index][0]))
        # Skip this column's subtree (nested types), counting descendants depth-first.
        remaining = int(nodes[index][1])
        index += 1
        while remaining:
            remaining += int(nodes[index][1]) - 1
            index += 1
    return names


def _parquet_conversion(column: str, source_type: str, kind: FieldType) -> str | None:
    """SQL converting a Parquet column of ``source_type`` to ``kind``; None when the types cannot convert."""
    base = source_type.split("(")[0]
    numeric = base in _INTEGER_TYPES or base in _FLOAT_TYPES or base == "DECIMAL"
    if source_type == "VARCHAR":
        return _text_conversion(f"NULLIF(trim({column}), '')", kind) if kind is not FieldType.string else column
    if kind is FieldType.string:
        nested = any(mark in source_type for mark in ("[", "STRUCT", "MAP", "UNION")) or base == "BLOB"
        return None if nested else f"CAST({column} AS VARCHAR)"
    if kind is FieldType.integer:
        if base in _INTEGER_TYPES:
            return f"TRY_CAST({column} AS BIGINT)"
        if numeric:
            return f"CASE WHEN {column} = trunc({column}) THEN TRY_CAST({column} AS BIGINT) END"
        return None
    if kind is FieldType.decimal:
        return f"CASE WHEN isfinite(CAST({column} AS DOUBLE)) THEN CAST({column} AS DOUBLE) END" if numeric else None
    if kind is FieldType.boolean:
        return column if base == "BOOLEAN" else None
    if kind is FieldType.date:
        return column if base == "DATE" else None
    if base in _TIMESTAMP_TYPES or source_type in _TIMESTAMP_TYPES:
        return f"CAST({column} AS TIMESTAMP)"
    return f"CAST({column} AS TIMESTAMP)" if base == "DATE" else None


def _convert_parquet(con: duckdb.DuckDBPyConnection, source: Path, fields: Sequence[FieldSpec], target: Path) -> list[str]:
    not_parquet = _parquet_problem(source)
    if not_parquet:
        return [not_parquet]
    try:
        names = _top_level_names(con, source)
        described = con.execute(
            "SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM read_parquet(?))", [str(source)]
        ).fetchall()
    except duckdb.Error as exc:
        return [f"the file is not a readable Parquet file: {str(exc).splitlines()[0]}"]
    problems = _column_problems(fields, names, "file")
    # DESCRIBE lists the same columns in the same order, duplicates renamed: address columns by that name.
    columns: dict[str, tuple[str, str]] = {}
    for raw, (read_name, read_type) in zip(names, described, strict=False):
        columns.setdefault(raw, (str(read_name), str(read_type)))
    relation = f"read_parquet({_literal(str(source))}, file_row_number = true)"
    checks = []
    conversions = {}
    for field in fields:
        if field.name not in columns:
            continue
        read_name, read_type = columns[field.name]
        converted = _parquet_conversion(_ident(read_name), read_type, field.type)
        if converted is None:
            problems.append(
                f"column '{field.name}' ({field.type.value}): the file stores it as {read_type}, "
                f"which cannot become {field.type.value} values"
            )
            continue
        conversions[field.name] = converted
        source_sql = (
            _ident(read_name)
            if read_type != "VARCHAR" or field.type is FieldType.string
            else f"NULLIF(trim({_ident(read_name)}), '')"
        )
        checks.append(_Check(field, source_sql, converted))
    problems += _bad_values(con, relation, "(file_row_number + 1)", checks)
    if problems:
        return problems
    select = ", ".join(f"CAST({conversions[f.name]} AS {DUCKDB_TYPES[f.type]}) AS {_ident(f.name)}" for f in fields)
    _copy(con, f"SELECT {select} FROM read_parquet({_literal(str(source))})", target)  # noqa: S608 - built from _ident and _literal only
    return []
