"""Auditors read the licensing records only inside their firm's engagements in force: licences of a covered operator
whose term overlaps the engagement's period, their listing reviews, the resources they name and those resources'
departments. Out of scope by operator, by period and after expiry: 403 ``outside_engagement``, recorded in the
ledger; a record that does not exist stays 404 for everyone."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from litestar.testing import TestClient
from sqlalchemy import Engine

from licensing.models import FieldType
from licensing.schemas import FieldSpec
from marketplace.core.principal import OrgKind
from tests.factories import make_login_session, make_org, make_user
from tests.helpers import assert_problem, use_session
from tests.licensing.factories import ledger_events, make_department, make_licence, make_resource, make_review
from tests.supervision.auditor_scope import (
    expire_engagements,
    refusals,
    sign_in_auditor_without_engagement,
)

FIELDS = [FieldSpec(name="x", type=FieldType.integer)]
API = "/api/licensing"
TERM = (date(2026, 1, 1), date(2026, 12, 31))
PERIOD = (date(2026, 3, 1), date(2026, 5, 31))


@pytest.fixture
def world(client: TestClient[Any], engine: Engine) -> dict[str, Any]:
    owner = make_org(engine, OrgKind.owner)
    covered, other = make_org(engine, OrgKind.operator), make_org(engine, OrgKind.operator)
    made: dict[str, Any] = {"owner": owner, "covered": covered}
    for name, operator, (start, end) in (
        ("in", covered, TERM),
        ("other_operator", other, TERM),
        ("other_period", covered, (date(2020, 1, 1), date(2020, 12, 31))),
    ):
        department = make_department(engine, owner)
        resource = make_resource(engine, owner, fields=FIELDS, department=department)
        licence = make_licence(engine, owner, operator, [resource], starts_on=start, ends_on=end)
        made[name] = {
            "department": str(department.id),
            "resource": str(resource.id),
            "licence": str(licence.id),
            "review": str(make_review(engine, licence).id),
        }
    auditor = make_org(engine, OrgKind.auditor)
    made["auditor"] = auditor
    made["auditor_session"] = make_login_session(engine, make_user(engine, auditor))
    client.cookies.clear()
    headers = use_session(client, make_login_session(engine, make_user(engine, owner)))
    granted = client.post(
        "/api/supervision/engagements",
        json={
            "auditor_id": str(auditor.id),
            "operator_ids": [str(covered.id)],
            "period_start": PERIOD[0].isoformat(),
            "period_end": PERIOD[1].isoformat(),
            "expires_at": (datetime.now(UTC) + timedelta(days=30)).isoformat(),
        },
        headers=headers,
    )
    assert granted.status_code == 201, granted.text
    client.cookies.clear()
    use_session(client, made["auditor_session"])
    return made


def _one(kind: str, record: str) -> list[str]:
    """The reads of one record of ``kind``."""
    return {
        "licence": [f"{API}/licences/{record}", f"{API}/licences/{record}/versions"],
        "review": [f"{API}/reviews/{record}"],
        "resource": [f"{API}/resources/{record}", f"{API}/resources/{record}/versions"],
    }[kind]


def _ids(client: TestClient[Any], path: str) -> set[str]:
    answer = client.get(path)
    assert answer.status_code == 200, answer.text
    return {item["id"] for item in answer.json()["items"]}


def test_lists_hold_only_what_the_engagement_covers(client: TestClient[Any], engine: Engine, world: dict[str, Any]) -> None:
    inside = world["in"]
    assert _ids(client, f"{API}/licences") == {inside["licence"]}
    assert _ids(client, f"{API}/licences?status=granted") == {inside["licence"]}
    assert _ids(client, f"{API}/reviews") == {inside["review"]}
    assert _ids(client, f"{API}/resources") == {inside["resource"]}
    assert _ids(client, f"{API}/departments") == {inside["department"]}
    # A regulator still reads everything.
    client.cookies.clear()
    use_session(client, make_login_session(engine, make_user(engine, make_org(engine, OrgKind.regulator))))
    assert len(_ids(client, f"{API}/licences")) == 3
    assert len(_ids(client, f"{API}/resources")) == 3


@pytest.mark.parametrize("kind", ["licence", "review", "resource"])
def test_one_record_in_scope_and_out_of_scope(client: TestClient[Any], engine: Engine, world: dict[str, Any], kind: str) -> None:
    for path in _one(kind, world["in"][kind]):
        assert client.get(path).status_code == 200, path
    for outside in ("other_operator", "other_period"):
        for path in _one(kind, world[outside][kind]):
            before = refusals(engine)
            assert_problem(client.get(path), 403, "outside_engagement")
            refused = ledger_events(engine, "records.read_refused")[before:]
            assert [e["payload"]["code"] for e in refused] == ["outside_engagement"], path
            assert refused[0]["orgs"] == [str(world["auditor"].id)]
    # What does not exist is 404, as for anyone, and not recorded.
    before = refusals(engine)
    assert client.get(_one(kind, str(uuid.uuid4()))[0]).status_code == 404
    assert refusals(engine) == before


def test_nothing_after_expiry(client: TestClient[Any], engine: Engine, world: dict[str, Any]) -> None:
    expire_engagements(engine, world["auditor"])
    before = refusals(engine)
    paths = [f"{API}/licences", f"{API}/reviews", f"{API}/resources", f"{API}/departments"]
    paths += [p for kind in ("licence", "review", "resource") for p in _one(kind, world["in"][kind])]
    for path in paths:
        assert_problem(client.get(path), 403, "outside_engagement")
    assert refusals(engine) - before == len(paths)


def test_an_auditor_without_engagement_reads_nothing(client: TestClient[Any], engine: Engine, world: dict[str, Any]) -> None:
    sign_in_auditor_without_engagement(client, engine)
    for path in (f"{API}/licences", f"{API}/reviews", f"{API}/resources", *_one("licence", world["in"]["licence"])):
        assert_problem(client.get(path), 403, "outside_engagement")
