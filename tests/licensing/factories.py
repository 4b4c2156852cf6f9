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
from sqlalchemy import Engine
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
    Purpose,
    ResourceVersion,
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
    """A Parquet file with ``fields`` as columns (their DuckDB types) holding ``rows``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = ", ".join(f'"{f.name}" {DUCKDB_TYPES[f.type.value]}' for f in fields)
    with duckdb.connect() as con:
        con.execute(f"CREATE TABLE t ({columns})")
        if rows:
            con.executemany(f"INSERT INTO t VALUES ({', '.join('?' for _ in fields)})", [list(r) for r in rows])
        con.execute(f"COPY t TO '{path.as_posix()}' (FORMAT parquet)")


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
