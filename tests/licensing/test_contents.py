"""Contents checks and conversion (no database): CSV and Parquet in, the schema's Parquet out, or every problem."""

from __future__ import annotations

import hashlib
import tracemalloc
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from licensing.contents import ContentsRejected, StoredContents, read_fields_of_parquet, store_contents
from licensing.models import FieldTag, FieldType
from licensing.schemas import FieldSpec
from marketplace.core.errors import InvalidInput
from tests.licensing.factories import write_csv, write_parquet

FIELDS = [
    FieldSpec(name="id", type=FieldType.integer),
    FieldSpec(name="name", type=FieldType.string, tag=FieldTag.direct_identifier),
    FieldSpec(name="amount", type=FieldType.decimal),
    FieldSpec(name="active", type=FieldType.boolean),
    FieldSpec(name="day", type=FieldType.date),
    FieldSpec(name="seen_at", type=FieldType.timestamp),
]
HEADER = "id,name,amount,active,day,seen_at\n"


def _rows(path: Path) -> list[tuple[object, ...]]:
    with duckdb.connect() as con:
        return con.execute("SELECT * FROM read_parquet(?)", [str(path)]).fetchall()


def _reject(source: Path, fmt: str, destination: Path, fields: list[FieldSpec] = FIELDS) -> list[str]:
    with pytest.raises(ContentsRejected) as caught:
        store_contents(source, fmt, fields, destination)  # type: ignore[arg-type]
    assert not destination.exists()
    assert [p.name for p in destination.parent.iterdir()] == [], "no temporary file is left behind"
    assert isinstance(caught.value, InvalidInput)
    assert caught.value.code == "contents_do_not_match_schema"
    assert caught.value.extra["problems"] == caught.value.problems
    return caught.value.problems


def test_csv_is_stored_as_parquet_with_the_schema_types_in_schema_order(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    # Columns in another order than the schema, a byte order mark, quotes, blanks, spaces around typed values.
    source.write_bytes(
        "\ufeffname,id,seen_at,day,active,amount\n"
        '"Wang, Li",1,2026-03-01T08:30:00+08:00,2026-03-01,true,12.5\n'
        ",2,2026-03-02 10:00, 2026-03-02 ,NO,-3e2\n"
        "  spaced  , 3 ,2026-03-03T00:00:00.250,2026-03-03,1,\n"
        "\n"
        "张三,4,2026-03-04,2026-03-04,f,0.125\n".encode()
    )
    destination = tmp_path / "out" / "v1.parquet"
    stored = store_contents(source, "csv", FIELDS, destination)
    assert stored == StoredContents(
        row_count=4, byte_size=destination.stat().st_size, content_hash=hashlib.sha256(destination.read_bytes()).hexdigest()
    )
    assert read_fields_of_parquet(destination) == [
        ("id", "BIGINT"),
        ("name", "VARCHAR"),
        ("amount", "DOUBLE"),
        ("active", "BOOLEAN"),
        ("day", "DATE"),
        ("seen_at", "TIMESTAMP"),
    ]
    assert _rows(destination) == [
        (1, "Wang, Li", 12.5, True, date(2026, 3, 1), datetime(2026, 3, 1, 0, 30)),  # +08:00 moved to UTC
        (2, None, -300.0, False, date(2026, 3, 2), datetime(2026, 3, 2, 10, 0)),
        (3, "  spaced  ", None, True, date(2026, 3, 3), datetime(2026, 3, 3, 0, 0, 0, 250000)),
        (4, "张三", 0.125, False, date(2026, 3, 4), datetime(2026, 3, 4)),
    ]
    assert [p.name for p in destination.parent.iterdir()] == ["v1.parquet"]


def test_parquet_with_compatible_types_is_converted(tmp_path: Path) -> None:
    source = tmp_path / "in.parquet"
    with duckdb.connect() as con:
        con.execute(
            f"COPY (SELECT * FROM (VALUES (TIMESTAMPTZ '2026-01-01 12:00:00+02', DATE '2026-01-01', 'yes', "
            f"CAST(7.25 AS DECIMAL(9, 2)), 'Li', CAST(5 AS INTEGER)), (NULL, NULL, ' 0 ', NULL, NULL, CAST(6 AS INTEGER))) "
            f"t(seen_at, day, active, amount, name, id)) TO '{source}' (FORMAT parquet)"
        )
    destination = tmp_path / "v1.parquet"
    stored = store_contents(source, "parquet", FIELDS, destination)
    assert stored.row_count == 2
    assert [name for name, _ in read_fields_of_parquet(destination)] == [f.name for f in FIELDS]
    assert _rows(destination) == [
        (5, "Li", 7.25, True, date(2026, 1, 1), datetime(2026, 1, 1, 10, 0)),
        (6, None, None, False, None, None),
    ]


def test_every_problem_of_a_csv_is_listed_at_once(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_text(
        "id,name,amount,day,seen_at,Active,extra\n"
        "1,a,1.5,2026-01-01,2026-01-01,1,x\n"
        "x,b,abc,2026/01/02,2026-01-02,1,x\n"
        "1.5,c,inf,2026-13-01,nope,1,x\n"
        "4,d,2,02-01-2026,2026-01-04,1,x\n"
        "five,e,3,2026-01-05,2026-01-05,1,x\n"
        "6,f,3,2026-01-06,2026-01-06,1,x,surplus\n"
        "7\n",
        encoding="utf-8",
    )
    problems = _reject(source, "csv", tmp_path / "out" / "v1.parquet")
    assert problems == [
        "missing column: 'active' (boolean) is in the schema but not in the header",
        "unexpected column: 'Active' is in the header but not in the schema (did you mean 'active'? names are case-sensitive)",
        "unexpected column: 'extra' is in the header but not in the schema",
        "column 'id' (integer): 3 bad values (expected a whole number), e.g. row 2: 'x', row 3: '1.5', row 5: 'five'",
        "column 'amount' (decimal): 2 bad values (expected a number), e.g. row 2: 'abc', row 3: 'inf'",
        "column 'day' (date): 3 bad values (expected an ISO date, YYYY-MM-DD), e.g. row 2: '2026/01/02', "
        "row 3: '2026-13-01', row 4: '02-01-2026'",
        "column 'seen_at' (timestamp): 1 bad value (expected an ISO timestamp, YYYY-MM-DD HH:MM:SS), e.g. row 3: 'nope'",
        "2 lines without the header's 7 values, e.g. line 7 has 8 values, line 8 has 1 value",
    ]


def test_only_three_examples_are_shown_but_every_bad_value_is_counted(tmp_path: Path) -> None:
    source = write_csv(tmp_path / "in.csv", ["id"], [[n if n % 10 else f"bad{n}"] for n in range(1, 101)])
    problems = _reject(source, "csv", tmp_path / "out" / "v1.parquet", [FieldSpec(name="id", type=FieldType.integer)])
    assert problems == [
        "column 'id' (integer): 10 bad values (expected a whole number), e.g. row 10: 'bad10', row 20: 'bad20', row 30: 'bad30'"
    ]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", ["the file is empty: a header row naming the columns is required"]),
        (b"\n1,2\n", ["the header row is empty: the first line must name the columns, separated by commas"]),
        (
            b"id,,name\n1,2,3\n",
            ["the header's column 2 has no name", "unexpected column: 'name' is in the header but not in the schema"],
        ),
        (
            b"id,id\n1,2\n",
            ["duplicate column name: 'id' appears 2 times in the header"],
        ),
        (
            b"id\n1\n2\n\xff3\n",
            [
                "the file is not valid UTF-8: byte 0xff at byte offset 7 (line 4) cannot be decoded; "
                "save the file as UTF-8 and upload it again"
            ],
        ),
        (
            b'id\n1\n"2\n',
            ["1 line that cannot be read as CSV (check the quotes), e.g. line 3 (unquoted value)"],
        ),
    ],
    ids=["empty-file", "empty-header", "unnamed-column", "duplicate-names", "invalid-utf8", "open-quote"],
)
def test_csv_shape_problems(tmp_path: Path, content: bytes, expected: list[str]) -> None:
    source = tmp_path / "in.csv"
    source.write_bytes(content)
    fields = [FieldSpec(name="id", type=FieldType.integer)]
    assert _reject(source, "csv", tmp_path / "out" / "v1.parquet", fields) == expected


def test_invalid_utf8_is_located_across_chunk_boundaries(tmp_path: Path) -> None:
    # A two-byte character split over the 1 MiB read boundary is fine; a stray continuation byte is not.
    line = "é" * 99 + "\n"  # 199 bytes
    good = ("name\nab\n" + line * 6000).encode()
    boundary = 1024 * 1024
    assert good[boundary - 1 : boundary + 1] == "é".encode(), "the boundary falls inside a character"
    source = tmp_path / "in.csv"
    source.write_bytes(good + b"\x80tail\n")
    problems = _reject(source, "csv", tmp_path / "out" / "v1.parquet", [FieldSpec(name="name", type=FieldType.string)])
    assert problems == [
        f"the file is not valid UTF-8: byte 0x80 at byte offset {len(good)} (line 6003) cannot be decoded; "
        "save the file as UTF-8 and upload it again"
    ]


def test_invalid_utf8_does_not_hide_header_problems(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_bytes(b"id,nom\n1,caf\xe9\n")
    problems = _reject(source, "csv", tmp_path / "out" / "v1.parquet", FIELDS[:2])
    assert problems[0].startswith("the file is not valid UTF-8: byte 0xe9 at byte offset 12 (line 2)")
    assert problems[1:] == [
        "missing column: 'name' (string) is in the schema but not in the header",
        "unexpected column: 'nom' is in the header but not in the schema",
    ]


def test_a_file_that_is_not_parquet_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "in.parquet"
    source.write_bytes(HEADER.encode() + b"1,a,1,true,2026-01-01,2026-01-01\n")
    assert _reject(source, "parquet", tmp_path / "out" / "v1.parquet") == [
        "the file is not Parquet (it lacks the PAR1 markers); upload a Parquet file or choose CSV"
    ]


def test_a_truncated_parquet_file_is_refused(tmp_path: Path) -> None:
    whole = tmp_path / "whole.parquet"
    write_parquet(whole, FIELDS[:1], [[1], [2]])
    source = tmp_path / "in.parquet"
    payload = whole.read_bytes()
    source.write_bytes(payload[:4] + payload[-30:])
    problems = _reject(source, "parquet", tmp_path / "out" / "v1.parquet", FIELDS[:1])
    assert len(problems) == 1
    assert problems[0].startswith("the file is not a readable Parquet file")


def test_parquet_problems_are_listed_at_once(tmp_path: Path) -> None:
    source = tmp_path / "in.parquet"
    with duckdb.connect() as con:
        con.execute(
            "COPY (SELECT * FROM (VALUES ('1', 'a', DATE '2026-01-01', 1.5, [1]), ('x', 'b', DATE '2026-01-02', 2.0, [2]), "
            "('3', 'c', NULL, 2.5, [3])) t(id, name, active, amount, extra)) "
            f"TO '{source}' (FORMAT parquet)"
        )
    fields = [*FIELDS[:4], FieldSpec(name="other", type=FieldType.integer)]
    fields[2] = FieldSpec(name="amount", type=FieldType.integer)
    problems = _reject(source, "parquet", tmp_path / "out" / "v1.parquet", fields)
    assert problems == [
        "missing column: 'other' (integer) is in the schema but not in the file",
        "unexpected column: 'extra' is in the file but not in the schema",
        "column 'active' (boolean): the file stores it as DATE, which cannot become boolean values",
        "column 'id' (integer): 1 bad value (expected a whole number), e.g. row 2: 'x'",
        "column 'amount' (integer): 2 bad values (expected a whole number), e.g. row 1: '1.5', row 3: '2.5'",
    ]


def test_a_large_csv_streams_through_duckdb_not_python_memory(tmp_path: Path) -> None:
    source = tmp_path / "big.csv"
    rows = 300_000
    with source.open("w", encoding="utf-8") as stream:
        stream.write("id,name,amount,day\n")
        for n in range(1, rows + 1):
            stream.write(f"{n},resident number {n:07d} of the district,{n * 1.5},2026-01-{n % 28 + 1:02d}\n")
    size = source.stat().st_size
    assert size > 15 * 1024 * 1024
    fields = [FIELDS[0], FIELDS[1], FIELDS[2], FIELDS[4]]
    destination = tmp_path / "out" / "v1.parquet"
    seen: list[tuple[int, int]] = []
    tracemalloc.start()
    try:
        stored = store_contents(source, "csv", fields, destination, progress=lambda done, total: seen.append((done, total)))
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Python itself held at most a few read chunks, never the file (DuckDB's own memory is not traced here).
    assert peak < size / 3, (peak, size)
    assert stored.row_count == rows
    assert stored.content_hash == hashlib.sha256(destination.read_bytes()).hexdigest()
    assert seen[-1] == (size, size)
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)
    with duckdb.connect() as con:
        total, amount, last = con.execute(
            "SELECT count(*), sum(amount), max_by(name, id) FROM read_parquet(?)", [str(destination)]
        ).fetchall()[0]
    assert total == rows
    assert Decimal(str(amount)) == Decimal(rows * (rows + 1)) * Decimal("0.75")
    assert last == "resident number 0300000 of the district"


def test_row_numbers_of_a_large_csv_follow_the_file(tmp_path: Path) -> None:
    source = tmp_path / "big.csv"
    with source.open("w", encoding="utf-8") as stream:
        stream.write("id\n")
        for n in range(1, 300_001):
            stream.write(f"{n}\n" if n not in (123_456, 299_999) else f"#{n}\n")
    problems = _reject(source, "csv", tmp_path / "out" / "v1.parquet", [FIELDS[0]])
    assert problems == [
        "column 'id' (integer): 2 bad values (expected a whole number), e.g. row 123456: '#123456', row 299999: '#299999'"
    ]
