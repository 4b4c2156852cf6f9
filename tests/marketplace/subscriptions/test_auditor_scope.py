"""Auditors read subscriptions and buyer qualifications only inside their firm's engagements in force.

A subscription is covered when its operator is covered and its life overlaps the engagement's period (UTC days,
inclusive): created on or before the period's end, and still open or ended (``valid_until``, else its last change)
on or after the period's start. A qualification is covered when its operator is. Outside by operator, by period,
and after expiry: 403 ``outside_engagement``, recorded in the ledger; a record that does not exist stays 404.
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from litestar.testing import TestClient
from sqlalchemy import Engine
from sqlmodel import Session

from marketplace.core.identity.models import Organisation
from marketplace.core.principal import OrgKind
from marketplace.subscriptions.models import Subscription, SubscriptionStatus
from tests.factories import make_login_session, make_org, make_user
from tests.helpers import assert_problem, use_session
from tests.marketplace.factories import make_plan, make_qualification, make_subscription
from tests.marketplace.subscriptions.support import make_shop
from tests.supervision.auditor_scope import (
    assert_all_refused_in_order,
    assert_refused_and_recorded,
    expire_engagements,
    refusals,
    sign_in_auditor_without_engagement,
)

SUBSCRIPTIONS = "/api/subscriptions"
QUALIFICATIONS = "/api/buyers/qualifications"
PERIOD = (date(2026, 3, 1), date(2026, 5, 31))


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


#: name: (covered operator?, created at, status, valid until, last change) and whether the engagement covers it.
SUBSCRIBED: dict[str, tuple[bool, datetime, SubscriptionStatus, datetime | None, bool]] = {
    "active_in_period": (True, _at("2026-04-10 12:00"), SubscriptionStatus.active, _at("2026-05-10 12:00"), True),
    "open_since_before": (True, _at("2025-06-01 08:00"), SubscriptionStatus.past_due, _at("2026-12-01 08:00"), True),
    "ended_on_first_day": (True, _at("2026-01-10 08:00"), SubscriptionStatus.cancelled, _at("2026-03-01 00:30"), True),
    "created_on_last_day": (True, _at("2026-05-31 23:30"), SubscriptionStatus.awaiting_approval, None, True),
    "other_operator": (False, _at("2026-04-10 12:00"), SubscriptionStatus.active, _at("2026-05-10 12:00"), False),
    "ended_the_day_before": (True, _at("2025-01-01 08:00"), SubscriptionStatus.expired, _at("2026-02-28 23:30"), False),
    "created_the_day_after": (True, _at("2026-06-01 00:10"), SubscriptionStatus.active, _at("2026-07-01 00:10"), False),
    "rejected_long_before": (True, _at("2025-01-01 08:00"), SubscriptionStatus.rejected, None, False),
}


def grant(
    client: TestClient[Any],
    engine: Engine,
    auditor: Organisation,
    operators: list[Organisation],
    period: tuple[date, date] = PERIOD,
) -> None:
    """The owner grants ``auditor`` an engagement over ``operators`` for ``period``, expiring in 30 days."""
    client.cookies.clear()
    headers = use_session(client, make_login_session(engine, make_user(engine, make_org(engine, OrgKind.owner))))
    granted = client.post(
        "/api/supervision/engagements",
        json={
            "auditor_id": str(auditor.id),
            "operator_ids": [str(o.id) for o in operators],
            "period_start": period[0].isoformat(),
            "period_end": period[1].isoformat(),
            "expires_at": (datetime.now(UTC) + timedelta(days=30)).isoformat(),
        },
        headers=headers,
    )
    assert granted.status_code == 201, granted.text
    client.cookies.clear()


@pytest.fixture
def world(client: TestClient[Any], engine: Engine) -> dict[str, Any]:
    covered, other = make_shop(engine), make_shop(engine)
    made: dict[str, Any] = {"subscriptions": {}, "qualifications": {}}
    plans = {True: make_plan(engine, covered.product), False: make_plan(engine, other.product)}
    for name, (is_covered, _created, status, _until, _in) in SUBSCRIBED.items():
        shop = covered if is_covered else other
        made_one, _ = make_subscription(engine, shop.buyer, shop.product, plans[is_covered], status=status)
        made["subscriptions"][name] = str(made_one.id)
    with Session(engine) as session:
        for name, (_covered, created, _status, until, _in) in SUBSCRIBED.items():
            stored = session.get(Subscription, uuid.UUID(made["subscriptions"][name]))
            assert stored is not None
            stored.created_at, stored.updated_at, stored.valid_until = created, created + timedelta(days=1), until
            session.add(stored)
        session.commit()
    made["qualifications"]["covered"] = str(make_qualification(engine, covered.buyer, covered.operator.id).id)
    made["qualifications"]["other_operator"] = str(make_qualification(engine, other.buyer, other.operator.id).id)
    auditor = make_org(engine, OrgKind.auditor)
    grant(client, engine, auditor, [covered.operator])
    made["auditor"] = auditor
    use_session(client, make_login_session(engine, make_user(engine, auditor)))
    return made


def _ids(client: TestClient[Any], path: str) -> set[str]:
    answer = client.get(path)
    assert answer.status_code == 200, answer.text
    return {item["id"] for item in answer.json()["items"]}


def test_subscription_list_holds_only_what_the_engagement_covers(
    client: TestClient[Any], engine: Engine, world: dict[str, Any]
) -> None:
    inside = {world["subscriptions"][name] for name, spec in SUBSCRIBED.items() if spec[4]}
    assert _ids(client, SUBSCRIPTIONS) == inside
    answer = client.get(f"{SUBSCRIPTIONS}?status=active").json()
    assert {item["id"] for item in answer["items"]} == {world["subscriptions"]["active_in_period"]}
    assert answer["total"] == 1
    # A regulator still reads every one.
    client.cookies.clear()
    use_session(client, make_login_session(engine, make_user(engine, make_org(engine, OrgKind.regulator))))
    assert _ids(client, SUBSCRIPTIONS) == set(world["subscriptions"].values())


@pytest.mark.parametrize("name", list(SUBSCRIBED))
def test_one_subscription_in_or_out_of_scope(client: TestClient[Any], engine: Engine, world: dict[str, Any], name: str) -> None:
    path = f"{SUBSCRIPTIONS}/{world['subscriptions'][name]}"
    if SUBSCRIBED[name][4]:
        before = refusals(engine)
        answer = client.get(path)
        assert answer.status_code == 200, answer.text
        assert answer.json()["id"] == world["subscriptions"][name]
        assert refusals(engine) == before
    else:
        assert_refused_and_recorded(client, engine, world["auditor"], path)


def test_qualifications_of_covered_operators_only(client: TestClient[Any], engine: Engine, world: dict[str, Any]) -> None:
    assert _ids(client, QUALIFICATIONS) == {world["qualifications"]["covered"]}
    assert client.get(f"{QUALIFICATIONS}/{world['qualifications']['covered']}").status_code == 200
    path = f"{QUALIFICATIONS}/{world['qualifications']['other_operator']}"
    assert_refused_and_recorded(client, engine, world["auditor"], path)


def test_what_does_not_exist_is_404_and_not_recorded(client: TestClient[Any], engine: Engine, world: dict[str, Any]) -> None:
    before = refusals(engine)
    assert_problem(client.get(f"{SUBSCRIPTIONS}/{uuid.uuid4()}"), 404, "subscription_not_found")
    assert_problem(client.get(f"{QUALIFICATIONS}/{uuid.uuid4()}"), 404, "qualification_not_found")
    assert refusals(engine) == before


def test_nothing_after_expiry(client: TestClient[Any], engine: Engine, world: dict[str, Any]) -> None:
    expire_engagements(engine, world["auditor"])
    paths = [
        SUBSCRIPTIONS,
        QUALIFICATIONS,
        f"{SUBSCRIPTIONS}/{world['subscriptions']['active_in_period']}",
        f"{QUALIFICATIONS}/{world['qualifications']['covered']}",
        f"{SUBSCRIPTIONS}/{uuid.uuid4()}",
    ]
    assert_all_refused_in_order(client, engine, paths)


def test_an_auditor_without_engagement_reads_nothing(client: TestClient[Any], engine: Engine, world: dict[str, Any]) -> None:
    sign_in_auditor_without_engagement(client, engine)
    before = refusals(engine)
    for path in (SUBSCRIPTIONS, QUALIFICATIONS, f"{SUBSCRIPTIONS}/{world['subscriptions']['active_in_period']}"):
        assert_problem(client.get(path), 403, "outside_engagement")
    assert refusals(engine) - before == 3
