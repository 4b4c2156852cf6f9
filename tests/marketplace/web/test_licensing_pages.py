"""Licensing pages through real HTTP: what each party sees, and the owner's forms (register a resource,
draft and change a licence, decide a review), with errors shown on the page and nothing stored."""

from __future__ import annotations

import re
import uuid
from datetime import date, timedelta

from litestar.testing import TestClient
from sqlalchemy import Engine
from sqlmodel import Session

from licensing.models import FieldType, Grade, Licence, LicenceStatus, ReviewStatus
from licensing.schemas import FieldSpec
from marketplace.app import create_app
from marketplace.core.principal import OrgKind
from marketplace.core.settings import Settings
from tests.conftest import TEST_ORIGIN
from tests.factories import make_login_session, make_org, make_user
from tests.helpers import csrf
from tests.licensing.factories import (
    clean_visit_rules,
    ledger_events,
    make_department,
    make_licence,
    make_resource,
    make_review,
    make_visit_resource,
    row_counts,
)

FIELDS = [FieldSpec(name="district", type=FieldType.string), FieldSpec(name="vehicles", type=FieldType.integer)]


def _signed_in(client: TestClient, engine: Engine, org_kind: OrgKind | None = None, org=None) -> None:  # type: ignore[no-untyped-def,type-arg]
    org = org or make_org(engine, org_kind)  # type: ignore[arg-type]
    client.cookies.set("market_session", make_login_session(engine, make_user(engine, org)))


def test_owner_sees_resources_with_grade_badges_and_registers_one(settings: Settings, engine: Engine) -> None:
    owner = make_org(engine, OrgKind.owner)
    department = make_department(engine, owner)
    make_resource(engine, owner, fields=FIELDS, grade=Grade.L4, department=department)
    with TestClient(app=create_app(settings), base_url=TEST_ORIGIN) as client:
        _signed_in(client, engine, org=owner)
        listing = client.get("/licensing/resources")
        assert listing.status_code == 200
        assert 'data-grade="L4"' in listing.text
        form = {
            "_csrf_token": csrf(client),
            "department_id": str(department.id),
            "code": "traffic-flow",
            "title": "Traffic flow",
            "title_zh": "交通流量",
            "grade": "L2",
            "update_frequency": "daily",
            "fields": "sensor_id, string\nvehicles, integer\ndriver_id, string, direct_identifier",
        }
        created = client.post("/licensing/resources", data=form, follow_redirects=False)
        assert created.status_code == 303, created.text[:500]
        detail = client.get(created.headers["location"])
        assert "Traffic flow" in detail.text
        assert "tag-direct_identifier" in detail.text
        assert 'id="upload-form"' in detail.text
        bad = client.post(
            "/licensing/resources", data={**form, "code": "other", "fields": "sensor id; text"}, follow_redirects=False
        )
        assert bad.status_code == 400
        assert "Line 1" in bad.text
    assert row_counts(engine, "data_resource") == {"data_resource": 2}
    assert [e["type"] for e in ledger_events(engine, "resource.")] == ["resource.registered"]


def test_owner_drafts_grants_and_suspends_a_licence_and_sees_the_cascade(settings: Settings, engine: Engine) -> None:
    owner, operator = make_org(engine, OrgKind.owner), make_org(engine, OrgKind.operator)
    resource = make_resource(engine, owner, fields=FIELDS)
    core = make_resource(engine, owner, fields=FIELDS, grade=Grade.L4)
    today = date.today()
    with TestClient(app=create_app(settings), base_url=TEST_ORIGIN) as client:
        _signed_in(client, engine, org=owner)
        editor = client.get("/licensing/licences/new")
        assert editor.status_code == 200
        assert re.search(rf'value="{core.id}"\s+disabled', editor.text), "L4 resources cannot be chosen"
        form = {
            "_csrf_token": csrf(client),
            "operator_id": str(operator.id),
            "resource_ids": [str(resource.id)],
            "purposes": ["logistics_planning", "public_welfare"],
            "modes": ["api"],
            "territory": "Riverside Province",
            "starts_on": today.isoformat(),
            "ends_on": (today + timedelta(days=6 * 366)).isoformat(),
            "cap_monthly": "2000",
            "min_k": "5",
            "fee_rate": "0.12",
            "reduction_public_welfare": "100",
        }
        too_long = client.post("/licensing/licences", data=form, follow_redirects=False)
        assert too_long.status_code == 400
        assert row_counts(engine, "licence") == {"licence": 0}
        form["ends_on"] = (today + timedelta(days=365)).isoformat()
        created = client.post("/licensing/licences", data=form, follow_redirects=False)
        assert created.status_code == 303, created.text[:800]
        url = created.headers["location"]
        assert client.post(f"{url}/grant", data={"_csrf_token": csrf(client), "reason": "Board decision 12"}).status_code == 200
        licence_id = url.rsplit("/", 1)[-1]
        with_listing = make_review_on(engine, licence_id)
        blank = client.post(f"{url}/suspend", data={"_csrf_token": csrf(client), "reason": "  "}, follow_redirects=False)
        assert blank.status_code in (400, 409)
        assert 'data-status="granted"' in blank.text
        suspended = client.post(f"{url}/suspend", data={"_csrf_token": csrf(client), "reason": "Data leak under investigation"})
        assert suspended.status_code == 200
        page = suspended.text
        assert 'data-status="suspended"' in page
        assert "Data leak under investigation" in page
        assert f'data-review="{with_listing}"' in page
        assert 'data-status="delisted"' in page
        assert 'data-action="reinstate"' in page
    assert [e["type"] for e in ledger_events(engine, "licence.")] == ["licence.created", "licence.granted", "licence.suspended"]


def make_review_on(engine: Engine, licence_id: str) -> str:
    """An approved (listed) review on the licence; returns its product name."""
    with Session(engine) as session:
        licence = session.get(Licence, uuid.UUID(licence_id))
        assert licence is not None
    return make_review(engine, licence, status=ReviewStatus.approved).product_name


def test_operator_sees_only_its_own_licences(settings: Settings, engine: Engine) -> None:
    owner = make_org(engine, OrgKind.owner)
    mine, theirs = make_org(engine, OrgKind.operator), make_org(engine, OrgKind.operator)
    resource = make_resource(engine, owner, fields=FIELDS)
    own = make_licence(engine, owner, mine, [resource])
    other = make_licence(engine, owner, theirs, [resource], status=LicenceStatus.suspended)
    with TestClient(app=create_app(settings), base_url=TEST_ORIGIN) as client:
        _signed_in(client, engine, org=mine)
        listing = client.get("/licensing/licences")
        assert own.number in listing.text
        assert other.number not in listing.text
        assert client.get(f"/licensing/licences/{other.id}").status_code == 404
        detail = client.get(f"/licensing/licences/{own.id}")
        assert detail.status_code == 200
        assert 'data-action="suspend"' not in detail.text, "operators read their licence, they do not change it"
        assert client.get("/licensing/licences/new").status_code == 403


def test_owner_decides_reviews_in_the_queue(settings: Settings, engine: Engine) -> None:
    owner, operator = make_org(engine, OrgKind.owner), make_org(engine, OrgKind.operator)
    licence = make_licence(engine, owner, operator, [make_resource(engine, owner, fields=FIELDS)])
    pending = make_review(engine, licence)
    with TestClient(app=create_app(settings), base_url=TEST_ORIGIN) as client:
        _signed_in(client, engine, org=owner)
        queue = client.get("/licensing/reviews?status=pending")
        assert f'data-review="{pending.product_name}"' in queue.text
        empty_reason = client.post(
            f"/licensing/reviews/{pending.id}/reject", data={"_csrf_token": csrf(client), "reason": ""}, follow_redirects=False
        )
        assert empty_reason.status_code in (400, 409)
        rejected = client.post(
            f"/licensing/reviews/{pending.id}/reject",
            data={"_csrf_token": csrf(client), "reason": "Plan prices are not explained"},
            follow_redirects=False,
        )
        assert rejected.status_code == 303
        after = client.get("/licensing/reviews?status=rejected")
        assert "Plan prices are not explained" in after.text
        counts = dict(re.findall(r'status=(\w+)"[^>]*>.*?<span class="count">(\d+)</span>', after.text))
        assert counts == {"pending": "0", "approved": "0", "rejected": "1", "withdrawn": "0", "delisted": "0"}


def test_buyers_have_no_licensing_pages(settings: Settings, engine: Engine) -> None:
    with TestClient(app=create_app(settings), base_url=TEST_ORIGIN) as client:
        _signed_in(client, engine, OrgKind.buyer)
        for path in ("/licensing/resources", "/licensing/licences", "/licensing/reviews"):
            response = client.get(path)
            assert response.status_code == 403, path
            assert "party_not_allowed" in response.text


def _rule_form(rules: list[dict[str, object]]) -> dict[str, str]:
    form = {}
    for rule in rules:
        name = str(rule["field"])
        action = str(rule["action"])
        form[f"rule_{name}"] = f"generalise:{rule['method']}" if action == "generalise" else action
        if "size" in rule:
            form[f"size_{name}"] = str(rule["size"])
    return form


def test_operator_checks_and_submits_a_product_on_the_page(settings: Settings, engine: Engine) -> None:
    owner, operator = make_org(engine, OrgKind.owner), make_org(engine, OrgKind.operator)
    resource = make_visit_resource(engine, owner, settings.resolved_data_dir)
    licence = make_licence(engine, owner, operator, [resource])
    choice = f"{licence.id}:{resource.id}"
    with TestClient(app=create_app(settings), base_url=TEST_ORIGIN) as client:
        _signed_in(client, engine, org=operator)
        form_page = client.get(f"/licensing/reviews/new?choice={choice}")
        assert form_page.status_code == 200
        assert re.search(r'name="rule_patient_name".*?<option value="drop" selected', form_page.text, re.S), (
            "direct identifiers start as not delivered"
        )
        base = {
            "_csrf_token": csrf(client),
            "choice": choice,
            "product_name": "Visits by district",
            "mode": "api",
            "purposes": "public_welfare",
            "plan_type_0": "monthly",
            "plan_price_0": "1500.00",
            "plan_name_0": "Standard",
            **_rule_form(clean_visit_rules()),
            "rule_notes": "drop",
        }
        in_clear = client.post("/licensing/reviews/new", data={**base, "rule_patient_name": "keep", "intent": "submit"})
        assert in_clear.status_code == 422
        assert re.search(r'data-check="direct_identifiers_protected" data-passed="no"', in_clear.text)
        assert row_counts(engine, "listing_review") == {"listing_review": 0}
        checked = client.post("/licensing/reviews/new", data={**base, "intent": "check"})
        assert checked.status_code == 200
        assert 'data-checks-result="passed"' in checked.text
        assert row_counts(engine, "listing_review") == {"listing_review": 0}
        submitted = client.post("/licensing/reviews/new", data={**base, "intent": "submit"}, follow_redirects=False)
        assert submitted.status_code == 303, submitted.text[:1000]
        # The submission is a catalog product now in review, with its plan; the operator lands on its page.
        assert submitted.headers["location"].startswith("/operator/products/")
        product_page = client.get(submitted.headers["location"])
        assert 'data-status="in_review"' in product_page.text
    assert row_counts(engine, "listing_review", "product", "plan") == {"listing_review": 1, "product": 1, "plan": 1}
    assert [e["type"] for e in ledger_events(engine, "listing.")] == ["listing.submitted", "listing.checks_passed"]
    assert next(e["type"] for e in ledger_events(engine, "product.")) == "product.created"
