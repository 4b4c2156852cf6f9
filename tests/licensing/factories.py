"""Licensing factories: departments, resources (with real Parquet contents), licences. Each call writes
fresh records straight to the test database, bypassing the services (tests of the services use the API).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import uuid
from collections.abc import Sequence
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import duckdb
from sqlalchemy import Engine, text
from sqlmodel import Session

from licensing.models import (
    DataResource,
    DeliveryMode,
    Department,
    Grade,
    Licence,
    LicenceResource,
    LicenceStatus,
    LicenceVersion,
    ListingReview,
    Purpose,
    ResourceVersion,
    ReviewStatus,
    UpdateFrequency,
)
from licensing.schemas import FieldSpec
from marketplace.core.identity.models import Organisation

_counter = itertools.count(1)

DUCKDB_TYPES = {
    "string": "VARCHAR",
    "integer": "BIGINT",
    "decimal": "DOUBLE",
    "boolean": "BOOLEAN",
    "date": "DATE",
    "timestamp": "TIMESTAMP",
}


def write_parquet(path: Path, fields: Sequence[FieldSpec], rows: Sequence[Sequence[Any]]) -> None:
    """A Parquet file with ``fields`` as columns (their DuckDB types) holding ``rows``.

    DuckDB writes the same bytes for the same columns and rows, and converting costs ~60 ms (most markets of the
    suite hold the same visits): the bytes of the last few distinct contents are kept and copied."""
    path.parent.mkdir(parents=True, exist_ok=True)
    key = (json.dumps([f.model_dump(mode="json") for f in fields]), repr([tuple(r) for r in rows]))
    payload = _parquet_written.get(key)
    if payload is None:
        columns = ", ".join(f'"{f.name}" {DUCKDB_TYPES[f.type.value]}' for f in fields)
        with duckdb.connect() as con:
            con.execute(f"CREATE TABLE t ({columns})")
            if rows:
                con.executemany(f"INSERT INTO t VALUES ({', '.join('?' for _ in fields)})", [list(r) for r in rows])
            con.execute(f"COPY t TO '{path.as_posix()}' (FORMAT parquet)")
        if len(_parquet_written) >= 32:
            del _parquet_written[next(iter(_parquet_written))]
        _parquet_written[key] = path.read_bytes()
        return
    path.write_bytes(payload)


_parquet_written: dict[tuple[str, str], bytes] = {}


def make_department(engine: Engine, owner: Organisation, code: str | None = None) -> Department:
    """A department of ``owner``."""
    n = next(_counter)
    department = Department(owner_org_id=owner.id, code=code or f"dept{n}", name=f"Department {n}", name_zh=f"部门{n}")
    with Session(engine) as session:
        session.add(department)
        session.commit()
        session.refresh(department)
    return department


def make_resource(
    engine: Engine,
    owner: Organisation,
    *,
    fields: Sequence[FieldSpec],
    grade: Grade = Grade.L2,
    department: Department | None = None,
    rows: Sequence[Sequence[Any]] | None = None,
    data_dir: Path | None = None,
) -> DataResource:
    """A resource of ``owner``; with ``rows`` and ``data_dir``, also version 1 of its contents as Parquet."""
    department = department or make_department(engine, owner)
    n = next(_counter)
    resource = DataResource(
        owner_org_id=owner.id,
        department_id=department.id,
        code=f"res{n}-{uuid.uuid4().hex[:6]}",
        title=f"Resource {n}",
        title_zh=f"资源{n}",
        grade=grade,
        update_frequency=UpdateFrequency.monthly,
        fields_json=json.dumps([f.model_dump(mode="json") for f in fields]),
    )
    with Session(engine) as session:
        session.add(resource)
        session.flush()
        if rows is not None:
            assert data_dir is not None, "contents need the data folder"
            location = f"resources/{resource.id}/v1.parquet"
            path = data_dir / location
            write_parquet(path, fields, rows)
            payload = path.read_bytes()
            session.add(
                ResourceVersion(
                    resource_id=resource.id,
                    version=1,
                    location=location,
                    source_format="parquet",
                    row_count=len(rows),
                    byte_size=len(payload),
                    content_hash=hashlib.sha256(payload).hexdigest(),
                )
            )
            resource.current_version = 1
            session.add(resource)
        session.commit()
        session.refresh(resource)
    return resource


def make_licence(
    engine: Engine,
    owner: Organisation,
    operator: Organisation,
    resources: Sequence[DataResource],
    *,
    status: LicenceStatus = LicenceStatus.granted,
    purposes: Sequence[Purpose] = (Purpose.credit_assessment, Purpose.public_welfare),
    modes: Sequence[DeliveryMode] = (DeliveryMode.api, DeliveryMode.file, DeliveryMode.sandbox),
    starts_on: date | None = None,
    ends_on: date | None = None,
    min_k: int = 5,
    price_caps: dict[str, str] | None = None,
    fee_rate: str = "0.10",
) -> Licence:
    """A licence from ``owner`` to ``operator`` over ``resources``, already in ``status`` (version 1)."""
    today = date.today()
    licence = Licence(
        number=f"LIC-T{next(_counter):05d}-{uuid.uuid4().hex[:4]}",
        owner_org_id=owner.id,
        operator_id=operator.id,
        status=status,
        territory="Test Province",
        starts_on=starts_on or today - timedelta(days=30),
        ends_on=ends_on or today + timedelta(days=365),
        purposes_json=json.dumps([p.value for p in purposes]),
        modes_json=json.dumps([m.value for m in modes]),
        price_caps_json=json.dumps(price_caps or {"free": "0", "one_off": "5000.00", "monthly": "2000.00", "metered": "1.00"}),
        volume_caps_json=json.dumps({"rows_per_month": 1_000_000, "calls_per_month": 100_000}),
        reductions_json=json.dumps({"public_welfare": 100}),
        min_k=min_k,
        fee_rate=fee_rate,
    )
    with Session(engine) as session:
        session.add(licence)
        session.flush()
        for resource in resources:
            session.add(LicenceResource(licence_id=licence.id, resource_id=resource.id))
        session.add(
            LicenceVersion(
                licence_id=licence.id,
                version=1,
                change="created",
                status=status,
                reason="test set-up",
                terms_json="{}",
            )
        )
        session.commit()
        session.refresh(licence)
    return licence


def licence_body(operator_id: uuid.UUID, resource_ids: Sequence[uuid.UUID], **overrides: Any) -> dict[str, Any]:
    """A valid JSON body for ``POST /api/licensing/licences`` (a one-year term from today), with ``overrides``."""
    today = date.today()
    body: dict[str, Any] = {
        "operator_id": str(operator_id),
        "resource_ids": [str(i) for i in resource_ids],
        "purposes": ["credit_assessment", "public_welfare"],
        "modes": ["api", "sandbox"],
        "territory": "Test Province",
        "starts_on": today.isoformat(),
        "ends_on": (today + timedelta(days=365)).isoformat(),
        "price_caps": {"free": "0", "monthly": "2000.00", "metered": "0.50"},
        "volume_caps": {"rows_per_month": 1_000_000, "calls_per_month": None},
        "min_k": 5,
        "fee_rate": "0.12",
        "reductions": {"public_welfare": 100},
    }
    body.update(overrides)
    return body


def make_review(
    engine: Engine, licence: Licence, *, status: ReviewStatus = ReviewStatus.pending, mode: DeliveryMode = DeliveryMode.api
) -> ListingReview:
    """A listing review row of ``licence``'s operator, already in ``status`` (checks not run: a bare record)."""
    n = next(_counter)
    review = ListingReview(
        operator_id=licence.operator_id,
        licence_id=licence.id,
        product_ref=f"product-{n}",
        product_name=f"Product {n}",
        mode=mode,
        submission_json="{}",
        checks_json="[]",
        checks_passed=status is not ReviewStatus.rejected,
        status=status,
    )
    with Session(engine) as session:
        session.add(review)
        session.commit()
        session.refresh(review)
    return review


def write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> Path:
    """A UTF-8 CSV file with a header row (values written with ``str``; None as an empty cell)."""
    import csv

    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as stream:
        writer = csv.writer(stream, lineterminator="\n")
        writer.writerow(header)
        writer.writerows([["" if v is None else v for v in row] for row in rows])
    return path


def row_counts(engine: Engine, *tables: str) -> dict[str, int]:
    """How many rows each of ``tables`` holds (to check that a refused request changed nothing)."""
    with engine.connect() as conn:
        return {table: int(conn.execute(text(f'SELECT count(*) FROM "{table}"')).scalar_one()) for table in tables}


def ledger_events(engine: Engine, prefix: str = "") -> list[dict[str, Any]]:
    """The events recorded in the ledger, in order, whose type starts with ``prefix``."""
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT leaf_input FROM ledger_entry ORDER BY leaf_index")).all()
    events = [json.loads(row[0]) for row in rows]
    return [e for e in events if str(e["type"]).startswith(prefix)]


# --- listing review: outpatient visits with personal data ----------------------------------------------

VISIT_FIELDS = (
    FieldSpec.model_validate({"name": "patient_name", "type": "string", "tag": "direct_identifier"}),
    FieldSpec.model_validate({"name": "id_number", "type": "string", "tag": "direct_identifier"}),
    FieldSpec.model_validate({"name": "age", "type": "integer", "tag": "quasi_identifier"}),
    FieldSpec.model_validate({"name": "district", "type": "string", "tag": "quasi_identifier"}),
    FieldSpec.model_validate({"name": "visit_date", "type": "date", "tag": "quasi_identifier"}),
    FieldSpec.model_validate({"name": "diagnosis", "type": "string", "tag": "sensitive"}),
    FieldSpec.model_validate({"name": "cost", "type": "decimal"}),
    FieldSpec.model_validate({"name": "notes", "type": "string"}),
)
DISTRICTS = ("Haidian", "Chaoyang", "Dongcheng")


def visit_rows(per_group: int = 10) -> list[tuple[Any, ...]]:
    """Outpatient visits: 3 districts x 2 age decades, ``per_group`` people in each, every age and month distinct
    inside a group, all in 2025. With ages in buckets of 10 and visit years, k = ``per_group``; with raw ages, k = 1.
    ``notes`` repeats the patient's name (a direct identifier copied into a free-text column)."""
    rows = []
    for q in range(per_group):
        for r in range(6):
            i = 6 * q + r
            name = f"Patient {i:03d} Zhang"
            rows.append(
                (
                    name,
                    f"110101198{q % 10}0101{i:04d}",
                    30 + 10 * (r // 3) + q % 10,
                    DISTRICTS[r % 3],
                    date(2025, 1 + q % 12, 1 + r),
                    ("J20", "I10", "E11")[i % 3],
                    100.5 + i,
                    f"called back {name}",
                )
            )
    return rows


def clean_visit_rules() -> list[dict[str, Any]]:
    """Masking of visits that passes every check at k = 10: names pseudonymised, id numbers dropped, age in
    decades, district kept, visit year, diagnosis and cost kept, notes not delivered."""
    return [
        {"field": "patient_name", "action": "pseudonymise"},
        {"field": "id_number", "action": "drop"},
        {"field": "age", "action": "generalise", "method": "bucket", "size": 10},
        {"field": "district", "action": "keep"},
        {"field": "visit_date", "action": "generalise", "method": "year"},
        {"field": "diagnosis", "action": "keep"},
        {"field": "cost", "action": "keep"},
    ]


def make_visit_resource(
    engine: Engine, owner: Organisation, data_dir: Path, *, grade: Grade = Grade.L2, per_group: int = 10
) -> DataResource:
    """A resource of outpatient visits with real Parquet contents (see ``visit_rows``)."""
    return make_resource(engine, owner, fields=VISIT_FIELDS, grade=grade, rows=visit_rows(per_group), data_dir=data_dir)


def listing_submission(licence: Licence, resource: DataResource, **changes: Any) -> dict[str, Any]:
    """The JSON body of a clean listing submission of a visits product under ``licence`` (api mode, monthly plan)."""
    body: dict[str, Any] = {
        "licence_id": str(licence.id),
        "product_name": "Outpatient visits by district",
        "mode": "api",
        "resource_id": str(resource.id),
        "rules": clean_visit_rules(),
        "purposes": ["public_welfare"],
        "plans": [{"type": "monthly", "price": "1500.00", "name": "Standard"}],
    }
    body.update(changes)
    return body
