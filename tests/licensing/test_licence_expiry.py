"""What a licence ending does to everything built on it: suspension, revocation and expiry withdraw its
pending listing reviews and delist its approved ones, in the same transaction, each with its own event;
expiry runs as an idempotent daily task.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import pytest
from litestar.testing import TestClient
from sqlalchemy import Engine
from sqlmodel import Session, select

from licensing import tasks
from licensing.models import DataResource, Grade, Licence, LicenceStatus, LicenceVersion, ListingReview, ReviewStatus
from licensing.schemas import FieldSpec
from licensing.services.licences import expire_due_licences, licence_in_force
from marketplace.core.identity.models import Organisation
from marketplace.core.principal import OrgKind
from marketplace.core.tasks import PERIODIC_JOBS
from tests.factories import make_login_session, make_org, make_user
from tests.helpers import use_session
from tests.licensing.factories import ledger_events, make_licence, make_resource, make_review, row_counts
from tests.supervision.ledger_helpers import run

BASE = "/api/licensing/licences"
TABLES = ("licence", "licence_version", "ledger_entry", "listing_review")
FIELDS = [FieldSpec(name="district", type="string")]  # type: ignore[arg-type]


@pytest.fixture
def owner(engine: Engine) -> Organisation:
    return make_org(engine, OrgKind.owner)


@pytest.fixture
def operator(engine: Engine) -> Organisation:
    return make_org(engine, OrgKind.operator)


@pytest.fixture
def resource(engine: Engine, owner: Organisation) -> DataResource:
    return make_resource(engine, owner, fields=FIELDS, grade=Grade.L2)


def _review(engine: Engine, review: ListingReview) -> ListingReview:
    with Session(engine) as session:
        found = session.get(ListingReview, review.id)
        assert found is not None
        return found


def _licence(engine: Engine, licence: Licence) -> Licence:
    with Session(engine) as session:
        found = session.get(Licence, licence.id)
        assert found is not None
        return found


def _reviews_of_every_kind(engine: Engine, licence: Licence) -> dict[ReviewStatus, ListingReview]:
    return {status: make_review(engine, licence, status=status) for status in ReviewStatus}


@pytest.mark.parametrize(
    ("from_status", "action", "change"),
    [
        (LicenceStatus.granted, "suspend", "suspended"),
        (LicenceStatus.granted, "revoke", "revoked"),
        (LicenceStatus.suspended, "revoke", "revoked"),
    ],
)
def test_suspension_and_revocation_withdraw_pending_reviews_and_delist_approved_ones(
    client: TestClient[Any],
    engine: Engine,
    owner: Organisation,
    operator: Organisation,
    resource: DataResource,
    from_status: LicenceStatus,
    action: str,
    change: str,
) -> None:
    licence = make_licence(engine, owner, operator, [resource], status=from_status)
    neighbour = make_licence(engine, owner, operator, [resource], status=LicenceStatus.granted)
    reviews = _reviews_of_every_kind(engine, licence)
    second_pending = make_review(engine, licence, status=ReviewStatus.pending)
    untouched = _reviews_of_every_kind(engine, neighbour)
    headers = use_session(client, make_login_session(engine, make_user(engine, owner)))
    before = len(ledger_events(engine))

    reason = "Data breach reported by the operator"
    response = client.post(f"{BASE}/{licence.id}/{action}", json={"reason": reason}, headers=headers)
    assert response.status_code == 200, response.text

    expected = {
        ReviewStatus.pending: ReviewStatus.withdrawn,
        ReviewStatus.approved: ReviewStatus.delisted,
        ReviewStatus.rejected: ReviewStatus.rejected,
        ReviewStatus.withdrawn: ReviewStatus.withdrawn,
        ReviewStatus.delisted: ReviewStatus.delisted,
    }
    for was, review in reviews.items():
        now = _review(engine, review)
        assert now.status is expected[was], was
        if was in (ReviewStatus.pending, ReviewStatus.approved):
            assert now.decision_reason == f"Licence {licence.number} was {change}: {reason}"
            assert now.decided_at is not None
        else:
            assert now.decision_reason is None, "reviews already decided keep their decision"
    assert _review(engine, second_pending).status is ReviewStatus.withdrawn
    for was, review in untouched.items():
        assert _review(engine, review).status is was, "another licence's reviews are not touched"

    events = ledger_events(engine)[before:]
    # The licence's event first, then one per review changed, oldest submission first.
    assert [e["type"] for e in events] == [f"licence.{change}", "listing.withdrawn", "listing.delisted", "listing.withdrawn"]
    listing = {e["subjects"]["listing_review"]: e for e in events[1:]}
    assert listing.keys() == {
        str(reviews[ReviewStatus.pending].id),
        str(reviews[ReviewStatus.approved].id),
        str(second_pending.id),
    }
    delisted = listing[str(reviews[ReviewStatus.approved].id)]
    assert delisted["type"] == "listing.delisted"
    assert delisted["subjects"]["licence"] == str(licence.id)
    assert delisted["payload"]["licence_number"] == licence.number
    assert delisted["payload"]["licence_change"] == change
    assert delisted["orgs"] == sorted([str(owner.id), str(operator.id)])


def test_reinstatement_does_not_relist(
    client: TestClient[Any], engine: Engine, owner: Organisation, operator: Organisation, resource: DataResource
) -> None:
    licence = make_licence(engine, owner, operator, [resource], status=LicenceStatus.granted)
    approved = make_review(engine, licence, status=ReviewStatus.approved)
    headers = use_session(client, make_login_session(engine, make_user(engine, owner)))
    assert client.post(f"{BASE}/{licence.id}/suspend", json={"reason": "Audit"}, headers=headers).status_code == 200
    assert client.post(f"{BASE}/{licence.id}/reinstate", json={"reason": "Audit passed"}, headers=headers).status_code == 200
    assert _review(engine, approved).status is ReviewStatus.delisted


def test_a_refused_transition_cascades_nothing(
    client: TestClient[Any], engine: Engine, owner: Organisation, operator: Organisation, resource: DataResource
) -> None:
    licence = make_licence(engine, owner, operator, [resource], status=LicenceStatus.draft)
    pending = make_review(engine, licence, status=ReviewStatus.pending)
    headers = use_session(client, make_login_session(engine, make_user(engine, owner)))
    before = row_counts(engine, *TABLES)
    assert client.post(f"{BASE}/{licence.id}/suspend", json={"reason": "Too early"}, headers=headers).status_code == 409
    assert row_counts(engine, *TABLES) == before
    assert _review(engine, pending).status is ReviewStatus.pending


# --- expiry ---------------------------------------------------------------------------------------------------


def test_expiry_ends_licences_past_their_term_once_and_runs_the_cascade(
    client: TestClient[Any],
    engine: Engine,
    database_url: str,
    owner: Organisation,
    operator: Organisation,
    resource: DataResource,
) -> None:
    today = date.today()
    yesterday = today - timedelta(days=1)
    long_ago = today - timedelta(days=400)

    def licence(status: LicenceStatus, ends_on: date) -> Licence:
        return make_licence(engine, owner, operator, [resource], status=status, starts_on=long_ago, ends_on=ends_on)

    granted_due = licence(LicenceStatus.granted, yesterday)
    suspended_due = licence(LicenceStatus.suspended, yesterday)
    last_day = licence(LicenceStatus.granted, today)
    draft_past = licence(LicenceStatus.draft, yesterday)
    revoked_past = licence(LicenceStatus.revoked, yesterday)
    pending = make_review(engine, granted_due, status=ReviewStatus.pending)
    approved = make_review(engine, granted_due, status=ReviewStatus.approved)
    on_last_day = make_review(engine, last_day, status=ReviewStatus.approved)

    expired = run(database_url, lambda s: expire_due_licences(s, today))
    assert set(expired) == {granted_due.id, suspended_due.id}
    assert _licence(engine, granted_due).status is LicenceStatus.expired
    assert _licence(engine, suspended_due).status is LicenceStatus.expired
    assert (_licence(engine, granted_due).version, _licence(engine, suspended_due).version) == (2, 2)
    assert _licence(engine, last_day).status is LicenceStatus.granted, "in force through its last day"
    assert licence_in_force(_licence(engine, last_day), today)
    assert _licence(engine, draft_past).status is LicenceStatus.draft
    assert _licence(engine, revoked_past).status is LicenceStatus.revoked
    assert _review(engine, pending).status is ReviewStatus.withdrawn
    assert _review(engine, approved).status is ReviewStatus.delisted
    assert _review(engine, approved).decision_reason == (
        f"Licence {granted_due.number} was expired: The term ended on {yesterday.isoformat()}."
    )
    assert _review(engine, on_last_day).status is ReviewStatus.approved
    with Session(engine) as session:
        version = session.exec(
            select(LicenceVersion).where(LicenceVersion.licence_id == granted_due.id, LicenceVersion.version == 2)
        ).one()
        assert (version.change, version.status, version.actor_id) == ("expired", LicenceStatus.expired, None)
    events = ledger_events(engine, "licence.expired")
    assert sorted(e["subjects"]["licence"] for e in events) == sorted([str(granted_due.id), str(suspended_due.id)])
    assert all(e["actor"] == {"kind": "system", "id": "platform"} for e in events)
    assert {e["type"] for e in ledger_events(engine, "listing.")} == {"listing.withdrawn", "listing.delisted"}

    before = row_counts(engine, *TABLES)
    assert run(database_url, lambda s: expire_due_licences(s, today)) == []
    assert row_counts(engine, *TABLES) == before, "running again expires nothing new"

    # The next day, the licence whose last day it was expires too.
    assert run(database_url, lambda s: expire_due_licences(s, today + timedelta(days=1))) == [last_day.id]
    assert _review(engine, on_last_day).status is ReviewStatus.delisted


def test_the_daily_task_expires_and_is_idempotent(
    client: TestClient[Any], engine: Engine, owner: Organisation, operator: Organisation, resource: DataResource
) -> None:
    assert any(job.task_name == "licensing.expire_licences_task" and job.seconds == 86_400 for job in PERIODIC_JOBS)
    today = date.today()
    due = make_licence(
        engine,
        owner,
        operator,
        [resource],
        status=LicenceStatus.granted,
        starts_on=today - timedelta(days=90),
        ends_on=today - timedelta(days=1),
    )
    review = make_review(engine, due, status=ReviewStatus.approved)
    first = tasks.expire_licences_task.apply().get()
    assert first == {"on": today.isoformat(), "expired": [str(due.id)]}
    assert _licence(engine, due).status is LicenceStatus.expired
    assert _review(engine, review).status is ReviewStatus.delisted
    before = row_counts(engine, *TABLES)
    assert tasks.expire_licences_task.apply().get() == {"on": today.isoformat(), "expired": []}
    assert row_counts(engine, *TABLES) == before
