"""The catalog search's in-memory index: its answers equal SQL's (frequent words from bitmaps, rare words from the
database's full-text engine, mixed, prefixes, filters, every sort, deep pages, exact facet counts), and it never
serves a stale catalog: a change committed by anyone is seen by the very next search, in this process and another."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
from sqlalchemy import Engine, text

from licensing.models import DeliveryMode, Grade, PlanType
from marketplace.catalog import search, search_index
from marketplace.catalog.models import Domain, Product, ProductStatus
from marketplace.catalog.schemas import CatalogPage, CatalogQuery, CatalogSort
from marketplace.catalog.search import reindex_product, search_in_database, search_products
from marketplace.core.principal import OrgKind
from marketplace.core.settings import Settings
from tests.factories import make_org
from tests.licensing.factories import VISIT_FIELDS, make_department, make_licence, make_resource
from tests.marketplace.factories import make_plan, make_product
from tests.supervision.ledger_helpers import run

DISTRICTS = [("Haidian", "海淀"), ("Chaoyang", "朝阳"), ("Xicheng", "西城"), ("Fengtai", "丰台"), ("Tongzhou", "通州")]
TOPICS = [("hospital beds", "医院床位"), ("taxi trips", "出租车行程"), ("air quality", "空气质量"), ("school places", "学位")]


def _catalog(engine: Engine) -> list[Product]:
    """30 listed products over 2 operators, 2 departments and 2 grades, with frequent words (district, topic,
    'statistics', 'data' in half the summaries), rare ones ('glacier', 'hospice'), a draft and a delisted one."""
    rng = random.Random(5)
    owner = make_org(engine, OrgKind.owner)
    operators = [make_org(engine, OrgKind.operator) for _ in range(2)]
    departments = [make_department(engine, owner) for _ in range(2)]
    resources = [
        make_resource(engine, owner, fields=VISIT_FIELDS, department=departments[0]),
        make_resource(engine, owner, fields=VISIT_FIELDS, department=departments[1], grade=Grade.L1),
    ]
    licences = [make_licence(engine, owner, op, resources) for op in operators]
    products = []
    for i in range(30):
        (district, district_zh), (topic, topic_zh) = DISTRICTS[i % 5], TOPICS[i % 4]
        rare = " glacier" if i in (3, 17) else ""
        summary = ("data from the bureau" if i % 2 else "counted weekly") + (" near a hospice" if i == 11 else "")
        product = make_product(
            engine,
            licences[i % 2],
            resources[i % 3 % 2],
            name=f"{district} {topic} statistics{rare}",
            name_zh=f"{district_zh}{topic_zh}统计" + ("冰川" if rare else ""),
            summary=summary,
            summary_zh="数据" if i % 3 else "每周统计",
            domain=[Domain.health, Domain.transport, Domain.environment][i % 3],
            mode=[DeliveryMode.api, DeliveryMode.file, DeliveryMode.sandbox][i % 3],
            price_from=None if i % 7 == 0 else f"{rng.choice([10, 20, 30, 40])}.00",
        )
        if i % 7:
            make_plan(engine, product, type=[PlanType.free, PlanType.monthly, PlanType.metered][i % 3], price="10.00")
        products.append(product)
    make_product(engine, licences[0], resources[0], name="Haidian draft data", status=ProductStatus.draft)
    make_product(engine, licences[0], resources[0], name="Haidian old data", status=ProductStatus.delisted)
    return products


T = TypeVar("T")


def _run(settings: Settings, work: Callable[[Any], Awaitable[T]]) -> T:
    return run(settings.resolved_database_url, work)


def _index_all(settings: Settings, engine: Engine) -> list[Product]:
    products = _catalog(engine)

    async def work(session: Any) -> None:
        for product in await _all_products(session):
            await reindex_product(session, product)
        await session.commit()

    _run(settings, work)
    return products


async def _all_products(session: Any) -> list[Product]:
    from sqlmodel import select

    return list((await session.exec(select(Product))).all())


def _same(fast: CatalogPage, slow: CatalogPage, query: dict[str, Any]) -> None:
    assert fast.total == slow.total, query
    assert [i.id for i in fast.items] == [i.id for i in slow.items], query
    assert fast.facets == slow.facets, query


QUERIES: list[dict[str, Any]] = [
    {},
    {"q": "statistics"},  # every product
    {"q": "data"},  # summaries of half
    {"q": "数据"},
    {"q": "haidian"},
    {"q": "海淀"},
    {"q": "haidian taxi"},
    {"q": "glacier"},  # rare
    {"q": "冰川"},
    {"q": "glacier statistics"},  # rare and frequent
    {"q": "hosp"},  # a prefix of a frequent word (hospital) and a rare one (hospice)
    {"q": "hospice"},
    {"q": "stat"},
    {"q": "nothing-like-this"},
    {"q": "data", "domain": Domain.health},
    {"q": "statistics", "mode": DeliveryMode.api, "grade": Grade.L1},
    {"q": "statistics", "plan_type": PlanType.monthly},
    {"plan_type": PlanType.free, "sort": CatalogSort.price},
    {"q": "data", "sort": CatalogSort.newest, "page": 2, "page_size": 4},
    {"q": "data", "sort": CatalogSort.price, "page": 3, "page_size": 3},
    {"q": "statistics", "sort": CatalogSort.price, "page": 2, "page_size": 7},
    {"q": "statistics", "sort": CatalogSort.name, "page": 4, "page_size": 5},
    {"q": "taxi", "sort": CatalogSort.name},
    {"q": "统计", "page": 2, "page_size": 10},  # relevance across the name matches and the others
    {"q": "data statistics", "page": 3, "page_size": 4},
    {"q": "statistics", "page": 40},  # past the end
    {"sort": CatalogSort.name, "page": 2, "page_size": 20},
]


@pytest.mark.parametrize("frequent_from", [1, 4, 10**9], ids=["all-bitmaps", "mixed", "all-database"])
def test_index_answers_equal_the_database(
    settings: Settings, engine: Engine, monkeypatch: pytest.MonkeyPatch, frequent_from: int
) -> None:
    monkeypatch.setattr(search_index, "FREQUENT_MIN_DOCS", frequent_from)
    monkeypatch.setattr(search_index, "FREQUENT_FRACTION", 0.0)
    monkeypatch.setattr(search_index, "_indexes", {})
    made = _index_all(settings, engine)

    async def work(session: Any) -> dict[str, Any]:
        pages = {}
        for query in QUERIES:
            fast = await search_products(session, CatalogQuery(**query))
            _same(fast, await search_in_database(session, CatalogQuery(**query)), query)
            pages[repr(query)] = fast
        return {"pages": pages, "index": await search_index.current_index(session)}

    found = _run(settings, work)
    pages = found["pages"]
    if frequent_from == 4:
        assert "glacier" not in found["index"].words
        assert "statistics" in found["index"].words
    assert pages[repr({"q": "statistics"})].total == 30
    assert pages[repr({"q": "glacier"})].total == 2
    assert pages[repr({"q": "hosp"})].total == 9  # eight hospitals and the hospice
    assert pages[repr({"q": "data"})].total == 15
    # Relevance: names matching every word first (all hospitals), then the hospice.
    assert pages[repr({"q": "hosp"})].items[-1].id == made[11].id
    health = pages[repr({"q": "data", "domain": Domain.health})]
    assert {v.value: v.count for v in health.facets.domain} == {"health": health.total}


def test_bit_helpers_agree_with_plain_python() -> None:
    rng = random.Random(7)
    size = 3000
    members = sorted(rng.sample(range(size), 1200), reverse=True)
    bitmap = search_index.bits_of(members, size)
    assert search_index.positions_of(bitmap) == members
    assert bitmap.bit_count() == len(members)
    for offset, count in [(0, 5), (3, 20), (1000, 50), (1195, 10), (4000, 3), (0, 0)]:
        assert search_index.highest(bitmap, offset, count) == members[offset : offset + count]
    keys = [(rng.random(), p) for p in range(size)]
    order = sorted(range(size), key=keys.__getitem__)
    ranked = [p for p in order if p in set(members)]
    for chosen, wanted in (
        (bitmap, ranked),
        (search_index.bits_of(members[:40], size), sorted(members[:40], key=keys.__getitem__)),
    ):
        for offset, count in [(0, 10), (25, 30), (1190, 20)]:
            assert search_index.first_in_order(chosen, order, keys, size, offset, count) == wanted[offset : offset + count]
    assert search_index.highest(0, 0, 5) == []
    assert search_index.positions_of(0) == []


async def _set_status(session: Any, product_id: Any, status: ProductStatus) -> None:
    product = await session.get(Product, product_id)
    product.status = status
    session.add(product)
    await reindex_product(session, product)
    await session.commit()


def test_a_committed_change_is_seen_by_the_next_search_in_every_process(
    settings: Settings, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(search_index, "FREQUENT_MIN_DOCS", 4)
    monkeypatch.setattr(search_index, "FREQUENT_FRACTION", 0.0)
    made = _index_all(settings, engine)
    process_a: dict[str, Any] = {}
    process_b: dict[str, Any] = {}
    builds: list[int] = []
    real_build = search_index.CatalogIndex.build

    def counted(*args: Any) -> search_index.CatalogIndex:
        builds.append(1)
        return real_build(*args)

    monkeypatch.setattr(search_index.CatalogIndex, "build", staticmethod(counted))

    async def searched(session: Any, process: dict[str, Any], **query: Any) -> CatalogPage:
        monkeypatch.setattr(search_index, "_indexes", process)
        return await search_products(session, CatalogQuery(**query))

    async def work(session: Any) -> None:
        assert (await searched(session, process_a, q="taxi")).total == 8
        assert (await searched(session, process_b, q="taxi")).total == 8
        assert len(builds) == 2
        taxi = made[1]
        await _set_status(session, taxi.id, ProductStatus.delisted)  # written by "process A"
        for process in (process_a, process_b):
            page = await searched(session, process, q="taxi")
            assert page.total == 7
            assert taxi.id not in [i.id for i in page.items]
            assert sum(v.count for v in page.facets.operator) == 7
        # A new listing (with a rare word).
        fresh = await session.get(Product, made[0].id)
        newcomer = Product(**{**fresh.model_dump(exclude={"id"}), "name": "Tongzhou taxi glacier", "name_zh": "通州冰川"})
        newcomer.listed_at = search_index_now()
        session.add(newcomer)
        await session.flush()
        await reindex_product(session, newcomer)
        await session.commit()
        for process in (process_b, process_a):
            page = await searched(session, process, q="taxi")
            assert page.total == 8
            assert page.items[0].id == newcomer.id  # the newest name match first
            assert (await searched(session, process, q="glacier")).total == 3
            for query in QUERIES:
                _same(await searched(session, process, **query), await search_in_database(session, CatalogQuery(**query)), query)
        assert len(builds) == 2  # both processes applied the changes instead of rebuilding
        # A change this session has not committed is not kept in any index (frequent words stay as committed).
        assert (await searched(session, process_a, q="tongzhou")).total == 7
        await _set_status_uncommitted(session, newcomer.id)
        assert (await searched(session, process_a, q="tongzhou")).total == 7
        await session.rollback()
        assert (await searched(session, process_b, q="tongzhou")).total == 7
        assert (await searched(session, process_a, q="tongzhou")).items[0].id == newcomer.id

    _run(settings, work)


def search_index_now() -> Any:
    from marketplace.core.types import utcnow

    return utcnow()


async def _set_status_uncommitted(session: Any, product_id: Any) -> None:
    product = await session.get(Product, product_id)
    product.status = ProductStatus.delisted
    session.add(product)
    await reindex_product(session, product)


def test_an_older_listing_or_a_gap_in_the_log_rebuilds(
    settings: Settings, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = _index_all(settings, engine)
    monkeypatch.setattr(search_index, "_indexes", {})
    builds: list[int] = []
    real_build = search_index.CatalogIndex.build

    def counted(*args: Any) -> search_index.CatalogIndex:
        builds.append(1)
        return real_build(*args)

    monkeypatch.setattr(search_index.CatalogIndex, "build", staticmethod(counted))
    statistics = CatalogQuery(q="statistics")

    async def work(session: Any) -> None:
        before = await search_index.current_index(session)
        # Relisting with the old listing time puts the product among older ones: positions would move.
        await _set_status(session, made[5].id, ProductStatus.delisted)
        await _set_status(session, made[5].id, ProductStatus.listed)
        after = await search_index.current_index(session)
        assert len(builds) == 2
        assert after.version == before.version + 2
        _same(await search_products(session, statistics), await search_in_database(session, statistics), {})
        # The change log pruned past this index's version: rebuilt, still exact.
        await _set_status(session, made[6].id, ProductStatus.delisted)
        await session.exec(text("DELETE FROM catalog_search_change"))
        await session.commit()
        assert (await search_products(session, statistics)).total == 29
        assert len(builds) == 3
        # An emptied database (no state row): searched without keeping an index, then a new epoch.
        epoch = (await search_index.current_index(session)).epoch
        await session.exec(text("DELETE FROM catalog_search_state"))
        await session.commit()
        assert (await search_products(session, CatalogQuery(q="statistics"))).total == 29
        await _set_status(session, made[7].id, ProductStatus.delisted)
        assert (await search_products(session, CatalogQuery(q="statistics"))).total == 28
        assert (await search_index.current_index(session)).epoch not in (None, epoch)

    _run(settings, work)


def test_reindexing_a_product_without_a_document_changes_no_version(settings: Settings, engine: Engine) -> None:
    made = _index_all(settings, engine)
    with engine.connect() as conn:
        version = conn.execute(text("SELECT version FROM catalog_search_state")).scalar_one()

    async def work(session: Any) -> None:
        draft = await session.get(Product, made[0].id)
        draft.status = ProductStatus.draft
        await reindex_product(session, draft)  # removes the document: a change
        await reindex_product(session, draft)  # nothing left to remove: none
        await session.commit()

    _run(settings, work)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT version FROM catalog_search_state")).scalar_one() == version + 1
        assert conn.execute(text("SELECT count(*) FROM catalog_search_change")).scalar_one() == 31
    assert search.KEPT_CHANGES > 1000
