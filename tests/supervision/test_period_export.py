"""Exports of a period's events: the rows match the ledger (indices, events, leaf hashes) up to the latest signed
checkpoint, which the file carries; CSV and Parquet agree; bad periods are refused; an auditor gets only its
engagement's events, and nothing without one (the attempt recorded)."""

from __future__ import annotations

import base64
import csv
import io
import json
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
from litestar.testing import TestClient
from sqlalchemy import Engine, text
from sqlmodel.ext.asyncio.session import AsyncSession

from marketplace.core.events import Actor, DomainEvent
from marketplace.core.principal import OrgKind
from marketplace.core.settings import Settings
from supervision import services
from supervision.signing import load_ledger_signer
from tests.factories import make_login_session, make_org, make_user
from tests.helpers import assert_problem, use_session
from tests.licensing.factories import ledger_events
from tests.supervision.ledger_helpers import run

EXPORTS = "/api/supervision/exports"
DAY = date(2026, 10, 1)


def _event(n: int, day: date, org: uuid.UUID) -> DomainEvent:
    return DomainEvent(
        type="test.paid",
        actor=Actor("system", "tests"),
        orgs=(org,),
        subjects={"thing": f"t{n}"},
        payload={"n": n, "amount": f"{n}.00", "名称": "付款"},
        occurred_at=datetime.combine(day, datetime.min.time(), UTC) + timedelta(hours=n),
    )


def _history(engine: Engine, settings: Settings, operator_a: uuid.UUID, operator_b: uuid.UUID) -> None:
    url = engine.url.render_as_string(hide_password=False)
    signer = load_ledger_signer(settings)

    async def write(session: AsyncSession) -> None:
        await services.record_many(
            session,
            [
                _event(1, DAY - timedelta(days=1), operator_a),  # before the period
                _event(2, DAY, operator_a),
                _event(3, DAY + timedelta(days=3), operator_b),
                _event(4, DAY + timedelta(days=9), operator_a),
                _event(5, DAY + timedelta(days=10), operator_a),  # the period's end day: outside [start, end)
            ],
        )
        await session.commit()
        await services.sign_checkpoint(session, signer)
        # After the checkpoint: waits for the next one.
        await services.record_many(session, [_event(6, DAY + timedelta(days=2), operator_a)])
        await session.commit()

    run(url, write)


def _as(client: TestClient[Any], engine: Engine, kind: OrgKind) -> dict[str, str]:
    client.cookies.clear()
    return use_session(client, make_login_session(engine, make_user(engine, make_org(engine, kind))))


def _params(fmt: str = "csv", start: date = DAY, end: date = DAY + timedelta(days=10)) -> dict[str, str]:
    return {"start": start.isoformat(), "end": end.isoformat(), "format": fmt}


def test_a_periods_events_match_the_ledger_in_csv_and_parquet(
    client: TestClient[Any], settings: Settings, engine: Engine, tmp_path: Path
) -> None:
    a, b = make_org(engine, OrgKind.operator).id, make_org(engine, OrgKind.operator).id
    _history(engine, settings, a, b)
    _as(client, engine, OrgKind.regulator)
    answer = client.get(EXPORTS, params=_params())
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(answer.text)))
    assert [json.loads(r["payload"])["n"] for r in rows] == [2, 3, 4]
    with engine.connect() as conn:
        stored = {
            int(i): (leaf, bytes(h).hex())
            for i, leaf, h in conn.execute(text("SELECT leaf_index, leaf_input, leaf_hash FROM ledger_entry")).all()
        }
        checkpoint = conn.execute(text("SELECT size, root_hash, note FROM ledger_checkpoint ORDER BY id DESC")).first()
    assert checkpoint is not None
    for row in rows:
        leaf, leaf_hash = stored[int(row["leaf_index"])]
        event = json.loads(leaf)
        assert row["leaf_hash"] == leaf_hash
        assert (row["event_type"], row["occurred_at"]) == (event["type"], event["time"])
        assert json.loads(row["payload"]) == event["payload"]
        assert json.loads(row["subjects"]) == event["subjects"]
        assert (int(row["checkpoint_size"]), row["checkpoint_root"]) == (checkpoint[0], bytes(checkpoint[1]).hex())
        assert int(row["leaf_index"]) < checkpoint[0]
    assert base64.b64decode(answer.headers["x-ledger-checkpoint"]).decode() == checkpoint[2]
    assert answer.headers["x-ledger-checkpoint-size"] == str(checkpoint[0])
    parquet = client.get(EXPORTS, params=_params("parquet"))
    assert parquet.status_code == 200
    path = tmp_path / "events.parquet"
    path.write_bytes(parquet.content)
    table = duckdb.sql(f"SELECT leaf_index, leaf_hash, payload FROM '{path}' ORDER BY leaf_index").fetchall()
    assert [(r["leaf_index"], r["leaf_hash"], r["payload"]) for r in rows] == [(str(i), h, p) for i, h, p in table]
    metadata = dict(duckdb.sql(f"SELECT decode(key), decode(value) FROM parquet_kv_metadata('{path}')").fetchall())
    assert base64.b64decode(metadata["ledger.checkpoint"]).decode() == checkpoint[2]


def test_bad_periods_are_refused(client: TestClient[Any], engine: Engine) -> None:
    _as(client, engine, OrgKind.regulator)
    assert_problem(client.get(EXPORTS, params=_params(start=DAY, end=DAY - timedelta(days=1))), 400, "period_reversed")
    assert_problem(client.get(EXPORTS, params=_params(start=DAY, end=DAY)), 400, "period_empty")
    assert_problem(client.get(EXPORTS, params=_params(start=DAY, end=DAY + timedelta(days=4000))), 400, "period_too_long")
    assert_problem(client.get(EXPORTS, params=_params(fmt="xml")), 400, "invalid_input")
    assert_problem(client.get(EXPORTS, params={"start": "yesterday", "end": "2026-10-02"}), 400, "invalid_input")
    for kind in (OrgKind.operator, OrgKind.buyer):
        _as(client, engine, kind)
        assert client.get(EXPORTS, params=_params()).status_code == 403


def test_an_auditor_exports_only_its_engagement(client: TestClient[Any], settings: Settings, engine: Engine) -> None:
    owner = make_org(engine, OrgKind.owner)
    a, b = make_org(engine, OrgKind.operator).id, make_org(engine, OrgKind.operator).id
    _history(engine, settings, a, b)
    auditor = make_org(engine, OrgKind.auditor)
    auditor_session = make_login_session(engine, make_user(engine, auditor))
    client.cookies.clear()
    use_session(client, auditor_session)
    assert_problem(client.get(EXPORTS, params=_params()), 403, "outside_engagement")
    refused = ledger_events(engine, "records.read_refused")
    assert [e["payload"]["path"] for e in refused] == [EXPORTS]
    client.cookies.clear()
    headers = use_session(client, make_login_session(engine, make_user(engine, owner)))
    granted = client.post(
        "/api/supervision/engagements",
        json={
            "auditor_id": str(auditor.id),
            "operator_ids": [str(a)],
            "period_start": DAY.isoformat(),
            "period_end": (DAY + timedelta(days=5)).isoformat(),
            "expires_at": (datetime.now(UTC) + timedelta(days=30)).isoformat(),
        },
        headers=headers,
    )
    assert granted.status_code == 201, granted.text
    client.cookies.clear()
    use_session(client, auditor_session)
    answer = client.get(EXPORTS, params=_params())
    assert answer.status_code == 200, answer.text
    # Operator A's events of the engagement's days only: n=2 (n=3 is operator B's, n=4 is after the engagement).
    assert [json.loads(r["payload"])["n"] for r in csv.DictReader(io.StringIO(answer.text))] == [2]
