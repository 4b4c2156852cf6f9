"""The catalog part of the demo province: eleven products of the two operators (eight listed across api, file and
sandbox; one waiting for review, one rejected back to draft, one delisted when its licence was suspended), plans of
every kind, three qualified buyers with subscriptions (one through a public-welfare proof, one at the research
reduction, one private plan), and six months of metered deliveries.

Products, reviews, qualifications and subscriptions go through the services, so the ledger holds every step.
Paid subscriptions are activated as the operator confirming a bank transfer would (billing brings payments in a
later issue). The six months of history are generated: subscriptions are dated back to when they began, and the
deliveries of those months are written with their own dates (each in the ledger, with group commit).
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from licensing.models import DeliveryMode, Licence, PlanType, Purpose
from licensing.schemas import MaskingRule
from licensing.services import licences, reviews
from marketplace.catalog.models import Domain, PlanAccess, PlanVisibility, Product
from marketplace.catalog.schemas import PlanCreate, ProductCreate
from marketplace.catalog.services import plans as plan_services
from marketplace.catalog.services import products as product_services
from marketplace.core.events import Actor
from marketplace.core.principal import Principal
from marketplace.core.settings import Settings
from marketplace.delivery.services.metering import MeteredDelivery, write_deliveries
from marketplace.demo_billing import PaidSubscription, pay_first_invoice, seed_billing
from marketplace.subscriptions import services as subscriptions
from marketplace.subscriptions.models import Entitlement, Subscription, SubscriptionStatus
from marketplace.subscriptions.schemas import QualificationSubmit, SubscriptionCreate
from marketplace.subscriptions.services.qualifications import credit_code_check_character

HISTORY_DAYS = 180
#: A one-page PDF standing in for a proof of purpose (a letter of the research ethics board, say).
PROOF_PDF = (
    b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj 2 0 obj<</Type/Pages/Kids[3 0 R]/Count 1>>endobj "
    b"3 0 obj<</Type/Page/Parent 2 0 R/MediaBox[0 0 595 842]>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n"
)


def _rules(keep: list[str], **special: dict[str, Any]) -> list[MaskingRule]:
    rules = [{"field": name, "action": "keep"} for name in keep] + [{"field": name, **rule} for name, rule in special.items()]
    return [MaskingRule.model_validate(r) for r in rules]


ENTERPRISE = [
    "credit_code",
    "company_name",
    "district",
    "industry",
    "registered_capital",
    "established_on",
    "status",
    "employees",
]
AIR = ["station_id", "district", "measured_at", "pm25", "pm10", "no2", "o3", "aqi"]
TRAFFIC = ["sensor_id", "road", "district", "hour", "vehicles", "avg_speed_kmh", "congestion_index"]
PROPERTY = _rules(
    ["transaction_id", "district", "area_sqm", "total_price", "price_per_sqm", "deal_date"],
    buyer_id_number={"action": "pseudonymise"},
    buyer_age={"action": "generalise", "method": "bucket", "size": 20},
)
VISITS = _rules(
    ["sex", "district", "visit_date", "clinic", "diagnosis_code", "cost"],
    id_number={"action": "drop"},
    patient_name={"action": "drop"},
    phone={"action": "pseudonymise"},
    birth_date={"action": "generalise", "method": "year"},
    postcode={"action": "generalise", "method": "suppress"},
)


@dataclass(frozen=True)
class DemoProduct:
    key: str
    operator: str
    licence: str
    resource: str
    mode: DeliveryMode
    domain: Domain
    name: str
    name_zh: str
    summary: str
    summary_zh: str
    description: str
    description_zh: str
    rules: list[MaskingRule]
    purposes: list[Purpose]
    plans: list[dict[str, Any]]
    outcome: str = "approve"  # approve | pending | reject


def _plan(name: str, name_zh: str, type: PlanType, price: str = "0.00", **terms: Any) -> dict[str, Any]:
    return {"name": name, "name_zh": name_zh, "type": type, "price": price, **terms}


PRODUCTS: tuple[DemoProduct, ...] = (
    DemoProduct(
        "credit-api",
        "harbour",
        "harbour",
        "enterprise-registry",
        DeliveryMode.api,
        Domain.enterprise,
        "Enterprise credit profile API",
        "企业信用画像接口",
        "Registration, capital, status and size of every enterprise, by credit code.",
        "按统一社会信用代码查询企业登记、注册资本、经营状态和规模。",
        "Daily updated registry facts for credit assessment and market analysis: filter by district, industry or status, "
        "page through with a cursor, or fetch one enterprise by its credit code.",
        "每日更新的企业登记信息，用于信用评估和市场分析：可按区县、行业、经营状态筛选，游标分页，或按信用代码查询单个企业。",
        _rules(ENTERPRISE),
        [Purpose.credit_assessment, Purpose.market_analysis],
        [
            _plan("Standard", "标准版", PlanType.monthly, "1800.00", quota_calls=50_000),
            _plan(
                "Pay per call",
                "按次计费",
                PlanType.metered,
                "200.00",
                free_calls=1000,
                per_call_price="0.05",
                monthly_cap="3000.00",
            ),
        ],
    ),
    DemoProduct(
        "registry-file",
        "harbour",
        "harbour",
        "enterprise-registry",
        DeliveryMode.file,
        Domain.enterprise,
        "Enterprise registry bulk file",
        "企业登记全量文件",
        "The whole enterprise registry as CSV or Parquet, fingerprinted for your subscription.",
        "企业登记全量数据，CSV 或 Parquet 格式，按订阅嵌入数字指纹。",
        "A complete extract for analysts who work offline. Each file carries a fingerprint of your subscription.",
        "适合离线分析的完整数据提取。每个文件都带有您订阅的数字指纹。",
        _rules(ENTERPRISE),
        [Purpose.market_analysis, Purpose.public_welfare],
        [
            _plan("Annual extract", "年度提取", PlanType.one_off, "8000.00", quota_calls=24, term_days=365),
            _plan("Public welfare", "公益用途", PlanType.free, access=PlanAccess.on_request, quota_calls=4),
        ],
    ),
    DemoProduct(
        "traffic-file",
        "harbour",
        "harbour",
        "traffic-flow",
        DeliveryMode.file,
        Domain.transport,
        "Traffic flow hourly file",
        "交通流量小时文件",
        "Hourly vehicle counts, speeds and congestion for every road sensor.",
        "每个道路传感器每小时的车流量、车速和拥堵指数。",
        "For logistics planning: a quarter of hourly sensor readings per export.",
        "用于物流规划：每次导出一个季度的小时级传感器数据。",
        _rules(TRAFFIC),
        [Purpose.logistics_planning, Purpose.public_welfare],
        [
            _plan("Quarter extract", "季度提取", PlanType.one_off, "6000.00", quota_calls=12, term_days=90),
            _plan("Public welfare", "公益用途", PlanType.free, quota_calls=4),
        ],
    ),
    DemoProduct(
        "traffic-api",
        "harbour",
        "harbour",
        "traffic-flow",
        DeliveryMode.api,
        Domain.transport,
        "Traffic flow API",
        "交通流量接口",
        "Live-ish hourly traffic by road and district, metered per call.",
        "按道路和区县查询小时级交通流量，按次计费。",
        "Route planners query the latest hours by district or road.",
        "路线规划系统可按区县或道路查询最近时段的交通状况。",
        _rules(TRAFFIC),
        [Purpose.logistics_planning],
        [_plan("Metered", "按量计费", PlanType.metered, "0.00", free_calls=500, per_call_price="0.02", monthly_cap="1500.00")],
    ),
    DemoProduct(
        "property-api",
        "harbour",
        "harbour",
        "property-transactions",
        DeliveryMode.api,
        Domain.property,
        "Property market by district",
        "分区房产交易行情",
        "Transactions with prices per square metre; buyers pseudonymised, ages in 20-year bands.",
        "房产成交明细及单价；买方假名化，年龄按 20 岁分段。",
        "For market analysis of housing prices by district and month.",
        "用于按区县和月份分析房价走势。",
        PROPERTY,
        [Purpose.market_analysis],
        [_plan("Analyst", "分析师版", PlanType.monthly, "2500.00")],
        outcome="pending",
    ),
    DemoProduct(
        "property-sandbox",
        "harbour",
        "harbour",
        "property-transactions",
        DeliveryMode.sandbox,
        Domain.property,
        "Property prices sandbox",
        "房价分析沙箱",
        "Aggregate SQL over property transactions: raw rows never leave the platform.",
        "对房产交易数据执行聚合 SQL：原始数据不出域。",
        "Run GROUP BY queries with COUNT, AVG, MEDIAN over the table data; groups under k are suppressed.",
        "可对 data 表执行带 COUNT、AVG、MEDIAN 的分组查询；小于 k 的分组将被抑制。",
        PROPERTY,
        [Purpose.market_analysis, Purpose.credit_assessment],
        [
            _plan(
                "Bank research seat",
                "银行研究席位",
                PlanType.monthly,
                "3200.00",
                visibility=PlanVisibility.private,
                buyers=["eastgate"],
            )
        ],
    ),
    DemoProduct(
        "air-api",
        "harbour",
        "harbour",
        "air-quality",
        DeliveryMode.api,
        Domain.environment,
        "Air quality readings API",
        "空气质量监测接口",
        "PM2.5, PM10, NO2, O3 and AQI from every monitoring station.",
        "各监测站的 PM2.5、PM10、二氧化氮、臭氧和空气质量指数。",
        "Three-hourly readings for environmental dashboards and public-welfare apps.",
        "每三小时更新，适用于环境看板和公益应用。",
        _rules(AIR),
        [Purpose.public_welfare, Purpose.market_analysis],
        [
            _plan("Community", "社区版", PlanType.free, quota_calls=3000),
            _plan("Business", "商业版", PlanType.monthly, "300.00"),
        ],
    ),
    DemoProduct(
        "visits-sandbox",
        "summit",
        "summit",
        "outpatient-visits",
        DeliveryMode.sandbox,
        Domain.health,
        "Outpatient visits research sandbox",
        "门诊就诊统计研究沙箱",
        "Aggregate SQL over outpatient visits (L3): identifiers removed, k-anonymity enforced.",
        "门诊就诊数据（三级）聚合查询：已去除标识符，强制 k-匿名。",
        "For academic research and healthcare management: visits, diagnoses and costs by district, clinic and year of birth.",
        "用于学术研究和医疗管理：按区县、诊所和出生年份统计就诊、诊断和费用。",
        VISITS,
        [Purpose.academic_research, Purpose.healthcare_management],
        [_plan("Research seat", "研究席位", PlanType.monthly, "6000.00", quota_calls=2000)],
    ),
    DemoProduct(
        "air-sandbox",
        "summit",
        "summit",
        "air-quality",
        DeliveryMode.sandbox,
        Domain.environment,
        "Air pollution trends sandbox",
        "大气污染趋势沙箱",
        "Aggregate queries over station readings for monitoring programmes.",
        "面向监测项目的监测站数据聚合查询。",
        "Seasonal and district trends of PM2.5 and AQI.",
        "PM2.5 和空气质量指数的季节与区县趋势。",
        _rules(AIR),
        [Purpose.environmental_monitoring, Purpose.public_welfare],
        [_plan("Metered", "按量计费", PlanType.metered, "100.00", free_calls=200, per_call_price="0.50", monthly_cap="2000.00")],
    ),
    DemoProduct(
        "air-alerts",
        "summit",
        "summit",
        "air-quality",
        DeliveryMode.api,
        Domain.environment,
        "Air quality alerts feed",
        "空气质量预警推送",
        "Alerts when a station's AQI crosses a threshold.",
        "监测站空气质量指数超过阈值时推送预警。",
        "Promises real-time alerts.",
        "承诺实时预警。",
        _rules(["station_id", "district", "measured_at", "pm25", "pm10", "aqi"]),
        [Purpose.environmental_monitoring],
        [_plan("Alerts", "预警版", PlanType.monthly, "900.00")],
        outcome="reject",
    ),
    DemoProduct(
        "congestion-api",
        "summit",
        "summit_traffic",
        "traffic-flow",
        DeliveryMode.api,
        Domain.transport,
        "Congestion index API",
        "拥堵指数接口",
        "Congestion index by road and hour for urban planning.",
        "按道路和时段提供拥堵指数，用于城市规划。",
        "Per-call access to the congestion index.",
        "按次调用拥堵指数。",
        _rules(["road", "district", "hour", "congestion_index"]),
        [Purpose.urban_planning],
        [_plan("Per call", "按次", PlanType.metered, "0.00", free_calls=100, per_call_price="0.10", monthly_cap="800.00")],
    ),
)

#: (buyer, product, plan index, purpose, days ago it began, calls a day on average)
SUBSCRIPTIONS: tuple[tuple[str, str, int, Purpose, int, int], ...] = (
    ("eastgate", "credit-api", 0, Purpose.credit_assessment, 175, 40),
    ("eastgate", "property-sandbox", 0, Purpose.market_analysis, 120, 6),
    ("eastgate", "registry-file", 0, Purpose.market_analysis, 150, 0),
    ("northwind", "traffic-api", 0, Purpose.logistics_planning, 170, 55),
    ("northwind", "traffic-file", 0, Purpose.logistics_planning, 160, 0),
    ("northwind", "air-api", 0, Purpose.public_welfare, 90, 12),
    ("lakeside", "visits-sandbox", 0, Purpose.academic_research, 140, 9),
    ("lakeside", "air-sandbox", 0, Purpose.environmental_monitoring, 100, 7),
)
QUALIFIED = {"eastgate": ("harbour",), "northwind": ("harbour",), "lakeside": ("summit", "harbour")}
INDUSTRIES = {"eastgate": "credit services", "northwind": "logistics", "lakeside": "health research"}


def credit_code(rng: random.Random) -> str:
    """A valid unified social credit code (check character computed)."""
    alphabet = "0123456789ABCDEFGHJKLMNPQRTUWXY"
    first17 = "91" + "".join(rng.choice("0123456789") for _ in range(6)) + "".join(rng.choice(alphabet) for _ in range(9))
    return first17 + credit_code_check_character(first17)


async def seed_catalog(
    session: AsyncSession, settings: Settings, people: dict[str, Principal], licensing: dict[str, Any], seed: int
) -> dict[str, Any]:
    """Products, reviews, qualifications, subscriptions and six months of deliveries (runs once, after licensing)."""
    rng = random.Random(seed + 5)  # noqa: S311 - the demo is deliberately reproducible
    reviewer, owner = people["reviewer"], people["authority"]
    resource_ids: dict[str, uuid.UUID] = licensing["resources"]
    licence_ids: dict[str, uuid.UUID] = licensing["licences"]
    products: dict[str, uuid.UUID] = {}
    plans: dict[str, list[uuid.UUID]] = {}
    for demo in PRODUCTS:
        operator = people[demo.operator]
        product = await product_services.create_product(
            session,
            operator,
            ProductCreate(
                licence_id=licence_ids[demo.licence],
                resource_id=resource_ids[demo.resource],
                mode=demo.mode,
                rules=demo.rules,
                purposes=demo.purposes,
                name=demo.name,
                name_zh=demo.name_zh,
                summary=demo.summary,
                summary_zh=demo.summary_zh,
                description=demo.description,
                description_zh=demo.description_zh,
                documentation=_documentation(demo),
                domain=demo.domain,
            ),
        )
        products[demo.key] = product.id
        plans[demo.key] = []
        for terms in demo.plans:
            terms = dict(terms)
            named = [people[b].org_id for b in terms.pop("buyers", [])]
            plan = await plan_services.add_plan(
                session, operator, product.id, PlanCreate.model_validate({**terms, "buyer_ids": named})
            )
            plans[demo.key].append(plan.id)
        submitted = await product_services.submit_product(session, operator, settings, product.id)
        assert submitted.review_id is not None
        if demo.outcome == "approve":
            await reviews.approve(
                session, reviewer, settings, submitted.review_id, "Checks passed; description, fields and prices reviewed"
            )
        elif demo.outcome == "reject":
            await reviews.reject(
                session,
                reviewer,
                submitted.review_id,
                "The description promises real-time alerts the three-hourly source cannot give",
            )

    for buyer, operators in QUALIFIED.items():
        for operator_key in operators:
            qualification = await subscriptions.submit_qualification(
                session,
                people[buyer],
                QualificationSubmit(
                    operator_id=people[operator_key].org_id,
                    business_licence_number=credit_code(rng),
                    industry=INDUSTRIES[buyer],
                    contact_name=people[buyer].display_name or "Contact",
                    contact_email=people[buyer].email or "contact@example.cn",
                    contact_phone="+86 571 8800 " + "".join(rng.choice("0123456789") for _ in range(4)),
                ),
            )
            await subscriptions.decide_qualification(
                session, people[operator_key], qualification.id, True, "Business licence verified"
            )
    # A qualification still waiting for the operator: the console has work.
    await subscriptions.submit_qualification(
        session,
        people["eastgate"],
        QualificationSubmit(
            operator_id=people["summit"].org_id,
            business_licence_number=credit_code(rng),
            industry=INDUSTRIES["eastgate"],
            contact_name=people["eastgate"].display_name or "Contact",
            contact_email=people["eastgate"].email or "contact@example.cn",
            contact_phone="+86 571 8800 1234",
        ),
    )

    agreement = subscriptions.current_agreement().version
    made: list[tuple[uuid.UUID, int, int]] = []
    paid: list[PaidSubscription] = []
    for buyer, product_key, plan_index, purpose, days_ago, calls_a_day in SUBSCRIPTIONS:
        demo = next(p for p in PRODUCTS if p.key == product_key)
        operator = people[demo.operator]
        record = await subscriptions.create_subscription(
            session,
            people[buyer],
            settings,
            SubscriptionCreate(
                plan_id=plans[product_key][plan_index],
                purpose=purpose,
                purpose_note=f"{INDUSTRIES[buyer].capitalize()}: {purpose.value.replace('_', ' ')}",
                agreement_version=agreement,
            ),
        )
        sub = record.subscription
        if sub.status is SubscriptionStatus.awaiting_approval:
            if subscriptions.proof_required(sub):
                await subscriptions.upload_proof(
                    session, people[buyer], settings, sub.id, filename="purpose-letter.pdf", content=PROOF_PDF
                )
            record = await subscriptions.decide_subscription(session, operator, sub.id, True, "Proof of purpose checked")
        if record.subscription.status is SubscriptionStatus.pending_payment:
            paid_at = datetime.now(UTC) - timedelta(days=days_ago)
            await pay_first_invoice(session, settings, people, sub.id, buyer, demo.operator, paid_at)
            paid.append(PaidSubscription(sub.id, buyer, demo.operator))
        made.append((sub.id, days_ago, calls_a_day))
    # A request waiting for the operator: public-welfare use of the registry file, on request, its proof uploaded.
    waiting = await subscriptions.create_subscription(
        session,
        people["northwind"],
        settings,
        SubscriptionCreate(
            plan_id=plans["registry-file"][1],
            purpose=Purpose.public_welfare,
            purpose_note="Road safety charity",
            agreement_version=agreement,
        ),
    )
    await subscriptions.upload_proof(
        session, people["northwind"], settings, waiting.subscription.id, filename="charity-registration.pdf", content=PROOF_PDF
    )

    await licences.suspend_licence(
        session,
        owner,
        licence_ids["summit_traffic"],
        "Volume cap exceeded three months running; suspended pending the operator's remediation plan",
    )
    deliveries = await _history(session, made, rng)
    billing = await seed_billing(session, settings, people, paid, seed)
    return {"products": len(products), "subscriptions": len(made), "deliveries": deliveries, "billing": billing}


def _documentation(demo: DemoProduct) -> str:
    if demo.mode is DeliveryMode.sandbox:
        return (
            'POST /data/v1/products/{product_id}/sandbox/query with {"sql": "SELECT district, count(*) AS n FROM data '
            'GROUP BY district"}. Only aggregate queries over the table data are accepted; groups smaller than the '
            "licence's k are suppressed."
        )
    if demo.mode is DeliveryMode.file:
        return (
            'POST /data/v1/products/{product_id}/exports with {"format": "parquet"} (or csv), then poll '
            "GET /data/v1/exports/{export_id} for the signed download link."
        )
    return (
        "GET /data/v1/products/{product_id}/rows?limit=100&filter=district:Riverside with a bearer token; follow "
        "next_cursor for the next page; Accept: text/csv for CSV."
    )


async def _history(session: AsyncSession, made: list[tuple[uuid.UUID, int, int]], rng: random.Random) -> int:
    """Date each subscription back to when it began and meter its deliveries since, day by day, as delivery's own
    metering writes them (delivery rows, monthly counters and ``delivery.recorded`` ledger events)."""
    now = datetime.now(UTC).replace(microsecond=0)
    total = 0
    for subscription_id, days_ago, calls_a_day in made:
        sub = await session.get(Subscription, subscription_id)
        assert sub is not None
        entitlement = (await session.exec(select(Entitlement).where(Entitlement.subscription_id == subscription_id))).one()
        product = await session.get(Product, sub.product_id)
        licence = await session.get(Licence, sub.licence_id)
        assert product is not None
        assert licence is not None
        began = now - timedelta(days=days_ago)
        sub.created_at = sub.agreed_at = sub.starts_at = began
        entitlement.valid_from = began
        session.add(sub)
        session.add(entitlement)
        batch: list[MeteredDelivery] = []
        for day in range(days_ago, -1, -1):
            moment = now - timedelta(days=day)
            weekday = moment.weekday() < 5
            if product.mode is DeliveryMode.file:
                calls = 1 if day % 30 == 7 else 0
            else:
                mean = calls_a_day * (1.0 if weekday else 0.35) * (0.6 + 0.8 * (days_ago - day) / max(days_ago, 1))
                calls = max(0, int(rng.gauss(mean, mean / 4 + 0.5)))
            for _ in range(calls):
                at = moment.replace(hour=rng.randint(7, 20), minute=rng.randint(0, 59), second=rng.randint(0, 59))
                if at > now:
                    at = now - timedelta(seconds=rng.randint(1, 3600))
                rows = _rows_of(product.mode, rng)
                batch.append(
                    MeteredDelivery(
                        entitlement_id=entitlement.id,
                        subscription_id=sub.id,
                        buyer_org_id=sub.buyer_org_id,
                        operator_id=sub.operator_id,
                        owner_org_id=licence.owner_org_id,
                        product_id=sub.product_id,
                        licence_id=licence.id,
                        mode=product.mode,
                        rows=rows,
                        bytes=rows * rng.randint(90, 160),
                        actor=Actor("system", "demo-history"),
                        client_id=None,
                        occurred_at=at,
                    )
                )
        batch.sort(key=lambda delivery: delivery.occurred_at)
        for start in range(0, len(batch), 2000):
            await write_deliveries(session, batch[start : start + 2000])
        total += len(batch)
        await session.commit()
    return total


def _rows_of(mode: DeliveryMode, rng: random.Random) -> int:
    if mode is DeliveryMode.file:
        return rng.randint(4000, 6000)
    if mode is DeliveryMode.sandbox:
        return rng.randint(3, 40)
    return rng.choice((1, 20, 50, 100, 100, 100))
