"""Catalog search benchmark: p95 of ``marketplace.catalog.search.search_products`` over 100,000 listed products,
for common and rare words, Chinese and English, with exact facet counts, on SQLite and on PostgreSQL.

Usage (from the repository root)::

    .venv/bin/python bench/catalog/bench.py                     # SQLite and PostgreSQL, 100,000 products
    .venv/bin/python bench/catalog/bench.py --db sqlite         # SQLite only
    .venv/bin/python bench/catalog/bench.py --products 5000 --runs 20   # a quick check that it works

PostgreSQL runs inside ``deploy/with_services.py``; without ``MARKET_TEST_POSTGRES_URL`` the script runs itself
again through it. Progress goes to stderr; the results table (Markdown) to stdout. See README.md.
"""

# ruff: noqa: S311  (seeded random numbers make the same catalog on every run; nothing secret)

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import Engine, insert, text
from sqlalchemy.engine import make_url
from sqlmodel import SQLModel

from licensing.models import DeliveryMode, Grade, PlanType
from marketplace.catalog import search_index
from marketplace.catalog.models import Domain, ProductStatus
from marketplace.catalog.schemas import CatalogQuery, CatalogSort
from marketplace.catalog.search import product_name_terms, product_terms, reindex_product, search_in_database, search_products
from marketplace.core.db import Database, create_sync_engine
from marketplace.migrations import upgrade

REPO = Path(__file__).resolve().parents[2]
SEED = 20261203
T = SQLModel.metadata.tables

# --- a believable province's catalog ---------------------------------------------------------------------------

DEPARTMENTS = [
    ("health", "Health Commission", "卫生健康委员会", Domain.health),
    ("market", "Market Regulation Administration", "市场监督管理局", Domain.enterprise),
    ("ecology", "Ecology and Environment Bureau", "生态环境局", Domain.environment),
    ("transport", "Transport Bureau", "交通运输局", Domain.transport),
    ("resources", "Natural Resources Bureau", "自然资源局", Domain.property),
    ("public-security", "Public Security Bureau", "公安局", Domain.population),
    ("finance", "Local Financial Supervision Bureau", "地方金融监督管理局", Domain.finance),
    ("housing", "Housing and Urban-Rural Development Bureau", "住房和城乡建设局", Domain.property),
    ("tax", "Tax Service", "税务局", Domain.finance),
    ("education", "Education Bureau", "教育局", Domain.other),
    ("civil", "Civil Affairs Bureau", "民政局", Domain.population),
    ("water", "Water Resources Bureau", "水利局", Domain.environment),
]
TOPICS: dict[Domain, list[tuple[str, str]]] = {
    Domain.health: [
        ("outpatient visits", "门诊就诊"),
        ("hospital beds", "医院床位"),
        ("vaccination", "疫苗接种"),
        ("inpatient admissions", "住院"),
        ("pharmacy sales", "药品销售"),
        ("clinic capacity", "诊所"),
    ],
    Domain.enterprise: [
        ("business registrations", "企业登记"),
        ("enterprise credit", "企业信用"),
        ("administrative penalties", "行政处罚"),
        ("trademark filings", "商标注册"),
        ("product quality inspections", "产品质量抽检"),
    ],
    Domain.environment: [
        ("air quality", "空气质量"),
        ("water quality", "水质"),
        ("noise levels", "噪声"),
        ("pollution sources", "污染源"),
        ("river levels", "河道水位"),
        ("rainfall", "降雨量"),
    ],
    Domain.transport: [
        ("bus ridership", "公交客流"),
        ("taxi trips", "出租车行程"),
        ("road congestion", "道路拥堵"),
        ("parking occupancy", "停车位"),
        ("freight flows", "货运流量"),
    ],
    Domain.property: [
        ("land transactions", "土地交易"),
        ("housing prices", "房价"),
        ("building permits", "施工许可"),
        ("property registrations", "不动产登记"),
    ],
    Domain.population: [
        ("resident population", "常住人口"),
        ("household registrations", "户籍登记"),
        ("elderly care", "养老服务"),
        ("marriage registrations", "婚姻登记"),
    ],
    Domain.finance: [
        ("tax payments", "纳税"),
        ("invoice volumes", "发票"),
        ("small business loans", "小微企业贷款"),
        ("social insurance contributions", "社会保险缴费"),
    ],
    Domain.other: [("school enrolment", "学校招生"), ("teacher staffing", "教师配置"), ("library visits", "图书馆")],
}
MEASURES = [
    ("statistics", "统计"),
    ("monitoring", "监测"),
    ("records", "记录"),
    ("index", "指数"),
    ("summary", "汇总"),
    ("forecast", "预测"),
    ("survey", "调查"),
    ("ranking", "排名"),
]
REGIONS = [
    ("Haidian", "海淀"),
    ("Chaoyang", "朝阳"),
    ("Dongcheng", "东城"),
    ("Xicheng", "西城"),
    ("Fengtai", "丰台"),
    ("Shijingshan", "石景山"),
    ("Tongzhou", "通州"),
    ("Shunyi", "顺义"),
    ("Changping", "昌平"),
    ("Daxing", "大兴"),
    ("Fangshan", "房山"),
    ("Mentougou", "门头沟"),
    ("Huairou", "怀柔"),
    ("Pinggu", "平谷"),
    ("Miyun", "密云"),
    ("Yanqing", "延庆"),
]
FREQUENCIES = [("daily", "每日"), ("weekly", "每周"), ("monthly", "每月"), ("quarterly", "每季度"), ("annual", "年度")]
#: Rare words: each product's description names one of these sites with a small probability.
RARE = [
    ("wetland", "湿地"),
    ("harbour", "港口"),
    ("tunnel", "隧道"),
    ("observatory", "天文台"),
    ("reservoir", "水库"),
    ("orchard", "果园"),
    ("glacier", "冰川"),
    ("lighthouse", "灯塔"),
    ("vineyard", "葡萄园"),
    ("monastery", "寺院"),
]
RARE_PROBABILITY = 0.002
OPERATORS = [
    ("Shuzhi Data Operations", "数智数据运营"),
    ("Huaxin Analytics", "华信分析"),
    ("Jinghua Digital", "京华数字"),
    ("Yunlian Data", "云联数据"),
    ("Zhongke Insight", "中科洞察"),
    ("Tianyuan Information", "天元信息"),
    ("Hengtong Data Services", "恒通数据服务"),
    ("Boyuan Technology", "博远科技"),
]
PLAN_MIXES = [
    (PlanType.monthly,),
    (PlanType.free, PlanType.monthly),
    (PlanType.metered,),
    (PlanType.one_off,),
    (PlanType.free, PlanType.metered),
    (PlanType.monthly, PlanType.metered),
    (PlanType.one_off, PlanType.monthly),
]


@dataclass
class Catalog:
    products: list[dict[str, Any]]
    plans: list[dict[str, Any]]
    documents: list[dict[str, Any]]
    setup: dict[str, list[dict[str, Any]]]


def _setup_rows(rng: random.Random) -> tuple[dict[str, list[dict[str, Any]]], list[dict[str, Any]]]:
    now = datetime.now(UTC)
    owner = {"id": uuid.uuid4(), "name": "Provincial Data Authority", "name_zh": "省数据局", "kind": "owner", "created_at": now}
    orgs = [owner]
    operators = [{"id": uuid.uuid4(), "name": n, "name_zh": z, "kind": "operator", "created_at": now} for n, z in OPERATORS]
    orgs += operators
    departments, resources, licences, covered = [], [], [], []
    for code, name, name_zh, domain in DEPARTMENTS:
        dept = {
            "id": uuid.uuid4(),
            "owner_org_id": owner["id"],
            "code": code,
            "name": name,
            "name_zh": name_zh,
            "created_at": now,
        }
        departments.append(dept)
        for grade in rng.sample([Grade.L1, Grade.L2, Grade.L3], 2):
            resources.append(
                {
                    "id": uuid.uuid4(),
                    "owner_org_id": owner["id"],
                    "department_id": dept["id"],
                    "code": f"{code}-{grade.value.lower()}",
                    "title": f"{name} {grade.value}",
                    "title_zh": f"{name_zh}{grade.value}",
                    "description": "",
                    "description_zh": "",
                    "grade": grade.value,
                    "update_frequency": "monthly",
                    "fields_json": "[]",
                    "current_version": 0,
                    "created_at": now,
                    "updated_at": now,
                    "_domain": domain,
                    "_dept": dept,
                }
            )
    for i, operator in enumerate(operators):
        licence = {
            "id": uuid.uuid4(),
            "number": f"LIC-BENCH-{i:04d}",
            "owner_org_id": owner["id"],
            "operator_id": operator["id"],
            "status": "granted",
            "version": 1,
            "territory": "Province",
            "starts_on": date(2026, 1, 1),
            "ends_on": date(2030, 12, 31),
            "purposes_json": "[]",
            "modes_json": '["api", "file", "sandbox"]',
            "price_caps_json": "{}",
            "volume_caps_json": "{}",
            "reductions_json": "{}",
            "min_k": 5,
            "fee_rate": "0.10",
            "created_at": now,
            "updated_at": now,
        }
        licences.append(licence)
        for resource in rng.sample(resources, 6):
            covered.append((licence, resource))
    setup = {
        "organisation": orgs,
        "department": departments,
        "data_resource": [{k: v for k, v in r.items() if not k.startswith("_")} for r in resources],
        "licence": licences,
        "licence_resource": [{"licence_id": lic["id"], "resource_id": res["id"]} for lic, res in covered],
    }
    pairs = [{"licence": lic, "resource": res} for lic, res in covered]
    return setup, pairs


def _product(
    rng: random.Random, n: int, pair: dict[str, Any], listed_at: datetime
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    resource = pair["resource"]
    domain: Domain = resource["_domain"]
    dept = resource["_dept"]
    topic, topic_zh = rng.choice(TOPICS[domain])
    measure, measure_zh = rng.choice(MEASURES)
    region, region_zh = rng.choice(REGIONS)
    freq, freq_zh = rng.choice(FREQUENCIES)
    data_en, data_zh = ("data", "数据") if rng.random() < 0.5 else ("figures", "信息")
    name = f"{region} {topic} {measure}"
    name_zh = f"{region_zh}{topic_zh}{measure_zh}"
    site = rng.choice(RARE) if rng.random() < RARE_PROBABILITY * len(RARE) else None
    where_en = f" near the {site[0]}" if site else ""
    where_zh = f"，覆盖{site[1]}周边" if site else ""  # noqa: RUF001 (Chinese text uses full-width punctuation)
    mode = rng.choice([DeliveryMode.api, DeliveryMode.api, DeliveryMode.file, DeliveryMode.sandbox])
    if resource["grade"] == "L3":
        mode = DeliveryMode.sandbox
    now = listed_at
    product = {
        "id": uuid.uuid4(),
        "operator_id": pair["licence"]["operator_id"],
        "licence_id": pair["licence"]["id"],
        "resource_id": resource["id"],
        "department_id": dept["id"],
        "grade": resource["grade"],
        "status": ProductStatus.listed.value,
        "mode": mode.value,
        "domain": domain.value,
        "name": name,
        "name_zh": name_zh,
        "summary": f"{freq.capitalize()} {topic} {measure} for {region}{where_en}.",
        "summary_zh": f"{region_zh}{freq_zh}{topic_zh}{measure_zh}{where_zh}。",
        "description": f"{freq.capitalize()} {topic} {data_en} for the {region} district{where_en}, provided by the {dept['name']} "
        f"and de-identified before delivery. Product {n}.",
        "description_zh": f"{region_zh}区{freq_zh}{topic_zh}{data_zh}{where_zh}，由{dept['name_zh']}提供，交付前已去标识化。",  # noqa: RUF001
        "documentation": "",
        "rules_json": "[]",
        "purposes_json": '["market_analysis"]',
        "sample_json": "[]",
        "subscriber_count": 0,
        "created_at": now,
        "updated_at": now,
        "listed_at": now,
    }
    plans = []
    for position, plan_type in enumerate(rng.choice(PLAN_MIXES)):
        price = "0.00" if plan_type is PlanType.free else f"{rng.randint(1, 400) * 5}.00"
        plans.append(
            {
                "id": uuid.uuid4(),
                "product_id": product["id"],
                "name": plan_type.value,
                "name_zh": plan_type.value,
                "type": plan_type.value,
                "currency": "CNY",
                "price": price,
                "free_calls": 0,
                "per_call_price": "0.05" if plan_type is PlanType.metered else None,
                "monthly_cap": None,
                "quota_calls": None,
                "quota_rows": None,
                "term_days": 365,
                "access": "self_serve",
                "visibility": "public",
                "active": True,
                "position": position,
                "created_at": now,
            }
        )
    product["price_from"] = f"{min(float(p['price']) for p in plans):.2f}"
    return product, plans


def _document(product: dict[str, Any], plans: Sequence[dict[str, Any]], department: Any, operator: Any) -> dict[str, Any]:
    from marketplace.catalog.models import Product
    from marketplace.catalog.services.common import PLAN_TYPE_ORDER, cents

    model = Product(**product)
    types = {p["type"] for p in plans}
    ordered = [t.value for t in PLAN_TYPE_ORDER if t.value in types]
    return {
        "product_id": product["id"],
        "operator_id": product["operator_id"],
        "department_id": product["department_id"],
        "domain": product["domain"],
        "mode": product["mode"],
        "grade": product["grade"],
        "plan_types": " " + " ".join(ordered) + " ",
        "price_cents": cents(product["price_from"]),
        "listed_at": product["listed_at"],
        "sort_name": product["name"].lower()[:200],
        "terms": product_terms(model, department=department, operator=operator),
        "name_terms": product_name_terms(model),
    }


def _documents_chunk(
    args: tuple[list[dict[str, Any]], list[list[dict[str, Any]]], dict[Any, Any], dict[Any, Any]],
) -> list[dict[str, Any]]:
    from licensing.models import Department
    from marketplace.core.identity.models import Organisation

    products, plans, departments, operators = args
    depts = {k: Department(**v) for k, v in departments.items()}
    ops = {k: Organisation(**v) for k, v in operators.items()}
    return [_document(p, pl, depts[p["department_id"]], ops[p["operator_id"]]) for p, pl in zip(products, plans, strict=True)]


def build_catalog(count: int) -> Catalog:
    """``count`` listed products (fixed seed), their plans and their search documents (words cut by jieba, on 2 cores)."""
    rng = random.Random(SEED)
    setup, pairs = _setup_rows(rng)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    products, plans_of = [], []
    for n in range(count):
        product, plans = _product(rng, n, rng.choice(pairs), start + timedelta(seconds=n * 60))
        products.append(product)
        plans_of.append(plans)
    departments = {d["id"]: d for d in setup["department"]}
    operators = {o["id"]: o for o in setup["organisation"] if o["kind"] == "operator"}
    chunk = 5000
    jobs = [(products[i : i + chunk], plans_of[i : i + chunk], departments, operators) for i in range(0, count, chunk)]
    with ProcessPoolExecutor(max_workers=2) as pool:
        documents = [d for part in pool.map(_documents_chunk, jobs) for d in part]
    return Catalog(products, [p for ps in plans_of for p in ps], documents, setup)


# --- loading -----------------------------------------------------------------------------------------------------


def load(engine: Engine, catalog: Catalog) -> None:
    """Bulk insert through SQLAlchemy Core (the models' own column types); the triggers fill SQLite's FTS5 index."""
    with engine.begin() as conn:
        for table in ("organisation", "department", "data_resource", "licence", "licence_resource"):
            conn.execute(insert(T[table]), catalog.setup[table])
        for rows, table in ((catalog.products, "product"), (catalog.plans, "plan"), (catalog.documents, "product_search")):
            for i in range(0, len(rows), 5000):
                conn.execute(insert(T[table]), rows[i : i + 5000])
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        if engine.dialect.name == "sqlite":
            conn.execute(text("INSERT INTO product_fts(product_fts) VALUES ('optimize')"))
            conn.execute(text("ANALYZE"))
        else:
            conn.execute(text("VACUUM ANALYZE"))  # what autovacuum does soon after a bulk load anyway


async def check_loader(url: str, catalog: Catalog, rng: random.Random) -> None:
    """The bulk loader wrote what ``reindex_product`` writes: re-index 50 products through the service and compare."""
    from sqlmodel import select

    from marketplace.catalog.models import Product, ProductSearchDocument

    db = Database(url)
    try:
        async with db.session() as session:
            for product in rng.sample(catalog.products, 50):
                before = (
                    await session.exec(select(ProductSearchDocument).where(ProductSearchDocument.product_id == product["id"]))
                ).one()
                before_row = before.model_dump(exclude={"id"})
                loaded = await session.get(Product, product["id"])
                assert loaded is not None
                await reindex_product(session, loaded)
                after = (
                    await session.exec(select(ProductSearchDocument).where(ProductSearchDocument.product_id == product["id"]))
                ).one()
                assert after.model_dump(exclude={"id"}) == before_row, (before_row, after.model_dump())
            await session.rollback()
    finally:
        await db.dispose()


# --- timing -------------------------------------------------------------------------------------------------------

QUERIES: list[tuple[str, dict[str, Any]]] = [
    ("common zh 数据", {"q": "数据"}),
    ("common en data", {"q": "data"}),
    ("common zh 统计 + mode=api", {"q": "统计", "mode": DeliveryMode.api}),
    ("medium zh 门诊就诊", {"q": "门诊就诊"}),
    ("medium en taxi trips", {"q": "taxi trips"}),
    ("rare zh 湿地", {"q": "湿地"}),
    ("rare en glacier", {"q": "glacier"}),
    ("rare en prefix lighth", {"q": "lighth"}),
    ("no words, browse all", {}),
    ("no words, domain=health", {"domain": Domain.health}),
    ("common en data, sort=price, page 5", {"q": "data", "sort": CatalogSort.price, "page": 5}),
    ("common zh 数据, sort=name", {"q": "数据", "sort": CatalogSort.name}),
]


def percentile(samples: Sequence[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[max(0, min(len(ordered) - 1, round(fraction * len(ordered) + 0.5) - 1))]


async def check_against_database(url: str) -> None:
    """Every benchmark query (and a few pages and sorts more) gives the same page, total and facet counts from the
    in-memory index as from SQL alone."""
    db = Database(url)
    try:
        async with db.session() as session:
            extra = [
                {"q": "data", "page": 40, "sort": CatalogSort.newest},
                {"q": "数据 统计", "sort": CatalogSort.price, "page": 3},
                {"q": "glacier data", "sort": CatalogSort.name},
                {"q": "hosp", "grade": Grade.L2},
            ]
            for params in [p for _, p in QUERIES] + extra:
                query = CatalogQuery(**params)
                fast, slow = await search_products(session, query), await search_in_database(session, query)
                assert fast.total == slow.total, (params, fast.total, slow.total)
                assert [i.id for i in fast.items] == [i.id for i in slow.items], params
                assert fast.facets == slow.facets, params
            await session.rollback()
    finally:
        await db.dispose()
    say("  the index's answers equal the database's for every query")


async def time_index(url: str) -> dict[str, float]:
    """The in-memory index: cold build (read + build), its memory, and a search right after a change (applied
    incrementally), p50/p95 over 20 changes."""
    import tracemalloc

    search_index.forget_indexes()
    db = Database(url)
    figures: dict[str, float] = {}
    try:
        async with db.session() as session:
            started = time.perf_counter()
            index = await search_index.current_index(session)
            figures["build_s"] = time.perf_counter() - started
            async with db.engine.connect() as conn:
                rows = await search_index._rows(conn)
            started = time.perf_counter()
            search_index.CatalogIndex.build(index.epoch, index.version, rows)
            figures["build_python_s"] = time.perf_counter() - started
            tracemalloc.start()
            again = search_index.CatalogIndex.build(index.epoch, index.version, rows)
            figures["memory_mb"] = tracemalloc.get_traced_memory()[0] / 1e6
            tracemalloc.stop()
            del again, rows
            figures["frequent_words"] = len(index.words)
            from sqlmodel import select

            from marketplace.catalog.models import Product, ProductStatus

            ids = (await session.exec(select(Product.id).where(Product.status == ProductStatus.listed).limit(20))).all()
            samples = []
            for product_id in ids:
                product = await session.get(Product, product_id)
                assert product is not None
                product.name_zh = product.name_zh + "新"
                session.add(product)
                await reindex_product(session, product)
                await session.commit()
                started = time.perf_counter()
                await search_products(session, CatalogQuery(q="数据"))
                samples.append((time.perf_counter() - started) * 1000)
                await session.rollback()
            figures["after_change_p50_ms"] = statistics.median(samples)
            figures["after_change_p95_ms"] = percentile(samples, 0.95)
    finally:
        await db.dispose()
    say(
        f"  index: cold build {figures['build_s']:.2f} s (of which Python {figures['build_python_s']:.2f} s), "
        f"{figures['memory_mb']:.0f} MB, {figures['frequent_words']:.0f} words with bitmaps; a search right after a "
        f"change p50 {figures['after_change_p50_ms']:.1f} ms, p95 {figures['after_change_p95_ms']:.1f} ms"
    )
    return figures


async def time_queries(url: str, runs: int) -> list[tuple[str, int, float, float, float]]:
    db = Database(url)
    results = []
    try:
        async with db.session() as session:
            for label, params in QUERIES:
                query = CatalogQuery(**params)
                page = await search_products(session, query)  # warm: jieba, caches, plans
                for _ in range(3):
                    await search_products(session, query)
                samples = []
                for _ in range(runs):
                    started = time.perf_counter()
                    await search_products(session, query)
                    samples.append((time.perf_counter() - started) * 1000)
                    await session.rollback()
                facets = sum(len(v) for v in page.facets.model_dump().values())
                assert facets > 0 or page.total == 0
                results.append((label, page.total, statistics.median(samples), percentile(samples, 0.95), max(samples)))
                say(f"  {label}: {page.total:,} matches, p50 {results[-1][2]:.1f} ms, p95 {results[-1][3]:.1f} ms")
    finally:
        await db.dispose()
    return results


def say(message: str) -> None:
    print(f"catalog-bench: {message}", file=sys.stderr, flush=True)


def run_backend(label: str, url: str, catalog: Catalog, runs: int) -> list[tuple[str, int, float, float, float]]:
    upgrade(url)
    engine = create_sync_engine(url)
    try:
        started = time.perf_counter()
        load(engine, catalog)
        say(f"{label}: loaded {len(catalog.products):,} products in {time.perf_counter() - started:.0f} s")
    finally:
        engine.dispose()
    asyncio.run(check_loader(url, catalog, random.Random(SEED)))
    INDEX_FIGURES[label] = asyncio.run(time_index(url))
    asyncio.run(check_against_database(url))
    return asyncio.run(time_queries(url, runs))


INDEX_FIGURES: dict[str, dict[str, float]] = {}


def keep_sqlite(path: Path, count: int) -> None:
    """Build a SQLite catalog at ``path`` and keep it (for profiling)."""
    catalog = build_catalog(count)
    url = f"sqlite:///{path}"
    upgrade(url)
    engine = create_sync_engine(url)
    load(engine, catalog)
    engine.dispose()


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--db", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--products", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=100, help="timed runs of each query")
    options = parser.parse_args(argv)
    admin_url = os.environ.get("MARKET_TEST_POSTGRES_URL")
    if options.db != "sqlite" and not admin_url:
        say("no MARKET_TEST_POSTGRES_URL: running again inside deploy/with_services.py")
        command = [sys.executable, str(REPO / "deploy" / "with_services.py"), "--no-redis", "--"]
        os.execv(sys.executable, [*command, sys.executable, str(Path(__file__).resolve()), *argv])  # noqa: S606
    started = time.perf_counter()
    say(f"generating {options.products:,} products (seed {SEED}) and cutting their words with jieba")
    catalog = build_catalog(options.products)
    say(f"generated in {time.perf_counter() - started:.0f} s")
    results: dict[str, list[tuple[str, int, float, float, float]]] = {}
    workdir = Path(tempfile.mkdtemp(prefix="catalog-bench-"))
    try:
        if options.db in ("sqlite", "both"):
            results["SQLite"] = run_backend("SQLite", f"sqlite:///{workdir / 'catalog.db'}", catalog, options.runs)
        if options.db in ("postgres", "both"):
            admin = make_url(str(admin_url))
            name = f"catalog_bench_{uuid.uuid4().hex[:8]}"
            dsn = admin.set(drivername="postgresql").render_as_string(hide_password=False)
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{name}"')
            try:
                url = admin.set(database=name).render_as_string(hide_password=False)
                results["PostgreSQL"] = run_backend("PostgreSQL", url, catalog, options.runs)
            finally:
                with psycopg.connect(dsn, autocommit=True) as conn:
                    conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(
        f"Catalog search over {options.products:,} listed products, {options.runs} timed runs per query, {stamp}, "
        f"load average {', '.join(f'{v:.2f}' for v in os.getloadavg())}\n"
    )
    backends = list(results)
    print("| query | matches | " + " | ".join(f"{b} p50 | {b} p95 | {b} max" for b in backends) + " |")
    print("|---|---:|" + "---:|---:|---:|" * len(backends))
    for i, (label, total, *_rest) in enumerate(next(iter(results.values()))):
        cells = []
        for backend in backends:
            _l, _t, p50, p95, worst = results[backend][i]
            cells += [f"{p50:.1f} ms", f"**{p95:.1f} ms**", f"{worst:.1f} ms"]
        print(f"| {label} | {total:,} | " + " | ".join(cells) + " |")
    print()
    for backend, figures in INDEX_FIGURES.items():
        print(
            f"- {backend} index: cold build {figures['build_s']:.2f} s (Python part {figures['build_python_s']:.2f} s), "
            f"{figures['memory_mb']:.0f} MB, {figures['frequent_words']:.0f} words with bitmaps; "
            f"search right after a change: p50 {figures['after_change_p50_ms']:.1f} ms, "
            f"p95 {figures['after_change_p95_ms']:.1f} ms"
        )
    print(json.dumps({b: [{"query": r[0], "matches": r[1], "p95_ms": round(r[3], 2)} for r in rs] for b, rs in results.items()}))
    print(json.dumps({"index": INDEX_FIGURES}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
