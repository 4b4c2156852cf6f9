"""Franchise licences over real HTTP: drafts, every transition allowed and refused, bad terms refused with
nothing written, tenancy, the timeline and the ledger, and the "in force" rule at the edges of the term.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import pytest
from litestar.testing import TestClient
from sqlalchemy import Engine
from sqlmodel import Session, select

from licensing.models import DataResource, Grade, Licence, LicenceStatus, LicenceVersion
from licensing.schemas import FieldSpec
from licensing.services import licences as licences_service
from licensing.services.licences import check_term, licence_in_force, require_licence_in_force
from marketplace.core.errors import Conflict, InvalidInput, NotFound
from marketplace.core.identity.models import Organisation
from marketplace.core.principal import OrgKind
from tests.factories import make_login_session, make_org, make_user
from tests.helpers import assert_problem, use_session
from tests.licensing.factories import ledger_events, licence_body, make_licence, make_resource, row_counts
from tests.supervision.ledger_helpers import run
from tests.worlds import replayed

BASE = "/api/licensing/licences"
TABLES = ("licence", "licence_resource", "licence_version", "ledger_entry", "listing_review")
FIELDS = [FieldSpec(name="district", type="string"), FieldSpec(name="amount", type="decimal")]  # type: ignore[arg-type]


@dataclass
class Parties:
    owner: Organisation
    operator: Organisation
    other_operator: Organisation
    buyer: Organisation
    regulator: Organisation
    auditor: Organisation
    other_owner: Organisation
    sessions: dict[str, str]
    l2: DataResource
    l3: DataResource
    l4: DataResource
    foreign: DataResource  # another owner's resource


@pytest.fixture
def parties(engine: Engine) -> Parties:
    """Fresh parties for each test: built once, then the same rows put back (``tests.worlds.replayed``)."""
    return replayed(engine, __name__, lambda: _parties(engine))


def _parties(engine: Engine) -> Parties:
    orgs = {
        "owner": make_org(engine, OrgKind.owner),
        "operator": make_org(engine, OrgKind.operator),
        "other_operator": make_org(engine, OrgKind.operator),
        "buyer": make_org(engine, OrgKind.buyer),
        "regulator": make_org(engine, OrgKind.regulator),
        "auditor": make_org(engine, OrgKind.auditor),
        "other_owner": make_org(engine, OrgKind.owner),
    }
    sessions = {name: make_login_session(engine, make_user(engine, org)) for name, org in orgs.items()}
    return Parties(
        **orgs,
        sessions=sessions,
        l2=make_resource(engine, orgs["owner"], fields=FIELDS, grade=Grade.L2),
        l3=make_resource(engine, orgs["owner"], fields=FIELDS, grade=Grade.L3),
        l4=make_resource(engine, orgs["owner"], fields=FIELDS, grade=Grade.L4),
        foreign=make_resource(engine, orgs["other_owner"], fields=FIELDS, grade=Grade.L1),
    )


def _as(client: TestClient[Any], parties: Parties, who: str) -> dict[str, str]:
    return use_session(client, parties.sessions[who])


def _status_and_version(engine: Engine, licence_id: uuid.UUID) -> tuple[LicenceStatus, int]:
    with Session(engine) as session:
        licence = session.get(Licence, licence_id)
        assert licence is not None
        return licence.status, licence.version


def _create(client: TestClient[Any], parties: Parties, **overrides: Any) -> dict[str, Any]:
    headers = _as(client, parties, "owner")
    response = client.post(
        BASE, json=licence_body(parties.operator.id, [parties.l2.id, parties.l3.id], **overrides), headers=headers
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


# --- drafts -------------------------------------------------------------------------------------------


def test_owner_drafts_a_licence_with_a_readable_number_and_every_term(
    client: TestClient[Any], engine: Engine, parties: Parties
) -> None:
    first = _create(client, parties)
    second = _create(client, parties, reason="Second operator line")
    year = date.today().year
    assert re.fullmatch(rf"LIC-{year}-\d{{4}}", first["number"])
    assert int(second["number"].rsplit("-", 1)[1]) == int(first["number"].rsplit("-", 1)[1]) + 1
    assert first["status"] == "draft"
    assert first["version"] == 1
    assert first["in_force"] is False
    assert first["operator_id"] == str(parties.operator.id)
    assert first["owner_org_id"] == str(parties.owner.id)
    assert {(r["id"], r["code"], r["grade"]) for r in first["resources"]} == {
        (str(parties.l2.id), parties.l2.code, "L2"),
        (str(parties.l3.id), parties.l3.code, "L3"),
    }
    assert all(r["title"] and r["title_zh"] for r in first["resources"])
    assert first["purposes"] == ["credit_assessment", "public_welfare"]
    assert first["modes"] == ["api", "sandbox"]
    assert first["term"] == {"starts_on": date.today().isoformat(), "ends_on": (date.today() + timedelta(days=365)).isoformat()}
    assert first["fee_rate"] == "0.12"
    assert first["price_caps"] == {"free": "0.00", "monthly": "2000.00", "metered": "0.50"}, (
        "money is a normalised decimal string"
    )
    assert first["volume_caps"] == {"rows_per_month": 1_000_000, "calls_per_month": None}
    assert first["min_k"] == 5
    assert first["reductions"] == {"public_welfare": 100}
    assert [(v["version"], v["change"], v["status"], v["reason"]) for v in first["timeline"]] == [
        (1, "created", "draft", "Draft created")
    ]
    assert first["timeline"][0]["terms"]["resource_ids"] == sorted([str(parties.l2.id), str(parties.l3.id)])
    assert row_counts(engine, "licence", "licence_resource", "licence_version") == {
        "licence": 2,
        "licence_resource": 4,
        "licence_version": 2,
    }


def test_numbers_follow_the_highest_of_the_year_and_a_clash_is_retried(
    client: TestClient[Any], engine: Engine, parties: Parties, monkeypatch: pytest.MonkeyPatch
) -> None:
    year = date.today().year
    taken = make_licence(engine, parties.owner, parties.operator, [parties.l2])
    with Session(engine) as session:
        row = session.get(Licence, taken.id)
        assert row is not None
        row.number = f"LIC-{year}-0007"
        session.add(row)
        session.commit()
    assert _create(client, parties)["number"] == f"LIC-{year}-0008"

    # Two drafts numbered at the same moment: the second one's insert clashes, and it takes the next number.
    real = licences_service._next_number
    calls: list[str] = []

    async def clashing(session: Any, year_: int) -> str:
        number = f"LIC-{year}-0008" if not calls else await real(session, year_)
        calls.append(number)
        return number

    monkeypatch.setattr(licences_service, "_next_number", clashing)
    before = row_counts(engine, *TABLES)
    created = _create(client, parties)
    assert calls == [f"LIC-{year}-0008", f"LIC-{year}-0009"]
    assert created["number"] == f"LIC-{year}-0009"
    after = row_counts(engine, *TABLES)
    assert (after["licence"], after["licence_version"]) == (before["licence"] + 1, before["licence_version"] + 1)


def test_min_k_defaults_to_five_and_caps_may_be_left_open(client: TestClient[Any], parties: Parties) -> None:
    body = licence_body(parties.operator.id, [parties.l2.id])
    for key in ("min_k", "volume_caps", "price_caps", "reductions"):
        body.pop(key)
    headers = _as(client, parties, "owner")
    created = client.post(BASE, json=body, headers=headers).json()
    assert created["min_k"] == 5
    assert created["volume_caps"] == {"rows_per_month": None, "calls_per_month": None}
    assert created["price_caps"] == {}
    assert created["reductions"] == {}


def _bad_bodies() -> list[tuple[str, Any, int, str]]:
    """(case id, how to spoil a valid body, status, code)."""
    today = date.today()
    return [
        ("l4_resource", lambda p, b: b.update(resource_ids=[str(p.l2.id), str(p.l4.id)]), 400, "l4_not_licensable"),
        ("end_before_start", lambda p, b: b.update(ends_on=(today - timedelta(days=1)).isoformat()), 400, "term_invalid"),
        ("end_on_start", lambda p, b: b.update(ends_on=today.isoformat()), 400, "term_invalid"),
        (
            "beyond_five_years",
            lambda p, b: b.update(ends_on=(today.replace(year=today.year + 5) + timedelta(days=1)).isoformat()),
            400,
            "term_too_long",
        ),
        ("buyer_licensee", lambda p, b: b.update(operator_id=str(p.buyer.id)), 400, "licensee_not_an_operator"),
        ("owner_licensee", lambda p, b: b.update(operator_id=str(p.other_owner.id)), 400, "licensee_not_an_operator"),
        ("unknown_licensee", lambda p, b: b.update(operator_id=str(uuid.uuid4())), 400, "licensee_not_an_operator"),
        ("another_owners_resource", lambda p, b: b.update(resource_ids=[str(p.foreign.id)]), 400, "resource_not_found"),
        ("unknown_resource", lambda p, b: b.update(resource_ids=[str(uuid.uuid4())]), 400, "resource_not_found"),
        (
            "reduction_for_unpermitted_purpose",
            lambda p, b: b.update(reductions={"academic_research": 50}),
            400,
            "reduction_purpose_not_permitted",
        ),
        ("blank_reason", lambda p, b: b.update(reason="   \n"), 400, "reason_required"),
        ("no_resources", lambda p, b: b.update(resource_ids=[]), 400, "invalid_input"),
        ("no_purposes", lambda p, b: b.update(purposes=[]), 400, "invalid_input"),
        ("no_modes", lambda p, b: b.update(modes=[]), 400, "invalid_input"),
        ("unknown_purpose", lambda p, b: b.update(purposes=["espionage"]), 400, "invalid_input"),
        ("unknown_mode", lambda p, b: b.update(modes=["fax"]), 400, "invalid_input"),
        ("min_k_one", lambda p, b: b.update(min_k=1), 400, "invalid_input"),
        ("min_k_too_high", lambda p, b: b.update(min_k=1001), 400, "invalid_input"),
        ("fee_rate_above_one", lambda p, b: b.update(fee_rate="1.01"), 400, "invalid_input"),
        ("fee_rate_negative", lambda p, b: b.update(fee_rate="-0.1"), 400, "invalid_input"),
        ("fee_rate_as_float", lambda p, b: b.update(fee_rate=0.12), 400, "invalid_input"),
        ("negative_price_cap", lambda p, b: b.update(price_caps={"monthly": "-1.00"}), 400, "invalid_input"),
        ("price_cap_as_float", lambda p, b: b.update(price_caps={"monthly": 12.5}), 400, "invalid_input"),
        ("price_cap_unknown_plan", lambda p, b: b.update(price_caps={"lifetime": "1.00"}), 400, "invalid_input"),
        ("zero_volume_cap", lambda p, b: b.update(volume_caps={"rows_per_month": 0}), 400, "invalid_input"),
        ("reduction_zero", lambda p, b: b.update(reductions={"public_welfare": 0}), 400, "invalid_input"),
        ("reduction_above_100", lambda p, b: b.update(reductions={"public_welfare": 101}), 400, "invalid_input"),
        ("blank_territory", lambda p, b: b.update(territory="  "), 400, "invalid_input"),
        ("unknown_field", lambda p, b: b.update(status="granted"), 400, "invalid_input"),
    ]


@pytest.mark.parametrize(("spoil", "status", "code"), [c[1:] for c in _bad_bodies()], ids=[c[0] for c in _bad_bodies()])
def test_bad_terms_are_refused_and_change_nothing(
    client: TestClient[Any], engine: Engine, parties: Parties, spoil: Any, status: int, code: str
) -> None:
    _create(client, parties)  # something already there, so "nothing changed" is not trivially true
    before = row_counts(engine, *TABLES)
    body = licence_body(parties.operator.id, [parties.l2.id])
    spoil(parties, body)
    response = client.post(BASE, json=body, headers=_as(client, parties, "owner"))
    assert_problem(response, status, code)
    assert row_counts(engine, *TABLES) == before


def test_a_term_of_exactly_five_years_is_accepted(client: TestClient[Any], parties: Parties) -> None:
    start = date(2028, 2, 29)
    created = _create(client, parties, starts_on=start.isoformat(), ends_on="2033-02-28")
    assert created["term"] == {"starts_on": "2028-02-29", "ends_on": "2033-02-28"}
    with pytest.raises(InvalidInput) as refused:
        check_term(start, date(2033, 3, 1))
    assert refused.value.code == "term_too_long"


def test_only_the_owner_drafts(client: TestClient[Any], engine: Engine, parties: Parties) -> None:
    before = row_counts(engine, *TABLES)
    for who in ("operator", "buyer"):
        response = client.post(BASE, json=licence_body(parties.operator.id, [parties.l2.id]), headers=_as(client, parties, who))
        assert_problem(response, 403, "party_not_allowed")
    for who in ("regulator", "auditor"):
        response = client.post(BASE, json=licence_body(parties.operator.id, [parties.l2.id]), headers=_as(client, parties, who))
        assert_problem(response, 403, "read_only_party")
    assert row_counts(engine, *TABLES) == before


# --- amending a draft ------------------------------------------------------------------------------------


def test_amending_a_draft_replaces_only_the_terms_given(client: TestClient[Any], engine: Engine, parties: Parties) -> None:
    created = _create(client, parties)
    headers = _as(client, parties, "owner")
    response = client.patch(
        f"{BASE}/{created['id']}",
        json={"reason": "Narrow to L2 and lower the fee", "resource_ids": [str(parties.l2.id)], "fee_rate": "0.08", "min_k": 10},
        headers=headers,
    )
    assert response.status_code == 200, response.text
    amended = response.json()
    assert [r["id"] for r in amended["resources"]] == [str(parties.l2.id)]
    assert (amended["fee_rate"], amended["min_k"], amended["version"]) == ("0.08", 10, 2)
    assert amended["purposes"] == created["purposes"]
    assert amended["term"] == created["term"]
    assert amended["timeline"][-1]["change"] == "amended"
    assert amended["timeline"][-1]["reason"] == "Narrow to L2 and lower the fee"
    assert amended["timeline"][-1]["terms"]["fee_rate"] == "0.08"
    assert amended["timeline"][0]["terms"]["fee_rate"] == "0.12", "earlier versions keep their terms"
    assert row_counts(engine, "licence_resource")["licence_resource"] == 1


@pytest.mark.parametrize(
    ("change", "status", "code"),
    [
        ({"resource_ids": ["L4"]}, 400, "l4_not_licensable"),
        ({"ends_on": "2000-01-01"}, 400, "term_invalid"),
        ({"starts_on": "2030-01-01", "ends_on": "2035-01-02"}, 400, "term_too_long"),
        ({"operator_id": "BUYER"}, 400, "licensee_not_an_operator"),
        ({"purposes": ["academic_research"]}, 400, "reduction_purpose_not_permitted"),
        ({}, 400, "nothing_to_amend"),
        ({"reason": " "}, 400, "reason_required"),
        ({"fee_rate": 0.1}, 400, "invalid_input"),
    ],
    ids=["l4", "term_invalid", "term_too_long", "non_operator", "reduction_orphaned", "nothing", "blank_reason", "float_rate"],
)
def test_bad_amendments_are_refused_and_change_nothing(
    client: TestClient[Any], engine: Engine, parties: Parties, change: dict[str, Any], status: int, code: str
) -> None:
    created = _create(client, parties)
    if change.get("resource_ids") == ["L4"]:
        change = {"resource_ids": [str(parties.l4.id)]}
    if change.get("operator_id") == "BUYER":
        change = {"operator_id": str(parties.buyer.id)}
    before = row_counts(engine, *TABLES)
    response = client.patch(f"{BASE}/{created['id']}", json={"reason": "Change", **change}, headers=_as(client, parties, "owner"))
    assert_problem(response, status, code)
    assert row_counts(engine, *TABLES) == before
    assert client.get(f"{BASE}/{created['id']}").json()["version"] == 1


# --- the lifecycle -----------------------------------------------------------------------------------------

ACTIONS = ("grant", "suspend", "reinstate", "revoke")
ALLOWED = {
    ("draft", "grant"): "granted",
    ("granted", "suspend"): "suspended",
    ("suspended", "reinstate"): "granted",
    ("granted", "revoke"): "revoked",
    ("suspended", "revoke"): "revoked",
}
TABLE = [(s.value, a) for s in LicenceStatus for a in ACTIONS]


@pytest.mark.parametrize(("from_status", "action"), TABLE, ids=[f"{s}-{a}" for s, a in TABLE])
def test_transition_table(client: TestClient[Any], engine: Engine, parties: Parties, from_status: str, action: str) -> None:
    licence = make_licence(engine, parties.owner, parties.operator, [parties.l2], status=LicenceStatus(from_status))
    headers = _as(client, parties, "owner")
    before = row_counts(engine, *TABLES)
    response = client.post(f"{BASE}/{licence.id}/{action}", json={"reason": f"Because: {action}"}, headers=headers)
    target = ALLOWED.get((from_status, action))
    if target is None:
        body = assert_problem(response, 409, "licence_transition_refused")
        assert body["licence_status"] == from_status
        assert from_status in body["detail"]
        assert row_counts(engine, *TABLES) == before
        assert _status_and_version(engine, licence.id) == (LicenceStatus(from_status), 1)
        return
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["status"], body["version"]) == (target, 2)
    assert body["timeline"][-1]["reason"] == f"Because: {action}"
    assert _status_and_version(engine, licence.id) == (LicenceStatus(target), 2)
    after = row_counts(engine, *TABLES)
    assert after["licence_version"] == before["licence_version"] + 1
    assert after["ledger_entry"] == before["ledger_entry"] + 1
    assert after["licence"] == before["licence"]


@pytest.mark.parametrize("from_status", [s.value for s in LicenceStatus if s is not LicenceStatus.draft])
def test_only_a_draft_can_be_amended(client: TestClient[Any], engine: Engine, parties: Parties, from_status: str) -> None:
    licence = make_licence(engine, parties.owner, parties.operator, [parties.l2], status=LicenceStatus(from_status))
    headers = _as(client, parties, "owner")
    before = row_counts(engine, *TABLES)
    response = client.patch(f"{BASE}/{licence.id}", json={"reason": "Raise the fee", "fee_rate": "0.2"}, headers=headers)
    body = assert_problem(response, 409, "licence_not_draft")
    assert body["licence_status"] == from_status
    assert row_counts(engine, *TABLES) == before


def test_a_licence_whose_term_ended_cannot_be_granted(client: TestClient[Any], engine: Engine, parties: Parties) -> None:
    yesterday = date.today() - timedelta(days=1)
    licence = make_licence(
        engine,
        parties.owner,
        parties.operator,
        [parties.l2],
        status=LicenceStatus.draft,
        starts_on=yesterday - timedelta(days=30),
        ends_on=yesterday,
    )
    before = row_counts(engine, *TABLES)
    response = client.post(f"{BASE}/{licence.id}/grant", json={"reason": "Late"}, headers=_as(client, parties, "owner"))
    assert_problem(response, 409, "licence_term_ended")
    assert row_counts(engine, *TABLES) == before


def test_a_licence_starting_later_is_granted_but_not_yet_in_force(client: TestClient[Any], parties: Parties) -> None:
    start = date.today() + timedelta(days=10)
    created = _create(client, parties, starts_on=start.isoformat(), ends_on=(start + timedelta(days=100)).isoformat())
    granted = client.post(
        f"{BASE}/{created['id']}/grant", json={"reason": "Signed"}, headers=_as(client, parties, "owner")
    ).json()
    assert (granted["status"], granted["in_force"]) == ("granted", False)


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"reason": ""}, "reason_required"),
        ({"reason": " \t\n "}, "reason_required"),
        ({}, "invalid_input"),
        ({"reason": "x" * 2001}, "invalid_input"),
    ],
    ids=["empty", "blank", "missing", "too_long"],
)
@pytest.mark.parametrize("action", ACTIONS)
def test_a_transition_needs_a_written_reason(
    client: TestClient[Any], engine: Engine, parties: Parties, action: str, body: dict[str, Any], code: str
) -> None:
    from_status = next(s for (s, a) in ALLOWED if a == action)
    licence = make_licence(engine, parties.owner, parties.operator, [parties.l2], status=LicenceStatus(from_status))
    before = row_counts(engine, *TABLES)
    response = client.post(f"{BASE}/{licence.id}/{action}", json=body, headers=_as(client, parties, "owner"))
    assert_problem(response, 400, code)
    assert row_counts(engine, *TABLES) == before
    assert _status_and_version(engine, licence.id) == (LicenceStatus(from_status), 1)


def test_a_reason_of_2000_characters_is_kept_whole(client: TestClient[Any], engine: Engine, parties: Parties) -> None:
    licence = make_licence(engine, parties.owner, parties.operator, [parties.l2], status=LicenceStatus.granted)
    reason = "r" * 2000
    response = client.post(f"{BASE}/{licence.id}/suspend", json={"reason": reason}, headers=_as(client, parties, "owner"))
    assert response.status_code == 200, response.text
    assert response.json()["timeline"][-1]["reason"] == reason


# --- tenancy -------------------------------------------------------------------------------------------------


def test_another_operator_never_sees_or_touches_a_licence(client: TestClient[Any], engine: Engine, parties: Parties) -> None:
    licence = make_licence(engine, parties.owner, parties.operator, [parties.l2], status=LicenceStatus.granted)
    before = row_counts(engine, *TABLES)
    headers = _as(client, parties, "other_operator")
    assert_problem(client.get(f"{BASE}/{licence.id}"), 404, "licence_not_found")
    assert_problem(client.get(f"{BASE}/{licence.id}/versions"), 404, "licence_not_found")
    assert client.get(BASE).json() == {"items": [], "total": 0}
    assert client.get(BASE, params={"operator_id": str(parties.operator.id)}).json()["total"] == 0
    for action in ACTIONS:
        response = client.post(f"{BASE}/{licence.id}/{action}", json={"reason": "Mine now"}, headers=headers)
        assert_problem(response, 403, "party_not_allowed")
    assert_problem(
        client.patch(f"{BASE}/{licence.id}", json={"reason": "x", "min_k": 9}, headers=headers), 403, "party_not_allowed"
    )
    # Another owner is told the licence does not exist.
    headers = _as(client, parties, "other_owner")
    assert_problem(client.get(f"{BASE}/{licence.id}"), 404, "licence_not_found")
    response = client.post(f"{BASE}/{licence.id}/suspend", json={"reason": "Not mine"}, headers=headers)
    assert_problem(response, 404, "licence_not_found")
    assert row_counts(engine, *TABLES) == before
    assert _status_and_version(engine, licence.id) == (LicenceStatus.granted, 1)


def test_who_sees_which_licences(client: TestClient[Any], engine: Engine, parties: Parties) -> None:
    mine = make_licence(engine, parties.owner, parties.operator, [parties.l2], status=LicenceStatus.granted)
    draft = make_licence(engine, parties.owner, parties.operator, [parties.l3], status=LicenceStatus.draft)
    theirs = make_licence(engine, parties.owner, parties.other_operator, [parties.l2], status=LicenceStatus.suspended)
    elsewhere = make_licence(engine, parties.other_owner, parties.operator, [parties.foreign], status=LicenceStatus.granted)

    def seen(who: str, **params: str) -> set[str]:
        _as(client, parties, who)
        response = client.get(BASE, params=params)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["total"] == len(body["items"])
        return {item["id"] for item in body["items"]}

    ids = {k: str(v.id) for k, v in {"mine": mine, "draft": draft, "theirs": theirs, "elsewhere": elsewhere}.items()}
    assert seen("owner") == {ids["mine"], ids["draft"], ids["theirs"]}
    assert seen("other_owner") == {ids["elsewhere"]}
    assert seen("operator") == {ids["mine"], ids["draft"], ids["elsewhere"]}
    assert seen("other_operator") == {ids["theirs"]}
    assert seen("regulator") == set(ids.values())
    _as(client, parties, "auditor")  # no engagement in force: nothing (scoping: tests/licensing/test_auditor_scope.py)
    assert_problem(client.get(BASE), 403, "outside_engagement")
    assert seen("owner", status="granted") == {ids["mine"]}
    assert seen("owner", operator_id=str(parties.other_operator.id)) == {ids["theirs"]}
    assert seen("regulator", status="granted", operator_id=str(parties.operator.id)) == {ids["mine"], ids["elsewhere"]}
    _as(client, parties, "operator")
    detail = client.get(f"{BASE}/{mine.id}").json()
    assert {"status", "operator_id", "resources", "purposes", "modes", "term", "fee_rate", "timeline"} <= detail.keys()
    assert [r["code"] for r in detail["resources"]] == [parties.l2.code]
    _as(client, parties, "buyer")
    assert_problem(client.get(BASE), 403, "party_not_allowed")
    assert_problem(client.get(f"{BASE}/{mine.id}"), 403, "party_not_allowed")


def test_list_pages_with_the_total_beside_the_items(client: TestClient[Any], engine: Engine, parties: Parties) -> None:
    for _ in range(3):
        make_licence(engine, parties.owner, parties.operator, [parties.l2])
    _as(client, parties, "owner")
    first = client.get(BASE, params={"limit": 2}).json()
    rest = client.get(BASE, params={"limit": 2, "offset": 2}).json()
    assert (len(first["items"]), first["total"], len(rest["items"]), rest["total"]) == (2, 3, 1, 3)
    assert {i["id"] for i in first["items"]}.isdisjoint({i["id"] for i in rest["items"]})
    assert_problem(client.get(BASE, params={"status": "lost"}), 400, "invalid_input")


# --- the timeline and the ledger -----------------------------------------------------------------------------


def test_the_timeline_and_the_ledger_hold_every_change_with_its_reason(
    client: TestClient[Any], engine: Engine, parties: Parties
) -> None:
    created = _create(client, parties, reason="Pilot for the credit bureau")
    url = f"{BASE}/{created['id']}"
    headers = _as(client, parties, "owner")
    steps = [
        ("PATCH", url, {"reason": "Add file delivery", "modes": ["api", "file", "sandbox"]}),
        ("POST", f"{url}/grant", {"reason": "Board approval 2026/14"}),
        ("POST", f"{url}/suspend", {"reason": "Complaint under investigation"}),
        ("POST", f"{url}/reinstate", {"reason": "Complaint unfounded"}),
        ("POST", f"{url}/revoke", {"reason": "Operator breached the purpose limits"}),
    ]
    for method, path, body in steps:
        response = client.request(method, path, json=body, headers=headers)
        assert response.status_code == 200, response.text
    expected = [
        (1, "created", "draft", "Pilot for the credit bureau"),
        (2, "amended", "draft", "Add file delivery"),
        (3, "granted", "granted", "Board approval 2026/14"),
        (4, "suspended", "suspended", "Complaint under investigation"),
        (5, "reinstated", "granted", "Complaint unfounded"),
        (6, "revoked", "revoked", "Operator breached the purpose limits"),
    ]
    for who in ("owner", "operator", "regulator"):
        _as(client, parties, who)
        versions = client.get(f"{url}/versions").json()
        assert versions["total"] == 6
        assert [(v["version"], v["change"], v["status"], v["reason"]) for v in versions["items"]] == expected, who
        assert client.get(url).json()["timeline"] == versions["items"]
    assert versions["items"][0]["terms"]["modes"] == ["api", "sandbox"]
    assert versions["items"][1]["terms"]["modes"] == ["api", "file", "sandbox"]
    with Session(engine) as session:
        owner_user_ids = {v.actor_id for v in session.exec(select(LicenceVersion))}
    assert len(owner_user_ids) == 1
    assert None not in owner_user_ids

    events = ledger_events(engine, "licence.")
    assert [e["type"] for e in events] == [
        "licence.created",
        "licence.amended",
        "licence.granted",
        "licence.suspended",
        "licence.reinstated",
        "licence.revoked",
    ]
    for event, (version, _change, status, reason) in zip(events, expected, strict=True):
        assert event["orgs"] == sorted([str(parties.owner.id), str(parties.operator.id)])
        assert event["subjects"] == {"licence": created["id"]}
        assert event["actor"]["kind"] == "user"
        payload = event["payload"]
        assert payload["number"] == created["number"]
        assert (payload["version"], payload["status"], payload["reason"]) == (version, status, reason)
        assert payload["resource_ids"] == sorted([str(parties.l2.id), str(parties.l3.id)])
        assert payload["term"] == created["term"]


# --- the one rule ----------------------------------------------------------------------------------------------


def _licence(status: LicenceStatus, starts_on: date, ends_on: date) -> Licence:
    return Licence(
        number="LIC-TEST",
        owner_org_id=uuid.uuid4(),
        operator_id=uuid.uuid4(),
        status=status,
        territory="T",
        starts_on=starts_on,
        ends_on=ends_on,
        purposes_json="[]",
        modes_json="[]",
        price_caps_json="{}",
        volume_caps_json="{}",
        reductions_json="{}",
        fee_rate="0.1",
    )


START, END = date(2026, 3, 1), date(2027, 2, 28)


@pytest.mark.parametrize(
    ("status", "day", "in_force"),
    [
        (LicenceStatus.granted, START - timedelta(days=1), False),
        (LicenceStatus.granted, START, True),
        (LicenceStatus.granted, date(2026, 9, 1), True),
        (LicenceStatus.granted, END, True),
        (LicenceStatus.granted, END + timedelta(days=1), False),
        (LicenceStatus.draft, date(2026, 9, 1), False),
        (LicenceStatus.suspended, date(2026, 9, 1), False),
        (LicenceStatus.revoked, date(2026, 9, 1), False),
        (LicenceStatus.expired, END, False),
    ],
    ids=["day_before_start", "first_day", "mid_term", "last_day", "day_after_end", "draft", "suspended", "revoked", "expired"],
)
def test_licence_in_force_at_the_edges_of_its_term(status: LicenceStatus, day: date, in_force: bool) -> None:
    assert licence_in_force(_licence(status, START, END), day) is in_force


def test_in_force_defaults_to_today() -> None:
    today = date.today()
    assert licence_in_force(_licence(LicenceStatus.granted, today, today + timedelta(days=1)))
    assert licence_in_force(_licence(LicenceStatus.granted, today - timedelta(days=9), today))
    assert not licence_in_force(_licence(LicenceStatus.granted, today + timedelta(days=1), today + timedelta(days=9)))
    assert not licence_in_force(_licence(LicenceStatus.granted, today - timedelta(days=9), today - timedelta(days=1)))


def test_require_licence_in_force(client: TestClient[Any], engine: Engine, parties: Parties, database_url: str) -> None:
    granted = make_licence(engine, parties.owner, parties.operator, [parties.l2], status=LicenceStatus.granted)
    suspended = make_licence(engine, parties.owner, parties.operator, [parties.l2], status=LicenceStatus.suspended)
    assert run(database_url, lambda s: require_licence_in_force(s, granted.id)).id == granted.id
    with pytest.raises(Conflict) as refused:
        run(database_url, lambda s: require_licence_in_force(s, suspended.id))
    assert refused.value.code == "licence_not_in_force"
    assert refused.value.extra["licence_status"] == "suspended"
    with pytest.raises(Conflict):
        run(database_url, lambda s: require_licence_in_force(s, granted.id, granted.ends_on + timedelta(days=1)))
    with pytest.raises(NotFound):
        run(database_url, lambda s: require_licence_in_force(s, uuid.uuid4()))
