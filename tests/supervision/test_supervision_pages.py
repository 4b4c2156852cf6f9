"""The supervision console's pages (explorer, findings, engagements, exports, leak tracing) through real HTTP: who may
open each, what an auditor sees of its engagement, and that a refused form changes nothing and says why."""

from __future__ import annotations

import io
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from litestar.testing import TestClient
from sqlalchemy import Engine
from sqlmodel.ext.asyncio.session import AsyncSession

from marketplace.core.events import Actor, DomainEvent
from marketplace.core.principal import OrgKind, Role
from marketplace.core.settings import Settings
from supervision import services
from supervision.alerts import Hit, raise_alert
from supervision.signing import load_ledger_signer
from tests.factories import make_login_session, make_org, make_user
from tests.helpers import use_session
from tests.licensing.factories import ledger_events, row_counts
from tests.supervision.ledger_helpers import run
from tests.supervision.test_explorer import _record

DAY = date(2026, 9, 1)
LICENCE = str(uuid.UUID(int=777))
LICENCE_B = str(uuid.UUID(int=778))


def _events(operators: list[uuid.UUID], buyer: uuid.UUID) -> list[DomainEvent]:
    """Payments and deliveries of two operators, each under its own licence (Harbour's is ``LICENCE``)."""
    made = []
    for n in range(12):
        side = (n // 2) % 2
        made.append(
            DomainEvent(
                type=("payment.received", "delivery.recorded")[n % 2],
                actor=Actor("system", "tests"),
                orgs=(operators[side], buyer),
                subjects={"licence": (LICENCE, LICENCE_B)[side], "subscription": str(uuid.UUID(int=900 + side))},
                payload={"amount": f"{100 + n}.00", "currency": "CNY"} if n % 2 == 0 else {"mode": "api", "rows": n},
                occurred_at=datetime.combine(DAY + timedelta(days=n), datetime.min.time(), UTC),
            )
        )
    return made


@pytest.fixture
def world(engine: Engine) -> dict[str, Any]:
    orgs = {
        "owner": make_org(engine, OrgKind.owner, "Data Authority"),
        "operator": make_org(engine, OrgKind.operator, "Harbour Data Ops", "港湾数据运营"),
        "operator_b": make_org(engine, OrgKind.operator, "Summit Analytics"),
        "buyer_a": make_org(engine, OrgKind.buyer, "Lakeside Credit"),
        "regulator": make_org(engine, OrgKind.regulator, "Market Regulator"),
        "auditor": make_org(engine, OrgKind.auditor, "Clearview Audit"),
    }
    _record(engine, _events([orgs["operator"].id, orgs["operator_b"].id], orgs["buyer_a"].id))
    sessions = {
        party: make_login_session(engine, make_user(engine, org, role=Role.admin if party == "owner" else Role.member))
        for party, org in orgs.items()
    }
    return {"orgs": orgs, "sessions": sessions}


def _as(client: TestClient[Any], world: dict[str, Any], party: str | None) -> dict[str, str]:
    client.cookies.clear()
    if party is None:
        return {}
    return use_session(client, world["sessions"][party])


def _grant(client: TestClient[Any], world: dict[str, Any], *, expires_in: timedelta = timedelta(days=30)) -> None:
    headers = _as(client, world, "owner")
    form = {
        "auditor_id": str(world["orgs"]["auditor"].id),
        "operator_ids": str(world["orgs"]["operator"].id),
        "period_start": DAY.isoformat(),
        "period_end": (DAY + timedelta(days=30)).isoformat(),
        "expires_on": (datetime.now(UTC) + expires_in).date().isoformat(),
    }
    answer = client.post("/supervision/engagements", data=form, headers=headers, follow_redirects=False)
    assert answer.status_code == 303, answer.text


PAGES = ["/supervision", "/supervision/events", "/supervision/findings", "/supervision/engagements", "/supervision/exports"]


@pytest.mark.parametrize(
    ("party", "expected"),
    [
        (None, dict.fromkeys(PAGES, 303)),
        ("buyer_a", dict.fromkeys(PAGES, 403)),
        (
            "operator",
            {
                "/supervision": 403,
                "/supervision/events": 403,
                "/supervision/findings": 200,
                "/supervision/engagements": 403,
                "/supervision/exports": 403,
            },
        ),
        ("owner", dict.fromkeys(PAGES, 200)),
        ("regulator", dict.fromkeys(PAGES, 200)),
        # Without an engagement the firm may open the pages that list nothing, not the transactions.
        (
            "auditor",
            {
                "/supervision": 403,
                "/supervision/events": 403,
                "/supervision/findings": 200,
                "/supervision/engagements": 200,
                "/supervision/exports": 200,
            },
        ),
    ],
)
def test_who_may_open_the_console(
    client: TestClient[Any], world: dict[str, Any], party: str | None, expected: dict[str, int]
) -> None:
    _as(client, world, party)
    seen = {p: client.get(p, follow_redirects=False).status_code for p in PAGES}
    assert seen == expected


def test_the_regulator_explores_filters_and_pages(client: TestClient[Any], engine: Engine, world: dict[str, Any]) -> None:
    _as(client, world, "regulator")
    page = client.get("/supervision/events")
    assert page.status_code == 200
    assert "Harbour Data Ops" in page.text
    assert f'href="/supervision/licences/{LICENCE}"' in page.text
    indexes = {e["index"] for e in ledger_events(engine) if e["subjects"].get("licence") == LICENCE}
    for index in indexes:
        assert f'data-entry="{index}"' in page.text
    only = client.get("/supervision/events", params={"type": "payment.received", "org": str(world["orgs"]["operator"].id)})
    payments = {e["index"] for e in ledger_events(engine, "payment.received") if str(world["orgs"]["operator"].id) in e["orgs"]}
    assert payments
    assert all(f'data-entry="{i}"' in only.text for i in payments)
    assert not any(f'data-entry="{i}"' in only.text for i in indexes - payments)
    bad = client.get("/supervision/events", params={"start": "yesterday"})
    assert bad.status_code == 400
    assert "data-form-error" in bad.text
    reversed_amounts = client.get("/supervision/events", params={"min_amount": "-3"})
    assert reversed_amounts.status_code == 400


def test_the_regulators_reads_are_recorded(client: TestClient[Any], engine: Engine, world: dict[str, Any]) -> None:
    _as(client, world, "regulator")
    before = len(ledger_events(engine, "records.read"))
    assert client.get("/supervision/events").status_code == 200
    assert len(ledger_events(engine, "records.read")) == before + 1


def test_an_auditor_sees_only_its_engagement(client: TestClient[Any], engine: Engine, world: dict[str, Any]) -> None:
    _grant(client, world)
    _as(client, world, "auditor")
    page = client.get("/supervision/events")
    assert page.status_code == 200
    harbour, summit = str(world["orgs"]["operator"].id), str(world["orgs"]["operator_b"].id)
    for e in ledger_events(engine, "payment.received") + ledger_events(engine, "delivery.recorded"):
        shown = f'data-entry="{e["index"]}"' in page.text
        assert shown == (harbour in e["orgs"]), e
    assert summit not in page.text
    outside = client.get("/supervision/events", params={"org": summit})
    assert outside.status_code == 403
    engagements = client.get("/supervision/engagements")
    assert engagements.status_code == 200
    assert "Harbour Data Ops" in engagements.text
    assert 'data-form="grant"' not in engagements.text


def test_findings_are_raised_answered_and_closed_on_the_pages(
    client: TestClient[Any], engine: Engine, world: dict[str, Any]
) -> None:
    evidence = ledger_events(engine, "payment.received")[0]["index"]
    headers = _as(client, world, "regulator")
    form = {
        "operator_id": str(world["orgs"]["operator"].id),
        "title": "Late deliveries",
        "description": "Deliveries after the entitlement ended.",
        "severity": "high",
        "evidence": f"{evidence}",
    }
    refused = client.post("/supervision/findings", data={**form, "evidence": "12x"}, headers=headers)
    assert refused.status_code == 400
    assert "data-errors" in refused.text
    assert 'value="Late deliveries"' in refused.text, "what was typed is kept"
    assert row_counts(engine, "finding") == {"finding": 0}
    raised = client.post("/supervision/findings", data=form, headers=headers, follow_redirects=False)
    assert raised.status_code == 303
    location = raised.headers["location"].split("?")[0]
    detail = client.get(location)
    assert "Late deliveries" in detail.text
    assert f"/supervision/ledger?entry={evidence}" in detail.text
    assert 'data-form="close"' in detail.text
    assert 'data-form="respond"' not in detail.text

    headers = _as(client, world, "operator")
    seen = client.get(location)
    assert 'data-form="respond"' in seen.text
    empty = client.post(f"{location}/respond", data={"text": "  "}, headers=headers)
    assert empty.status_code == 400
    answered = client.post(f"{location}/respond", data={"text": "Fixed the expiry job."}, headers=headers, follow_redirects=False)
    assert answered.status_code == 303
    _as(client, world, "operator_b")
    assert client.get(location).status_code == 404, "another operator does not see it"

    headers = _as(client, world, "regulator")
    closed = client.post(f"{location}/close", data={"text": "Accepted."}, headers=headers, follow_redirects=False)
    assert closed.status_code == 303
    assert [e["type"] for e in ledger_events(engine) if e["type"].startswith("finding.")] == [
        "finding.raised",
        "finding.responded",
        "finding.closed",
    ]
    again = client.post(f"{location}/close", data={"text": "Again."}, headers=headers)
    assert again.status_code == 409


def test_an_engagement_that_ends_before_it_starts_is_refused_on_the_page(
    client: TestClient[Any], engine: Engine, world: dict[str, Any]
) -> None:
    headers = _as(client, world, "owner")
    form = {
        "auditor_id": str(world["orgs"]["auditor"].id),
        "operator_ids": str(world["orgs"]["operator"].id),
        "period_start": "2026-09-30",
        "period_end": "2026-09-01",
        "expires_on": (datetime.now(UTC) + timedelta(days=5)).date().isoformat(),
    }
    refused = client.post("/supervision/engagements", data=form, headers=headers)
    assert refused.status_code == 400
    assert "data-errors" in refused.text
    assert row_counts(engine, "engagement") == {"engagement": 0}
    _grant(client, world)
    headers = _as(client, world, "owner")
    listed = client.get("/supervision/engagements")
    engagement_id = listed.text.split('data-engagement="')[1].split('"')[0]
    no_reason = client.post(f"/supervision/engagements/{engagement_id}/revoke", data={"reason": ""}, headers=headers)
    assert no_reason.status_code == 400
    revoked = client.post(
        f"/supervision/engagements/{engagement_id}/revoke",
        data={"reason": "Audit done."},
        headers=headers,
        follow_redirects=False,
    )
    assert revoked.status_code == 303
    assert [e["type"] for e in ledger_events(engine) if e["type"].startswith("engagement.")] == [
        "engagement.granted",
        "engagement.revoked",
    ]


def test_a_month_is_exported_and_bad_periods_are_explained(
    client: TestClient[Any], engine: Engine, world: dict[str, Any]
) -> None:
    _as(client, world, "regulator")
    reversed_ = client.get("/supervision/exports/download", params={"start": "2026-09-30", "end": "2026-09-01", "format": "csv"})
    assert reversed_.status_code == 400
    assert "data-errors" in reversed_.text
    empty = client.get("/supervision/exports/download", params={"start": "2026-09-01", "end": "2026-09-01", "format": "csv"})
    assert empty.status_code == 400
    made = client.get("/supervision/exports/download", params={"start": "2026-09-01", "end": "2026-10-01", "format": "csv"})
    assert made.status_code == 200
    assert made.headers["content-type"].startswith("text/csv")
    assert made.text.splitlines()[0].startswith("leaf_index,event_type")
    api = client.get("/api/supervision/exports", params={"start": "2026-09-01", "end": "2026-10-01", "format": "csv"})
    assert made.content == api.content, "the page hands out the same file as the API"


def test_an_unrelated_file_traces_to_no_one_and_a_bad_file_is_refused(
    client: TestClient[Any], engine: Engine, world: dict[str, Any]
) -> None:
    headers = _as(client, world, "regulator")
    files = {"file": ("suspect.csv", io.BytesIO(b"a,b\n1,2\n3,4\n"), "text/csv")}
    traced = client.post("/supervision/leak-trace", files=files, headers=headers)
    assert traced.status_code == 200
    assert 'data-trace="none"' in traced.text
    assert len(ledger_events(engine, "leak.traced")) == 1
    junk = {"file": ("x.bin", io.BytesIO(b"\x00\x01\x02garbage"), "application/octet-stream")}
    refused = client.post("/supervision/leak-trace", files=junk, headers=headers)
    assert refused.status_code == 400
    assert "data-errors" in refused.text
    assert len(ledger_events(engine, "leak.traced")) == 1


def test_the_dashboard_draws_the_ledgers_figures(client: TestClient[Any], engine: Engine, world: dict[str, Any]) -> None:
    _as(client, world, "regulator")
    start, end = DAY.isoformat(), (DAY + timedelta(days=20)).isoformat()
    board = client.get("/supervision", params={"start": start, "end": end, "bucket": "day"})
    assert board.status_code == 200
    api = client.get("/api/supervision/dashboard", params={"start": start, "end": end, "bucket": "day"}).json()
    assert api["totals"]["transactions"] == 6
    assert f'data-stat="transactions">{api["totals"]["transactions"]}<' in board.text
    for chart in ("revenue", "transactions", "deliveries", "operators"):
        assert f'data-chart="{chart}"' in board.text, chart
    assert "Harbour Data Ops" in board.text
    refused = client.get("/supervision", params={"start": end, "end": start})
    assert refused.status_code == 400
    assert "data-form-error" in refused.text


def test_an_auditor_dashboard_is_its_engagement(client: TestClient[Any], engine: Engine, world: dict[str, Any]) -> None:
    _grant(client, world)
    _as(client, world, "auditor")
    board = client.get("/supervision", params={"start": DAY.isoformat(), "end": (DAY + timedelta(days=30)).isoformat()})
    assert board.status_code == 200
    assert "data-scope" in board.text
    assert "Harbour Data Ops" in board.text
    assert "Summit Analytics" not in board.text


def _sign(engine: Engine, settings: Settings) -> None:
    signer = load_ledger_signer(settings)
    run(engine.url.render_as_string(hide_password=False), lambda s: services.sign_checkpoint(s, signer))


def test_the_regulator_drills_from_a_licence_to_deliveries_with_proofs(
    client: TestClient[Any], engine: Engine, settings: Settings, world: dict[str, Any]
) -> None:
    _as(client, world, "regulator")
    pending = client.get(f"/supervision/licences/{LICENCE}")
    assert pending.status_code == 200
    assert 'data-proof="pending"' in pending.text, "no checkpoint yet: the proofs wait for one"
    _sign(engine, settings)
    trail = client.get(f"/supervision/licences/{LICENCE}")
    assert trail.status_code == 200
    assert 'data-checkpoint-status="ok"' in trail.text
    deliveries = [e for e in ledger_events(engine, "delivery.recorded") if e["subjects"].get("licence") == LICENCE]
    for e in deliveries:
        assert f'data-entry="{e["index"]}"' in trail.text
    assert trail.text.count('data-proof="verified"') >= len(deliveries)
    assert 'data-proof="failed"' not in trail.text
    assert client.get(f"/supervision/licences/{uuid.UUID(int=1)}").status_code == 404


def test_an_auditor_drills_only_inside_its_engagement(
    client: TestClient[Any], engine: Engine, settings: Settings, world: dict[str, Any]
) -> None:
    _sign(engine, settings)
    _as(client, world, "auditor")
    assert client.get(f"/supervision/licences/{LICENCE}").status_code == 403, "no engagement yet"
    _grant(client, world)
    _as(client, world, "auditor")
    trail = client.get(f"/supervision/licences/{LICENCE}")
    assert trail.status_code == 200
    for e in ledger_events(engine, "delivery.recorded"):
        assert (f'data-entry="{e["index"]}"' in trail.text) == (e["subjects"]["licence"] == LICENCE), e
    assert client.get(f"/supervision/licences/{LICENCE_B}").status_code == 403, "Summit's licence is outside"
    refused = [e for e in ledger_events(engine, "records.read_refused") if e["actor"]["id"]]
    assert refused, "the refused attempt was recorded"


def _raise(engine: Engine, world: dict[str, Any], rule: str, evidence: int) -> None:
    hit = Hit(
        rule=rule,
        key=f"{rule}:test:{evidence}",
        detail=f"Test alert on entry {evidence}.",
        occurred_at=datetime.combine(DAY, datetime.min.time(), UTC),
        evidence=[evidence],
        params={"deliveries": 3},
        operator_id=world["orgs"]["operator"].id,
        licence_id=LICENCE,
    )

    async def write(session: AsyncSession) -> None:
        await raise_alert(session, hit)
        await session.commit()

    run(engine.url.render_as_string(hide_password=False), write)


def test_the_regulator_acknowledges_and_resolves_alerts_on_the_page(
    client: TestClient[Any], engine: Engine, world: dict[str, Any]
) -> None:
    evidence = ledger_events(engine, "delivery.recorded")[0]["index"]
    _raise(engine, world, "delivery.after_end", evidence)
    headers = _as(client, world, "regulator")
    listed = client.get("/supervision/alerts")
    assert listed.status_code == 200
    assert "Delivery after access ended" in listed.text
    assert f'data-evidence="{evidence}"' in listed.text
    alert_id = listed.text.split('data-alert="')[1].split('"')[0]
    acknowledged = client.post(f"/supervision/alerts/{alert_id}/acknowledge", headers=headers, follow_redirects=False)
    assert acknowledged.status_code == 303
    again = client.post(f"/supervision/alerts/{alert_id}/acknowledge", headers=headers)
    assert again.status_code == 409
    assert "data-errors" in again.text
    no_note = client.post(f"/supervision/alerts/{alert_id}/resolve", data={"note": " "}, headers=headers)
    assert no_note.status_code == 400
    resolved = client.post(
        f"/supervision/alerts/{alert_id}/resolve", data={"note": "Expiry job fixed."}, headers=headers, follow_redirects=False
    )
    assert resolved.status_code == 303
    assert [e["type"] for e in ledger_events(engine) if e["type"].startswith("alert.")] == [
        "alert.raised",
        "alert.acknowledged",
        "alert.resolved",
    ]
    assert "Expiry job fixed." in client.get("/supervision/alerts", params={"state": "resolved"}).text

    _as(client, world, "owner")
    seen = client.get("/supervision/alerts")
    assert seen.status_code == 200
    assert 'data-form="resolve"' not in seen.text, "the owner reads alerts, a regulator handles them"
    refused = client.post(f"/supervision/alerts/{alert_id}/resolve", data={"note": "x"}, headers=_as(client, world, "owner"))
    assert refused.status_code == 403


def test_an_auditor_sees_the_alerts_of_its_engagement_only(
    client: TestClient[Any], engine: Engine, world: dict[str, Any]
) -> None:
    evidence = ledger_events(engine, "delivery.recorded")[0]["index"]
    _raise(engine, world, "delivery.volume_spike", evidence)
    _as(client, world, "auditor")
    assert client.get("/supervision/alerts").status_code == 403, "no engagement yet"
    _grant(client, world)
    _as(client, world, "auditor")
    seen = client.get("/supervision/alerts")
    assert seen.status_code == 200
    assert 'data-rule="delivery.volume_spike"' in seen.text
    assert 'data-form="acknowledge"' not in seen.text


def test_the_scorecard_lists_each_operator_with_its_figures(
    client: TestClient[Any], engine: Engine, world: dict[str, Any]
) -> None:
    _as(client, world, "regulator")
    start, end = DAY.isoformat(), (DAY + timedelta(days=20)).isoformat()
    shown = client.get("/supervision/scorecard", params={"start": start, "end": end})
    assert shown.status_code == 200
    cards = client.get("/api/supervision/scorecard", params={"start": start, "end": end}).json()["items"]
    for card in cards:
        row = shown.text.split(f'data-operator="{card["operator_id"]}"')[1].split("</tr>")[0]
        assert card["revenue"]["net"]["CNY"] + " CNY" in row
    assert 'data-chart="net-revenue"' in shown.text
    _grant(client, world)
    _as(client, world, "auditor")
    scoped = client.get("/supervision/scorecard", params={"start": start, "end": end})
    assert scoped.status_code == 200
    assert "Harbour Data Ops" in scoped.text
    assert "Summit Analytics" not in scoped.text
