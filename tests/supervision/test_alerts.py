"""Alert rules: each fires on the events that break it and stays quiet on the events that do not; raising is
idempotent (a second run raises nothing); the periodic run keeps a cursor; the rules are queued after a commit of a
relevant event. The API: filters, evidence, a regulator acknowledges and resolves with a note (each change in the
ledger), wrong transitions and bad input are refused and change nothing, an auditor sees only its engagement."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from litestar.testing import TestClient
from sqlalchemy import Engine, text
from sqlmodel import Session, select
from sqlmodel.ext.asyncio.session import AsyncSession

from licensing.models import Purpose
from licensing.services import licences
from marketplace.core import events
from marketplace.core.events import Actor, DomainEvent
from marketplace.core.principal import OrgKind, Principal, Role
from marketplace.core.settings import Settings
from marketplace.core.types import utcnow
from supervision import alerts, engagements, services
from supervision import tasks as supervision_tasks
from supervision.models import SupervisionAlert
from supervision.schemas import EngagementCreate
from supervision.signing import load_ledger_signer
from tests.factories import make_login_session, make_org, make_user
from tests.helpers import assert_problem, use_session
from tests.licensing.factories import VISIT_FIELDS, ledger_events, make_licence, make_resource, row_counts
from tests.supervision.ledger_helpers import run

ALERTS = "/api/supervision/alerts"
DAY = datetime(2026, 10, 20, 9, 0, tzinfo=UTC)


def _url(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=False)


def ev(kind: str, at: datetime, orgs: Sequence[uuid.UUID] = (), **fields: Any) -> DomainEvent:
    """An event as a domain would record it: subjects are the ``*_id`` keywords, the rest is the payload."""
    subjects = {k.removesuffix("_id"): str(v) for k, v in fields.items() if k.endswith("_id")}
    payload = {k: v for k, v in fields.items() if not k.endswith("_id")}
    return DomainEvent(kind, Actor("system", "tests"), orgs=tuple(orgs), subjects=subjects, payload=payload, occurred_at=at)


def _record(engine: Engine, events: Sequence[DomainEvent]) -> list[int]:
    async def write(session: AsyncSession) -> list[int]:
        indices = await services.record_many(session, events)
        await session.commit()
        return indices

    return run(_url(engine), write)


def _evaluate(engine: Engine, start: int = 0) -> alerts.Evaluation:
    return run(_url(engine), lambda s: alerts.evaluate(s, start))


def _alerts(engine: Engine) -> list[SupervisionAlert]:
    with Session(engine) as session:
        return list(session.exec(select(SupervisionAlert).order_by(SupervisionAlert.id)).all())  # type: ignore[arg-type]


class Market:
    """Ids of one licence, product, subscription and entitlement of an operator."""

    def __init__(self, engine: Engine) -> None:
        self.operator = make_org(engine, OrgKind.operator).id
        self.owner = make_org(engine, OrgKind.owner).id
        self.buyer = make_org(engine, OrgKind.buyer).id
        self.licence, self.product, self.subscription, self.entitlement = (uuid.uuid4() for _ in range(4))
        self.resource, self.plan = uuid.uuid4(), uuid.uuid4()

    @property
    def orgs(self) -> tuple[uuid.UUID, ...]:
        return (self.buyer, self.operator, self.owner)

    def licence_event(self, change: str, at: datetime, **terms: Any) -> DomainEvent:
        payload = {
            "number": "LIC-2026-0001",
            "status": change,
            "resource_ids": [str(self.resource)],
            "purposes": ["research", "public_welfare"],
            "price_caps": {"monthly": "100.00", "metered": "0.50"},
            **terms,
        }
        return ev(f"licence.{change}", at, (self.owner, self.operator), licence_id=self.licence, **payload)

    def delivery(self, at: datetime) -> DomainEvent:
        return ev(
            "delivery.recorded",
            at,
            self.orgs,
            entitlement_id=self.entitlement,
            subscription_id=self.subscription,
            product_id=self.product,
            licence_id=self.licence,
            mode="api",
            rows=10,
            bytes=100,
        )

    def entitlement_event(self, kind: str, at: datetime) -> DomainEvent:
        return ev(
            kind,
            at,
            self.orgs,
            entitlement_id=self.entitlement,
            subscription_id=self.subscription,
            product_id=self.product,
            licence_id=self.licence,
        )

    def subscription_event(self, kind: str, at: datetime, purpose: str) -> DomainEvent:
        return ev(
            kind,
            at,
            self.orgs,
            subscription_id=self.subscription,
            product_id=self.product,
            plan_id=self.plan,
            licence_id=self.licence,
            number="SUB-2026-000001",
            purpose=purpose,
        )


# --- the rules: each fires, and stays quiet -------------------------------------------------------------------------


def test_delivery_after_the_entitlement_ended_fires_and_one_before_does_not(engine: Engine) -> None:
    m = Market(engine)
    indices = _record(
        engine,
        [
            m.licence_event("granted", DAY - timedelta(days=30)),
            m.entitlement_event("entitlement.granted", DAY - timedelta(days=3)),
            m.delivery(DAY - timedelta(days=2)),
            m.entitlement_event("entitlement.ended", DAY - timedelta(days=1)),
            m.delivery(DAY),
            m.delivery(DAY + timedelta(hours=1)),
        ],
    )
    result = _evaluate(engine)
    assert [a.rule for a in result.raised] == ["delivery.after_end"]
    alert = result.raised[0]
    assert json.loads(alert.evidence_json) == [indices[3], indices[4], indices[5]]
    assert (alert.severity, alert.state, alert.operator_id) == ("critical", "open", m.operator)
    assert alert.subscription_id == str(m.subscription)
    assert "2 deliveries" in alert.detail
    assert "entitlement ended" in alert.detail
    assert alert.occurred_at == DAY + timedelta(hours=1)
    assert [e["type"] for e in ledger_events(engine, "alert.")] == ["alert.raised"]


def test_delivery_after_the_entitlement_was_restored_does_not_fire(engine: Engine) -> None:
    m = Market(engine)
    _record(
        engine,
        [
            m.licence_event("granted", DAY - timedelta(days=30)),
            m.entitlement_event("entitlement.granted", DAY - timedelta(days=3)),
            m.entitlement_event("entitlement.ended", DAY - timedelta(days=2)),
            m.entitlement_event("entitlement.granted", DAY - timedelta(days=1)),
            m.delivery(DAY),
        ],
    )
    assert _evaluate(engine).raised == []


def test_delivery_during_a_suspension_fires_and_after_reinstatement_does_not(engine: Engine) -> None:
    m = Market(engine)
    indices = _record(
        engine,
        [
            m.licence_event("granted", DAY - timedelta(days=30)),
            m.entitlement_event("entitlement.granted", DAY - timedelta(days=20)),
            m.licence_event("suspended", DAY - timedelta(days=10)),
            m.delivery(DAY - timedelta(days=9)),
            m.licence_event("reinstated", DAY - timedelta(days=5)),
            m.delivery(DAY),
        ],
    )
    raised = _evaluate(engine).raised
    assert len(raised) == 1
    assert raised[0].key == f"delivery.after_end:{m.entitlement}:{(DAY - timedelta(days=9)).date().isoformat()}"
    assert json.loads(raised[0].evidence_json) == [indices[2], indices[3]]
    assert "licence was suspended" in raised[0].detail


def test_an_end_recorded_after_a_later_delivery_still_fires(engine: Engine) -> None:
    m = Market(engine)
    _record(engine, [m.entitlement_event("entitlement.granted", DAY - timedelta(days=3)), m.delivery(DAY)])
    assert _evaluate(engine).raised == []
    size = len(ledger_events(engine))
    # The cancellation happened before the delivery, but reached the ledger after it.
    _record(engine, [m.entitlement_event("subscription.cancelled", DAY - timedelta(hours=2))])
    raised = _evaluate(engine, size).raised
    assert [a.rule for a in raised] == ["delivery.after_end"]
    assert "subscription was cancelled" in raised[0].detail


def _daily(m: Market, counts: dict[int, int]) -> list[DomainEvent]:
    """``counts[days before DAY]`` deliveries on each day, a minute apart."""
    return [m.delivery(DAY - timedelta(days=back) + timedelta(minutes=i)) for back, n in counts.items() for i in range(n)]


def test_a_volume_far_above_the_baseline_fires(engine: Engine) -> None:
    m = Market(engine)
    _record(engine, [m.entitlement_event("entitlement.granted", DAY - timedelta(days=30))])
    _record(engine, _daily(m, {9: 10, 6: 20, 3: 20, 2: 10, 0: 120}))
    raised = _evaluate(engine).raised
    assert [a.rule for a in raised] == ["delivery.volume_spike"]
    params = json.loads(raised[0].params_json)
    assert (params["deliveries"], params["baseline"], params["baseline_days"]) == (120, 15.0, 4)
    assert raised[0].severity == "warning"
    assert len(json.loads(raised[0].evidence_json)) == alerts.MAX_EVIDENCE


@pytest.mark.parametrize(
    "counts",
    [
        {6: 30, 3: 30, 2: 30, 0: 120},  # 4 times the baseline: not far enough above it
        {6: 10, 3: 10, 2: 10, 0: 90},  # 9 times the baseline, but fewer than MIN_SPIKE_CALLS deliveries
        {2: 10, 0: 150},  # no baseline yet (one active day)
    ],
    ids=["under-factor", "too-few-calls", "no-baseline"],
)
def test_a_volume_within_the_baseline_does_not_fire(engine: Engine, counts: dict[int, int]) -> None:
    m = Market(engine)
    _record(engine, [m.entitlement_event("entitlement.granted", DAY - timedelta(days=30)), *_daily(m, counts)])
    assert _evaluate(engine).raised == []


def test_a_purpose_the_licence_does_not_permit_fires(engine: Engine) -> None:
    m = Market(engine)
    indices = _record(
        engine,
        [
            m.licence_event("granted", DAY - timedelta(days=30)),
            m.subscription_event("subscription.requested", DAY, "marketing"),
            m.subscription_event("subscription.activated", DAY, "marketing"),
        ],
    )
    raised = _evaluate(engine).raised
    assert [a.rule for a in raised] == ["purpose.not_permitted"]
    assert json.loads(raised[0].evidence_json) == [indices[0], indices[1]]
    assert json.loads(raised[0].params_json)["permitted"] == ["research", "public_welfare"]
    assert "'marketing'" in raised[0].detail


def test_a_permitted_purpose_and_a_licence_without_recorded_purposes_do_not_fire(engine: Engine) -> None:
    m, old = Market(engine), Market(engine)
    legacy = old.licence_event("granted", DAY - timedelta(days=30))
    legacy = DomainEvent(legacy.type, legacy.actor, legacy.orgs, legacy.subjects, {"number": "LIC-OLD"}, legacy.occurred_at)
    _record(
        engine,
        [
            m.licence_event("granted", DAY - timedelta(days=30)),
            m.subscription_event("subscription.requested", DAY, "research"),
            legacy,
            old.subscription_event("subscription.requested", DAY, "marketing"),
        ],
    )
    assert _evaluate(engine).raised == []


def test_a_product_outside_its_licence_fires(engine: Engine) -> None:
    m = Market(engine)
    other_resource = uuid.uuid4()
    plan = {"product_id": m.product, "plan_id": m.plan, "visibility": "public", "access": "self_serve"}
    _record(
        engine,
        [
            m.licence_event("granted", DAY - timedelta(days=30)),
            ev("product.created", DAY, (m.operator,), product_id=m.product, licence_id=m.licence, resource=str(other_resource)),
            ev("plan.added", DAY, (m.operator,), type="monthly", price="150.00", per_call_price=None, **plan),
            ev("plan.updated", DAY, (m.operator,), type="metered", price="50.00", per_call_price="0.80", **plan),
            ev("plan.added", DAY, (m.operator,), type="one_off", price="10.00", per_call_price=None, **plan),
        ],
    )
    raised = _evaluate(engine).raised
    assert [a.rule for a in raised] == ["product.outside_licence"] * 4
    whats = [json.loads(a.params_json)["what"] for a in raised]
    assert whats == ["resource_not_in_licence", "price_over_cap", "per_call_price_over_cap", "type_not_licensed"]
    assert all(a.licence_id == str(m.licence) and a.operator_id == m.operator for a in raised)
    assert "over licence LIC-2026-0001's cap of 100.00" in raised[1].detail


def test_a_product_and_plans_within_the_licence_do_not_fire(engine: Engine) -> None:
    m = Market(engine)
    plan = {"product_id": m.product, "plan_id": m.plan, "visibility": "public", "access": "self_serve"}
    _record(
        engine,
        [
            m.licence_event("granted", DAY - timedelta(days=30)),
            ev("product.created", DAY, (m.operator,), product_id=m.product, licence_id=m.licence, resource=str(m.resource)),
            ev("product.listed", DAY, (m.owner, m.operator), product_id=m.product, licence_id=m.licence),
            ev("plan.added", DAY, (m.operator,), type="monthly", price="100.00", per_call_price=None, **plan),
            ev("plan.added", DAY, (m.operator,), type="metered", price="20.00", per_call_price="0.50", **plan),
            ev("plan.added", DAY, (m.operator,), type="free", price="0.00", per_call_price=None, **plan),
        ],
    )
    # A free plan needs no cap of its own only when the licence lists the free type: this one does not, so list it.
    assert [json.loads(a.params_json)["what"] for a in _evaluate(engine).raised] == ["type_not_licensed"]


def _settlement_events(m: Market, gross: str, refunds: str, mismatches: int = 0) -> list[DomainEvent]:
    payment = uuid.uuid4()
    money = {"currency": "CNY", "payment_id": payment, "subscription_id": m.subscription, "licence_id": m.licence}
    return [
        ev("payment.received", DAY, m.orgs, amount="100.00", received_at=DAY.isoformat(), **money),
        ev("payment.received", DAY, m.orgs, amount="50.00", received_at=(DAY - timedelta(days=40)).isoformat(), **money),
        ev("payment.refunded", DAY + timedelta(days=1), m.orgs, amount="10.00", **money),
        ev(
            "settlement.computed",
            DAY + timedelta(days=15),
            (m.operator, m.owner),
            statement_id=uuid.uuid4(),
            number="STL-2026-10-0001",
            period="2026-10",
            currency="CNY",
            gross=gross,
            refunds=refunds,
            mismatches=mismatches,
        ),
    ]


def test_a_settlement_that_does_not_match_the_payments_fires(engine: Engine) -> None:
    m = Market(engine)
    indices = _record(engine, _settlement_events(m, gross="150.00", refunds="10.00"))
    raised = _evaluate(engine).raised
    assert [a.rule for a in raised] == ["settlement.mismatch"]
    params = json.loads(raised[0].params_json)
    assert (params["stated_gross"], params["ledger_gross"], params["ledger_refunds"]) == ("150.00", "100.00", "10.00")
    assert json.loads(raised[0].evidence_json) == [indices[0], indices[2], indices[3]]
    assert raised[0].operator_id == m.operator


def test_a_settlement_listing_reconciliation_mismatches_fires_and_a_matching_one_does_not(engine: Engine) -> None:
    matching, listed = Market(engine), Market(engine)
    _record(engine, _settlement_events(matching, gross="100.00", refunds="10.00"))
    _record(engine, _settlement_events(listed, gross="100.00", refunds="10.00", mismatches=2))
    raised = _evaluate(engine).raised
    assert [(a.rule, a.operator_id) for a in raised] == [("settlement.mismatch", listed.operator)]
    assert "2 reconciliation mismatches" in raised[0].detail


def test_a_failed_self_check_raises_one_open_alert_a_day(settings: Settings, engine: Engine) -> None:
    signer = load_ledger_signer(settings)
    _record(engine, [ev("test.happened", DAY, n=i) for i in range(4)])
    run(_url(engine), lambda s: services.sign_checkpoint(s, signer))
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE ledger_entry SET leaf_input = replace(leaf_input, :old, :new)"), {"old": '"n":2', "new": '"n":7'}
        )
    for _ in range(2):
        assert not run(_url(engine), lambda s: services.self_check(s, signer)).ok
    [alert] = _alerts(engine)
    assert (alert.rule, alert.state, alert.severity) == ("ledger.self_check_failed", "open", "critical")
    assert alert.key == f"ledger.self_check_failed:{utcnow().date().isoformat()}"
    assert "entry 2" in alert.detail
    assert [e["type"] for e in ledger_events(engine, "alert.")] == ["alert.raised"]


# --- running: idempotent, a cursor, queued after a commit ------------------------------------------------------------


def test_a_second_run_raises_nothing_new(engine: Engine) -> None:
    m = Market(engine)
    _record(
        engine, [m.licence_event("granted", DAY - timedelta(days=1)), m.subscription_event("subscription.requested", DAY, "x")]
    )
    assert len(_evaluate(engine).raised) == 1
    before = len(ledger_events(engine))
    again = _evaluate(engine)
    assert again.raised == []
    assert again.examined == 1
    assert len(ledger_events(engine)) == before
    assert len(_alerts(engine)) == 1


def test_the_cursor_resumes_and_starts_over_on_another_ledger(engine: Engine) -> None:
    cursor = alerts.StoredCursor("alert_rules")
    m = Market(engine)
    _record(engine, [m.licence_event("granted", DAY - timedelta(days=1))])
    first = run(_url(engine), lambda s: alerts.evaluate_new_events(s, cursor))
    assert (first.start, first.next_index) == (0, 1)
    _record(engine, [m.subscription_event("subscription.requested", DAY, "x")])
    second = run(_url(engine), lambda s: alerts.evaluate_new_events(s, cursor))
    assert (second.start, second.examined, len(second.raised)) == (1, 1, 1)
    # Another ledger under the same cursor (the entry before it differs): everything is looked at again.
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE ledger_entry SET leaf_hash = :h WHERE leaf_index = :i"), {"h": bytes(32), "i": second.next_index - 1}
        )
    assert run(_url(engine), lambda s: cursor.load(s)) == 0


def test_the_rules_are_queued_after_a_commit_of_a_relevant_event_only(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    queued: list[bool] = []
    monkeypatch.setattr(supervision_tasks, "_queue_alert_rules", lambda: queued.append(True))
    services.watch_appends(supervision_tasks.queue_alert_rules_after_commit)
    m = Market(engine)

    async def rolled_back(session: AsyncSession) -> None:
        await services.record(session, m.delivery(DAY))
        await session.rollback()

    run(_url(engine), rolled_back)
    _record(engine, [ev("test.happened", DAY)])
    assert queued == []
    _record(engine, [m.delivery(DAY), m.delivery(DAY)])
    assert queued == [True]


# --- the interface -------------------------------------------------------------------------------------------------


def _as(client: TestClient[Any], engine: Engine, org: Any) -> dict[str, str]:
    client.cookies.clear()
    return use_session(client, make_login_session(engine, make_user(engine, org, Role.admin)))


def _three_alerts(engine: Engine) -> Market:
    m = Market(engine)
    _record(
        engine,
        [
            m.licence_event("granted", DAY - timedelta(days=30)),
            m.subscription_event("subscription.requested", DAY - timedelta(days=2), "marketing"),
            *_settlement_events(m, gross="1.00", refunds="0.00"),
            m.entitlement_event("entitlement.ended", DAY - timedelta(days=1)),
            m.delivery(DAY + timedelta(days=1)),
        ],
    )
    assert len(_evaluate(engine).raised) == 3
    return m


def test_a_regulator_lists_filters_acknowledges_and_resolves(client: TestClient[Any], engine: Engine) -> None:
    m = _three_alerts(engine)
    headers = _as(client, engine, make_org(engine, OrgKind.regulator))
    listed = client.get(ALERTS).json()
    assert listed["total"] == 3
    assert [a["rule"] for a in listed["items"]] == ["settlement.mismatch", "purpose.not_permitted", "delivery.after_end"]
    item = listed["items"][2]
    assert item["subjects"]["subscription"] == str(m.subscription)
    assert item["operator_id"] == str(m.operator)
    assert [e["type"] for e in item["evidence"]] == ["entitlement.ended", "delivery.recorded"]
    page = client.get(ALERTS, params={"limit": 2}).json()
    assert len(page["items"]) == 2
    assert page["next_before"] == page["items"][1]["id"]
    rest = client.get(ALERTS, params={"limit": 2, "before": page["next_before"]}).json()
    assert [a["id"] for a in rest["items"]] == [item["id"]]
    assert rest["next_before"] is None
    assert [a["rule"] for a in client.get(ALERTS, params={"severity": "warning"}).json()["items"]] == ["settlement.mismatch"]
    assert client.get(ALERTS, params={"rule": "purpose.not_permitted"}).json()["total"] == 1
    assert client.get(ALERTS, params={"operator": str(uuid.uuid4())}).json()["total"] == 0

    alert_id = item["id"]
    acknowledged = client.post(f"{ALERTS}/{alert_id}/acknowledge", headers=headers)
    assert acknowledged.status_code == 200, acknowledged.text
    assert acknowledged.json()["state"] == "acknowledged"
    assert acknowledged.json()["acknowledged_at"]
    assert client.get(ALERTS, params={"state": "open"}).json()["total"] == 2
    resolved = client.post(
        f"{ALERTS}/{alert_id}/resolve", json={"note": "  Delivery cache purged; confirmed.  "}, headers=headers
    )
    assert resolved.status_code == 200, resolved.text
    assert (resolved.json()["state"], resolved.json()["resolution_note"]) == ("resolved", "Delivery cache purged; confirmed.")
    assert client.get(f"{ALERTS}/{alert_id}").json()["state"] == "resolved"
    changes = ledger_events(engine, "alert.")[3:]
    assert [(e["type"], e["subjects"]["alert"]) for e in changes] == [
        ("alert.acknowledged", str(alert_id)),
        ("alert.resolved", str(alert_id)),
    ]
    assert changes[1]["payload"]["note"] == "Delivery cache purged; confirmed."
    # A resolved alert is resolved: no going back (409), nothing written.
    before = len(ledger_events(engine))
    assert_problem(client.post(f"{ALERTS}/{alert_id}/acknowledge", headers=headers), 409, "alert_not_open")
    assert_problem(
        client.post(f"{ALERTS}/{alert_id}/resolve", json={"note": "again"}, headers=headers), 409, "alert_already_resolved"
    )
    assert len(ledger_events(engine)) == before


def test_bad_input_is_refused_and_changes_nothing(client: TestClient[Any], engine: Engine) -> None:
    _three_alerts(engine)
    headers = _as(client, engine, make_org(engine, OrgKind.regulator))
    alert_id = client.get(ALERTS).json()["items"][0]["id"]
    before = (len(ledger_events(engine)), [(a.state, a.resolution_note) for a in _alerts(engine)])
    for body in ({"note": "   "}, {"note": "x" * 2001}, {}, {"note": "ok", "extra": 1}):
        response = client.post(f"{ALERTS}/{alert_id}/resolve", json=body, headers=headers)
        assert response.status_code == 400, body
    assert_problem(client.post(f"{ALERTS}/999999/acknowledge", headers=headers), 404, "alert_not_found")
    assert_problem(client.get(f"{ALERTS}/999999"), 404, "alert_not_found")
    assert_problem(client.get(ALERTS, params={"rule": "no.such_rule"}), 400, "unknown_rule")
    assert client.get(ALERTS, params={"state": "closed"}).status_code == 400
    assert client.get(ALERTS, params={"limit": 0}).status_code == 400
    assert (len(ledger_events(engine)), [(a.state, a.resolution_note) for a in _alerts(engine)]) == before


def test_an_auditor_sees_only_its_engagement(client: TestClient[Any], engine: Engine) -> None:
    m = _three_alerts(engine)
    other = Market(engine)
    _record(
        engine,
        [other.licence_event("granted", DAY - timedelta(days=3)), other.subscription_event("subscription.requested", DAY, "x")],
    )
    assert len(_evaluate(engine).raised) == 1
    owner = make_org(engine, OrgKind.owner)
    owner_admin = make_user(engine, owner, Role.admin)
    auditor = make_org(engine, OrgKind.auditor)
    principal = Principal(org_id=owner.id, org_kind=OrgKind.owner, org_name="owner", user_id=owner_admin.id, role=Role.admin)
    grant = EngagementCreate(
        auditor_id=auditor.id,
        operator_ids=[m.operator],
        period_start=(DAY - timedelta(days=1)).date(),
        period_end=(DAY + timedelta(days=40)).date(),
        expires_at=utcnow() + timedelta(days=30),
    )
    run(_url(engine), lambda s: engagements.grant_engagement(s, principal, grant))
    _as(client, engine, auditor)
    listed = client.get(ALERTS).json()
    # The purpose alert (two days before the period) and the other operator's are left out.
    assert sorted(a["rule"] for a in listed["items"]) == ["delivery.after_end", "settlement.mismatch"]
    assert listed["total"] == 2
    outside = next(a.id for a in _alerts(engine) if a.operator_id == other.operator)
    before = len(ledger_events(engine))
    assert_problem(client.get(f"{ALERTS}/{outside}"), 403, "outside_engagement")
    assert_problem(client.get(ALERTS, params={"operator": str(other.operator)}), 403, "outside_engagement")
    assert [e["type"] for e in ledger_events(engine)[before:]] == ["records.read_refused"] * 2
    assert client.get(f"{ALERTS}/{listed['items'][0]['id']}").status_code == 200
    assert row_counts(engine, "supervision_alert") == {"supervision_alert": 4}


def test_licence_events_carry_the_purposes_and_caps_the_rules_check(engine: Engine) -> None:
    events.subscribe(services.record)
    owner, operator = make_org(engine, OrgKind.owner), make_org(engine, OrgKind.operator)
    resource = make_resource(engine, owner, fields=VISIT_FIELDS)
    licence = make_licence(engine, owner, operator, [resource], purposes=(Purpose.credit_assessment,))
    admin = make_user(engine, owner, Role.admin)
    principal = Principal(org_id=owner.id, org_kind=OrgKind.owner, org_name="owner", user_id=admin.id, role=Role.admin)
    run(_url(engine), lambda s: licences.suspend_licence(s, principal, licence.id, "Volume cap exceeded"))
    [suspended] = ledger_events(engine, "licence.")
    assert suspended["payload"]["purposes"] == ["credit_assessment"]
    assert suspended["payload"]["price_caps"]["monthly"] == "2000.00"
    assert suspended["payload"]["fee_rate"] == licence.fee_rate, "and the fee rate the annual disclosure shows"
    m = Market(engine)
    m.licence, m.operator = licence.id, operator.id
    _record(engine, [m.subscription_event("subscription.requested", DAY, "marketing")])
    raised = _evaluate(engine).raised
    assert [(a.rule, a.licence_id, a.operator_id) for a in raised] == [("purpose.not_permitted", str(licence.id), operator.id)]


def test_runs_are_queued_only_where_background_jobs_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(supervision_tasks, "task_settings", lambda: SimpleNamespace(redis_url=None))
    assert not supervision_tasks._runs_background_jobs()
    stop = threading.Event()
    scheduler = threading.Thread(target=stop.wait, name="periodic-jobs", daemon=True)
    scheduler.start()
    try:
        assert supervision_tasks._runs_background_jobs()
    finally:
        stop.set()
        scheduler.join()
    monkeypatch.setattr(supervision_tasks, "task_settings", lambda: SimpleNamespace(redis_url="redis://queue"))
    assert supervision_tasks._runs_background_jobs()
