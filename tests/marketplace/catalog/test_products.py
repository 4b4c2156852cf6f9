"""Products and plans over real HTTP, on real Parquet contents: the whole lifecycle (create, edit in draft only,
plans, submit -> in review, the owner approves -> listed, rejects -> draft, a licence suspension -> delisted, the
operator delists), every refused input with its code and nothing changed, and the ledger."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import Engine, text
from sqlmodel import Session

from licensing.models import DeliveryMode, LicenceStatus
from marketplace.catalog.models import Product, ProductStatus
from marketplace.core.settings import Settings
from tests.helpers import assert_problem
from tests.licensing.factories import ledger_events, make_licence, make_visit_resource, row_counts
from tests.marketplace.catalog.helpers import CATALOG_TABLES, PRODUCTS, CatalogWorld, build, market, monthly_plan, product_body


def _status(engine: Engine, product_id: str) -> str:
    with engine.connect() as conn:
        return str(
            conn.execute(text("SELECT status FROM product WHERE id = :i"), {"i": product_id.replace("-", "")}).scalar_one()
        )


def _product(engine: Engine, product_id: str) -> Product:
    import uuid

    with Session(engine) as session:
        product = session.get(Product, uuid.UUID(product_id))
        assert product is not None
        return product


def _draft_with_plan(party: Any, world: CatalogWorld, **changes: Any) -> str:
    created = party("operator").post(PRODUCTS, product_body(world, **changes))
    assert created.status_code == 201, created.text
    product_id = str(created.json()["id"])
    plan = party("operator").post(f"{PRODUCTS}/{product_id}/plans", monthly_plan())
    assert plan.status_code == 201, plan.text
    return product_id


def _submit(party: Any, product_id: str) -> dict[str, Any]:
    response = party("operator").post(f"{PRODUCTS}/{product_id}/submit")
    assert response.status_code == 200, response.text
    return dict(response.json())


def _approve(party: Any, review_id: str) -> None:
    response = party("owner").post(f"/api/licensing/reviews/{review_id}/approve", {"reason": "Checks and terms in order"})
    assert response.status_code == 200, response.text


def test_the_whole_lifecycle_to_listed_and_delisted_by_the_operator(settings: Settings, engine: Engine) -> None:
    world = build(settings, engine)
    with market(world) as party:
        created = party("operator").post(PRODUCTS, product_body(world))
        assert created.status_code == 201, created.text
        body = created.json()
        product_id = body["id"]
        assert body["status"] == "draft"
        assert body["department_id"] == str(world.resource.department_id)
        assert body["grade"] == "L2"
        assert body["licence_number"] == world.licence.number
        assert [f["name"] for f in body["fields"]] == ["patient_name", "age", "district", "visit_date", "diagnosis", "cost"]
        assert body["fields"][1] == {
            "name": "age",
            "type": "integer",
            "description": "",
            "action": "generalise",
            "method": "bucket",
            "size": 10,
        }

        edited = party("operator").patch(f"{PRODUCTS}/{product_id}", {"summary": "Edited summary", "domain": "population"})
        assert edited.status_code == 200, edited.text
        assert edited.json()["summary"] == "Edited summary"
        assert edited.json()["domain"] == "population"

        assert_problem(party("operator").post(f"{PRODUCTS}/{product_id}/submit"), 409, "product_has_no_plans")
        plan = party("operator").post(f"{PRODUCTS}/{product_id}/plans", monthly_plan())
        assert plan.status_code == 201, plan.text
        assert plan.json()["price"] == "1500.00"
        free = party("operator").post(f"{PRODUCTS}/{product_id}/plans", {"name": "Trial", "name_zh": "试用", "type": "free"})
        assert free.status_code == 201, free.text
        assert _product(engine, product_id).price_from == "0.00"

        check = party("operator").post(f"{PRODUCTS}/{product_id}/check")
        assert check.status_code == 200, check.text
        assert check.json()["passed"] is True
        assert row_counts(engine, "listing_review") == {"listing_review": 0}

        submitted = _submit(party, product_id)
        assert submitted["status"] == "in_review"
        assert submitted["review_id"]
        assert len(submitted["sample"]) == 5
        assert set(submitted["sample"][0]) == {"patient_name", "age", "district", "visit_date", "diagnosis", "cost"}
        assert len(submitted["sample"][0]["patient_name"]) == 64  # pseudonymised, never the name
        assert submitted["sample"][0]["age"].endswith("9")  # a decade, e.g. "30-39"
        assert_problem(party("operator").patch(f"{PRODUCTS}/{product_id}", {"summary": "x"}), 409, "product_not_editable")
        assert_problem(party("operator").post(f"{PRODUCTS}/{product_id}/plans", monthly_plan()), 409, "product_not_editable")
        review = json.loads(party("owner").get(f"/api/licensing/reviews/{submitted['review_id']}").text)
        assert review["product_ref"] == product_id
        assert [p["type"] for p in review["submission"]["plans"]] == ["monthly", "free"]

        # Not listed yet: nobody but its operator and supervisors sees it.
        assert_problem(party(None).get(f"{PRODUCTS}/{product_id}"), 404, "product_not_found")
        assert_problem(party("buyer_a").get(f"{PRODUCTS}/{product_id}"), 404, "product_not_found")
        assert_problem(party("operator_b").get(f"{PRODUCTS}/{product_id}"), 404, "product_not_found")
        for supervisor in ("owner", "regulator"):
            assert party(supervisor).get(f"{PRODUCTS}/{product_id}").status_code == 200
        # An audit firm without an engagement covering the operator does not see it either.
        assert_problem(party("auditor").get(f"{PRODUCTS}/{product_id}"), 404, "product_not_found")
        assert party(None).get(PRODUCTS).json()["total"] == 0

        _approve(party, submitted["review_id"])
        assert _status(engine, product_id) == "listed"
        assert _product(engine, product_id).listed_at is not None
        page = party(None).get(PRODUCTS, q="门诊").json()
        assert [i["id"] for i in page["items"]] == [product_id]
        detail = party(None).get(f"{PRODUCTS}/{product_id}").json()
        assert detail["status"] == "listed"
        assert detail["price_from"] == "0.00"
        assert [p["type"] for p in detail["plans"]] == ["monthly", "free"]

        assert_problem(party("operator").post(f"{PRODUCTS}/{product_id}/delist", {"reason": "  "}), 400, "reason_required")
        delisted = party("operator").post(f"{PRODUCTS}/{product_id}/delist", {"reason": "Source discontinued"})
        assert delisted.status_code == 200, delisted.text
        assert delisted.json()["status"] == "delisted"
        assert party(None).get(PRODUCTS, q="门诊").json()["total"] == 0
        assert row_counts(engine, "product_search") == {"product_search": 0}
        assert_problem(party("operator").post(f"{PRODUCTS}/{product_id}/delist", {"reason": "again"}), 409, "product_not_listed")
        # The owner's review of the listing says what the catalog says.
        review = party("owner").get(f"/api/licensing/reviews/{_product(engine, product_id).review_id}").json()
        assert review["status"] == "delisted"
        assert review["decision_reason"] == "Delisted by the operator: Source discontinued"

    types = [e["type"] for e in ledger_events(engine, "product.")]
    assert types == ["product.created", "product.updated", "product.submitted", "product.listed", "product.delisted"]
    delisting = ledger_events(engine, "listing.delisted")
    assert [(e["payload"]["by"], e["payload"]["product_ref"]) for e in delisting] == [("operator", product_id)]
    assert [e["type"] for e in ledger_events(engine, "plan.")] == ["plan.added", "plan.added"]


def test_rejection_returns_the_product_to_draft_and_it_can_be_edited_again(settings: Settings, engine: Engine) -> None:
    world = build(settings, engine)
    with market(world) as party:
        product_id = _draft_with_plan(party, world)
        review_id = _submit(party, product_id)["review_id"]
        rejected = party("owner").post(f"/api/licensing/reviews/{review_id}/reject", {"reason": "Describe the fields"})
        assert rejected.status_code == 200, rejected.text
        assert _status(engine, product_id) == "draft"
        assert party("operator").patch(f"{PRODUCTS}/{product_id}", {"description": "Fields described"}).status_code == 200
        again = _submit(party, product_id)
        assert again["status"] == "in_review"
        assert again["review_id"] != review_id
    assert [e["type"] for e in ledger_events(engine, "product.returned")] == ["product.returned_to_draft"]


def test_a_licence_suspension_through_the_licensing_api_delists_the_product(settings: Settings, engine: Engine) -> None:
    world = build(settings, engine)
    with market(world) as party:
        listed = _draft_with_plan(party, world)
        _approve(party, _submit(party, listed)["review_id"])
        pending = _draft_with_plan(party, world, name="Visits by age band", name_zh="年龄段就诊")
        _submit(party, pending)
        assert party(None).get(PRODUCTS).json()["total"] == 1

        suspended = party("owner").post(f"/api/licensing/licences/{world.licence.id}/suspend", {"reason": "Audit findings"})
        assert suspended.status_code == 200, suspended.text

        assert _status(engine, listed) == "delisted"
        assert _status(engine, pending) == "draft"  # its review was withdrawn
        assert party(None).get(PRODUCTS).json()["total"] == 0
        assert party(None).get(PRODUCTS, q="门诊").json()["total"] == 0
        assert_problem(party(None).get(f"{PRODUCTS}/{listed}"), 404, "product_not_found")
        # Nothing more can be built on a suspended licence.
        assert_problem(party("operator").post(f"{PRODUCTS}/{pending}/submit"), 409, "licence_not_in_force")
        assert_problem(party("operator").post(PRODUCTS, product_body(world)), 409, "licence_not_in_force")
    delisted = ledger_events(engine, "product.delisted")
    assert len(delisted) == 1
    assert delisted[0]["payload"]["cause"] == "listing.delisted"


def test_failed_listing_checks_leave_the_product_a_draft_and_store_nothing(settings: Settings, engine: Engine) -> None:
    world = build(settings, engine)
    raw_ages = [r if r["field"] != "age" else {"field": "age", "action": "keep"} for r in product_body(world)["rules"]]
    with market(world) as party:
        product_id = _draft_with_plan(party, world, rules=raw_ages)  # raw ages: k = 1
        before = row_counts(engine, *CATALOG_TABLES, "ledger_entry")
        body = assert_problem(party("operator").post(f"{PRODUCTS}/{product_id}/submit"), 422, "listing_checks_failed")
        assert "k_anonymity" in body["failed"]
        assert row_counts(engine, *CATALOG_TABLES, "ledger_entry") == before
        product = _product(engine, product_id)
        assert product.status is ProductStatus.draft
        assert product.sample_json == "[]"
        assert product.review_id is None


@pytest.mark.parametrize(
    ("changes", "status", "code"),
    [
        ({"purposes": ["market_analysis"]}, 400, "purpose_not_permitted"),
        ({"mode": "file"}, 400, "mode_not_permitted"),
        ({"rules": [{"field": "no_such_field", "action": "keep"}]}, 400, "masking_rules_invalid"),
        ({"rules": [{"field": "age", "action": "generalise", "method": "prefix", "size": 2}]}, 400, "masking_rules_invalid"),
        ({"resource_id": "other"}, 400, "resource_not_in_licence"),
        ({"licence_id": "other_operator"}, 404, "licence_not_found"),
        ({"licence_id": "suspended"}, 409, "licence_not_in_force"),
        ({"name": ""}, 400, "invalid_input"),
        ({"rules": []}, 400, "invalid_input"),
    ],
)
def test_bad_products_are_refused_and_change_nothing(
    settings: Settings, engine: Engine, changes: dict[str, Any], status: int, code: str
) -> None:
    world = build(settings, engine, modes=(DeliveryMode.api, DeliveryMode.sandbox))
    if changes.get("resource_id") == "other":
        changes["resource_id"] = str(make_visit_resource(engine, world.owner, settings.resolved_data_dir).id)
    if changes.get("licence_id") == "other_operator":
        from marketplace.core.principal import OrgKind
        from tests.factories import make_org

        other = make_org(engine, OrgKind.operator)
        changes["licence_id"] = str(make_licence(engine, world.owner, other, [world.resource]).id)
    if changes.get("licence_id") == "suspended":
        changes["licence_id"] = str(
            make_licence(engine, world.owner, world.operator, [world.resource], status=LicenceStatus.suspended).id
        )
    before = row_counts(engine, *CATALOG_TABLES, "ledger_entry")
    with market(world) as party:
        assert_problem(party("operator").post(PRODUCTS, product_body(world, **changes)), status, code)
        # The same checks guard edits of a draft.
        if status == 400 and code != "invalid_input":
            product_id = party("operator").post(PRODUCTS, product_body(world)).json()["id"]
            before_edit = row_counts(engine, *CATALOG_TABLES, "ledger_entry")
            edit = {k: v for k, v in changes.items() if k != "licence_id"}
            assert_problem(party("operator").patch(f"{PRODUCTS}/{product_id}", edit), status, code)
            assert row_counts(engine, *CATALOG_TABLES, "ledger_entry") == before_edit
            assert _product(engine, product_id).purposes_json == '["public_welfare"]'
            return
    assert row_counts(engine, *CATALOG_TABLES, "ledger_entry") == before


@pytest.mark.parametrize(
    ("plan", "code"),
    [
        (monthly_plan(price="2000.01"), "price_over_cap"),
        (monthly_plan(type="one_off", price="5000.50"), "price_over_cap"),
        (monthly_plan(type="metered", price="100.00", per_call_price="1.50"), "price_over_cap"),
        (monthly_plan(type="metered", price="2500.00", per_call_price="0.50"), "price_over_cap"),
        (monthly_plan(type="metered", price="100.00"), "per_call_price_required"),
        (monthly_plan(type="metered", price="100.00", per_call_price="0.10", monthly_cap="50.00"), "monthly_cap_below_fee"),
        (monthly_plan(per_call_price="0.10"), "metered_terms_not_metered"),
        (monthly_plan(type="free", price="1.00"), "free_plan_priced"),
        (monthly_plan(price="12.345"), "invalid_input"),
        (monthly_plan(price=12.5), "invalid_input"),
        (monthly_plan(visibility="private"), "private_plan_without_buyers"),
        (monthly_plan(buyer_ids=["buyer_a"]), "buyers_on_public_plan"),
        (monthly_plan(visibility="private", buyer_ids=["operator"]), "buyer_not_found"),
    ],
)
def test_bad_plans_are_refused_and_change_nothing(settings: Settings, engine: Engine, plan: dict[str, Any], code: str) -> None:
    world = build(settings, engine)
    names = {"buyer_a": str(world.buyer_a.id), "operator": str(world.operator.id)}
    if "buyer_ids" in plan:
        plan = {**plan, "buyer_ids": [names[b] for b in plan["buyer_ids"]]}
    with market(world) as party:
        product_id = party("operator").post(PRODUCTS, product_body(world)).json()["id"]
        before = row_counts(engine, *CATALOG_TABLES, "ledger_entry")
        assert_problem(party("operator").post(f"{PRODUCTS}/{product_id}/plans", plan), 400, code)
        assert row_counts(engine, *CATALOG_TABLES, "ledger_entry") == before
        assert _product(engine, product_id).price_from is None


def test_a_plan_type_the_licence_sets_no_cap_for_is_refused(settings: Settings, engine: Engine) -> None:
    world = build(settings, engine, price_caps={"monthly": "2000.00"})
    with market(world) as party:
        product_id = party("operator").post(PRODUCTS, product_body(world)).json()["id"]
        before = row_counts(engine, *CATALOG_TABLES)
        body = assert_problem(
            party("operator").post(f"{PRODUCTS}/{product_id}/plans", monthly_plan(type="one_off", price="10.00")),
            400,
            "plan_type_not_licensed",
        )
        assert body["licensed"] == ["monthly"]
        assert row_counts(engine, *CATALOG_TABLES) == before


def test_plans_change_retire_and_keep_price_from(settings: Settings, engine: Engine) -> None:
    world = build(settings, engine)
    with market(world) as party:
        product_id = party("operator").post(PRODUCTS, product_body(world)).json()["id"]
        monthly = party("operator").post(f"{PRODUCTS}/{product_id}/plans", monthly_plan(price="900.00")).json()
        metered = party("operator").post(
            f"{PRODUCTS}/{product_id}/plans",
            monthly_plan(type="metered", price="100.00", free_calls=1000, per_call_price="0.50", monthly_cap="800.00"),
        )
        assert metered.status_code == 201, metered.text
        assert metered.json()["per_call_price"] == "0.50"
        private = party("operator").post(
            f"{PRODUCTS}/{product_id}/plans",
            monthly_plan(price="10.00", visibility="private", buyer_ids=[str(world.buyer_a.id)]),
        )
        assert private.status_code == 201, private.text
        assert private.json()["buyer_ids"] == [str(world.buyer_a.id)]
        assert _product(engine, product_id).price_from == "100.00"  # private plans do not count

        changed = party("operator").patch(f"/api/catalog/plans/{monthly['id']}", {"price": "50.00"})
        assert changed.status_code == 200, changed.text
        assert _product(engine, product_id).price_from == "50.00"
        assert_problem(
            party("operator").patch(f"/api/catalog/plans/{monthly['id']}", {"price": "2100.00"}), 400, "price_over_cap"
        )
        assert_problem(party("operator_b").patch(f"/api/catalog/plans/{monthly['id']}", {"price": "1.00"}), 404, "plan_not_found")

        retired = party("operator").post(f"/api/catalog/plans/{monthly['id']}/retire")
        assert retired.status_code == 200, retired.text
        assert retired.json()["active"] is False
        assert _product(engine, product_id).price_from == "100.00"
        assert_problem(party("operator").post(f"/api/catalog/plans/{monthly['id']}/retire"), 409, "plan_retired")
        assert_problem(party("operator").patch(f"/api/catalog/plans/{monthly['id']}", {"price": "1.00"}), 409, "plan_retired")
    assert [e["type"] for e in ledger_events(engine, "plan.")] == ["plan.added"] * 3 + ["plan.updated", "plan.retired"]


def test_private_plans_are_shown_only_to_their_buyers_and_the_operator(settings: Settings, engine: Engine) -> None:
    world = build(settings, engine)
    with market(world) as party:
        product_id = _draft_with_plan(party, world)
        party("operator").post(
            f"{PRODUCTS}/{product_id}/plans",
            monthly_plan(name="For A", price="10.00", visibility="private", buyer_ids=[str(world.buyer_a.id)]),
        )
        _approve(party, _submit(party, product_id)["review_id"])
        seen = {
            who: [p["name"] for p in party(who).get(f"{PRODUCTS}/{product_id}").json()["plans"]]
            for who in (None, "buyer_a", "buyer_b", "operator", "operator_b")
        }
        assert seen == {
            None: ["Standard"],
            "buyer_a": ["Standard", "For A"],
            "buyer_b": ["Standard"],
            "operator": ["Standard", "For A"],
            "operator_b": ["Standard"],
        }
        assert "buyer_ids" not in party("buyer_a").get(f"{PRODUCTS}/{product_id}").text or all(
            p["buyer_ids"] is None for p in party("buyer_a").get(f"{PRODUCTS}/{product_id}").json()["plans"]
        )


def test_the_operator_console_lists_its_own_products_with_counts(settings: Settings, engine: Engine) -> None:
    world = build(settings, engine)
    with market(world) as party:
        first = _draft_with_plan(party, world)
        _submit(party, first)
        party("operator").post(PRODUCTS, product_body(world, name="Second"))
        mine = party("operator").get("/api/catalog/operator/products").json()
        assert mine["total"] == 2
        assert mine["counts"] == {"draft": 1, "in_review": 1, "listed": 0, "delisted": 0}
        assert [i["name"] for i in mine["items"]] == ["Second", "Outpatient visit statistics"]
        drafts = party("operator").get("/api/catalog/operator/products", status="draft").json()
        assert [i["name"] for i in drafts["items"]] == ["Second"]
        assert party("operator_b").get("/api/catalog/operator/products").json()["total"] == 0
        assert_problem(party("operator_b").patch(f"{PRODUCTS}/{first}", {"summary": "x"}), 404, "product_not_found")
        assert_problem(party("operator_b").post(f"{PRODUCTS}/{first}/submit"), 404, "product_not_found")
