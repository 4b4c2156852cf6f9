"""The ledger interface over real HTTP: what a regulator fetches checks with any RFC 9162 verifier."""

from __future__ import annotations

import base64
import json
from typing import Any

from litestar.testing import TestClient
from sqlalchemy import Engine, func, select, text

from marketplace.core.http import CSRF_HEADER
from marketplace.core.principal import OrgKind, Role
from marketplace.core.settings import Settings
from supervision import merkle
from supervision.models import LedgerEntry
from supervision.note import open_checkpoint, parse_vkey
from tests.factories import PASSWORD, make_login_session, make_org, make_user
from tests.helpers import assert_problem, csrf, login, use_session


def _entries(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [json.loads(row[0]) for row in conn.execute(text("SELECT leaf_input FROM ledger_entry ORDER BY leaf_index"))]


def _count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(LedgerEntry)).scalar_one())


def test_identity_changes_are_recorded_with_metadata_only(client: TestClient, engine: Engine) -> None:
    org = make_org(engine, OrgKind.buyer)
    user = make_user(engine, org)
    assert login(client, user.email, PASSWORD).status_code == 200
    headers = {CSRF_HEADER: csrf(client)}
    created = client.post("/api/buyers/clients", json={"name": "ETL"}, headers=headers).json()
    client.post(f"/api/buyers/clients/{created['id']}/revoke", headers=headers)
    client.post("/api/auth/logout", headers=headers)
    events = _entries(engine)
    assert [e["type"] for e in events] == [
        "identity.signed_in",
        "identity.api_client_created",
        "identity.api_client_revoked",
        "identity.signed_out",
    ]
    assert all(e["actor"] == {"kind": "user", "id": str(user.id)} for e in events)
    assert all(e["orgs"] == [str(org.id)] for e in events)
    assert [e["index"] for e in events] == [0, 1, 2, 3]
    assert created["client_secret"] not in json.dumps(events), "secrets never reach the ledger"
    assert PASSWORD not in json.dumps(events)


def test_a_refused_change_leaves_no_event(client: TestClient, engine: Engine) -> None:
    org = make_org(engine, OrgKind.operator)
    admin = make_user(engine, org, Role.admin)
    headers = use_session(client, make_login_session(engine, admin))
    body = {"email": "twice@x.test-market.cn", "display_name": "Twice", "password": "a long enough password"}
    assert client.post("/api/users", json=body, headers=headers).status_code == 201
    before = _count(engine)
    assert_problem(client.post("/api/users", json=body, headers=headers), 409, "email_taken")
    assert _count(engine) == before


def test_regulator_checks_entries_and_proofs_against_the_public_checkpoint(
    client: TestClient, engine: Engine, settings: Settings
) -> None:
    buyer = make_user(engine, make_org(engine, OrgKind.buyer))
    for _ in range(5):
        login(client, buyer.email, PASSWORD)
    client.cookies.clear()
    note = client.get("/api/supervision/ledger/checkpoint")
    assert note.status_code == 200
    assert note.headers["content-type"].startswith("text/plain")
    vkey = client.get("/api/supervision/ledger/public-key").text
    checkpoint = open_checkpoint(note.text, parse_vkey(vkey))
    assert checkpoint.size == 5
    assert checkpoint.origin == settings.checkpoint_origin

    regulator = make_user(engine, make_org(engine, OrgKind.regulator))
    use_session(client, make_login_session(engine, regulator))
    page = client.get("/api/supervision/ledger/entries", params={"start": 0, "end": 5}).json()
    assert page["tree_size"] == 5
    assert [item["index"] for item in page["items"]] == [0, 1, 2, 3, 4]
    leaves = []
    for item in page["items"]:
        raw = base64.b64decode(item["leaf_input"])
        assert json.loads(raw) == item["event"]
        leaves.append(merkle.leaf_hash(raw))
    assert merkle.root_of(leaves) == checkpoint.root
    for index in range(5):
        proof = client.get("/api/supervision/ledger/proof/inclusion", params={"index": index, "tree_size": 5}).json()
        assert proof["leaf_index"] == index
        assert proof["tree_size"] == 5
        merkle.verify_inclusion(index, 5, leaves[index], [base64.b64decode(p) for p in proof["audit_path"]], checkpoint.root)
    # The regulator's read was recorded after the checkpoint; the log only grew.
    grown = client.get("/api/supervision/ledger/entries", params={"start": 5, "end": 100}).json()
    assert grown["items"][0]["event"]["type"] == "ledger.entries_read"
    assert grown["items"][0]["event"]["actor"] == {"kind": "user", "id": str(regulator.id)}
    size = grown["tree_size"]
    all_leaves = leaves + [merkle.leaf_hash(base64.b64decode(i["leaf_input"])) for i in grown["items"]]
    consistency = client.get("/api/supervision/ledger/proof/consistency", params={"first": 5, "second": size}).json()
    merkle.verify_consistency(
        5, size, checkpoint.root, merkle.root_of(all_leaves[:size]), [base64.b64decode(p) for p in consistency["proof"]]
    )


def test_bad_proof_requests_are_400_problems(client: TestClient, engine: Engine) -> None:
    use_session(client, make_login_session(engine, make_user(engine, make_org(engine, OrgKind.owner))))
    assert_problem(
        client.get("/api/supervision/ledger/proof/inclusion", params={"index": 0, "tree_size": 9}), 400, "tree_size_out_of_range"
    )
    assert_problem(
        client.get("/api/supervision/ledger/proof/inclusion", params={"index": -1, "tree_size": 1}), 400, "invalid_input"
    )
    assert_problem(
        client.get("/api/supervision/ledger/proof/consistency", params={"first": 0, "second": 0}), 400, "tree_size_out_of_range"
    )
    assert_problem(client.get("/api/supervision/ledger/entries", params={"start": "x", "end": 1}), 400, "invalid_input")


def test_export_holds_every_entry_checkpoint_and_the_key(client: TestClient, engine: Engine) -> None:
    owner = make_user(engine, make_org(engine, OrgKind.owner))
    headers = use_session(client, make_login_session(engine, owner))
    signed = client.post("/api/supervision/ledger/checkpoint", headers=headers)
    assert signed.status_code == 200
    response = client.get("/api/supervision/ledger/export")
    assert response.status_code == 200
    lines = response.text.splitlines()
    header = json.loads(lines[0])
    assert header["format"] == "market-ledger-export/1"
    assert header["vkey"] == client.get("/api/supervision/ledger/public-key").text
    entries = [json.loads(line) for line in lines[1 : 1 + header["size"]]]
    assert [e["index"] for e in entries] == list(range(header["size"]))
    notes = [json.loads(line)["checkpoint"] for line in lines[1 + header["size"] :]]
    assert len(notes) == header["checkpoints"] == 1
    opened = open_checkpoint(notes[0], parse_vkey(header["vkey"]))
    assert merkle.root_of([merkle.leaf_hash(base64.b64decode(e["leaf_input"])) for e in entries[: opened.size]]) == opened.root
    assert _entries(engine)[-1]["type"] == "ledger.exported"


def test_self_check_button_for_a_regulator(client: TestClient, engine: Engine) -> None:
    regulator = make_user(engine, make_org(engine, OrgKind.regulator))
    headers = use_session(client, make_login_session(engine, regulator))
    client.get("/api/supervision/ledger/checkpoint")
    result = client.post("/api/supervision/ledger/self-check", headers=headers)
    assert result.status_code == 200
    assert result.json()["ok"] is True


def test_ledger_page_shows_the_checkpoint_a_verified_proof_and_the_self_check(client: TestClient, engine: Engine) -> None:
    # A regulator: an auditor looks up only entries of its engagements (tests/supervision/test_ledger_page_scope.py).
    auditor = make_user(engine, make_org(engine, OrgKind.regulator))
    buyer = make_user(engine, make_org(engine, OrgKind.buyer))
    login(client, buyer.email, PASSWORD)
    login(client, buyer.email, PASSWORD)
    client.cookies.clear()
    client.get("/api/supervision/ledger/checkpoint")
    use_session(client, make_login_session(engine, auditor))
    page = client.get("/supervision/ledger", params={"entry": 1})
    assert page.status_code == 200
    assert "data-checkpoint" in page.text
    assert 'data-entry="1"' in page.text
    assert "data-proof-verified" in page.text
    assert "identity.signed_in" in page.text
    missing = client.get("/supervision/ledger", params={"entry": 999})
    assert "No ledger entry 999." in missing.text
    verified = client.post("/supervision/ledger/verify", data={"_csrf_token": csrf(client)})
    assert 'data-self-check="ok"' in verified.text
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM ledger_entry WHERE leaf_index = 0"))
    failed = client.post("/supervision/ledger/verify", data={"_csrf_token": csrf(client)})
    assert 'data-self-check="failed"' in failed.text
    assert "entry 0 is missing" in failed.text
