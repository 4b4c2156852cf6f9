"""Privacy of a product's projection: the platform's pseudonymisation key, the DuckDB query that delivers
a product's fields from a resource's Parquet contents with its masking applied, the k-anonymity of what is
delivered, and the automated listing-review checks.

Pure: no database session. Everything here works on plain values and Parquet files, so it can run in a
worker thread (the listing review) and be reused by delivery (the data API, file exports, the sandbox).

The projection of a product over one resource is defined by its masking rules (``schemas.MaskingRule``):
``keep`` delivers a field as stored, ``drop`` (or no rule at all) does not deliver it, ``pseudonymise``
delivers HMAC-SHA-256 of the value's text form under the platform's key as lower-case hex, and
``generalise`` coarsens it (see :func:`projection_query`).
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb

from licensing.models import DeliveryMode, FieldTag, FieldType, Grade, LicenceStatus, PlanType, Purpose
from licensing.schemas import CheckResult, FieldSpec, GeneraliseMethod, MaskingAction, MaskingRule
from marketplace.core.errors import InvalidInput
from marketplace.core.keys import load_or_create_pem
from marketplace.core.settings import Settings

log = logging.getLogger(__name__)

PSEUDONYM_KEY_FILE = "pseudonymisation.key"
#: How many rows of the contents the direct-identifier check reads (a reservoir sample, repeatable).
LEAK_SAMPLE_ROWS = 10_000
#: String direct-identifier values at least this long are also looked for inside delivered values; shorter
#: ones (a two-character name, a small number) only when a delivered value equals them, to avoid false alarms.
LEAK_SUBSTRING_MIN_CHARS = 5

#: Generalisation methods valid for each field type.
VALID_METHODS: Mapping[FieldType, frozenset[GeneraliseMethod]] = {
    FieldType.string: frozenset({GeneraliseMethod.prefix, GeneraliseMethod.suppress}),
    FieldType.integer: frozenset({GeneraliseMethod.bucket, GeneraliseMethod.suppress}),
    FieldType.decimal: frozenset({GeneraliseMethod.bucket, GeneraliseMethod.suppress}),
    FieldType.boolean: frozenset({GeneraliseMethod.suppress}),
    FieldType.date: frozenset({GeneraliseMethod.year, GeneraliseMethod.month, GeneraliseMethod.suppress}),
    FieldType.timestamp: frozenset({GeneraliseMethod.year, GeneraliseMethod.month, GeneraliseMethod.suppress}),
}
_SIZED = frozenset({GeneraliseMethod.prefix, GeneraliseMethod.bucket})


# --- the key ------------------------------------------------------------------------------------------


def pseudonym_key(settings: Settings) -> bytes:
    """The platform's pseudonymisation key: ``MARKET_PSEUDONYM_KEY``, or a random 32-byte key created once
    under ``var_dir/keys/pseudonymisation.key`` (mode 600). It never leaves the platform."""
    return load_or_create_pem(settings, settings.pseudonym_key, PSEUDONYM_KEY_FILE, lambda: secrets.token_bytes(32))


def _hmac_pads(key: bytes) -> tuple[bytes, bytes]:
    # HMAC (RFC 2104) = H((K ^ opad) || H((K ^ ipad) || m)); DuckDB has SHA-256 but no HMAC, so the two
    # padded keys are computed here and bound as parameters. The key itself never enters the SQL text.
    block = hashlib.sha256(key).digest() if len(key) > 64 else key
    block = block.ljust(64, b"\0")
    return bytes(b ^ 0x36 for b in block), bytes(b ^ 0x5C for b in block)


# --- the projection -------------------------------------------------------------------------------------


def quote_identifier(name: str) -> str:
    """A DuckDB identifier in double quotes (field names are validated by ``FieldSpec`` before this)."""
    return '"' + name.replace('"', '""') + '"'


def quote_literal(text: str) -> str:
    """A DuckDB string literal."""
    return "'" + text.replace("'", "''") + "'"


def masking_problems(fields: Sequence[FieldSpec], rules: Sequence[MaskingRule]) -> list[str]:
    """What is wrong with ``rules`` for a resource with ``fields``, in words; empty when they are valid."""
    by_name = {f.name: f for f in fields}
    problems: list[str] = []
    seen: set[str] = set()
    for rule in rules:
        spec = by_name.get(rule.field)
        if spec is None:
            problems.append(f"'{rule.field}' is not a field of the resource")
            continue
        if rule.field in seen:
            problems.append(f"'{rule.field}' has more than one rule")
        seen.add(rule.field)
        if rule.action is not MaskingAction.generalise:
            if rule.method is not None or rule.size is not None:
                problems.append(f"'{rule.field}': method and size apply to generalise only")
            continue
        if rule.method is None:
            problems.append(f"'{rule.field}': generalise needs a method ({_methods(spec.type)} for a {spec.type.value} field)")
        elif rule.method not in VALID_METHODS[spec.type]:
            problems.append(
                f"'{rule.field}': {rule.method.value} does not apply to a {spec.type.value} field (use {_methods(spec.type)})"
            )
        elif rule.method in _SIZED and rule.size is None:
            what = "how many characters to keep" if rule.method is GeneraliseMethod.prefix else "the bucket width"
            problems.append(f"'{rule.field}': {rule.method.value} needs a size ({what})")
        elif rule.method not in _SIZED and rule.size is not None:
            problems.append(f"'{rule.field}': {rule.method.value} takes no size")
    if not problems and not any(r.action is not MaskingAction.drop for r in rules):
        problems.append("the product delivers no field: give at least one field a keep, pseudonymise or generalise rule")
    return problems


def _methods(field_type: FieldType) -> str:
    return ", ".join(sorted(m.value for m in VALID_METHODS[field_type]))


def _expression(spec: FieldSpec, rule: MaskingRule) -> str:
    column = quote_identifier(spec.name)
    if rule.action is MaskingAction.keep:
        return column
    if rule.action is MaskingAction.pseudonymise:
        inner = f"sha256($pseudonym_inner || encode(CAST({column} AS VARCHAR)))"
        return f"sha256($pseudonym_outer || unhex({inner}))"
    size = int(rule.size or 0)  # validated: an integer, so safe to write into the SQL
    method = rule.method
    if method is GeneraliseMethod.suppress:
        return "'*'"
    if method is GeneraliseMethod.prefix:
        return f"CASE WHEN {column} IS NULL THEN NULL ELSE left({column}, {size}) || repeat('*', greatest(length({column}) - {size}, 0)) END"
    if method is GeneraliseMethod.bucket and spec.type is FieldType.integer:
        value = f"CAST({column} AS HUGEINT)"
        low = f"({value} - (({value} % {size}) + {size}) % {size})"
        return f"CAST({low} AS VARCHAR) || '-' || CAST({low} + {size - 1} AS VARCHAR)"
    if method is GeneraliseMethod.bucket:
        low = f"(floor({column} / {size}) * {size} + 0.0)"  # + 0.0 turns -0.0 into 0.0
        return f"printf('%.0f-%.0f', {low}, {low} + {size})"
    if method is GeneraliseMethod.year:
        return f"CAST(year({column}) AS VARCHAR)"
    if method is GeneraliseMethod.month:
        return f"strftime({column}, '%Y-%m')"
    raise AssertionError(f"unhandled rule {rule!r}")  # masking_problems refuses everything else


@dataclass(frozen=True)
class ProjectionQuery:
    """A product's projection as one DuckDB query: run ``con.execute(q.sql, q.parameters)``.

    ``parameters`` holds the Parquet path and the derived pseudonymisation pads: it is left out of ``repr``
    so that logging a query never logs key material.
    """

    sql: str
    #: Delivered columns, in the resource's field order.
    columns: tuple[str, ...]
    #: Delivered quasi-identifier columns (after their masking).
    quasi_identifiers: tuple[str, ...]
    parameters: dict[str, Any] = field(repr=False)


def select_list(fields: Sequence[FieldSpec], rules: Sequence[MaskingRule]) -> list[tuple[str, str]]:
    """The delivered ``(column, SQL expression)`` pairs, in field order; raises ``InvalidInput`` for bad rules."""
    problems = masking_problems(fields, rules)
    if problems:
        raise InvalidInput("The masking rules are not valid: " + "; ".join(problems), code="invalid_masking_rules")
    by_field = {r.field: r for r in rules}
    return [
        (spec.name, _expression(spec, by_field[spec.name]))
        for spec in fields
        if spec.name in by_field and by_field[spec.name].action is not MaskingAction.drop
    ]


def projection_query(
    source: Path | str, fields: Sequence[FieldSpec], rules: Sequence[MaskingRule], key: bytes
) -> ProjectionQuery:
    """The DuckDB query delivering a product's projection from the Parquet file ``source``.

    Only fields with a rule other than ``drop`` are delivered, under their own names, in field order:
    - ``keep``: the value as stored;
    - ``pseudonymise``: HMAC-SHA-256 under ``key`` of the value's text form (UTF-8; DuckDB's
      ``CAST(value AS VARCHAR)``: ISO dates, ``YYYY-MM-DD HH:MM:SS[.fraction]`` timestamps, ``true``/``false``),
      lower-case hex; equal to ``hmac.new(key, text.encode(), "sha256").hexdigest()``;
    - ``generalise``, as text: ``prefix`` n keeps the first n characters and turns each further one into
      ``*``; ``bucket`` n gives the interval of width n holding the value, ``"30-39"`` for integers (both ends
      included) and ``"30-40"`` for decimals (30 <= value < 40); ``year`` gives ``"2026"``, ``month``
      ``"2026-11"``; ``suppress`` turns every value (null included) into ``*``.
    Nulls stay null except under ``suppress``.

    Field names come from the resource's validated schema and are quoted; the rules' sizes are integers;
    the path and the key pads are bound parameters (``$source``, and ``$pseudonym_inner``/``$pseudonym_outer``
    when a field is pseudonymised; ``parameters`` holds exactly those the query uses).
    Raises ``InvalidInput`` (``invalid_masking_rules``) when a rule names an unknown field or a method that
    does not fit its type.
    """
    pairs = select_list(fields, rules)
    inner, outer = _hmac_pads(key)
    listing = ", ".join(f"{expression} AS {quote_identifier(name)}" for name, expression in pairs)
    tags = {f.name: f.tag for f in fields}
    sql = f"SELECT {listing} FROM read_parquet($source)"  # noqa: S608 - quoted identifiers and validated rules only
    return ProjectionQuery(
        sql=sql,
        columns=tuple(name for name, _ in pairs),
        quasi_identifiers=tuple(name for name, _ in pairs if tags[name] is FieldTag.quasi_identifier),
        parameters=_bound(sql, {"source": str(source), "pseudonym_inner": inner, "pseudonym_outer": outer}),
    )


def _bound(sql: str, parameters: Mapping[str, Any]) -> dict[str, Any]:
    # DuckDB refuses named parameters the statement does not use.
    return {name: value for name, value in parameters.items() if f"${name}" in sql}


def _connect() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("SET threads TO 2")
    return con


# --- k-anonymity --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KProfile:
    """Groups of the delivered projection by its quasi-identifiers."""

    quasi_identifiers: tuple[str, ...]
    #: The size of the smallest group (0 when there are no rows).
    k: int
    groups: int
    rows: int
    #: The delivered quasi-identifier values of the smallest group (already masked), as text.
    smallest: Mapping[str, str | None]
    #: Groups smaller than the ``min_k`` asked for, and the rows they hold.
    groups_below: int
    rows_below: int


def k_profile(
    parquet_path: Path | str, fields: Sequence[FieldSpec], rules: Sequence[MaskingRule], key: bytes, *, min_k: int = 1
) -> KProfile | None:
    """Group the delivered projection by its quasi-identifier columns (as delivered, after generalisation)
    with DuckDB on the real contents; None when it delivers no quasi-identifier.

    pycanon (the established k-anonymity library) was ruled out: it pins exact versions of ten packages.
    k-anonymity is a plain GROUP BY over the quasi-identifiers, so DuckDB measures it exactly and without
    loading the file into memory; the tests compare it with ``collections.Counter`` over the same rows.
    """
    query = projection_query(parquet_path, fields, rules, key)
    if not query.quasi_identifiers:
        return None
    qis = ", ".join(quote_identifier(c) for c in query.quasi_identifiers)
    grouped = f"SELECT {qis}, count(*) AS n__ FROM ({query.sql}) AS p GROUP BY ALL"  # noqa: S608 - quoted identifiers
    with _connect() as con:
        con.execute(f"CREATE TEMP TABLE g AS {grouped}", query.parameters)
        summary = con.execute(
            "SELECT coalesce(min(n__), 0), count(*), coalesce(sum(n__), 0), count(*) FILTER (WHERE n__ < $k), "
            "coalesce(sum(n__) FILTER (WHERE n__ < $k), 0) FROM g",
            {"k": min_k},
        ).fetchone()
        texts = ", ".join(f"CAST({quote_identifier(c)} AS VARCHAR)" for c in query.quasi_identifiers)
        smallest = con.execute(f"SELECT {texts} FROM g ORDER BY n__, {qis} LIMIT 1").fetchone()  # noqa: S608 - quoted identifiers
    assert summary is not None
    k, groups, rows, groups_below, rows_below = (int(v) for v in summary)
    return KProfile(
        quasi_identifiers=query.quasi_identifiers,
        k=k,
        groups=groups,
        rows=rows,
        smallest=dict(zip(query.quasi_identifiers, smallest, strict=True)) if smallest else {},
        groups_below=groups_below,
        rows_below=rows_below,
    )


def measure_k(parquet_path: Path | str, fields: Sequence[FieldSpec], rules: Sequence[MaskingRule], key: bytes) -> int | None:
    """The k of the delivered projection: the size of the smallest group of rows sharing the same delivered
    quasi-identifier values (after generalisation); 0 when the contents have no rows.

    None when the projection delivers no quasi-identifier: rows can only be singled out by linking their
    quasi-identifiers with outside data, so a projection without any is not measured and passes the check.
    (Pseudonymised direct identifiers are not quasi-identifiers: without the platform's key they link to
    nothing outside.)
    """
    profile = k_profile(parquet_path, fields, rules, key)
    return None if profile is None else profile.k


# --- direct identifiers in the delivered values -------------------------------------------------------------


@dataclass(frozen=True)
class Leak:
    """Delivered ``column`` carries raw values of direct identifier ``identifier`` in ``rows`` sampled rows."""

    column: str
    identifier: str
    rows: int


def raw_identifier_leaks(
    parquet_path: Path | str, fields: Sequence[FieldSpec], rules: Sequence[MaskingRule], key: bytes
) -> tuple[list[Leak], int]:
    """Look for raw direct-identifier values in the delivered values, on a repeatable sample of rows.

    For every sampled row, each delivered value (as text) is compared with the row's raw direct-identifier
    values: equal, or containing a string identifier of at least ``LEAK_SUBSTRING_MIN_CHARS`` characters (a
    name copied into a free-text column). Returns the leaks and the number of rows sampled.
    """
    identifiers = [f.name for f in fields if f.tag is FieldTag.direct_identifier]
    pairs = select_list(fields, rules)
    string_ids = {f.name for f in fields if f.type is FieldType.string}
    if not identifiers or not pairs:
        return [], 0
    inner, outer = _hmac_pads(key)
    delivered = ", ".join(f"{expression} AS {quote_identifier(name)}" for name, expression in pairs)
    cells = " UNION ALL ".join(
        f"SELECT row__, {quote_literal(name)} AS column__, CAST({quote_identifier(name)} AS VARCHAR) AS v FROM delivered"  # noqa: S608 - quoted
        for name, _ in pairs
    )
    raws = " UNION ALL ".join(
        f"SELECT row__, {quote_literal(name)} AS identifier__, CAST({quote_identifier(name)} AS VARCHAR) AS v, "  # noqa: S608 - quoted
        f"{'true' if name in string_ids else 'false'} AS textual FROM sampled WHERE {quote_identifier(name)} IS NOT NULL"
        for name in identifiers
    )
    sql = f"""
        WITH sampled AS (
            SELECT row_number() OVER () AS row__, * FROM (
                SELECT * FROM read_parquet($source) USING SAMPLE reservoir({LEAK_SAMPLE_ROWS} ROWS) REPEATABLE (17)
            )
        ),
        delivered AS (SELECT row__, {delivered} FROM sampled),
        cells AS ({cells}),
        raw AS ({raws})
        SELECT cells.column__, raw.identifier__, count(DISTINCT cells.row__)
        FROM cells JOIN raw ON cells.row__ = raw.row__
        WHERE cells.v = raw.v OR (raw.textual AND length(raw.v) >= {LEAK_SUBSTRING_MIN_CHARS} AND contains(cells.v, raw.v))
        GROUP BY ALL ORDER BY 1, 2
    """  # noqa: S608 - quoted identifiers and literals, validated rules
    parameters = {"source": str(parquet_path), "pseudonym_inner": inner, "pseudonym_outer": outer}
    with _connect() as con:
        found = con.execute(sql, _bound(sql, parameters)).fetchall()
        sampled = con.execute(
            f"SELECT least(count(*), {LEAK_SAMPLE_ROWS}) FROM read_parquet($source)",  # noqa: S608 - a constant
            {"source": str(parquet_path)},
        ).fetchone()
    return [Leak(column=c, identifier=i, rows=int(n)) for c, i, n in found], int(sampled[0]) if sampled else 0


# --- the automated checks -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LicenceScope:
    """What a licence allows, as the checks need it."""

    number: str
    status: LicenceStatus
    starts_on: date
    ends_on: date
    resource_ids: frozenset[uuid.UUID]
    purposes: frozenset[Purpose]
    modes: frozenset[DeliveryMode]
    #: Plan type -> highest price allowed; a type without a cap may not be offered.
    price_caps: Mapping[PlanType, Decimal]
    min_k: int


@dataclass(frozen=True)
class SourceResource:
    """A resource a product delivers from, with the Parquet file of its current contents (None: none yet)."""

    id: uuid.UUID
    code: str
    title: str
    grade: Grade
    fields: tuple[FieldSpec, ...]
    contents: Path | None


@dataclass(frozen=True)
class ProductSource:
    """One source of a product: the resource asked for (None when it is not covered by the licence, so it
    was not read) and the masking rules of its fields."""

    resource_id: uuid.UUID
    resource: SourceResource | None
    rules: tuple[MaskingRule, ...]


@dataclass(frozen=True)
class PlanTerms:
    type: PlanType
    price: Decimal


@dataclass(frozen=True)
class ProductDraft:
    """A product as submitted for listing."""

    mode: DeliveryMode
    purposes: tuple[Purpose, ...]
    plans: tuple[PlanTerms, ...]
    sources: tuple[ProductSource, ...]


#: Codes of the checks, in the order they are reported.
CHECK_CODES = (
    "licence_in_force",
    "resources_within_licence",
    "no_l4_field",
    "l3_sandbox_only",
    "masking_rules_valid",
    "direct_identifiers_protected",
    "k_anonymity",
    "purposes_within_licence",
    "mode_within_licence",
    "prices_within_caps",
)


def _check(code: str, passed: bool, explanation: str, **details: Any) -> CheckResult:
    return CheckResult(code=code, passed=passed, explanation=explanation, details=details)


def _name(resource: SourceResource) -> str:
    return f"'{resource.title}' ({resource.code})"


def _delivered(source: ProductSource) -> list[str]:
    assert source.resource is not None
    kept = {r.field for r in source.rules if r.action is not MaskingAction.drop}
    return [f.name for f in source.resource.fields if f.name in kept]


def _treatment(rule: MaskingRule) -> str:
    if rule.action is MaskingAction.generalise and rule.method is not None:
        return f"{rule.method.value} {rule.size}" if rule.size else rule.method.value
    return {"keep": "kept", "pseudonymise": "pseudonymised"}.get(rule.action.value, rule.action.value)


def run_checks(licence: LicenceScope, product: ProductDraft, key: bytes, today: date) -> list[CheckResult]:
    """Every automated listing-review check of ``product`` under ``licence``, on the real contents.

    Each result passes or fails with an explanation a reviewer can act on. Contents are only read when the
    licence is in force and covers the resource; otherwise the checks that need them fail as not run.
    Blocking (DuckDB): call it from a worker thread in async code.
    """
    in_force = licence.status is LicenceStatus.granted and licence.starts_on <= today <= licence.ends_on
    results = [_licence_in_force(licence, today, in_force), _resources_within_licence(licence, product)]
    covered = [s for s in product.sources if s.resource is not None and s.resource.id in licence.resource_ids]
    uncovered = len(covered) != len(product.sources)
    results += [_no_l4(covered, uncovered), _l3_sandbox_only(covered, product.mode, uncovered)]
    rules_check = _masking_rules_valid(covered, uncovered)
    results.append(rules_check)
    reason = None
    if not in_force:
        reason = "Not checked: the licence is not in force, so the contents were not read."
    elif uncovered:
        reason = "Not checked: a resource is not covered by the licence, so its contents were not read."
    elif not rules_check.passed:
        reason = "Not checked: the masking rules are not valid (see masking_rules_valid)."
    results.append(_direct_identifiers(covered, key, reason))
    results.append(_k_anonymity(covered, key, licence.min_k, reason))
    results += [_purposes(licence, product), _mode(licence, product), _prices(licence, product)]
    return results


def all_passed(results: Sequence[CheckResult]) -> bool:
    """Whether every check passed."""
    return all(r.passed for r in results)


def measured_k_of(results: Sequence[CheckResult]) -> int | None:
    """The smallest k measured by the k_anonymity check (None when nothing was measured)."""
    for result in results:
        if result.code == "k_anonymity":
            value = result.details.get("measured_k")
            return int(value) if value is not None else None
    return None


def _licence_in_force(licence: LicenceScope, today: date, in_force: bool) -> CheckResult:
    term = f"{licence.starts_on.isoformat()} to {licence.ends_on.isoformat()}"
    details = {"status": licence.status.value, "starts_on": licence.starts_on.isoformat(), "ends_on": licence.ends_on.isoformat()}
    if in_force:
        return _check("licence_in_force", True, f"Licence {licence.number} is granted and in its term ({term}).", **details)
    if licence.status is not LicenceStatus.granted:
        why = f"Licence {licence.number} is {licence.status.value}, not granted."
    elif today < licence.starts_on:
        why = f"Licence {licence.number} starts on {licence.starts_on.isoformat()}; it is not in force yet."
    else:
        why = f"Licence {licence.number} ended on {licence.ends_on.isoformat()}."
    return _check("licence_in_force", False, why + " Products can only be listed under a licence in force.", **details)


def _resources_within_licence(licence: LicenceScope, product: ProductDraft) -> CheckResult:
    outside = [str(s.resource_id) for s in product.sources if s.resource is None or s.resource.id not in licence.resource_ids]
    if not product.sources:
        return _check("resources_within_licence", False, "The product names no source resource.", outside=[])
    if outside:
        return _check(
            "resources_within_licence",
            False,
            f"Resource(s) {', '.join(outside)} are not covered by licence {licence.number}; "
            "deliver only from the resources it lists.",
            outside=outside,
        )
    names = ", ".join(_name(s.resource) for s in product.sources if s.resource)
    return _check("resources_within_licence", True, f"Every source resource is covered by licence {licence.number}: {names}.")


def _not_run(code: str, why: str) -> CheckResult:
    return _check(code, False, why, not_run=True)


def _unreadable(code: str, resource: SourceResource, exc: duckdb.Error) -> CheckResult:
    # The error's message may quote a value of the contents: log its kind only.
    log.warning("contents of resource %s could not be read for %s: %s", resource.id, code, type(exc).__name__)
    return _not_run(
        code,
        f"Not checked: the contents of {_name(resource)} could not be read as its schema describes; the owner must upload them again.",
    )


def _no_l4(covered: Sequence[ProductSource], uncovered: bool) -> CheckResult:
    core = [s for s in covered if s.resource is not None and s.resource.grade is Grade.L4]
    if core:
        parts = [f"{_name(s.resource)}: {', '.join(_delivered(s)) or 'no field'}" for s in core if s.resource]
        return _check(
            "no_l4_field",
            False,
            "Core (L4) data is never delivered; remove these fields: " + "; ".join(parts) + ".",
            fields={str(s.resource_id): _delivered(s) for s in core},
        )
    if uncovered:
        return _not_run("no_l4_field", "Not checked for resources outside the licence (see resources_within_licence).")
    return _check(
        "no_l4_field",
        True,
        "No field comes from a core (L4) resource.",
        grades=[s.resource.grade.value for s in covered if s.resource],
    )


def _l3_sandbox_only(covered: Sequence[ProductSource], mode: DeliveryMode, uncovered: bool) -> CheckResult:
    sensitive = [s.resource for s in covered if s.resource is not None and s.resource.grade is Grade.L3]
    if sensitive and mode is not DeliveryMode.sandbox:
        names = ", ".join(_name(r) for r in sensitive)
        return _check(
            "l3_sandbox_only",
            False,
            f"{names} is sensitive (L3): it may only be offered in sandbox mode, not {mode.value}.",
            mode=mode.value,
            l3_resources=[str(r.id) for r in sensitive],
        )
    if uncovered:
        return _not_run("l3_sandbox_only", "Not checked for resources outside the licence (see resources_within_licence).")
    if sensitive:
        return _check("l3_sandbox_only", True, "The sensitive (L3) data is offered in sandbox mode only.", mode=mode.value)
    return _check("l3_sandbox_only", True, f"No sensitive (L3) resource; {mode.value} mode is open to it.", mode=mode.value)


def _masking_rules_valid(covered: Sequence[ProductSource], uncovered: bool) -> CheckResult:
    problems = [p for s in covered if s.resource is not None for p in masking_problems(s.resource.fields, s.rules)]
    if problems:
        return _check(
            "masking_rules_valid", False, "The masking rules need fixing: " + "; ".join(problems) + ".", problems=problems
        )
    if uncovered:
        return _not_run("masking_rules_valid", "Not checked for resources outside the licence (see resources_within_licence).")
    return _check("masking_rules_valid", True, "Every rule names a field of its resource and fits the field's type.")


def _direct_identifiers(covered: Sequence[ProductSource], key: bytes, reason: str | None) -> CheckResult:
    in_clear: list[str] = []
    for source in covered:
        assert source.resource is not None
        by_field = {r.field: r for r in source.rules}
        for spec in source.resource.fields:
            rule = by_field.get(spec.name)
            if (
                spec.tag is FieldTag.direct_identifier
                and rule is not None
                and rule.action not in (MaskingAction.drop, MaskingAction.pseudonymise)
            ):
                in_clear.append(f"{spec.name} ({_treatment(rule)})")
    if in_clear:
        return _check(
            "direct_identifiers_protected",
            False,
            "Direct identifiers must be dropped or pseudonymised; these are delivered otherwise: " + ", ".join(in_clear) + ".",
            fields=in_clear,
        )
    if reason is not None:
        return _not_run("direct_identifiers_protected", reason)
    leaks: list[str] = []
    sampled = 0
    for source in covered:
        assert source.resource is not None
        if source.resource.contents is None:
            return _not_run("direct_identifiers_protected", f"Not checked: {_name(source.resource)} has no contents yet.")
        try:
            found, rows = raw_identifier_leaks(source.resource.contents, source.resource.fields, source.rules, key)
        except duckdb.Error as exc:
            return _unreadable("direct_identifiers_protected", source.resource, exc)
        sampled += rows
        leaks += [f"'{leak.column}' carries raw values of '{leak.identifier}' in {leak.rows} sampled rows" for leak in found]
    if leaks:
        return _check(
            "direct_identifiers_protected",
            False,
            "Raw direct-identifier values appear in the delivered contents: "
            + "; ".join(leaks)
            + ". Drop or pseudonymise those columns.",
            leaks=leaks,
            sampled_rows=sampled,
        )
    protected = [f.name for s in covered if s.resource for f in s.resource.fields if f.tag is FieldTag.direct_identifier]
    what = ", ".join(protected) if protected else "none in the schema"
    return _check(
        "direct_identifiers_protected",
        True,
        f"Direct identifiers ({what}) are dropped or pseudonymised, and none of their raw values appears "
        f"in the delivered contents ({sampled} rows sampled).",
        sampled_rows=sampled,
    )


def _k_anonymity(covered: Sequence[ProductSource], key: bytes, min_k: int, reason: str | None) -> CheckResult:
    if reason is not None:
        return _not_run("k_anonymity", reason)
    measured: list[int] = []
    failures: list[str] = []
    notes: list[str] = []
    smallest: dict[str, Any] = {}
    for source in covered:
        assert source.resource is not None
        if source.resource.contents is None:
            return _not_run("k_anonymity", f"Not checked: {_name(source.resource)} has no contents yet.")
        try:
            profile = k_profile(source.resource.contents, source.resource.fields, source.rules, key, min_k=min_k)
        except duckdb.Error as exc:
            return _unreadable("k_anonymity", source.resource, exc)
        if profile is None:
            notes.append(f"{_name(source.resource)} delivers no quasi-identifier, so no row can be singled out by them")
            continue
        by_field = {r.field: r for r in source.rules}
        qis = ", ".join(f"{q} ({_treatment(by_field[q])})" for q in profile.quasi_identifiers)
        measured.append(profile.k)
        group = ", ".join(f"{name}={value}" for name, value in profile.smallest.items())
        smallest[str(source.resource_id)] = {"size": profile.k, "values": dict(profile.smallest)}
        summary = (
            f"{_name(source.resource)}: k = {profile.k} over the quasi-identifiers {qis}; "
            f"the smallest group has {profile.k} rows ({group})"
        )
        if profile.k < min_k:
            failures.append(
                summary + f"; {profile.groups_below} of {profile.groups} groups, holding {profile.rows_below} "
                f"of {profile.rows} rows, are smaller than {min_k}"
            )
        else:
            notes.append(summary + f" across {profile.groups} groups")
    k = min(measured) if measured else None
    if failures:
        return _check(
            "k_anonymity",
            False,
            f"The delivered projection reaches k = {k}; the licence requires k >= {min_k}. "
            + "; ".join(failures)
            + ". Generalise the quasi-identifiers further (wider buckets, shorter prefixes, year instead of month) or drop one.",
            measured_k=k,
            required_k=min_k,
            smallest_groups=smallest,
        )
    text = f"k = {k} >= {min_k} required. " if k is not None else f"Nothing to measure (required k >= {min_k}). "
    return _check("k_anonymity", True, text + "; ".join(notes) + ".", measured_k=k, required_k=min_k, smallest_groups=smallest)


def _purposes(licence: LicenceScope, product: ProductDraft) -> CheckResult:
    outside = sorted(p.value for p in set(product.purposes) - licence.purposes)
    allowed = ", ".join(sorted(p.value for p in licence.purposes))
    if not product.purposes:
        return _check(
            "purposes_within_licence",
            False,
            f"The product names no purpose; choose among: {allowed}.",
            allowed=sorted(allowed.split(", ")),
        )
    if outside:
        return _check(
            "purposes_within_licence",
            False,
            f"Purpose(s) {', '.join(outside)} are not permitted by licence {licence.number} (it permits: {allowed}).",
            outside=outside,
        )
    return _check("purposes_within_licence", True, f"Every purpose is permitted by licence {licence.number} ({allowed}).")


def _mode(licence: LicenceScope, product: ProductDraft) -> CheckResult:
    allowed = ", ".join(sorted(m.value for m in licence.modes))
    if product.mode not in licence.modes:
        return _check(
            "mode_within_licence",
            False,
            f"Delivery mode {product.mode.value} is not permitted by licence {licence.number} (it permits: {allowed}).",
            mode=product.mode.value,
        )
    return _check(
        "mode_within_licence", True, f"Delivery mode {product.mode.value} is permitted ({allowed}).", mode=product.mode.value
    )


def _prices(licence: LicenceScope, product: ProductDraft) -> CheckResult:
    if not product.plans:
        return _check("prices_within_caps", False, "The product offers no plan; add at least one.")
    problems: list[str] = []
    fine: list[str] = []
    for plan in product.plans:
        cap = licence.price_caps.get(plan.type)
        if cap is None:
            problems.append(f"{plan.type.value} plans are not allowed: licence {licence.number} sets no price cap for them")
        elif plan.price > cap:
            problems.append(f"the {plan.type.value} plan costs {plan.price}, above the cap of {cap}")
        else:
            fine.append(f"{plan.type.value} {plan.price} <= {cap}")
    if problems:
        return _check("prices_within_caps", False, "Prices outside the licence: " + "; ".join(problems) + ".", problems=problems)
    return _check("prices_within_caps", True, "Every price is within its cap: " + ", ".join(fine) + ".")
