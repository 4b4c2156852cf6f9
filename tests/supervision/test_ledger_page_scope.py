"""The ledger page for an auditor: it looks up only entries inside its firm's engagements in force; out of scope by
operator, by period, after expiry, or without any engagement, the lookup is a refused page (403
``outside_engagement``) and the attempt is recorded. The rest of the page (hashes and counts) stays open."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from litestar.testing import TestClient
from sqlalchemy import Engine, update
from sqlmodel import Session, col

from marketplace.core.events import Actor, DomainEvent
from marketplace.core.principal import OrgKind
from marketplace.core.types import utcnow
from supervision import services
from supervision.models import Engagement
from tests.factories import make_login_session, make_org, make_user
from tests.helpers import use_session
from tests.licensing.factories import ledger_events
from tests.supervision.ledger_helpers import run

DAY = date(2026, 6, 1)
PAGE = "/supervision/ledger"


def _record(engine: Engine, events: list[DomainEvent]) -> list[int]:
    async def write(session: Any) -> list[int]:
        indices = await services.record_many(session, events)
        await session.commit()
        return indices

    return run(engine.url.render_as_string(hide_password=False), write)


def _event(operator: str, days: int) -> DomainEvent:
    moment = datetime.combine(DAY, datetime.min.time(), UTC) + timedelta(days=days)
    return DomainEvent("payment.received", Actor("system", "tests"), orgs=(operator,), subjects={}, occurred_at=moment)


def _refusals(engine: Engine) -> int:
    return len(ledger_events(engine, "records.read_refused"))


def test_an_auditor_looks_up_only_entries_of_its_engagement(client: TestClient[Any], engine: Engine) -> None:
    owner = make_org(engine, OrgKind.owner)
    covered, other = make_org(engine, OrgKind.operator), make_org(engine, OrgKind.operator)
    inside, by_operator, by_period = _record(
        engine, [_event(str(covered.id), 3), _event(str(other.id), 3), _event(str(covered.id), 60)]
    )
    auditor = make_org(engine, OrgKind.auditor)
    session = make_login_session(engine, make_user(engine, auditor))

    use_session(client, session)
    before = _refusals(engine)
    refused = client.get(PAGE, params={"entry": inside})
    assert refused.status_code == 403  # no engagement yet
    assert f'data-entry="{inside}"' not in refused.text
    assert _refusals(engine) == before + 1
    assert client.get(PAGE).status_code == 200  # hashes and counts only

    client.cookies.clear()
    headers = use_session(client, make_login_session(engine, make_user(engine, owner)))
    granted = client.post(
        "/api/supervision/engagements",
        json={
            "auditor_id": str(auditor.id),
            "operator_ids": [str(covered.id)],
            "period_start": DAY.isoformat(),
            "period_end": (DAY + timedelta(days=30)).isoformat(),
            "expires_at": (datetime.now(UTC) + timedelta(days=30)).isoformat(),
        },
        headers=headers,
    )
    assert granted.status_code == 201, granted.text
    client.get("/api/supervision/ledger/checkpoint")
    client.cookies.clear()
    use_session(client, session)

    shown = client.get(PAGE, params={"entry": inside})
    assert shown.status_code == 200
    assert f'data-entry="{inside}"' in shown.text
    assert "data-proof-verified" in shown.text
    for index in (by_operator, by_period):
        before = _refusals(engine)
        page = client.get(PAGE, params={"entry": index})
        assert page.status_code == 403, index
        assert f'data-entry="{index}"' not in page.text
        assert ledger_events(engine, "records.read_refused")[-1]["payload"]["query"] == f"entry={index}"
        assert _refusals(engine) == before + 1
    # An entry that does not exist is said so, as for anyone.
    assert "No ledger entry 99999." in client.get(PAGE, params={"entry": 99999}).text

    with Session(engine) as db:
        db.exec(  # type: ignore[call-overload]
            update(Engagement).where(col(Engagement.auditor_id) == auditor.id).values(expires_at=utcnow() - timedelta(seconds=1))
        )
        db.commit()
    before = _refusals(engine)
    assert client.get(PAGE, params={"entry": inside}).status_code == 403
    assert _refusals(engine) == before + 1
