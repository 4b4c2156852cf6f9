"""Per-subscription fingerprints of file exports, and tracing a leaked copy back to its subscription."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from marketplace.core.errors import InvalidInput
from marketplace.core.fingerprint import (
    METADATA_KEY,
    TOLERANCE_UNITS,
    metadata_token,
    score_export,
    trace_export,
    write_fingerprinted_export,
)

KEY = b"k" * 32
SUBS = [f"sub-{i:02d}" for i in range(20)]
LEAKER = "sub-07"


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("fp")
    source = base / "source.parquet"
    con = duckdb.connect()
    con.execute(
        "COPY (SELECT 'R' || lpad(CAST(i AS VARCHAR), 5, '0') AS id, CAST(i * 7 % 101 AS INTEGER) AS qty, "
        "CAST(((i * 37) % 100000) / 100.0 AS DECIMAL(10,2)) AS price FROM range(2000) t(i)) "
        f"TO '{source}' (FORMAT parquet)"
    )
    out = {"source": source}
    out["leak"] = write_fingerprinted_export(source, base / "leak.parquet", "parquet", LEAKER, KEY)
    out["other"] = write_fingerprinted_export(source, base / "other.parquet", "parquet", "sub-03", KEY)
    out["leak_csv"] = write_fingerprinted_export(source, base / "leak.csv", "csv", LEAKER, KEY)
    out["stripped"] = base / "stripped.parquet"
    con.execute(f"COPY (SELECT * FROM '{out['leak']}') TO '{out['stripped']}' (FORMAT parquet)")
    out["csv_copy"] = base / "copy.csv"
    con.execute(f"COPY (SELECT * FROM '{out['leak']}' ORDER BY id) TO '{out['csv_copy']}' (FORMAT csv, HEADER true)")
    out["subset"] = base / "subset.csv"
    con.execute("SELECT setseed(0.42)")
    con.execute(
        f"COPY (SELECT * FROM read_csv('{out['leak_csv']}') WHERE random() < 0.3 ORDER BY random()) "
        f"TO '{out['subset']}' (FORMAT csv, HEADER true)"
    )
    out["plain"] = base / "plain.csv"
    con.execute(f"COPY (SELECT * FROM '{source}' ORDER BY id) TO '{out['plain']}' (FORMAT csv, HEADER true)")
    con.close()
    return out


def _rows(path: Path) -> dict[str, tuple[int, Decimal]]:
    with duckdb.connect() as con:
        return {r[0]: (r[1], r[2]) for r in con.execute(f"SELECT id, qty, price FROM '{path}'").fetchall()}


def test_parquet_carries_the_metadata_mark(files: dict[str, Path]) -> None:
    with duckdb.connect() as con:
        meta = dict(con.execute(f"SELECT key, value FROM parquet_kv_metadata('{files['leak']}')").fetchall())
    assert meta[METADATA_KEY.encode()] == metadata_token(KEY, LEAKER).encode()
    assert metadata_token(KEY, LEAKER) != metadata_token(KEY, "sub-03")


def test_fingerprints_are_distinct_per_subscription(files: dict[str, Path]) -> None:
    leak, other = _rows(files["leak"]), _rows(files["other"])
    assert leak.keys() == other.keys()
    differing = sum(leak[k][1] != other[k][1] for k in leak)
    assert differing > 100
    with duckdb.connect() as con:
        first = [r[0] for r in con.execute(f"SELECT id FROM '{files['leak']}' LIMIT 50").fetchall()]
        second = [r[0] for r in con.execute(f"SELECT id FROM '{files['other']}' LIMIT 50").fetchall()]
    assert first != second


def test_values_stay_within_tolerance_and_ids_and_integers_are_untouched(files: dict[str, Path]) -> None:
    source, leak = _rows(files["source"]), _rows(files["leak"])
    assert source.keys() == leak.keys()
    unit = Decimal("0.01") * TOLERANCE_UNITS
    changed = 0
    for rid, (qty, price) in source.items():
        assert leak[rid][0] == qty
        assert abs(leak[rid][1] - price) <= unit
        changed += leak[rid][1] != price
    assert 100 < changed < 500  # about 1 cell in 8 moves by one cent


@pytest.mark.parametrize(
    ("name", "fmt"),
    [("leak", "parquet"), ("stripped", "parquet"), ("leak_csv", "csv"), ("csv_copy", "csv"), ("subset", "csv")],
)
def test_trace_names_the_leaking_subscription(files: dict[str, Path], name: str, fmt: str) -> None:
    assert trace_export(files[name], fmt, SUBS, KEY) == LEAKER  # type: ignore[arg-type]


def test_stripped_copy_has_no_metadata_but_is_traced_by_data(files: dict[str, Path]) -> None:
    scores = score_export(files["stripped"], "parquet", SUBS, KEY)
    assert scores[0].subscription_id == LEAKER
    assert not scores[0].metadata_match
    assert scores[0].parity_agree == scores[0].parity_cells > 300
    assert all(abs(s.evidence) < 6 for s in scores[1:])


def test_subset_is_traced_by_the_decimal_mark_alone(files: dict[str, Path]) -> None:
    scores = {s.subscription_id: s for s in score_export(files["subset"], "csv", SUBS, KEY)}
    assert abs(scores[LEAKER].z_order) < 6  # rows were shuffled
    assert scores[LEAKER].z_parity > 8


def test_unfingerprinted_copy_traces_to_none(files: dict[str, Path]) -> None:
    assert trace_export(files["plain"], "csv", SUBS, KEY) is None
    assert trace_export(files["source"], "parquet", SUBS, KEY) is None


def test_a_wrong_key_traces_to_none(files: dict[str, Path]) -> None:
    assert trace_export(files["leak_csv"], "csv", SUBS, b"x" * 32) is None


def test_bad_arguments_are_refused(files: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(InvalidInput):
        write_fingerprinted_export(files["source"], tmp_path / "x.json", "json", LEAKER, KEY)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        write_fingerprinted_export(files["source"], tmp_path / "x.csv", "csv", LEAKER, b"short")
