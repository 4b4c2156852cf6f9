"""Auditors' engagements: the owner grants, lists and revokes them; auditors read the ledger only inside them."""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient
from sqlalchemy import Engine, update
from sqlmodel import col

from marketplace.core.errors import Forbidden
from marketplace.core.events import Actor, DomainEvent
from marketplace.core.identity.models import Organisation, User
from marketplace.core.principal import OrgKind, Principal, Role
from marketplace.core.types import utcnow
from supervision import engagements, merkle, services
from supervision.models import Engagement
from supervision.schemas import EngagementCreate
from supervision.verify import verify_export
from tests.factories import make_login_session, make_org, make_user
from tests.helpers import assert_problem, use_session
from tests.licensing.factories import ledger_events, row_counts
from tests.supervision.ledger_helpers import run

BASE = "/api/supervision/engagements"
ENTRIES = "/api/supervision/ledger/entries"
EXPORT = "/api/supervision/ledger/export"
TABLES = ("engagement", "engagement_operator", "ledger_entry")
PERIOD = (date(2025, 1, 1), date(2025, 3, 31))


@dataclass
class Parties:
    owner: Organisation
    owner_admin: User
    owner_member: User
    operator_a: Organisation
    operator_b: Organisation
    buyer: Organisation
    auditor: Organisation
    auditor_user: User
    other_auditor_user: User
    regulator_user: User


def _parties(engine: Engine) -> Parties:
    owner = make_org(engine, OrgKind.owner)
    auditor = make_org(engine, OrgKind.auditor)
    return Parties(
        owner=owner,
        owner_admin=make_user(engine, owner, Role.admin),
        owner_member=make_user(engine, owner, Role.member),
        operator_a=make_org(engine, OrgKind.operator),
        operator_b=make_org(engine, OrgKind.operator),
        buyer=make_org(engine, OrgKind.buyer),
        auditor=auditor,
        auditor_user=make_user(engine, auditor),
        other_auditor_user=make_user(engine, make_org(engine, OrgKind.auditor)),
        regulator_user=make_user(engine, make_org(engine, OrgKind.regulator)),
    )


def _body(p: Parties, **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "auditor_id": str(p.auditor.id),
        "operator_ids": [str(p.operator_a.id)],
        "period_start": PERIOD[0].isoformat(),
        "period_end": PERIOD[1].isoformat(),
        "expires_at": (utcnow() + timedelta(days=30)).isoformat(),
    }
    return {**body, **changes}


def _as(client: TestClient, engine: Engine, user: User) -> dict[str, str]:
    client.cookies.clear()
    return use_session(client, make_login_session(engine, user))


def _grant(client: TestClient, engine: Engine, p: Parties, **changes: Any) -> dict[str, Any]:
    headers = _as(client, engine, p.owner_admin)
    response = client.post(BASE, json=_body(p, **changes), headers=headers)
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


# --- grant, list, revoke -----------------------------------------------------------------------------


def test_owner_grants_lists_and_revokes_an_engagement(client: TestClient, engine: Engine) -> None:
    p = _parties(engine)
    granted = _grant(client, engine, p, operator_ids=[str(p.operator_a.id), str(p.operator_b.id), str(p.operator_a.id)])
    assert granted["status"] == "in_force"
    assert sorted(granted["operator_ids"]) == sorted([str(p.operator_a.id), str(p.operator_b.id)])
    assert granted["granted_by"] == str(p.owner_admin.id)
    assert (granted["period_start"], granted["period_end"]) == ("2025-01-01", "2025-03-31")
    assert row_counts(engine, "engagement", "engagement_operator") == {"engagement": 1, "engagement_operator": 2}
    [event] = ledger_events(engine, "engagement.")
    assert event["type"] == "engagement.granted"
    assert event["subjects"] == {"engagement": granted["id"]}
    assert event["actor"] == {"kind": "user", "id": str(p.owner_admin.id)}
    assert set(event["orgs"]) == {str(p.owner.id), str(p.auditor.id), str(p.operator_a.id), str(p.operator_b.id)}
    assert event["payload"]["period"] == {"start": "2025-01-01", "end": "2025-03-31"}

    seen = {}
    for name, user in (("owner", p.owner_admin), ("regulator", p.regulator_user), ("auditor", p.auditor_user)):
        _as(client, engine, user)
        listed = client.get(BASE)
        assert listed.status_code == 200, listed.text
        seen[name] = [item["id"] for item in listed.json()["items"]]
        assert listed.json()["total"] == len(seen[name])
    assert seen == {"owner": [granted["id"]], "regulator": [granted["id"]], "auditor": [granted["id"]]}
    _as(client, engine, p.other_auditor_user)
    assert client.get(BASE).json() == {"items": [], "total": 0}

    headers = _as(client, engine, p.owner_admin)
    revoked = client.post(f"{BASE}/{granted['id']}/revoke", json={"reason": "Contract ended early"}, headers=headers)
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["status"] == "revoked"
    assert revoked.json()["revoked_by"] == str(p.owner_admin.id)
    assert revoked.json()["revoked_reason"] == "Contract ended early"
    assert [e["type"] for e in ledger_events(engine, "engagement.")] == ["engagement.granted", "engagement.revoked"]
    assert ledger_events(engine, "engagement.revoked")[0]["payload"]["reason"] == "Contract ended early"
    before = row_counts(engine, *TABLES)
    assert_problem(
        client.post(f"{BASE}/{granted['id']}/revoke", json={"reason": "again"}, headers=headers),
        409,
        "engagement_already_revoked",
    )
    assert_problem(
        client.post(f"{BASE}/{uuid.uuid4()}/revoke", json={"reason": "x"}, headers=headers), 404, "engagement_not_found"
    )
    assert row_counts(engine, *TABLES) == before


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        (lambda p: {"period_start": "2025-04-01", "period_end": "2025-03-31"}, "engagement_period_invalid"),
        (lambda p: {"expires_at": (utcnow() - timedelta(minutes=1)).isoformat()}, "engagement_expired"),
        (lambda p: {"auditor_id": str(p.operator_a.id)}, "not_an_auditor"),
        (lambda p: {"auditor_id": str(uuid.uuid4())}, "not_an_auditor"),
        (lambda p: {"operator_ids": [str(p.operator_a.id), str(p.buyer.id)]}, "not_an_operator"),
        (lambda p: {"operator_ids": [str(uuid.uuid4())]}, "not_an_operator"),
        (lambda p: {"operator_ids": []}, "operators_required"),
        (lambda p: {"expires_at": "2027-01-01T00:00:00"}, "invalid_input"),  # a time without its zone
    ],
    ids=[
        "ends_before_it_starts",
        "already_expired",
        "firm_is_an_operator",
        "unknown_firm",
        "a_buyer",
        "unknown_operator",
        "no_operator",
        "naive_expiry",
    ],
)
def test_a_refused_grant_writes_nothing(client: TestClient, engine: Engine, changes: Any, code: str) -> None:
    p = _parties(engine)
    headers = _as(client, engine, p.owner_admin)
    before = row_counts(engine, *TABLES)
    assert_problem(client.post(BASE, json=_body(p, **changes(p)), headers=headers), 400, code)
    assert row_counts(engine, *TABLES) == before


def test_only_the_owners_administrators_grant_and_revoke(client: TestClient, engine: Engine) -> None:
    p = _parties(engine)
    granted = _grant(client, engine, p)
    before = row_counts(engine, *TABLES)
    headers = _as(client, engine, p.owner_member)
    assert_problem(client.post(BASE, json=_body(p), headers=headers), 403, "org_admin_required")
    assert_problem(
        client.post(f"{BASE}/{granted['id']}/revoke", json={"reason": "x"}, headers=headers), 403, "org_admin_required"
    )
    headers = _as(client, engine, p.regulator_user)
    assert_problem(client.post(BASE, json=_body(p), headers=headers), 403, "read_only_party")
    headers = _as(client, engine, p.owner_admin)
    assert_problem(client.post(f"{BASE}/{granted['id']}/revoke", json={"reason": "  "}, headers=headers), 400, "reason_required")
    assert row_counts(engine, *TABLES) == before


def test_services_refuse_parties_that_are_not_the_owners_administrators(engine: Engine) -> None:
    p = _parties(engine)
    operator = Principal(org_id=p.operator_a.id, org_kind=OrgKind.operator, org_name="op", user_id=uuid.uuid4(), role=Role.admin)
    member = Principal(org_id=p.owner.id, org_kind=OrgKind.owner, org_name="owner", user_id=p.owner_member.id, role=Role.member)
    data = EngagementCreate.model_validate(_body(p))
    url = engine.url.render_as_string(hide_password=False)
    for principal, code in ((operator, "party_not_allowed"), (member, "org_admin_required")):
        with pytest.raises(Forbidden) as refused:
            run(url, lambda s, who=principal: engagements.grant_engagement(s, who, data))
        assert refused.value.code == code
    with pytest.raises(Forbidden):
        run(url, lambda s: engagements.list_engagements(s, operator))
    assert row_counts(engine, *TABLES) == dict.fromkeys(TABLES, 0)


# --- scope ---------------------------------------------------------------------------------------


def _principal(org: Organisation) -> Principal:
    return Principal(org_id=org.id, org_kind=org.kind, org_name=org.name, user_id=uuid.uuid4(), role=Role.admin)


def test_auditor_scope_is_the_union_of_engagements_in_force(client: TestClient, engine: Engine) -> None:
    p = _parties(engine)
    first = _grant(client, engine, p)
    _grant(
        client,
        engine,
        p,
        operator_ids=[str(p.operator_a.id), str(p.operator_b.id)],
        period_start="2025-06-01",
        period_end="2025-06-30",
    )
    url = engine.url.render_as_string(hide_password=False)
    now = utcnow()
    scope = run(url, lambda s: engagements.auditor_scope(s, _principal(p.auditor), now))
    assert scope is not None
    assert scope.operator_ids == {p.operator_a.id, p.operator_b.id}
    assert scope.periods[p.operator_a.id] == ((date(2025, 1, 1), date(2025, 3, 31)), (date(2025, 6, 1), date(2025, 6, 30)))
    assert scope.covers([p.operator_a.id], datetime(2025, 3, 31, 23, 59, tzinfo=UTC))
    assert scope.covers([str(p.buyer.id), str(p.operator_b.id)], datetime(2025, 6, 1, tzinfo=UTC))
    assert not scope.covers([p.operator_b.id], datetime(2025, 3, 1, tzinfo=UTC)), "B is covered in June only"
    assert not scope.covers([p.operator_a.id], datetime(2025, 4, 1, tzinfo=UTC))
    assert not scope.covers([p.buyer.id], datetime(2025, 2, 1, tzinfo=UTC))
    # Days are UTC days: 07:30 on 1 April in Beijing is still 31 March in UTC.
    assert scope.covers([p.operator_a.id], datetime(2025, 4, 1, 7, 30, tzinfo=timezone(timedelta(hours=8))))
    # After the first engagement expires only June remains; after 30 days, nothing.
    later = datetime.fromisoformat(first["expires_at"]) + timedelta(seconds=1)
    assert run(url, lambda s: engagements.auditor_scope(s, _principal(p.auditor), later)).is_empty  # type: ignore[union-attr]
    assert run(url, lambda s: engagements.auditor_scope(s, _principal(p.owner), now)) is None
    assert run(url, lambda s: engagements.auditor_scope(s, _principal(make_org(engine, OrgKind.regulator)), now)) is None
    with pytest.raises(Forbidden):
        run(url, lambda s: engagements.auditor_scope(s, _principal(p.operator_a), now))


# --- the ledger routes under an engagement ----------------------------------------------------------


def _history(engine: Engine, p: Parties) -> dict[str, int]:
    """Four business events in 2025: A in period, B in period, A after the period, A with a buyer on the last day."""
    events = {
        "a_in": DomainEvent(
            "test.sale", Actor("system", "tests"), orgs=(p.operator_a.id,), occurred_at=datetime(2025, 2, 10, tzinfo=UTC)
        ),
        "b_in": DomainEvent(
            "test.sale", Actor("system", "tests"), orgs=(p.operator_b.id,), occurred_at=datetime(2025, 2, 10, tzinfo=UTC)
        ),
        "a_late": DomainEvent(
            "test.sale", Actor("system", "tests"), orgs=(p.operator_a.id,), occurred_at=datetime(2025, 6, 10, tzinfo=UTC)
        ),
        "a_edge": DomainEvent(
            "test.sale",
            Actor("system", "tests"),
            orgs=(p.buyer.id, p.operator_a.id),
            occurred_at=datetime(2025, 3, 31, 23, 59, tzinfo=UTC),
        ),
    }

    async def write(session: Any) -> list[int]:
        indices = await services.record_many(session, list(events.values()))
        await session.commit()
        return indices

    indices = run(engine.url.render_as_string(hide_password=False), write)
    return dict(zip(events, indices, strict=True))


def _read_entries(client: TestClient) -> Any:
    return client.get(ENTRIES, params={"start": 0, "end": 1000})


def _refused_reads(engine: Engine) -> list[dict[str, Any]]:
    return ledger_events(engine, "records.read_refused")


def test_an_auditor_reads_only_entries_of_its_operators_and_period(client: TestClient, engine: Engine) -> None:
    p = _parties(engine)
    index = _history(engine, p)
    _grant(client, engine, p)
    _as(client, engine, p.auditor_user)
    page = _read_entries(client)
    assert page.status_code == 200, page.text
    got = [item["index"] for item in page.json()["items"]]
    assert got == [index["a_in"], index["a_edge"]], (
        "B's entry (another operator) and A's June entry (after the period) are left out"
    )
    assert page.json()["end"] == page.json()["tree_size"]  # every entry before this read was looked at
    [read] = ledger_events(engine, "ledger.entries_read")
    assert read["payload"] == {"start": 0, "end": page.json()["end"], "returned": 2, "left_out": page.json()["end"] - 2}
    # Proofs stay open: they reveal hashes only.
    proof = client.get("/api/supervision/ledger/proof/inclusion", params={"index": index["b_in"], "tree_size": 4})
    assert proof.status_code == 200
    # The regulator and the owner are unchanged: everything.
    for user in (p.regulator_user, p.owner_admin):
        _as(client, engine, user)
        everything = [item["index"] for item in _read_entries(client).json()["items"]]
        assert set(index.values()) <= set(everything)
    assert _refused_reads(engine) == []


def test_an_auditor_without_an_engagement_is_refused_and_the_attempt_recorded(client: TestClient, engine: Engine) -> None:
    p = _parties(engine)
    _history(engine, p)
    _grant(client, engine, p)  # for the firm, not for the other auditor
    _as(client, engine, p.other_auditor_user)
    before = row_counts(engine, *TABLES)
    assert_problem(_read_entries(client), 403, "outside_engagement")
    assert_problem(client.get(EXPORT), 403, "outside_engagement")
    after = row_counts(engine, *TABLES)
    assert after == {**before, "ledger_entry": before["ledger_entry"] + 2}, "only the two refusals are written"
    refused = _refused_reads(engine)
    assert [(e["payload"]["path"], e["payload"]["query"]) for e in refused] == [(ENTRIES, "start=0&end=1000"), (EXPORT, "")]
    assert all(e["payload"]["party"] == "auditor" and e["payload"]["code"] == "outside_engagement" for e in refused)
    assert all(e["actor"] == {"kind": "user", "id": str(p.other_auditor_user.id)} for e in refused)
    assert ledger_events(engine, "ledger.entries_read") == []
    assert ledger_events(engine, "ledger.exported") == []


def test_after_expiry_the_auditor_is_refused(client: TestClient, engine: Engine) -> None:
    p = _parties(engine)
    _history(engine, p)
    granted = _grant(client, engine, p)
    _as(client, engine, p.auditor_user)
    assert _read_entries(client).status_code == 200
    with engine.begin() as conn:  # time passes
        conn.execute(
            update(Engagement)
            .where(col(Engagement.id) == uuid.UUID(granted["id"]))
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    assert_problem(_read_entries(client), 403, "outside_engagement")
    assert len(_refused_reads(engine)) == 1
    _as(client, engine, p.owner_admin)
    assert client.get(BASE).json()["items"][0]["status"] == "expired"


def test_after_revocation_the_auditor_is_refused(client: TestClient, engine: Engine) -> None:
    p = _parties(engine)
    _history(engine, p)
    granted = _grant(client, engine, p)
    _as(client, engine, p.auditor_user)
    assert _read_entries(client).status_code == 200
    headers = _as(client, engine, p.owner_admin)
    assert (
        client.post(f"{BASE}/{granted['id']}/revoke", json={"reason": "Conflict of interest"}, headers=headers).status_code == 200
    )
    _as(client, engine, p.auditor_user)
    assert_problem(_read_entries(client), 403, "outside_engagement")
    assert_problem(client.get(EXPORT), 403, "outside_engagement")
    assert len(_refused_reads(engine)) == 2


def test_an_auditors_export_withholds_what_it_does_not_cover_and_still_verifies(
    client: TestClient, engine: Engine, tmp_path: Path
) -> None:
    p = _parties(engine)
    index = _history(engine, p)
    _grant(client, engine, p)
    headers = _as(client, engine, p.owner_admin)
    assert client.post("/api/supervision/ledger/checkpoint", headers=headers).status_code == 200
    full = client.get(EXPORT).text
    _as(client, engine, p.auditor_user)
    response = client.get(EXPORT)
    assert response.status_code == 200, response.text
    lines = response.text.splitlines()
    header = json.loads(lines[0])
    entries = [json.loads(line) for line in lines[1 : 1 + header["size"]]]
    shown = [e["index"] for e in entries if "leaf_input" in e]
    assert shown == [index["a_in"], index["a_edge"]]
    assert header["withheld"] == header["size"] - 2
    assert header["scope"] == {str(p.operator_a.id): [{"start": "2025-01-01", "end": "2025-03-31"}]}
    withheld = next(e for e in entries if e["index"] == index["b_in"])
    assert set(withheld) == {"index", "leaf_hash"}
    assert "test.sale" not in json.dumps(withheld)
    full_entries = [json.loads(line) for line in full.splitlines()[1 : 1 + header["size"]]]
    assert base64.b64decode(withheld["leaf_hash"]) == merkle.leaf_hash(
        base64.b64decode(full_entries[index["b_in"]]["leaf_input"])
    )
    path = tmp_path / "auditor-export.jsonl"
    path.write_text(response.text)
    report = verify_export(path)
    assert report.ok, report.problem
    assert report.checkpoints == 1
    # A withheld hash that was changed is caught against the signed checkpoint.
    forged = dict(withheld, leaf_hash=base64.b64encode(bytes(32)).decode())
    tampered = response.text.replace(json.dumps(withheld, separators=(",", ":")), json.dumps(forged, separators=(",", ":")))
    assert tampered != response.text
    (tmp_path / "tampered.jsonl").write_text(tampered)
    assert not verify_export(tmp_path / "tampered.jsonl").ok
    [exported] = ledger_events(engine, "ledger.exported")[-1:]
    assert exported["payload"]["scope"] == header["scope"]


def test_the_verifier_names_a_bad_withheld_line(client: TestClient, engine: Engine, tmp_path: Path) -> None:
    p = _parties(engine)
    index = _history(engine, p)
    _grant(client, engine, p)
    headers = _as(client, engine, p.owner_admin)
    assert client.post("/api/supervision/ledger/checkpoint", headers=headers).status_code == 200
    _as(client, engine, p.auditor_user)
    exported = client.get(EXPORT).text
    lines = exported.splitlines(keepends=True)
    at = 1 + index["b_in"]
    withheld = json.loads(lines[at])

    def verdict(name: str, line: str, position: int = at) -> str | None:
        changed = [*lines[:position], line, *lines[position + 1 :]]
        (tmp_path / name).write_text("".join(changed))
        report = verify_export(tmp_path / name)
        assert not report.ok
        return report.problem

    short = base64.b64encode(bytes(31)).decode()
    assert "leaf_hash is not the canonical base64 of a 32-byte hash" in str(
        verdict("short.jsonl", f'{{"index":{index["b_in"]},"leaf_hash":"{short}"}}\n')
    )
    wrong = f'{{"index":{index["b_in"] + 1},"leaf_hash":"{withheld["leaf_hash"]}"}}\n'
    assert "holds index" in str(verdict("index.jsonl", wrong))
    header = {k: v for k, v in json.loads(lines[0]).items() if k != "withheld"}
    assert "missing or unexpected fields: withheld" in str(verdict("header.jsonl", json.dumps(header) + "\n", 0))
