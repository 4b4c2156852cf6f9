"""Privacy of a product's projection on real Parquet contents: the key, pseudonymisation (= HMAC), every
generalisation method, identifier quoting, k measured (= a Counter over the same rows), and every automated
listing check with a passing and a failing case."""

from __future__ import annotations

import dataclasses
import hmac
import math
import stat
import tempfile
import uuid
from collections import Counter
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr, ValidationError

from licensing import privacy
from licensing.models import DeliveryMode, FieldTag, FieldType, Grade, LicenceStatus, PlanType, Purpose
from licensing.privacy import (
    LicenceScope,
    PlanTerms,
    ProductDraft,
    ProductSource,
    SourceResource,
    k_profile,
    measure_k,
    projection_query,
    pseudonym_key,
    raw_identifier_leaks,
    run_checks,
)
from licensing.schemas import CheckResult, FieldSpec, MaskingRule
from marketplace.core.errors import InvalidInput
from marketplace.core.settings import Environment, Settings
from tests.licensing.factories import VISIT_FIELDS, clean_visit_rules, visit_rows, write_parquet

KEY = b"platform-test-key-0123456789abcdef"


def spec(name: str, type_: str, tag: str = "none") -> FieldSpec:
    return FieldSpec.model_validate({"name": name, "type": type_, "tag": tag})


def rule(field: str, action: str = "keep", method: str | None = None, size: int | None = None) -> MaskingRule:
    return MaskingRule.model_validate({"field": field, "action": action, "method": method, "size": size})


def deliver(path: Path, fields: Sequence[FieldSpec], rules: Sequence[MaskingRule], key: bytes = KEY) -> list[dict[str, Any]]:
    query = projection_query(path, fields, rules, key)
    with duckdb.connect() as con:
        result = con.execute(query.sql, query.parameters)
        names = [d[0] for d in result.description]
        return [dict(zip(names, row, strict=True)) for row in result.fetchall()]


def hmac_hex(value: str, key: bytes = KEY) -> str:
    return hmac.new(key, value.encode(), "sha256").hexdigest()


# --- the key ----------------------------------------------------------------------------------------------------


def test_configured_key_is_used(tmp_path: Path) -> None:
    configured = Settings(env=Environment.test, var_dir=tmp_path, pseudonym_key=SecretStr("k" * 40))
    assert pseudonym_key(configured) == b"k" * 40
    assert not (tmp_path / "keys").exists()


def test_key_is_created_once_readable_by_the_platform_only(tmp_path: Path) -> None:
    generated = Settings(env=Environment.test, var_dir=tmp_path)
    first = pseudonym_key(generated)
    path = tmp_path / "keys" / "pseudonymisation.key"
    assert len(first) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert pseudonym_key(generated) == first == path.read_bytes()
    assert pseudonym_key(Settings(env=Environment.test, var_dir=tmp_path / "other")) != first


# --- pseudonymisation -----------------------------------------------------------------------------------------------


def test_pseudonymisation_is_hmac_sha256_of_the_text_form(tmp_path: Path) -> None:
    fields = [
        spec("s", "string"),
        spec("i", "integer"),
        spec("d", "date"),
        spec("t", "timestamp"),
        spec("b", "boolean"),
        spec("x", "decimal"),
    ]
    rows = [
        ("张伟", 42, date(2026, 1, 2), datetime(2026, 1, 2, 3, 4, 5), True, 1.5),
        ("Alice O'Neil", -7, date(1999, 12, 31), datetime(1999, 12, 31, 23, 59, 59), False, 100.0),
        (None, None, None, None, None, None),
    ]
    path = tmp_path / "p.parquet"
    write_parquet(path, fields, rows)
    out = deliver(path, fields, [rule(f.name, "pseudonymise") for f in fields])
    assert out[0] == {
        "s": hmac_hex("张伟"),
        "i": hmac_hex("42"),
        "d": hmac_hex("2026-01-02"),
        "t": hmac_hex("2026-01-02 03:04:05"),
        "b": hmac_hex("true"),
        "x": hmac_hex("1.5"),
    }
    assert out[1] == {
        "s": hmac_hex("Alice O'Neil"),
        "i": hmac_hex("-7"),
        "d": hmac_hex("1999-12-31"),
        "t": hmac_hex(str(datetime(1999, 12, 31, 23, 59, 59))),
        "b": hmac_hex("false"),
        "x": hmac_hex(repr(100.0)),
    }
    assert out[2] == dict.fromkeys(out[2])  # nulls stay null
    assert all(v == v.lower() and len(v) == 64 for v in out[0].values())


def test_a_key_longer_than_a_block_is_hashed_first_as_hmac_does(tmp_path: Path) -> None:
    long_key = bytes(range(256)) * 2
    path = tmp_path / "p.parquet"
    write_parquet(path, [spec("s", "string")], [("x",)])
    assert deliver(path, [spec("s", "string")], [rule("s", "pseudonymise")], long_key) == [{"s": hmac_hex("x", long_key)}]


def test_the_key_never_appears_in_the_query_its_repr_or_the_output(tmp_path: Path) -> None:
    key = b"SECRET-pseudonym-key-do-not-leak-123456"
    fields = [spec("name", "string", "direct_identifier"), spec("age", "integer", "quasi_identifier")]
    path = tmp_path / "p.parquet"
    write_parquet(path, fields, [("Zhang Wei", 33), (key.decode(), 40)])
    query = projection_query(path, fields, [rule("name", "pseudonymise"), rule("age")], key)
    assert key.decode() not in query.sql
    assert key.hex() not in query.sql
    assert "SECRET" not in repr(query)
    assert "parameters" not in repr(query)
    out = deliver(path, fields, [rule("name", "pseudonymise"), rule("age")], key)
    text = repr(out)
    assert key.decode() not in text
    assert key.hex() not in text
    assert "Zhang Wei" not in text
    assert (
        deliver(path, fields, [rule("name", "pseudonymise")], b"another key of thirty-two bytes!!")[0]["name"] != out[0]["name"]
    )


# --- generalisation -------------------------------------------------------------------------------------------------


def test_every_generalisation_method(tmp_path: Path) -> None:
    fields = [
        spec("code", "string"),
        spec("age", "integer"),
        spec("income", "decimal"),
        spec("born", "date"),
        spec("seen", "timestamp"),
        spec("smoker", "boolean"),
        spec("city", "string"),
    ]
    rows = [
        ("100081", 37, 5234.5, date(1989, 7, 4), datetime(2026, 3, 9, 10, 0), True, "Beijing"),
        ("2000", -3, -0.5, date(2001, 11, 30), datetime(2025, 12, 31, 23, 59), False, None),
        ("张伟明", 40, 10000.0, None, None, None, "Shanghai"),
        (None, None, None, None, None, None, None),
    ]
    path = tmp_path / "g.parquet"
    write_parquet(path, fields, rows)
    rules = [
        rule("code", "generalise", "prefix", 3),
        rule("age", "generalise", "bucket", 10),
        rule("income", "generalise", "bucket", 1000),
        rule("born", "generalise", "year"),
        rule("seen", "generalise", "month"),
        rule("smoker", "generalise", "suppress"),
        rule("city", "generalise", "suppress"),
    ]
    out = deliver(path, fields, rules)
    assert out[0] == {
        "code": "100***",
        "age": "30-39",
        "income": "5000-6000",
        "born": "1989",
        "seen": "2026-03",
        "smoker": "*",
        "city": "*",
    }
    assert out[1] == {
        "code": "200*",
        "age": "-10--1",
        "income": "-1000-0",
        "born": "2001",
        "seen": "2025-12",
        "smoker": "*",
        "city": "*",
    }
    assert out[2] == {
        "code": "张伟明",
        "age": "40-49",
        "income": "10000-11000",
        "born": None,
        "seen": None,
        "smoker": "*",
        "city": "*",
    }
    assert out[3] == {"code": None, "age": None, "income": None, "born": None, "seen": None, "smoker": "*", "city": "*"}


def test_keep_drop_and_fields_without_a_rule(tmp_path: Path) -> None:
    fields = [spec("a", "string"), spec("b", "integer"), spec("c", "date"), spec("d", "string")]
    path = tmp_path / "k.parquet"
    write_parquet(path, fields, [("x", 1, date(2026, 1, 1), "hidden")])
    query = projection_query(path, fields, [rule("c"), rule("a"), rule("b", "drop")], KEY)
    assert query.columns == ("a", "c")  # field order, not rule order; dropped and unruled fields absent
    assert deliver(path, fields, [rule("c"), rule("a"), rule("b", "drop")]) == [{"a": "x", "c": date(2026, 1, 1)}]


@pytest.mark.parametrize(
    ("rules", "problem"),
    [
        ([rule("nope")], "'nope' is not a field"),
        ([rule("a"), rule("a", "drop")], "'a' has more than one rule"),
        ([rule("a", "generalise")], "'a': generalise needs a method"),
        ([rule("a", "generalise", "bucket", 5)], "'a': bucket does not apply to a string field"),
        ([rule("b", "generalise", "prefix", 2)], "'b': prefix does not apply to a integer field"),
        ([rule("c", "generalise", "bucket", 2)], "'c': bucket does not apply to a date field"),
        ([rule("a", "generalise", "prefix")], "'a': prefix needs a size"),
        ([rule("c", "generalise", "year", 3)], "'c': year takes no size"),
        ([rule("a", "keep", "prefix", 2)], "method and size apply to generalise only"),
        ([rule("a", "drop")], "delivers no field"),
        ([rule("a\" FROM read_csv('/etc/passwd') --")], "is not a field"),
    ],
)
def test_invalid_rules_are_refused_before_any_sql(rules: list[MaskingRule], problem: str) -> None:
    fields = [spec("a", "string"), spec("b", "integer"), spec("c", "date")]
    assert any(problem in p for p in privacy.masking_problems(fields, rules))
    with pytest.raises(InvalidInput) as refused:
        projection_query("unused.parquet", fields, rules, KEY)
    assert refused.value.code == "invalid_masking_rules"


def test_field_names_are_validated_and_quoted() -> None:
    with pytest.raises(ValidationError):
        spec('x"; DROP TABLE t; --', "string")
    query = projection_query("p.parquet", [spec("select", "string")], [rule("select")], KEY)
    assert query.sql.startswith('SELECT "select" AS "select" FROM')


# --- k-anonymity ------------------------------------------------------------------------------------------------------


def oracle(value: Any, field: FieldSpec, r: MaskingRule, key: bytes) -> Any:
    """What a delivered value must be, computed in plain Python."""
    if r.action.value == "keep":
        return value
    if r.action.value == "pseudonymise":
        text = value.isoformat() if isinstance(value, date) else str(value)
        return None if value is None else hmac_hex(text, key)
    if r.method is not None and r.method.value == "suppress":
        return "*"
    if value is None:
        return None
    size = r.size or 0
    match r.method.value if r.method else None:
        case "prefix":
            return value[:size] + "*" * max(len(value) - size, 0)
        case "bucket" if field.type is FieldType.integer:
            low = value - value % size  # Python's % already floors
            return f"{low}-{low + size - 1}"
        case "bucket":
            low = math.floor(value / size) * size + 0.0
            return f"{low:.0f}-{low + size:.0f}"
        case "year":
            return str(value.year)
        case "month":
            return f"{value.year:04d}-{value.month:02d}"
    raise AssertionError(r)


HYPO_FIELDS = [
    spec("district", "string", "quasi_identifier"),
    spec("age", "integer", "quasi_identifier"),
    spec("visit", "date", "quasi_identifier"),
    spec("income", "decimal", "quasi_identifier"),
    spec("name", "string", "direct_identifier"),
    spec("diagnosis", "string", "sensitive"),
]
RULE_CHOICES = {
    "district": [
        rule("district"),
        rule("district", "drop"),
        rule("district", "pseudonymise"),
        rule("district", "generalise", "suppress"),
    ]
    + [rule("district", "generalise", "prefix", n) for n in (1, 2, 3)],
    "age": [rule("age"), rule("age", "drop"), rule("age", "pseudonymise")]
    + [rule("age", "generalise", "bucket", n) for n in (1, 5, 10, 25)],
    "visit": [rule("visit"), rule("visit", "drop"), rule("visit", "generalise", "year"), rule("visit", "generalise", "month")],
    "income": [rule("income"), rule("income", "drop")] + [rule("income", "generalise", "bucket", n) for n in (1, 100, 1000)],
    "name": [rule("name", "drop"), rule("name", "pseudonymise")],
    "diagnosis": [rule("diagnosis"), rule("diagnosis", "drop")],
}
rows_strategy = st.lists(
    st.tuples(
        st.one_of(st.none(), st.sampled_from(["Haidian", "Haidian North", "Chaoyang", "朝阳区", "Xicheng", ""])),
        st.one_of(st.none(), st.integers(min_value=-30, max_value=120)),
        st.one_of(st.none(), st.dates(min_value=date(2024, 1, 1), max_value=date(2026, 12, 31))),
        st.one_of(st.none(), st.floats(min_value=-5000, max_value=50000, allow_nan=False).map(lambda x: round(x, 2))),
        st.sampled_from(["Zhang Wei", "Li Na", "Wang Fang"]),
        st.sampled_from(["J20", "I10"]),
    ),
    max_size=40,
)
rules_strategy = st.fixed_dictionaries({name: st.sampled_from(choices) for name, choices in RULE_CHOICES.items()})


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=rows_strategy, chosen=rules_strategy)
def test_projection_and_k_equal_a_plain_python_counter(rows: list[tuple[Any, ...]], chosen: dict[str, MaskingRule]) -> None:
    rules = list(chosen.values())
    if all(r.action.value == "drop" for r in rules):
        rules.append(rule("diagnosis"))
        rules = [r for r in rules if not (r.field == "diagnosis" and r.action.value == "drop")]
    by_field = {r.field: r for r in rules}
    delivered = [f for f in HYPO_FIELDS if by_field[f.name].action.value != "drop"]
    expected_rows = [
        {f.name: oracle(row[i], f, by_field[f.name], KEY) for i, f in enumerate(HYPO_FIELDS) if f in delivered} for row in rows
    ]
    qis = [f.name for f in delivered if f.tag is FieldTag.quasi_identifier]
    groups = Counter(tuple(r[q] for q in qis) for r in expected_rows)
    expected_k = None if not qis else (min(groups.values()) if groups else 0)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "h.parquet"
        write_parquet(path, HYPO_FIELDS, rows)
        assert deliver(path, HYPO_FIELDS, rules) == expected_rows
        assert measure_k(path, HYPO_FIELDS, rules, KEY) == expected_k
        profile = k_profile(path, HYPO_FIELDS, rules, KEY, min_k=3)
    if profile is not None:
        assert profile.groups == len(groups)
        assert profile.rows == len(rows)
        assert profile.groups_below == sum(1 for n in groups.values() if n < 3)
        assert profile.rows_below == sum(n for n in groups.values() if n < 3)
        if groups:
            assert groups[tuple(None if v is None else v for v in _typed(profile.smallest, expected_rows, qis))] == profile.k


def _typed(smallest: Any, expected_rows: list[dict[str, Any]], qis: list[str]) -> tuple[Any, ...]:
    # The smallest group's values come back as text; find the delivered tuple they spell.
    for r in expected_rows:
        if all((None if r[q] is None else str(r[q])) == smallest[q] for q in qis):
            return tuple(r[q] for q in qis)
    raise AssertionError(f"smallest group {smallest} is not a delivered combination")


def test_measure_k_is_none_without_quasi_identifiers_and_zero_without_rows(tmp_path: Path) -> None:
    path = tmp_path / "v.parquet"
    write_parquet(path, VISIT_FIELDS, visit_rows())
    assert measure_k(path, VISIT_FIELDS, [rule("diagnosis"), rule("patient_name", "pseudonymise")], KEY) is None
    empty = tmp_path / "e.parquet"
    write_parquet(empty, VISIT_FIELDS, [])
    assert measure_k(empty, VISIT_FIELDS, [rule("district")], KEY) == 0
    clean = [MaskingRule.model_validate(r) for r in clean_visit_rules()]
    assert measure_k(path, VISIT_FIELDS, clean, KEY) == 10
    raw_age = [r if r.field != "age" else rule("age") for r in clean]
    assert measure_k(path, VISIT_FIELDS, raw_age, KEY) == 1


# --- direct identifiers in delivered values ---------------------------------------------------------------------------


def test_raw_identifiers_copied_into_another_column_are_found(tmp_path: Path) -> None:
    path = tmp_path / "v.parquet"
    write_parquet(path, VISIT_FIELDS, visit_rows())
    clean = [MaskingRule.model_validate(r) for r in clean_visit_rules()]
    assert raw_identifier_leaks(path, VISIT_FIELDS, clean, KEY) == ([], 60)
    leaks, sampled = raw_identifier_leaks(path, VISIT_FIELDS, [*clean, rule("notes")], KEY)
    assert sampled == 60
    assert leaks == [privacy.Leak(column="notes", identifier="patient_name", rows=60)]


# --- the automated checks ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Case:
    licence: LicenceScope
    product: ProductDraft


def visits_case(tmp_path: Path, grade: Grade = Grade.L2, per_group: int = 10) -> Case:
    path = tmp_path / f"visits-{uuid.uuid4().hex}.parquet"
    write_parquet(path, VISIT_FIELDS, visit_rows(per_group))
    resource = SourceResource(
        id=uuid.uuid4(), code="visits", title="Outpatient visits", grade=grade, fields=VISIT_FIELDS, contents=path
    )
    today = date.today()
    licence = LicenceScope(
        number="LIC-1",
        status=LicenceStatus.granted,
        starts_on=today - timedelta(days=10),
        ends_on=today + timedelta(days=10),
        resource_ids=frozenset({resource.id}),
        purposes=frozenset({Purpose.public_welfare, Purpose.healthcare_management}),
        modes=frozenset(DeliveryMode),
        price_caps={PlanType.free: Decimal(0), PlanType.monthly: Decimal("2000.00")},
        min_k=5,
    )
    rules = tuple(MaskingRule.model_validate(r) for r in clean_visit_rules())
    product = ProductDraft(
        mode=DeliveryMode.api,
        purposes=(Purpose.public_welfare,),
        plans=(PlanTerms(PlanType.monthly, Decimal("1500.00")), PlanTerms(PlanType.free, Decimal(0))),
        sources=(ProductSource(resource_id=resource.id, resource=resource, rules=rules),),
    )
    return Case(licence, product)


def checks_of(case: Case) -> dict[str, CheckResult]:
    return {c.code: c for c in run_checks(case.licence, case.product, KEY, date.today())}


def with_rules(case: Case, *changed: MaskingRule) -> Case:
    source = case.product.sources[0]
    names = {r.field for r in changed}
    rules = tuple(r for r in source.rules if r.field not in names) + changed
    return dataclasses.replace(
        case, product=dataclasses.replace(case.product, sources=(dataclasses.replace(source, rules=rules),))
    )


def with_grade(case: Case, grade: Grade) -> Case:
    source = case.product.sources[0]
    assert source.resource is not None
    resource = dataclasses.replace(source.resource, grade=grade)
    return dataclasses.replace(
        case, product=dataclasses.replace(case.product, sources=(dataclasses.replace(source, resource=resource),))
    )


def test_a_clean_product_passes_every_check(tmp_path: Path) -> None:
    case = visits_case(tmp_path)
    checks = run_checks(case.licence, case.product, KEY, date.today())
    assert [c.code for c in checks] == list(privacy.CHECK_CODES)
    assert all(c.passed for c in checks), [c for c in checks if not c.passed]
    assert privacy.measured_k_of(checks) == 10


def test_licence_in_force(tmp_path: Path) -> None:
    case = visits_case(tmp_path)
    assert checks_of(case)["licence_in_force"].passed
    suspended = checks_of(dataclasses.replace(case, licence=dataclasses.replace(case.licence, status=LicenceStatus.suspended)))
    assert not suspended["licence_in_force"].passed
    assert "suspended" in suspended["licence_in_force"].explanation
    # Contents of a licence not in force are not read: the content checks fail as not run.
    assert suspended["k_anonymity"].details == {"not_run": True}
    ended = checks_of(
        dataclasses.replace(case, licence=dataclasses.replace(case.licence, ends_on=date.today() - timedelta(days=1)))
    )
    assert "ended on" in ended["licence_in_force"].explanation


def test_resources_within_licence(tmp_path: Path) -> None:
    case = visits_case(tmp_path)
    assert checks_of(case)["resources_within_licence"].passed
    outside = checks_of(dataclasses.replace(case, licence=dataclasses.replace(case.licence, resource_ids=frozenset())))
    assert not outside["resources_within_licence"].passed
    assert str(case.product.sources[0].resource_id) in outside["resources_within_licence"].explanation
    assert outside["direct_identifiers_protected"].details == {"not_run": True}


def test_no_l4_field(tmp_path: Path) -> None:
    case = visits_case(tmp_path)
    assert checks_of(case)["no_l4_field"].passed
    core = checks_of(with_grade(case, Grade.L4))["no_l4_field"]
    assert not core.passed
    assert "L4" in core.explanation
    assert "district" in core.explanation


def test_l3_sandbox_only(tmp_path: Path) -> None:
    sensitive = with_grade(visits_case(tmp_path), Grade.L3)
    refused = checks_of(sensitive)["l3_sandbox_only"]
    assert not refused.passed
    assert "sandbox" in refused.explanation
    assert "api" in refused.explanation
    in_sandbox = dataclasses.replace(sensitive, product=dataclasses.replace(sensitive.product, mode=DeliveryMode.sandbox))
    assert checks_of(in_sandbox)["l3_sandbox_only"].passed


def test_masking_rules_valid(tmp_path: Path) -> None:
    case = visits_case(tmp_path)
    assert checks_of(case)["masking_rules_valid"].passed
    bad = checks_of(with_rules(case, rule("district", "generalise", "bucket", 5), rule("ghost")))
    assert not bad["masking_rules_valid"].passed
    assert "bucket does not apply to a string field" in bad["masking_rules_valid"].explanation
    assert "'ghost' is not a field" in bad["masking_rules_valid"].explanation
    assert bad["k_anonymity"].details == {"not_run": True}


def test_direct_identifiers_protected_by_the_rules(tmp_path: Path) -> None:
    case = visits_case(tmp_path)
    passed = checks_of(case)["direct_identifiers_protected"]
    assert passed.passed
    assert passed.details["sampled_rows"] == 60
    in_clear = checks_of(with_rules(case, rule("patient_name"), rule("id_number", "generalise", "prefix", 6)))
    check = in_clear["direct_identifiers_protected"]
    assert not check.passed
    assert "patient_name (kept)" in check.explanation
    assert "id_number (prefix 6)" in check.explanation


def test_direct_identifiers_protected_on_the_delivered_contents(tmp_path: Path) -> None:
    leaked = checks_of(with_rules(visits_case(tmp_path), rule("notes")))["direct_identifiers_protected"]
    assert not leaked.passed
    assert "'notes' carries raw values of 'patient_name'" in leaked.explanation
    assert "Patient 000" not in leaked.model_dump_json(), "the explanation names columns, not personal data"


def test_k_anonymity(tmp_path: Path) -> None:
    case = visits_case(tmp_path)
    passed = checks_of(case)["k_anonymity"]
    assert passed.passed
    assert passed.details["measured_k"] == 10
    assert passed.details["required_k"] == 5
    raw_age = checks_of(with_rules(case, rule("age")))["k_anonymity"]
    assert not raw_age.passed
    assert raw_age.details["measured_k"] == 1
    assert raw_age.details["required_k"] == 5
    assert "k = 1" in raw_age.explanation
    assert "k >= 5" in raw_age.explanation
    assert "age (kept)" in raw_age.explanation
    assert "visit_date (year)" in raw_age.explanation
    assert "60 groups" in raw_age.explanation or "of 60 groups" in raw_age.explanation
    small = checks_of(visits_case(tmp_path, per_group=3))["k_anonymity"]
    assert not small.passed
    assert small.details["measured_k"] == 3


def test_k_anonymity_without_quasi_identifiers_passes_and_says_why(tmp_path: Path) -> None:
    only = with_rules(visits_case(tmp_path), rule("age", "drop"), rule("district", "drop"), rule("visit_date", "drop"))
    check = checks_of(only)["k_anonymity"]
    assert check.passed
    assert check.details["measured_k"] is None
    assert "delivers no quasi-identifier" in check.explanation


def test_purposes_within_licence(tmp_path: Path) -> None:
    case = visits_case(tmp_path)
    assert checks_of(case)["purposes_within_licence"].passed
    outside = dataclasses.replace(
        case, product=dataclasses.replace(case.product, purposes=(Purpose.public_welfare, Purpose.market_analysis))
    )
    check = checks_of(outside)["purposes_within_licence"]
    assert not check.passed
    assert "market_analysis" in check.explanation
    assert check.details["outside"] == ["market_analysis"]


def test_mode_within_licence(tmp_path: Path) -> None:
    case = visits_case(tmp_path)
    assert checks_of(case)["mode_within_licence"].passed
    narrow = dataclasses.replace(case, licence=dataclasses.replace(case.licence, modes=frozenset({DeliveryMode.sandbox})))
    check = checks_of(narrow)["mode_within_licence"]
    assert not check.passed
    assert "api" in check.explanation
    assert "sandbox" in check.explanation


def test_prices_within_caps(tmp_path: Path) -> None:
    case = visits_case(tmp_path)
    assert checks_of(case)["prices_within_caps"].passed
    dear = (PlanTerms(PlanType.monthly, Decimal("2000.01")), PlanTerms(PlanType.metered, Decimal("0.01")))
    check = checks_of(dataclasses.replace(case, product=dataclasses.replace(case.product, plans=dear)))["prices_within_caps"]
    assert not check.passed
    assert "monthly plan costs 2000.01, above the cap of 2000.00" in check.explanation
    assert "metered plans are not allowed" in check.explanation
    paid_free = (PlanTerms(PlanType.free, Decimal("1")),)
    assert not checks_of(dataclasses.replace(case, product=dataclasses.replace(case.product, plans=paid_free)))[
        "prices_within_caps"
    ].passed


def test_contents_that_cannot_be_read_fail_the_content_checks_without_an_error(tmp_path: Path) -> None:
    case = visits_case(tmp_path)
    source = case.product.sources[0]
    assert source.resource is not None
    assert source.resource.contents is not None
    source.resource.contents.unlink()
    checks = checks_of(case)
    for code in ("direct_identifiers_protected", "k_anonymity"):
        assert not checks[code].passed
        assert "could not be read" in checks[code].explanation
    assert checks["prices_within_caps"].passed
