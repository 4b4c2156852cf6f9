"""The sandbox guard: leaking or forbidden queries are refused with a stable reason; legitimate aggregates
run over the masked projection and return the same numbers as Python over the same rows, with groups
smaller than k suppressed."""

from __future__ import annotations

import hashlib
import hmac
import statistics
from collections import Counter
from pathlib import Path
from typing import Any

import duckdb
import pytest

from licensing.schemas import FieldSpec, MaskingRule
from marketplace.core.errors import InvalidInput
from marketplace.delivery.sandbox import (
    SandboxQueryRefused,
    check_sandbox_query,
    numeric_columns,
    run_sandbox_query,
)
from tests.licensing.factories import write_parquet

KEY = b"sandbox-test-key-0123456789abcdef"
K = 5

FIELDS = (
    FieldSpec.model_validate({"name": "patient_name", "type": "string", "tag": "direct_identifier"}),
    FieldSpec.model_validate({"name": "id_number", "type": "string", "tag": "direct_identifier"}),
    FieldSpec.model_validate({"name": "age", "type": "integer", "tag": "quasi_identifier"}),
    FieldSpec.model_validate({"name": "district", "type": "string", "tag": "quasi_identifier"}),
    FieldSpec.model_validate({"name": "diagnosis", "type": "string", "tag": "sensitive"}),
    FieldSpec.model_validate({"name": "cost", "type": "decimal"}),
    FieldSpec.model_validate({"name": "visits", "type": "integer"}),
)
RULES = (
    MaskingRule.model_validate({"field": "patient_name", "action": "pseudonymise"}),
    MaskingRule.model_validate({"field": "id_number", "action": "drop"}),
    MaskingRule.model_validate({"field": "age", "action": "generalise", "method": "bucket", "size": 10}),
    MaskingRule.model_validate({"field": "district", "action": "keep"}),
    MaskingRule.model_validate({"field": "diagnosis", "action": "keep"}),
    MaskingRule.model_validate({"field": "cost", "action": "keep"}),
    MaskingRule.model_validate({"field": "visits", "action": "keep"}),
)
COLUMNS = ("patient_name", "age", "district", "diagnosis", "cost", "visits")
NUMERIC = ("cost", "visits")
#: People per district: Dongcheng (3) is below k = 5.
SIZES = {"Haidian": 12, "Chaoyang": 8, "Dongcheng": 3}


def _rows() -> list[tuple[Any, ...]]:
    rows: list[tuple[Any, ...]] = []
    i = 0
    for district, size in SIZES.items():
        for _ in range(size):
            rows.append(
                (
                    f"Patient {i:03d}",
                    f"1101011980{i:08d}",
                    25 + (i * 7) % 40,
                    district,
                    ("J20", "I10", "E11")[i % 3],
                    round(80.25 + 13.5 * i, 2),
                    1 + i % 4,
                )
            )
            i += 1
    return rows


ROWS = _rows()


def _bucket(age: int) -> str:
    low = age - age % 10
    return f"{low}-{low + 9}"


def _pseudonym(name: str) -> str:
    return hmac.new(KEY, name.encode(), "sha256").hexdigest()


#: The delivered projection, computed in Python: what the buyer's ``data`` holds.
DATA = [
    {"patient_name": _pseudonym(n), "age": _bucket(a), "district": d, "diagnosis": g, "cost": c, "visits": v}
    for n, _, a, d, g, c, v in ROWS
]


@pytest.fixture(scope="module")
def parquet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sandbox") / "visits.parquet"
    write_parquet(path, FIELDS, ROWS)
    return path


def _run(parquet: Path, sql: str, **options: Any) -> Any:
    return run_sandbox_query(parquet, FIELDS, RULES, KEY, sql, K, **options)


# --- refused -------------------------------------------------------------------------------------------------

REFUSED = [
    pytest.param("SELECT * FROM data", "star", id="select-star"),
    pytest.param("SELECT data.* FROM data", "star", id="qualified-star"),
    pytest.param("SELECT count(COLUMNS(*)) FROM data", "function", id="columns-star"),
    pytest.param("SELECT district FROM data", "no_aggregate", id="raw-column"),
    pytest.param("SELECT district FROM data GROUP BY district", "no_aggregate", id="distinct-values-without-aggregate"),
    pytest.param("SELECT district, cost, count(*) FROM data GROUP BY district", "raw_column", id="raw-column-beside-aggregate"),
    pytest.param("SELECT cost + count(*) FROM data", "raw_column", id="raw-column-in-arithmetic"),
    pytest.param("SELECT count(*) FROM data GROUP BY district ORDER BY cost", "raw_column", id="raw-column-in-order-by"),
    pytest.param("SELECT count(*) FROM data a JOIN data b ON a.district = b.district", "join", id="self-join"),
    pytest.param("SELECT count(*) FROM data, data", "join", id="comma-join"),
    pytest.param("SELECT count(*) FROM data CROSS JOIN read_csv('/etc/passwd')", "join", id="join-file"),
    pytest.param("SELECT count(*) FROM read_parquet('/etc/passwd')", "table", id="read-parquet"),
    pytest.param("SELECT count(*) FROM read_csv_auto('/etc/passwd')", "table", id="read-csv"),
    pytest.param("SELECT count(*) FROM glob('/*')", "table", id="glob"),
    pytest.param("SELECT count(*) FROM 'file.parquet'", "table", id="file-as-table"),
    pytest.param("SELECT count(*) FROM duckdb_settings()", "table", id="catalog-function"),
    pytest.param("SELECT count(*) FROM other", "table", id="other-table"),
    pytest.param("SELECT count(*) FROM main.data", "table", id="schema-qualified-table"),
    pytest.param("SELECT count(*) FROM data WHERE other.x = 1", "table", id="foreign-qualifier"),
    pytest.param("SELECT count(*) FROM (SELECT * FROM read_parquet('x.parquet'))", "subquery", id="subquery-in-from"),
    pytest.param("SELECT count(*) FROM data WHERE cost IN (SELECT cost FROM other)", "subquery", id="subquery-in-where"),
    pytest.param("SELECT (SELECT max(cost) FROM data), count(*) FROM data", "subquery", id="scalar-subquery"),
    pytest.param(
        "WITH data AS (SELECT * FROM read_parquet('/etc/passwd')) SELECT count(*) FROM data", "cte", id="cte-shadows-data"
    ),
    pytest.param("WITH t AS (SELECT cost FROM data) SELECT count(*) FROM data", "cte", id="cte"),
    pytest.param("SELECT array_agg(cost) FROM data", "function", id="array-agg"),
    pytest.param("SELECT list(patient_name) FROM data", "function", id="list"),
    pytest.param("SELECT string_agg(patient_name, ',') FROM data", "function", id="string-agg"),
    pytest.param("SELECT group_concat(diagnosis) FROM data", "function", id="group-concat"),
    pytest.param("SELECT first(patient_name) FROM data", "function", id="first"),
    pytest.param("SELECT any_value(patient_name) FROM data GROUP BY district", "function", id="any-value"),
    pytest.param("SELECT arbitrary(cost) FROM data", "function", id="arbitrary"),
    pytest.param("SELECT arg_max(patient_name, cost) FROM data", "function", id="arg-max"),
    pytest.param("SELECT histogram(cost) FROM data", "function", id="histogram"),
    pytest.param("SELECT count(*), current_setting('memory_limit') FROM data", "function", id="settings-function"),
    pytest.param("SELECT count(*) FROM data WHERE read_text('/etc/passwd') IS NOT NULL", "function", id="read-text-in-where"),
    pytest.param("SELECT count(*) OVER () FROM data", "window", id="window-count"),
    pytest.param("SELECT count(*) FROM data QUALIFY row_number() OVER () = 1", "window", id="qualify"),
    pytest.param("SELECT count(*) FROM data UNION ALL SELECT patient_name FROM data", "set_operation", id="union-raw-rows"),
    pytest.param("SELECT count(*) FROM data; SELECT * FROM data", "multiple_statements", id="two-statements"),
    pytest.param("SELECT count(*) FROM data -- harmless\n; DROP TABLE data", "multiple_statements", id="comment-hides-statement"),
    pytest.param("SELECT count(*) FROM data /* ; */; ATTACH 'x.db'", "multiple_statements", id="block-comment-then-attach"),
    pytest.param("COPY data TO '/tmp/out.csv'", "not_select", id="copy"),
    pytest.param("ATTACH '/tmp/x.db' AS x", "not_select", id="attach"),
    pytest.param("PRAGMA database_list", "not_select", id="pragma"),
    pytest.param("SET enable_external_access = true", "not_select", id="set"),
    pytest.param("INSTALL httpfs", "not_select", id="install"),
    pytest.param("LOAD httpfs", "not_select", id="load"),
    pytest.param("DELETE FROM data", "not_select", id="delete"),
    pytest.param("CREATE TABLE x AS SELECT * FROM data", "not_select", id="create"),
    pytest.param("DESCRIBE data", "not_select", id="describe"),
    pytest.param("SELECT count(*) INTO x FROM data", "clause", id="select-into"),
    pytest.param("SELECT count(*) FROM data WHERE unknown_field = 1", "unknown_column", id="unknown-column"),
    pytest.param("SELECT count(id_number) FROM data", "unknown_column", id="dropped-column"),
    pytest.param("SELECT min(district) FROM data", "non_numeric_aggregate", id="min-text"),
    pytest.param("SELECT max(age) FROM data", "non_numeric_aggregate", id="max-generalised-quasi-identifier"),
    pytest.param("SELECT median(patient_name) FROM data", "non_numeric_aggregate", id="median-pseudonym"),
    pytest.param("SELECT max(cost, 3) FROM data", "aggregate_argument", id="max-top-n-list"),
    pytest.param(
        "SELECT district, sum(CASE WHEN patient_name = 'abc' THEN cost END) FROM data GROUP BY district",
        "aggregate_argument",
        id="case-inside-aggregate",
    ),
    pytest.param("SELECT sum(cost) FILTER (WHERE patient_name = 'abc') FROM data", "filter", id="aggregate-filter"),
    pytest.param("SELECT sum(count(*)) FROM data", "aggregate_argument", id="nested-aggregate"),
    pytest.param("SELECT count(*) FROM data GROUP BY ALL", "group_by", id="group-by-all"),
    pytest.param("SELECT district, count(*) FROM data GROUP BY 1", "group_by", id="group-by-position"),
    pytest.param("SELECT count(*) FROM data GROUP BY ROLLUP (district)", "group_by", id="rollup"),
    pytest.param("SELECT count(*) FROM data GROUP BY lower(district)", "group_by", id="group-by-expression"),
    pytest.param("SELECT count(*), $source FROM data", "parameter", id="parameter"),
    pytest.param("SELECT count(*) FROM data WHERE", "syntax", id="syntax-error"),
    pytest.param("   ", "syntax", id="empty"),
]


@pytest.mark.parametrize(("sql", "reason"), REFUSED)
def test_leaking_or_forbidden_query_is_refused(sql: str, reason: str) -> None:
    with pytest.raises(SandboxQueryRefused) as refused:
        check_sandbox_query(sql, COLUMNS, numeric=NUMERIC)
    assert refused.value.code == "sandbox_query_refused"
    assert refused.value.extra == {"reason": reason}, str(refused.value)
    assert isinstance(refused.value, InvalidInput)


def test_refused_list_is_long_enough() -> None:
    assert len(REFUSED) >= 25
    assert len({p.id for p in REFUSED}) == len(REFUSED)


@pytest.mark.parametrize(
    "sql",
    [
        pytest.param("SELECT * FROM data", id="star"),
        pytest.param("SELECT count(*) FROM read_parquet('/etc/passwd')", id="read-parquet"),
        pytest.param("SELECT patient_name, cost FROM data", id="raw-rows"),
    ],
)
def test_run_refuses_before_touching_data(parquet: Path, sql: str) -> None:
    with pytest.raises(SandboxQueryRefused) as refused:
        _run(parquet, sql)
    assert refused.value.code == "sandbox_query_refused"


def test_the_runner_knows_which_columns_are_numeric() -> None:
    # Generalised ages are text buckets and pseudonyms are hex: neither may be summed or min/maxed.
    assert numeric_columns(FIELDS, RULES) == ("cost", "visits")


# --- legitimate aggregates -------------------------------------------------------------------------------------


def _by_district() -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in DATA:
        groups.setdefault(row["district"], []).append(row)
    return groups


def test_whole_table_count(parquet: Path) -> None:
    result = _run(parquet, "SELECT count(*) AS n FROM data")
    assert result.columns == ("n",)
    assert result.rows == [(len(DATA),)]
    assert result.suppressed_groups == 0


def test_group_counts_suppress_groups_under_k(parquet: Path) -> None:
    result = _run(parquet, "SELECT district, count(*) AS n FROM data GROUP BY district ORDER BY district")
    expected = sorted((d, len(rows)) for d, rows in _by_district().items() if len(rows) >= K)
    assert result.rows == expected
    assert "Dongcheng" not in {r[0] for r in result.rows}
    assert result.suppressed_groups == 1


def test_sums_averages_and_numeric_extremes(parquet: Path) -> None:
    result = _run(
        parquet,
        "SELECT district, sum(cost) AS total, avg(cost), min(cost), max(visits), median(cost) FROM data "
        "GROUP BY district ORDER BY district",
    )
    assert result.columns[:2] == ("district", "total")
    expected = [
        (
            d,
            sum(r["cost"] for r in rows),
            statistics.fmean(r["cost"] for r in rows),
            min(r["cost"] for r in rows),
            max(r["visits"] for r in rows),
            statistics.median(r["cost"] for r in rows),
        )
        for d, rows in sorted(_by_district().items())
        if len(rows) >= K
    ]
    assert len(result.rows) == len(expected) == 2
    for got, want in zip(result.rows, expected, strict=True):
        assert got[0] == want[0]
        assert got[1:] == pytest.approx(want[1:])
    assert result.suppressed_groups == 1


def test_spread_and_arithmetic_around_aggregates(parquet: Path) -> None:
    result = _run(parquet, "SELECT stddev_samp(cost), var_pop(visits), round(sum(cost) / count(*), 2) AS mean FROM data")
    costs = [r["cost"] for r in DATA]
    visits = [r["visits"] for r in DATA]
    assert len(result.rows) == 1
    spread, variance, mean = result.rows[0]
    assert spread == pytest.approx(statistics.stdev(costs))
    assert variance == pytest.approx(statistics.pvariance(visits))
    assert mean == pytest.approx(round(sum(costs) / len(costs), 2))


def test_two_quasi_identifiers_suppress_every_small_cell(parquet: Path) -> None:
    result = _run(parquet, "SELECT age, district, count(*) AS n FROM data GROUP BY age, district")
    cells = Counter((r["age"], r["district"]) for r in DATA)
    assert sorted(result.rows) == sorted((a, d, n) for (a, d), n in cells.items() if n >= K)
    assert result.suppressed_groups == sum(1 for n in cells.values() if n < K)
    assert result.suppressed_groups > 0


def test_grouping_by_a_pseudonym_returns_nothing(parquet: Path) -> None:
    # Direct identifiers arrive pseudonymised (or not at all): every pseudonym is a group of one, all suppressed.
    result = _run(parquet, "SELECT patient_name, count(*), sum(cost) FROM data GROUP BY patient_name")
    assert result.rows == []
    assert result.suppressed_groups == len({r["patient_name"] for r in DATA}) == len(DATA)


def test_whole_table_aggregate_under_k_is_suppressed(parquet: Path) -> None:
    result = _run(parquet, "SELECT count(*), sum(cost) FROM data WHERE district = 'Dongcheng'")
    assert result.rows == []
    assert result.suppressed_groups == 1
    result = _run(parquet, "SELECT count(*) FROM data WHERE district = 'Nowhere'")
    assert result.rows == []
    assert result.suppressed_groups == 1


def test_where_filter_then_group(parquet: Path) -> None:
    result = _run(
        parquet,
        "SELECT diagnosis, count(DISTINCT district) AS districts, count(*) AS n FROM data "
        "WHERE cost > 100 AND visits BETWEEN 1 AND 3 GROUP BY diagnosis ORDER BY diagnosis",
    )
    kept = [r for r in DATA if r["cost"] > 100 and 1 <= r["visits"] <= 3]
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in kept:
        groups.setdefault(row["diagnosis"], []).append(row)
    expected = [(g, len({r["district"] for r in rows}), len(rows)) for g, rows in sorted(groups.items()) if len(rows) >= K]
    assert expected
    assert result.rows == expected
    assert result.suppressed_groups == sum(1 for rows in groups.values() if len(rows) < K)


def test_having_order_and_limit_apply_to_visible_groups(parquet: Path) -> None:
    result = _run(parquet, "SELECT district, count(*) AS n FROM data GROUP BY district HAVING n > 10")
    assert result.rows == [("Haidian", SIZES["Haidian"])]
    # Dongcheng fails the buyer's own HAVING first, so it is not counted as suppressed.
    assert result.suppressed_groups == 0
    result = _run(parquet, "SELECT district, count(*) AS n FROM data GROUP BY district ORDER BY n LIMIT 1")
    assert result.rows == [("Chaoyang", SIZES["Chaoyang"])]


def test_max_rows_truncates(parquet: Path) -> None:
    result = _run(parquet, "SELECT district, count(*) FROM data GROUP BY district ORDER BY district", max_rows=1)
    assert result.rows == [("Chaoyang", SIZES["Chaoyang"])]
    assert result.truncated


def test_a_failing_query_gets_a_clear_code(parquet: Path) -> None:
    with pytest.raises(InvalidInput) as failed:
        _run(parquet, "SELECT count(*) FROM data WHERE district > 5")
    assert failed.value.code == "sandbox_query_failed"


def test_pseudonyms_in_data_match_python(parquet: Path) -> None:
    # A filter on a known pseudonym narrows to one person: the group count is 1, so nothing is returned.
    target = _pseudonym(ROWS[0][0])
    result = _run(parquet, f"SELECT count(*), sum(cost) FROM data WHERE patient_name = '{target}'")
    assert result.rows == []
    assert result.suppressed_groups == 1
    assert hashlib.sha256(target.encode()).hexdigest()  # the pseudonym is a plain hex string


# --- limits -----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def big_parquet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Millions of rows: written by DuckDB directly (write_parquet inserts row by row).
    path = tmp_path_factory.mktemp("sandbox_big") / "big.parquet"
    with duckdb.connect() as con:
        con.execute(
            "COPY (SELECT 'P' || range AS patient_name, '' AS id_number, 30 + range % 50 AS age, "
            "'D' || (range % 7) AS district, 'J20' AS diagnosis, (range * 7919 % 1000003) / 7.0 AS cost, "
            f"range AS visits FROM range(3000000)) TO '{path.as_posix()}' (FORMAT parquet)"
        )
    return path


def test_slow_query_times_out(big_parquet: Path) -> None:
    with pytest.raises(InvalidInput) as slow:
        run_sandbox_query(
            big_parquet,
            FIELDS,
            RULES,
            KEY,
            "SELECT visits, count(DISTINCT cost), stddev(cost), median(cost) FROM data GROUP BY visits",
            K,
            timeout_s=0.05,
        )
    assert slow.value.code == "sandbox_query_timeout"


def test_big_data_within_the_time_limit_answers(big_parquet: Path) -> None:
    result = run_sandbox_query(big_parquet, FIELDS, RULES, KEY, "SELECT district, count(*) FROM data GROUP BY district", K)
    assert sorted(result.rows) == [(f"D{i}", len(range(i, 3_000_000, 7))) for i in range(7)]
