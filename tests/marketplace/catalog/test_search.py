"""Catalog search over real HTTP and through the service: Chinese and English words, prefixes, filters, exact facet
counts (both counting paths of SQLite's SQL-only search), sorting, paging, anonymous browsing, and documents kept in
step. The in-memory index itself is tested in test_search_index.py."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlmodel import Session

from licensing.models import DeliveryMode, Grade, PlanType
from marketplace.catalog import search
from marketplace.catalog.models import Domain, Product, ProductStatus
from marketplace.catalog.schemas import CatalogQuery, CatalogSort
from marketplace.catalog.search import document_words, query_words, reindex_product, search_in_database, search_products
from marketplace.core.db import Database
from marketplace.core.principal import OrgKind
from marketplace.core.settings import Settings
from tests.factories import make_org
from tests.helpers import assert_problem
from tests.licensing.factories import VISIT_FIELDS, make_department, make_licence, make_resource
from tests.marketplace.catalog.helpers import PRODUCTS, build, market
from tests.marketplace.factories import make_plan, make_product


def _index(settings: Settings, products: Sequence[Product]) -> None:
    async def run() -> None:
        db = Database(settings.resolved_database_url)
        try:
            async with db.session() as session:
                for product in products:
                    loaded = await session.get(Product, product.id)
                    assert loaded is not None
                    await reindex_product(session, loaded)
                await session.commit()
        finally:
            await db.dispose()

    asyncio.run(run())


def _search(settings: Settings, *, by_sql: bool = False, **query: Any) -> Any:
    async def run() -> Any:
        db = Database(settings.resolved_database_url)
        try:
            async with db.session() as session:
                return await (search_in_database if by_sql else search_products)(session, CatalogQuery(**query))
        finally:
            await db.dispose()

    return asyncio.run(run())


def test_words_in_both_languages() -> None:
    assert document_words("门诊就诊统计") == ["门诊", "就诊", "统计"]
    assert "空气质量" in document_words("空气质量监测")
    assert "空气" in document_words("空气质量监测")
    assert query_words("Hospital 门诊, hospital!") == ["hospital", "门诊"]
    assert query_words("  ") == []


def _catalog(settings: Settings, engine: Engine) -> dict[str, Any]:
    """Six listed products over two departments and two operators, one draft and one delisted (never found)."""
    owner = make_org(engine, OrgKind.owner)
    op1, op2 = make_org(engine, OrgKind.operator), make_org(engine, OrgKind.operator)
    health, transport = make_department(engine, owner), make_department(engine, owner)
    r_health = make_resource(engine, owner, fields=VISIT_FIELDS, department=health)
    r_transport = make_resource(engine, owner, fields=VISIT_FIELDS, department=transport, grade=Grade.L1)
    l1 = make_licence(engine, owner, op1, [r_health, r_transport])
    l2 = make_licence(engine, owner, op2, [r_transport])
    specs: list[tuple[Any, Any, str, str, Domain, DeliveryMode, list[tuple[PlanType, str]]]] = [
        (
            l1,
            r_health,
            "Outpatient visit statistics",
            "门诊就诊统计",
            Domain.health,
            DeliveryMode.api,
            [(PlanType.monthly, "300.00")],
        ),
        (
            l1,
            r_health,
            "Hospital beds",
            "医院床位",
            Domain.health,
            DeliveryMode.file,
            [(PlanType.free, "0"), (PlanType.monthly, "100.00")],
        ),
        (
            l1,
            r_health,
            "Clinic outpatient queues",
            "门诊排队",
            Domain.health,
            DeliveryMode.sandbox,
            [(PlanType.one_off, "900.00")],
        ),
        (l1, r_transport, "Bus ridership", "公交客流", Domain.transport, DeliveryMode.api, [(PlanType.metered, "50.00")]),
        (l2, r_transport, "Taxi trips", "出租车行程", Domain.transport, DeliveryMode.api, [(PlanType.monthly, "200.00")]),
        (l2, r_transport, "Air quality near roads", "道路空气质量", Domain.environment, DeliveryMode.file, []),
    ]
    products = []
    for i, (licence, resource, name, name_zh, domain, mode, plans) in enumerate(specs):
        product = make_product(engine, licence, resource, name=name, name_zh=name_zh, domain=domain, mode=mode)
        with Session(engine) as session:
            loaded = session.get(Product, product.id)
            assert loaded is not None
            from datetime import timedelta

            assert loaded.listed_at is not None
            loaded.listed_at = loaded.listed_at - timedelta(days=10 - i)  # listed one after another
            prices = [p for _, p in plans]
            loaded.price_from = f"{min(float(p) for p in prices):.2f}" if prices else None
            session.add(loaded)
            session.commit()
            session.refresh(loaded)
            product = loaded
        for plan_type, price in plans:
            make_plan(engine, product, type=plan_type, price=price)
        products.append(product)
    draft = make_product(engine, l1, r_health, name="Outpatient draft", name_zh="门诊草稿", status=ProductStatus.draft)
    delisted = make_product(engine, l1, r_health, name="Outpatient old", name_zh="门诊旧", status=ProductStatus.delisted)
    _index(settings, [*products, draft, delisted])
    return {"products": products, "op1": op1, "op2": op2, "health": health, "transport": transport}


def _names(page: Any) -> list[str]:
    return [i["name"] if isinstance(i, dict) else i.name for i in (page["items"] if isinstance(page, dict) else page.items)]


def _facet(page: dict[str, Any], facet: str) -> dict[str, int]:
    return {v["value"]: v["count"] for v in page["facets"][facet]}


def test_chinese_and_english_words_find_listed_products_only(settings: Settings, engine: Engine) -> None:
    world = build(settings, engine)
    _catalog(settings, engine)
    with market(world) as party:
        anonymous = party(None)
        assert _names(anonymous.get(PRODUCTS, q="门诊").json()) == [
            "Clinic outpatient queues",
            "Outpatient visit statistics",
        ] or set(_names(anonymous.get(PRODUCTS, q="门诊").json())) == {"Clinic outpatient queues", "Outpatient visit statistics"}
        assert _names(anonymous.get(PRODUCTS, q="就诊").json()) == ["Outpatient visit statistics"]
        assert _names(anonymous.get(PRODUCTS, q="门诊就诊统计").json()) == ["Outpatient visit statistics"]
        assert _names(anonymous.get(PRODUCTS, q="空气质量").json()) == ["Air quality near roads"]
        assert _names(anonymous.get(PRODUCTS, q="TAXI").json()) == ["Taxi trips"]
        assert _names(anonymous.get(PRODUCTS, q="hosp").json()) == ["Hospital beds"]  # an English prefix
        assert set(_names(anonymous.get(PRODUCTS, q="outpatient").json())) == {
            "Outpatient visit statistics",
            "Clinic outpatient queues",
        }
        assert _names(anonymous.get(PRODUCTS, q="outpatient 就诊").json()) == ["Outpatient visit statistics"]  # words ANDed
        assert anonymous.get(PRODUCTS, q="nothing-like-this").json()["total"] == 0
        # Query syntax is never passed through: only words are searched for.
        assert _names(anonymous.get(PRODUCTS, q='"taxi" (*) ^ - : & | ! \'').json()) == ["Taxi trips"]
        assert anonymous.get(PRODUCTS, q="\"'*:&|!()").json()["total"] == 6  # no words: the whole catalog
        # Buyers' programs and signed-in people get the same catalog.
        assert party("buyer_a").get(PRODUCTS, q="门诊").json()["total"] == 2
        assert party("operator").get(PRODUCTS).json()["total"] == 6


def test_facets_are_exact_over_the_whole_result_and_filters_narrow_it(settings: Settings, engine: Engine) -> None:
    world = build(settings, engine)
    made = _catalog(settings, engine)
    with market(world) as party:
        everything = party(None).get(PRODUCTS, page_size=2).json()
        assert everything["total"] == 6
        assert len(everything["items"]) == 2
        assert _facet(everything, "domain") == {"health": 3, "transport": 2, "environment": 1}
        assert _facet(everything, "mode") == {"api": 3, "file": 2, "sandbox": 1}
        assert _facet(everything, "plan_type") == {"monthly": 3, "free": 1, "one_off": 1, "metered": 1}
        assert _facet(everything, "grade") == {"L2": 3, "L1": 3}
        assert _facet(everything, "operator") == {str(made["op1"].id): 4, str(made["op2"].id): 2}
        assert _facet(everything, "department") == {str(made["health"].id): 3, str(made["transport"].id): 3}
        labels = {v["value"]: (v["label"], v["label_zh"]) for v in everything["facets"]["domain"]}
        assert labels["health"] == ("Health", "医疗卫生")
        dept = everything["facets"]["department"][0]
        assert dept["label_zh"].startswith("部门")

        health = party(None).get(PRODUCTS, domain="health").json()
        assert health["total"] == 3
        assert _facet(health, "mode") == {"api": 1, "file": 1, "sandbox": 1}
        monthly_api = party(None).get(PRODUCTS, plan_type="monthly", mode="api").json()
        assert set(_names(monthly_api)) == {"Outpatient visit statistics", "Taxi trips"}
        assert _facet(monthly_api, "operator") == {str(made["op1"].id): 1, str(made["op2"].id): 1}
        by_operator = party(None).get(PRODUCTS, operator=str(made["op2"].id), q="taxi").json()
        assert _names(by_operator) == ["Taxi trips"]
        by_department = party(None).get(PRODUCTS, department=str(made["transport"].id), grade="L1").json()
        assert by_department["total"] == 3
        assert_problem(party(None).get(PRODUCTS, domain="space"), 400, "invalid_input")
        assert_problem(party(None).get(PRODUCTS, page_size=1000), 400, "invalid_input")


def test_both_sqlite_counting_paths_agree(settings: Settings, engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    _catalog(settings, engine)
    few = _search(settings, by_sql=True, q="门诊")
    monkeypatch.setattr(search, "FEW_MATCHES", 0)  # count by FTS5 intersections (PostgreSQL: the same query)
    many = _search(settings, by_sql=True, q="门诊")
    assert few.facets == many.facets
    assert few.total == many.total == 2
    assert _search(settings, q="门诊").facets == few.facets  # the in-memory index agrees
    filtered = _search(settings, by_sql=True, mode=DeliveryMode.api)
    assert filtered.total == 3
    assert {v.value: v.count for v in filtered.facets.domain} == {"health": 1, "transport": 2}


def test_sorting_and_paging(settings: Settings, engine: Engine) -> None:
    world = build(settings, engine)
    _catalog(settings, engine)
    with market(world) as party:
        newest = _names(party(None).get(PRODUCTS).json())
        assert newest[0] == "Air quality near roads"
        assert newest[-1] == "Outpatient visit statistics"
        by_name = _names(party(None).get(PRODUCTS, sort="name").json())
        assert by_name == sorted(by_name, key=str.lower)
        by_price = _names(party(None).get(PRODUCTS, sort="price").json())
        assert by_price == [
            "Hospital beds",
            "Bus ridership",
            "Taxi trips",
            "Outpatient visit statistics",
            "Clinic outpatient queues",
            "Air quality near roads",  # no public plan: last
        ]
        pages = [party(None).get(PRODUCTS, sort="name", page=n, page_size=4).json() for n in (1, 2, 3)]
        assert [len(p["items"]) for p in pages] == [4, 2, 0]
        assert _names(pages[0]) + _names(pages[1]) == by_name
        assert all(p["total"] == 6 and p["page_size"] == 4 for p in pages)
        relevance = _names(party(None).get(PRODUCTS, q="outpatient", sort="relevance").json())
        assert set(relevance) == {"Outpatient visit statistics", "Clinic outpatient queues"}


def test_documents_follow_plans_and_names(settings: Settings, engine: Engine) -> None:
    made = _catalog(settings, engine)
    air = made["products"][5]
    assert {v.value for v in _search(settings, q="air").facets.plan_type} == set()
    make_plan(engine, air, type=PlanType.free)
    _index(settings, [air])
    result = _search(settings, q="air", plan_type=PlanType.free)
    assert [i.name for i in result.items] == ["Air quality near roads"]
    assert result.items[0].plan_types == [PlanType.free]
    assert _search(settings, q="门诊", sort=CatalogSort.price).total == 2
