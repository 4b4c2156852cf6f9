"""Departments, data resources and uploads of their contents, over real HTTP on the test database."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pytest
from litestar import Litestar
from litestar.testing import TestClient
from sqlalchemy import Engine, text
from sqlmodel import Session

from licensing.models import DataResource, LicenceStatus
from licensing.schemas import FieldSpec
from marketplace.app import create_app
from marketplace.core.http import CSRF_HEADER
from marketplace.core.identity.models import Organisation
from marketplace.core.principal import OrgKind
from marketplace.core.settings import Settings
from tests.conftest import TEST_ORIGIN, make_settings
from tests.factories import make_login_session, make_org, make_user
from tests.helpers import assert_problem, csrf
from tests.licensing.factories import make_licence, make_resource, write_parquet

FIELDS = [
    {"name": "station", "type": "string", "tag": "none", "description": "Monitoring station"},
    {"name": "measured_on", "type": "date", "tag": "none"},
    {"name": "pm25", "type": "decimal", "tag": "none"},
    {"name": "readings", "type": "integer", "tag": "none"},
    {"name": "calibrated", "type": "boolean", "tag": "none"},
]
CSV = (
    "station,measured_on,pm25,readings,calibrated\n"
    "Xuhui,2026-11-01,35.5,24,true\n"
    "Pudong,2026-11-01,41.25,23,false\n"
    "Jing'an Temple,2026-11-02,,24,true\n"
)
CSV_ROWS = [
    ("Xuhui", "2026-11-01", 35.5, 24, True),
    ("Pudong", "2026-11-01", 41.25, 23, False),
    ("Jing'an Temple", "2026-11-02", None, 24, True),
]


@dataclass
class Owner:
    client: TestClient[Litestar]
    org: Organisation
    headers: dict[str, str]
    data_dir: Path

    def department(self, code: str = "eco") -> dict[str, Any]:
        response = self.client.post(
            "/api/licensing/departments",
            json={"code": code, "name": "Ecology Bureau", "name_zh": "生态环境局"},
            headers=self.headers,
        )
        assert response.status_code == 201, response.text
        return dict(response.json())

    def register(self, department_id: str, **overrides: Any) -> Any:
        body = {
            "department_id": department_id,
            "code": "air-quality",
            "title": "Air quality",
            "title_zh": "空气质量",
            "description": "Daily PM2.5 per station",
            "description_zh": "各站点每日PM2.5",
            "grade": "L1",
            "update_frequency": "daily",
            "fields": FIELDS,
            **overrides,
        }
        return self.client.post("/api/licensing/resources", json=body, headers=self.headers)

    def resource(self, **overrides: Any) -> dict[str, Any]:
        response = self.register(self.department(f"dept-{uuid.uuid4().hex[:8]}")["id"], **overrides)
        assert response.status_code == 201, response.text
        return dict(response.json())

    def upload(self, resource_id: str, body: Any, content_type: str = "text/csv", fmt: str | None = None) -> Any:
        params = {"format": fmt} if fmt else None
        headers = {**self.headers, "content-type": content_type}
        return self.client.post(f"/api/licensing/resources/{resource_id}/versions", content=body, headers=headers, params=params)


def _client(settings: Settings) -> Iterator[TestClient[Litestar]]:
    with TestClient(app=create_app(settings), base_url=TEST_ORIGIN) as client:
        yield client


def _sign_in(client: TestClient[Litestar], engine: Engine, org: Organisation) -> dict[str, str]:
    client.cookies.set("market_session", make_login_session(engine, make_user(engine, org)))
    return {CSRF_HEADER: csrf(client)}


@pytest.fixture
def owner(settings: Settings, engine: Engine) -> Iterator[Owner]:
    org = make_org(engine, OrgKind.owner)
    for client in _client(settings):
        yield Owner(client, org, _sign_in(client, engine, org), settings.resolved_data_dir)


def _count(engine: Engine, table: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())


def _events(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [json.loads(r[0]) for r in conn.execute(text("SELECT leaf_input FROM ledger_entry ORDER BY leaf_index"))]


def _files(data_dir: Path, resource_id: str) -> list[str]:
    folder = data_dir / "resources" / resource_id
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def _staging(data_dir: Path) -> list[str]:
    folder = data_dir / ".staging"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def _parquet_rows(path: Path) -> list[tuple[Any, ...]]:
    with duckdb.connect() as con:
        return con.execute(
            "SELECT station, CAST(measured_on AS VARCHAR), pm25, readings, calibrated FROM read_parquet(?)", [str(path)]
        ).fetchall()


# --- the owner's flow ---------------------------------------------------------------------------


def test_register_upload_csv_then_parquet_keeps_both_versions(owner: Owner, engine: Engine, tmp_path: Path) -> None:
    department = owner.department()
    registered = owner.register(department["id"])
    assert registered.status_code == 201, registered.text
    resource = registered.json()
    assert resource["current_version"] == 0
    assert resource["department_id"] == department["id"]
    assert resource["owner_org_id"] == str(owner.org.id)
    assert [f["name"] for f in resource["fields"]] == [f["name"] for f in FIELDS]
    assert resource["fields"][0]["description"] == "Monitoring station"

    first = owner.upload(resource["id"], CSV.encode())
    assert first.status_code == 201, first.text
    v1 = first.json()
    assert (v1["version"], v1["source_format"], v1["row_count"]) == (1, "csv", 3)
    assert "location" not in v1

    parquet = tmp_path / "second.parquet"
    specs = [FieldSpec.model_validate(f) for f in FIELDS]
    second_rows = [*CSV_ROWS, ("Minhang", "2026-11-03", 12.0, 20, False)]
    write_parquet(parquet, specs, second_rows)
    second = owner.upload(resource["id"], parquet.read_bytes(), "application/vnd.apache.parquet")
    assert second.status_code == 201, second.text
    v2 = second.json()
    assert (v2["version"], v2["source_format"], v2["row_count"]) == (2, "parquet", 4)
    assert v1["content_hash"] != v2["content_hash"]

    listed = owner.client.get(f"/api/licensing/resources/{resource['id']}/versions").json()
    assert listed["total"] == 2
    assert [v["version"] for v in listed["items"]] == [2, 1]
    detail = owner.client.get(f"/api/licensing/resources/{resource['id']}").json()
    assert detail["current_version"] == 2
    assert [v["content_hash"] for v in detail["versions"]] == [v2["content_hash"], v1["content_hash"]]

    # Both files are kept, each is the Parquet of its upload, with the hash and size recorded.
    assert _files(owner.data_dir, resource["id"]) == ["v1.parquet", "v2.parquet"]
    folder = owner.data_dir / "resources" / resource["id"]
    assert _parquet_rows(folder / "v1.parquet") == CSV_ROWS
    assert _parquet_rows(folder / "v2.parquet") == second_rows
    for name, version in (("v1.parquet", v1), ("v2.parquet", v2)):
        payload = (folder / name).read_bytes()
        assert version["byte_size"] == len(payload)
        assert version["content_hash"] == hashlib.sha256(payload).hexdigest()
    assert _staging(owner.data_dir) == []

    events = [e for e in _events(engine) if e["type"].startswith(("department.", "resource."))]
    assert [e["type"] for e in events] == [
        "department.created",
        "resource.registered",
        "resource.version_uploaded",
        "resource.version_uploaded",
    ]
    uploaded = events[3]
    assert uploaded["subjects"]["resource"] == resource["id"]
    assert uploaded["orgs"] == [str(owner.org.id)]
    assert uploaded["payload"] == {
        "version": 2,
        "source_format": "parquet",
        "row_count": 4,
        "byte_size": v2["byte_size"],
        "content_hash": v2["content_hash"],
    }
    assert events[1]["payload"]["grade"] == "L1"
    everything = json.dumps(_events(engine))
    assert "Pudong" not in everything, "the ledger holds no contents"
    assert "Jing'an Temple" not in everything


def test_octet_stream_needs_the_format(owner: Owner, engine: Engine) -> None:
    resource = owner.resource()
    assert_problem(owner.upload(resource["id"], CSV.encode(), "application/octet-stream"), 400, "format_required")
    assert_problem(owner.upload(resource["id"], CSV.encode(), "application/json"), 415, "unsupported_media_type")
    done = owner.upload(resource["id"], CSV.encode(), "application/octet-stream", fmt="csv")
    assert done.status_code == 201, done.text
    assert done.json()["version"] == 1


BAD_UPLOADS = {
    "bad-values": (
        "text/csv",
        b"station,measured_on,pm25,readings,calibrated\nA,2026-11-01,high,24,true\nB,01/11/2026,3,2.5,maybe\n",
        [
            "column 'measured_on' (date): 1 bad value (expected an ISO date, YYYY-MM-DD), e.g. row 2: '01/11/2026'",
            "column 'pm25' (decimal): 1 bad value (expected a number), e.g. row 1: 'high'",
            "column 'readings' (integer): 1 bad value (expected a whole number), e.g. row 2: '2.5'",
            "column 'calibrated' (boolean): 1 bad value (expected true or false), e.g. row 2: 'maybe'",
        ],
    ),
    "wrong-columns": (
        "text/csv",
        b"station,date,pm25,readings,calibrated,note\nA,2026-11-01,1,2,true,x\n",
        [
            "missing column: 'measured_on' (date) is in the schema but not in the header",
            "unexpected column: 'date' is in the header but not in the schema",
            "unexpected column: 'note' is in the header but not in the schema",
        ],
    ),
    "invalid-utf8": (
        "text/csv",
        b"station,measured_on,pm25,readings,calibrated\n\xc9cole,2026-11-01,1,2,true\n",
        [
            "the file is not valid UTF-8: byte 0xc9 at byte offset 45 (line 2) cannot be decoded; "
            "save the file as UTF-8 and upload it again"
        ],
    ),
    "empty-header": ("text/csv", b"\nA,2026-11-01,1,2,true\n", ["the header row is empty"]),
    "duplicate-names": (
        "text/csv",
        b"station,measured_on,pm25,readings,calibrated,pm25\nA,2026-11-01,1,2,true,1\n",
        ["duplicate column name: 'pm25' appears 2 times in the header"],
    ),
    "not-parquet": (
        "application/vnd.apache.parquet",
        CSV.encode(),
        ["the file is not Parquet (it lacks the PAR1 markers); upload a Parquet file or choose CSV"],
    ),
}


@pytest.mark.parametrize("case", list(BAD_UPLOADS), ids=list(BAD_UPLOADS))
def test_contents_that_do_not_match_are_refused_and_leave_nothing(owner: Owner, engine: Engine, case: str) -> None:
    content_type, body, expected = BAD_UPLOADS[case]
    resource = owner.resource()
    before = (_count(engine, "ledger_entry"), _count(engine, "resource_version"))
    problem = assert_problem(owner.upload(resource["id"], body, content_type), 400, "contents_do_not_match_schema")
    assert len(problem["problems"]) == len(expected), problem["problems"]
    for found, wanted in zip(problem["problems"], expected, strict=True):
        assert found.startswith(wanted), (found, wanted)
    assert (_count(engine, "ledger_entry"), _count(engine, "resource_version")) == before
    assert _files(owner.data_dir, resource["id"]) == []
    assert _staging(owner.data_dir) == []
    assert owner.client.get(f"/api/licensing/resources/{resource['id']}").json()["current_version"] == 0


def test_a_refused_second_version_keeps_the_first(owner: Owner, engine: Engine) -> None:
    resource = owner.resource()
    assert owner.upload(resource["id"], CSV.encode()).status_code == 201
    before = (_count(engine, "ledger_entry"), _count(engine, "resource_version"))
    bad = CSV.replace("24,true", "lots,true").encode()
    assert_problem(owner.upload(resource["id"], bad), 400, "contents_do_not_match_schema")
    assert (_count(engine, "ledger_entry"), _count(engine, "resource_version")) == before
    assert _files(owner.data_dir, resource["id"]) == ["v1.parquet"]
    assert owner.client.get(f"/api/licensing/resources/{resource['id']}").json()["current_version"] == 1


def test_uploads_over_the_limit_are_refused_with_413(database_url: str, var_dir: Path, engine: Engine) -> None:
    settings = make_settings(database_url, var_dir, max_upload_bytes=1024)
    org = make_org(engine, OrgKind.owner)
    for client in _client(settings):
        owner = Owner(client, org, _sign_in(client, engine, org), settings.resolved_data_dir)
        resource = owner.resource()
        before = (_count(engine, "ledger_entry"), _count(engine, "resource_version"))
        big = (CSV + "Xuhui,2026-11-03,35.5,24,true\n" * 60).encode()
        assert len(big) > 1024
        body = assert_problem(owner.upload(resource["id"], big), 413, "payload_too_large")
        assert body["limit"] == 1024

        # Without a length announced (chunked), the limit holds on the bytes that arrive.
        def chunks(payload: bytes) -> Iterator[bytes]:
            for start in range(0, len(payload), 100):
                yield payload[start : start + 100]

        assert_problem(owner.upload(resource["id"], chunks(big)), 413, "payload_too_large")
        assert (_count(engine, "ledger_entry"), _count(engine, "resource_version")) == before
        assert _files(owner.data_dir, resource["id"]) == []
        assert _staging(owner.data_dir) == []
        # Under the limit, the same route works, and beyond the app's 1 MiB default would too.
        assert owner.upload(resource["id"], CSV.encode()).status_code == 201


def test_uploads_larger_than_the_default_body_limit_stream_in(owner: Owner, engine: Engine) -> None:
    resource = owner.resource()
    line = "Station with a long name for padding,2026-11-01,35.5,24,true\n"
    big = CSV + line * (2 * 1024 * 1024 // len(line))
    assert len(big) > 2 * 1024 * 1024
    response = owner.upload(resource["id"], big.encode())
    assert response.status_code == 201, response.text
    assert response.json()["row_count"] == big.count("\n") - 1


# --- registering and describing ------------------------------------------------------------------


def test_registration_is_checked_and_refusals_change_nothing(owner: Owner, engine: Engine, settings: Settings) -> None:
    department = owner.department()
    assert owner.register(department["id"]).status_code == 201
    before = (_count(engine, "ledger_entry"), _count(engine, "data_resource"))
    assert_problem(owner.register(department["id"]), 409, "resource_code_taken")
    assert_problem(owner.register(department["id"], code="other", fields=[]), 400, "invalid_input")
    duplicate = [FIELDS[0], {**FIELDS[1], "name": "station"}]
    assert_problem(owner.register(department["id"], code="other", fields=duplicate), 400, "duplicate_field_names")
    assert_problem(owner.register(department["id"], code="other", grade="L9"), 400, "invalid_input")
    assert_problem(owner.register(department["id"], code="Bad Code"), 400, "invalid_input")
    assert_problem(
        owner.register(department["id"], code="other", fields=[{"name": "Bad Name", "type": "string"}]), 400, "invalid_input"
    )
    assert_problem(owner.register(str(uuid.uuid4()), code="other"), 400, "unknown_department")
    # Another owner organisation's department is not the caller's to use.
    other_org = make_org(engine, OrgKind.owner)
    for other in _client(settings):
        stranger = Owner(other, other_org, _sign_in(other, engine, other_org), settings.resolved_data_dir)
        foreign = stranger.department("foreign")
    assert_problem(owner.register(foreign["id"], code="other"), 400, "unknown_department")
    response = owner.client.post(
        "/api/licensing/departments", json={"code": "eco", "name": "Again", "name_zh": "再次"}, headers=owner.headers
    )
    assert_problem(response, 409, "department_code_taken")
    after_foreign = before[0] + 1  # the other owner's department.created
    assert (_count(engine, "ledger_entry"), _count(engine, "data_resource")) == (after_foreign, before[1])


def test_the_owner_updates_the_description_but_not_the_fields_once_contents_exist(owner: Owner, engine: Engine) -> None:
    resource = owner.resource()
    path = f"/api/licensing/resources/{resource['id']}"
    renamed = owner.client.patch(path, json={"title": "Air quality (daily)", "description_zh": "新的描述"}, headers=owner.headers)
    assert renamed.status_code == 200, renamed.text
    assert renamed.json()["title"] == "Air quality (daily)"
    assert renamed.json()["description_zh"] == "新的描述"
    fewer = FIELDS[:3]
    reshaped = owner.client.patch(path, json={"fields": fewer}, headers=owner.headers)
    assert reshaped.status_code == 200
    assert [f["name"] for f in reshaped.json()["fields"]] == ["station", "measured_on", "pm25"]
    upload = owner.upload(resource["id"], b"station,measured_on,pm25\nA,2026-11-01,1\n")
    assert upload.status_code == 201, upload.text
    before = _count(engine, "ledger_entry")
    assert_problem(owner.client.patch(path, json={"fields": FIELDS}, headers=owner.headers), 409, "resource_has_contents")
    assert_problem(owner.client.patch(path, json={"code": "renamed"}, headers=owner.headers), 400, "invalid_input")
    assert _count(engine, "ledger_entry") == before
    unchanged = owner.client.patch(path, json={"title": "Air quality (daily)"}, headers=owner.headers)
    assert unchanged.status_code == 200
    assert _count(engine, "ledger_entry") == before, "no change, no event"
    updates = [e for e in _events(engine) if e["type"] == "resource.updated"]
    assert [u["payload"]["changed"] for u in updates] == [["title", "description_zh"], ["fields"]]


def test_the_grade_is_fixed_while_a_licence_covers_the_resource(owner: Owner, engine: Engine) -> None:
    resource = owner.resource()
    path = f"/api/licensing/resources/{resource['id']}"
    assert owner.client.patch(path, json={"grade": "L2"}, headers=owner.headers).json()["grade"] == "L2"
    with Session(engine) as session:
        record = session.get(DataResource, uuid.UUID(resource["id"]))
        assert record is not None
    make_licence(engine, owner.org, make_org(engine, OrgKind.operator), [record], status=LicenceStatus.suspended)
    assert_problem(owner.client.patch(path, json={"grade": "L3"}, headers=owner.headers), 409, "resource_under_licence")
    assert owner.client.get(path).json()["grade"] == "L2"


# --- who sees and does what ----------------------------------------------------------------------


@pytest.fixture
def licensed_world(owner: Owner, engine: Engine, settings: Settings) -> dict[str, Any]:
    """Four resources of the owner; an operator licensed (granted / suspended / draft / revoked) over them."""
    operator, rival = make_org(engine, OrgKind.operator), make_org(engine, OrgKind.operator)
    department = owner.department()
    made = {}
    for status in ("granted", "suspended", "draft", "revoked", "rivals"):
        made[status] = make_resource(
            engine,
            owner.org,
            fields=[FieldSpec(name="x", type="integer")],  # type: ignore[arg-type]
            rows=[[1], [2]],
            data_dir=settings.resolved_data_dir,
        )
    for status in ("granted", "suspended", "draft", "revoked"):
        make_licence(engine, owner.org, operator, [made[status]], status=LicenceStatus(status))
    make_licence(engine, owner.org, rival, [made["rivals"]])
    api_made = owner.resource()
    return {"operator": operator, "rival": rival, "resources": made, "api": api_made, "department": department}


def _as(settings: Settings, engine: Engine, org: Organisation) -> Iterator[tuple[TestClient[Litestar], dict[str, str]]]:
    for client in _client(settings):
        yield client, _sign_in(client, engine, org)


def test_an_operator_sees_only_what_its_live_licences_cover(
    licensed_world: dict[str, Any], settings: Settings, engine: Engine
) -> None:
    made = licensed_world["resources"]
    for client, headers in _as(settings, engine, licensed_world["operator"]):
        listed = client.get("/api/licensing/resources").json()
        assert {r["id"] for r in listed["items"]} == {str(made["granted"].id), str(made["suspended"].id)}
        assert listed["total"] == 2
        detail = client.get(f"/api/licensing/resources/{made['suspended'].id}").json()
        assert [v["version"] for v in detail["versions"]] == [1]
        for hidden in ("draft", "revoked", "rivals"):
            assert_problem(client.get(f"/api/licensing/resources/{made[hidden].id}"), 404, "resource_not_found")
            assert_problem(client.get(f"/api/licensing/resources/{made[hidden].id}/versions"), 404, "resource_not_found")
        departments = client.get("/api/licensing/departments").json()["items"]
        assert {d["id"] for d in departments} == {str(made["granted"].department_id), str(made["suspended"].department_id)}
        # Read-only: no writes, even on what it sees.
        before = (_count(engine, "ledger_entry"), _count(engine, "resource_version"))
        upload = client.post(
            f"/api/licensing/resources/{made['granted'].id}/versions",
            content=b"x\n1\n",
            headers={**headers, "content-type": "text/csv"},
        )
        assert_problem(upload, 403, "party_not_allowed")
        patch = client.patch(f"/api/licensing/resources/{made['granted'].id}", json={"title": "mine"}, headers=headers)
        assert_problem(patch, 403, "party_not_allowed")
        assert (_count(engine, "ledger_entry"), _count(engine, "resource_version")) == before


def test_regulator_and_auditor_read_everything_and_write_nothing(
    licensed_world: dict[str, Any], settings: Settings, engine: Engine
) -> None:
    everything = {str(r.id) for r in licensed_world["resources"].values()} | {licensed_world["api"]["id"]}
    for kind in (OrgKind.regulator, OrgKind.auditor):
        for client, headers in _as(settings, engine, make_org(engine, kind)):
            if kind is OrgKind.regulator:
                assert {r["id"] for r in client.get("/api/licensing/resources").json()["items"]} == everything
            else:  # an auditor only within an engagement (tests/licensing/test_auditor_scope.py): none here
                assert_problem(client.get("/api/licensing/resources"), 403, "outside_engagement")
            before = (_count(engine, "ledger_entry"), _count(engine, "data_resource"), _count(engine, "resource_version"))
            body = {**_registration(licensed_world["department"]["id"]), "code": f"by-{kind.value}"}
            assert_problem(client.post("/api/licensing/resources", json=body, headers=headers), 403, "read_only_party")
            upload = client.post(
                f"/api/licensing/resources/{licensed_world['api']['id']}/versions",
                content=CSV.encode(),
                headers={**headers, "content-type": "text/csv"},
            )
            assert_problem(upload, 403, "read_only_party")
            after = (_count(engine, "ledger_entry"), _count(engine, "data_resource"), _count(engine, "resource_version"))
            assert after == before


def test_buyers_see_no_resources_and_register_none(licensed_world: dict[str, Any], settings: Settings, engine: Engine) -> None:
    for client, headers in _as(settings, engine, make_org(engine, OrgKind.buyer)):
        assert_problem(client.get("/api/licensing/resources"), 403, "party_not_allowed")
        assert_problem(client.get(f"/api/licensing/resources/{licensed_world['api']['id']}"), 403, "party_not_allowed")
        assert_problem(client.get("/api/licensing/departments"), 403, "party_not_allowed")
        before = _count(engine, "data_resource")
        body = _registration(licensed_world["department"]["id"])
        assert_problem(client.post("/api/licensing/resources", json=body, headers=headers), 403, "party_not_allowed")
        assert _count(engine, "data_resource") == before


def test_another_owner_organisation_neither_sees_nor_touches_the_resources(
    licensed_world: dict[str, Any], settings: Settings, engine: Engine
) -> None:
    target = licensed_world["api"]["id"]
    for client, headers in _as(settings, engine, make_org(engine, OrgKind.owner)):
        assert client.get("/api/licensing/resources").json() == {"items": [], "total": 0}
        assert client.get("/api/licensing/departments").json() == {"items": [], "total": 0}
        assert_problem(client.get(f"/api/licensing/resources/{target}"), 404, "resource_not_found")
        patch = client.patch(f"/api/licensing/resources/{target}", json={"title": "taken"}, headers=headers)
        assert_problem(patch, 404, "resource_not_found")
        before = (_count(engine, "ledger_entry"), _count(engine, "resource_version"))
        upload = client.post(
            f"/api/licensing/resources/{target}/versions", content=CSV.encode(), headers={**headers, "content-type": "text/csv"}
        )
        assert_problem(upload, 404, "resource_not_found")
        assert (_count(engine, "ledger_entry"), _count(engine, "resource_version")) == before


def test_the_department_filter(owner: Owner) -> None:
    first = owner.department("first")
    second = owner.department("second")
    assert owner.register(first["id"], code="a").status_code == 201
    assert owner.register(second["id"], code="b").status_code == 201
    listed = owner.client.get("/api/licensing/resources", params={"department_id": second["id"]}).json()
    assert [r["code"] for r in listed["items"]] == ["b"]
    assert [d["code"] for d in owner.client.get("/api/licensing/departments").json()["items"]] == ["first", "second"]


def _registration(department_id: str) -> dict[str, Any]:
    return {
        "department_id": department_id,
        "code": "refused",
        "title": "Refused",
        "title_zh": "拒绝",
        "grade": "L2",
        "update_frequency": "static",
        "fields": FIELDS,
    }


def test_version_rows_match_the_ledger(owner: Owner, engine: Engine) -> None:
    resource = owner.resource()
    for _ in range(2):
        assert owner.upload(resource["id"], CSV.encode()).status_code == 201
    with engine.connect() as conn:
        versions = conn.execute(
            text("SELECT version, content_hash FROM resource_version WHERE resource_id = :rid ORDER BY version"),
            {"rid": uuid.UUID(resource["id"]).hex if engine.dialect.name == "sqlite" else uuid.UUID(resource["id"])},
        ).all()
        uploads = conn.execute(
            text("SELECT count(*) FROM ledger_entry WHERE event_type = 'resource.version_uploaded'")
        ).scalar_one()
    assert sorted(v for v, _ in versions) == [1, 2]
    assert uploads == 2
    # The same contents give the same Parquet bytes: the hash identifies contents.
    assert versions[0][1] == versions[1][1]
