"""Issue 5's whole journey through the real HTTP interface: a buyer finds products by a Chinese and an English
word, subscribes with a purpose and the agreement, its program fetches rows with a token and queries the sandbox
(raw rows refused, an aggregate answered), the owner suspends the licence and the very next call is refused; every
step is in the ledger."""

from __future__ import annotations

from sqlalchemy import Engine, text

from licensing.models import DeliveryMode, PlanType, Purpose
from marketplace.core.settings import Settings
from tests.factories import make_login_session, make_user
from tests.helpers import assert_problem, use_session
from tests.licensing.factories import ledger_events
from tests.marketplace.delivery.support import bearer, delivery_client
from tests.marketplace.factories import index_products, make_market, make_plan, make_product


def _rename(engine: Engine, product_id: object, name: str, name_zh: str) -> None:
    key = product_id.hex if engine.dialect.name == "sqlite" else product_id  # type: ignore[attr-defined]
    with engine.begin() as conn:
        conn.execute(text("UPDATE product SET name = :n, name_zh = :z WHERE id = :id"), {"n": name, "z": name_zh, "id": key})


def test_find_subscribe_fetch_query_and_stop_at_suspension(settings: Settings, engine: Engine, database_url: str) -> None:
    market = make_market(engine, settings.resolved_data_dir)
    api_product = market.product
    sandbox = make_product(engine, market.licence, market.resource, mode=DeliveryMode.sandbox)
    _rename(engine, api_product.id, "Outpatient visit rows", "门诊就诊明细")
    _rename(engine, sandbox.id, "Outpatient statistics sandbox", "门诊统计沙箱")
    free_api = make_plan(engine, api_product, type=PlanType.free)
    free_sandbox = make_plan(engine, sandbox, type=PlanType.free)
    index_products(database_url, api_product, sandbox)
    buyer = make_user(engine, market.buyer_b)

    with delivery_client(settings) as client:
        # Anyone finds both by a Chinese word, and the sandbox by an English one.
        found = client.get("/api/catalog/products", params={"q": "门诊"}).json()
        assert {item["id"] for item in found["items"]} == {str(api_product.id), str(sandbox.id)}
        english = client.get("/api/catalog/products", params={"q": "sandbox"}).json()
        assert [item["id"] for item in english["items"]] == [str(sandbox.id)]

        headers = use_session(client, make_login_session(engine, buyer))
        agreement = client.get("/api/subscriptions/agreement").json()["version"]
        for plan in (free_api, free_sandbox):
            subscribed = client.post(
                "/api/subscriptions",
                json={"plan_id": str(plan.id), "purpose": Purpose.credit_assessment.value, "agreement_version": agreement},
                headers=headers,
            )
            assert subscribed.status_code == 201, subscribed.text
            assert subscribed.json()["status"] == "active"
        client.cookies.clear()

        program = bearer(client, engine, market.buyer_b)
        entitled = client.get("/data/v1/entitlements", headers=program).json()["items"]
        assert {e["product_id"] for e in entitled} == {str(api_product.id), str(sandbox.id)}
        rows = client.get(f"/data/v1/products/{api_product.id}/rows", params={"limit": 5}, headers=program)
        assert rows.status_code == 200, rows.text
        assert len(rows.json()["items"]) == 5
        assert "id_number" not in rows.json()["items"][0]

        raw = client.post(
            f"/data/v1/products/{sandbox.id}/sandbox/query", json={"sql": "SELECT district FROM data"}, headers=program
        )
        assert_problem(raw, 400, "sandbox_query_refused")
        aggregate = client.post(
            f"/data/v1/products/{sandbox.id}/sandbox/query",
            json={"sql": "SELECT district, count(*) AS visits FROM data GROUP BY district ORDER BY district"},
            headers=program,
        )
        assert aggregate.status_code == 200, aggregate.text
        assert aggregate.json()["rows"] == [["Chaoyang", 20], ["Dongcheng", 20], ["Haidian", 20]]

        owner = make_user(engine, market.owner)
        owner_headers = use_session(client, make_login_session(engine, owner))
        suspended = client.post(
            f"/api/licensing/licences/{market.licence.id}/suspend", json={"reason": "Audit finding"}, headers=owner_headers
        )
        assert suspended.status_code == 200, suspended.text
        client.cookies.clear()
        assert_problem(client.get(f"/data/v1/products/{api_product.id}/rows", headers=program), 403, "licence_suspended")

    types = [e["type"] for e in ledger_events(engine)]
    assert types.count("subscription.created") == 2
    assert types.count("delivery.recorded") == 2  # the rows call and the aggregate; refused calls deliver nothing
    assert "licence.suspended" in types
    assert types.index("licence.suspended") < len(types) - 1, "the refused call after the suspension is recorded too"
    assert "delivery.refused" in types[types.index("licence.suspended") :]
