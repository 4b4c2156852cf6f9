"""What the auditor-scope tests of licensing, subscriptions and billing share: counting and checking recorded
refusals, ending an auditor's engagements, and an auditor with none."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from litestar.testing import TestClient
from sqlalchemy import Engine, update
from sqlmodel import Session, col

from marketplace.core.principal import OrgKind
from marketplace.core.types import utcnow
from supervision.models import Engagement
from tests.factories import make_login_session, make_org, make_user
from tests.helpers import assert_problem, use_session
from tests.licensing.factories import ledger_events


def refusals(engine: Engine) -> int:
    """How many ``records.read_refused`` events the ledger holds."""
    return len(ledger_events(engine, "records.read_refused"))


def assert_refused_and_recorded(client: TestClient[Any], engine: Engine, auditor: Any, path: str) -> None:
    """``path`` is 403 ``outside_engagement``, and exactly that refusal is recorded, naming the auditor."""
    before = refusals(engine)
    assert_problem(client.get(path), 403, "outside_engagement")
    refused = ledger_events(engine, "records.read_refused")[before:]
    assert [(e["payload"]["code"], e["payload"]["path"]) for e in refused] == [("outside_engagement", path)]
    assert refused[0]["orgs"] == [str(auditor.id)]


def expire_engagements(engine: Engine, auditor: Any) -> None:
    """End every engagement of ``auditor`` a second ago."""
    with Session(engine) as session:
        session.exec(  # type: ignore[call-overload]
            update(Engagement).where(col(Engagement.auditor_id) == auditor.id).values(expires_at=utcnow() - timedelta(seconds=1))
        )
        session.commit()


def assert_all_refused_in_order(client: TestClient[Any], engine: Engine, paths: Sequence[str]) -> None:
    """Each of ``paths`` is 403 ``outside_engagement``, and the refusals are recorded in that order."""
    before = refusals(engine)
    for path in paths:
        assert_problem(client.get(path), 403, "outside_engagement")
    refused = ledger_events(engine, "records.read_refused")[before:]
    assert [e["payload"]["path"] for e in refused] == list(paths)


def sign_in_auditor_without_engagement(client: TestClient[Any], engine: Engine) -> None:
    """Sign ``client`` in as a member of a new audit firm that holds no engagement."""
    client.cookies.clear()
    use_session(client, make_login_session(engine, make_user(engine, make_org(engine, OrgKind.auditor))))
