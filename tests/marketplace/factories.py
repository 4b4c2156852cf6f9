"""Catalog, subscription and delivery factories: products (with real contents), plans, qualifications and
subscriptions with their entitlement, written straight to the test database (tests of the services use the API).
"""

from __future__ import annotations

import itertools
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session

from licensing.models import DataResource, DeliveryMode, Licence, LicenceStatus, PlanType, Purpose
from marketplace.catalog.models import (
    Domain,
    Plan,
    PlanAccess,
    PlanBuyer,
    PlanVisibility,
    Product,
    ProductStatus,
)
from marketplace.core.db import add_to_rows
from marketplace.core.identity.models import Organisation
from marketplace.core.principal import OrgKind
from marketplace.core.types import utcnow
from marketplace.delivery.models import Delivery, UsageDay
from marketplace.subscriptions.models import (
    BuyerQualification,
    Entitlement,
    QualificationStatus,
    Subscription,
    SubscriptionStatus,
)
from tests.factories import make_org
from tests.licensing.factories import clean_visit_rules, make_licence, make_visit_resource

_counter = itertools.count(1)
#: The fields a product built with ``clean_visit_rules`` delivers.
VISIT_DELIVERED = ["patient_name", "age", "district", "visit_date", "diagnosis", "cost"]


def make_product(
    engine: Engine,
    licence: Licence,
    resource: DataResource,
    *,
    status: ProductStatus = ProductStatus.listed,
    mode: DeliveryMode = DeliveryMode.api,
    rules: Sequence[dict[str, Any]] | None = None,
    purposes: Sequence[Purpose] = (Purpose.credit_assessment, Purpose.public_welfare),
    name: str | None = None,
    name_zh: str | None = None,
    domain: Domain = Domain.health,
    **fields: Any,
) -> Product:
    """A product of ``licence``'s operator over ``resource`` (masking ``clean_visit_rules`` by default)."""
    n = next(_counter)
    product = Product(
        operator_id=licence.operator_id,
        licence_id=licence.id,
        resource_id=resource.id,
        department_id=resource.department_id,
        grade=resource.grade,
        status=status,
        mode=mode,
        name=name or f"Product {n}",
        name_zh=name_zh or f"产品{n}",
        domain=domain,
        rules_json=json.dumps(list(rules if rules is not None else clean_visit_rules())),
        purposes_json=json.dumps([p.value for p in purposes]),
        listed_at=utcnow() if status is ProductStatus.listed else None,
        **fields,
    )
    with Session(engine) as session:
        session.add(product)
        session.commit()
        session.refresh(product)
    return product


def make_plan(
    engine: Engine,
    product: Product,
    *,
    type: PlanType = PlanType.monthly,
    price: str = "1000.00",
    access: PlanAccess = PlanAccess.self_serve,
    visibility: PlanVisibility = PlanVisibility.public,
    buyers: Sequence[Organisation] = (),
    **fields: Any,
) -> Plan:
    """A plan of ``product``; a private plan is offered to ``buyers``."""
    n = next(_counter)
    fields.setdefault("name", f"Plan {n}")
    fields.setdefault("name_zh", f"套餐{n}")
    plan = Plan(
        product_id=product.id,
        type=type,
        price="0.00" if type is PlanType.free else price,
        access=access,
        visibility=visibility,
        **fields,
    )
    with Session(engine) as session:
        session.add(plan)
        session.flush()
        for buyer in buyers:
            session.add(PlanBuyer(plan_id=plan.id, buyer_org_id=buyer.id))
        session.commit()
        session.refresh(plan)
    return plan


def make_qualification(
    engine: Engine, buyer: Organisation, operator_id: uuid.UUID, *, status: QualificationStatus = QualificationStatus.approved
) -> BuyerQualification:
    """A qualification of ``buyer`` with an operator, already in ``status``."""
    qualification = BuyerQualification(
        buyer_org_id=buyer.id,
        operator_id=operator_id,
        business_licence_number="91110108MA01ABCD3X",
        industry="finance",
        contact_name="Li Ming",
        contact_email="li.ming@buyer.test-market.cn",
        contact_phone="+86 10 5555 0100",
        status=status,
        decided_at=None if status is QualificationStatus.submitted else utcnow(),
    )
    with Session(engine) as session:
        session.add(qualification)
        session.commit()
        session.refresh(qualification)
    return qualification


def make_subscription(
    engine: Engine,
    buyer: Organisation,
    product: Product,
    plan: Plan,
    *,
    status: SubscriptionStatus = SubscriptionStatus.active,
    purpose: Purpose = Purpose.credit_assessment,
    fields: Sequence[str] | None = None,
    quota_calls: int | None = None,
    quota_rows: int | None = None,
    valid_days: int = 30,
) -> tuple[Subscription, Entitlement | None]:
    """A subscription of ``buyer`` in ``status``; an active one (or one that ended) comes with its entitlement."""
    now = utcnow()
    subscription = Subscription(
        number=f"SUB-T{next(_counter):06d}-{uuid.uuid4().hex[:4]}",
        buyer_org_id=buyer.id,
        product_id=product.id,
        plan_id=plan.id,
        operator_id=product.operator_id,
        licence_id=product.licence_id,
        purpose=purpose,
        price=plan.price,
        agreement_version="2026-11",
        status=status,
        starts_at=now - timedelta(days=1),
        valid_until=now + timedelta(days=valid_days),
    )
    entitlement = None
    with Session(engine) as session:
        session.add(subscription)
        session.flush()
        if status not in (SubscriptionStatus.awaiting_approval, SubscriptionStatus.pending_payment, SubscriptionStatus.rejected):
            delivered = list(fields) if fields is not None else delivered_fields(product)
            ended = status not in (SubscriptionStatus.active, SubscriptionStatus.past_due)
            entitlement = Entitlement(
                subscription_id=subscription.id,
                buyer_org_id=buyer.id,
                product_id=product.id,
                mode=product.mode,
                fields_json=json.dumps(delivered),
                quota_calls=quota_calls,
                quota_rows=quota_rows,
                valid_from=now - timedelta(days=1),
                valid_until=now + timedelta(days=valid_days),
                ended_at=now if ended else None,
                ended_reason=status.value if ended else None,
            )
            session.add(entitlement)
        session.commit()
        session.refresh(subscription)
        if entitlement is not None:
            session.refresh(entitlement)
    return subscription, entitlement


def delivered_fields(product: Product) -> list[str]:
    """The field names ``product``'s masking rules deliver (every rule but ``drop``)."""
    return [r["field"] for r in json.loads(product.rules_json) if r.get("action") != "drop"]


@dataclass
class Market:
    """A small market: an owner's visits resource licensed to an operator, a listed product with a monthly plan,
    and two buyers (A qualified with an active subscription, B not)."""

    owner: Organisation
    operator: Organisation
    buyer_a: Organisation
    buyer_b: Organisation
    resource: DataResource
    licence: Licence
    product: Product
    plan: Plan
    subscription: Subscription
    entitlement: Entitlement


def make_market(
    engine: Engine,
    data_dir: Path,
    *,
    mode: DeliveryMode = DeliveryMode.api,
    owner: Organisation | None = None,
    operator: Organisation | None = None,
    buyer_a: Organisation | None = None,
    buyer_b: Organisation | None = None,
    licence_status: LicenceStatus = LicenceStatus.granted,
    per_group: int = 10,
) -> Market:
    """Build a ``Market`` (real Parquet contents under ``data_dir``), reusing any organisation given."""
    owner = owner or make_org(engine, OrgKind.owner)
    operator = operator or make_org(engine, OrgKind.operator)
    buyer_a = buyer_a or make_org(engine, OrgKind.buyer)
    buyer_b = buyer_b or make_org(engine, OrgKind.buyer)
    resource = make_visit_resource(engine, owner, data_dir, per_group=per_group)
    licence = make_licence(engine, owner, operator, [resource], status=licence_status)
    product = make_product(engine, licence, resource, mode=mode)
    plan = make_plan(engine, product)
    make_qualification(engine, buyer_a, operator.id)
    subscription, entitlement = make_subscription(engine, buyer_a, product, plan)
    assert entitlement is not None
    return Market(owner, operator, buyer_a, buyer_b, resource, licence, product, plan, subscription, entitlement)


def make_deliveries(
    engine: Engine, subscription: Subscription, entitlement: Entitlement, calls: Sequence[tuple[int, int]]
) -> list[Delivery]:
    """Deliveries under an entitlement: for each (days ago, rows) one API call that many days ago (metadata only;
    not in the ledger — tests of metering use the real delivery routes)."""
    now = utcnow()
    made = []
    with Session(engine) as session:
        for days_ago, rows in calls:
            delivery = Delivery(
                entitlement_id=entitlement.id,
                subscription_id=subscription.id,
                buyer_org_id=subscription.buyer_org_id,
                operator_id=subscription.operator_id,
                product_id=subscription.product_id,
                mode=entitlement.mode,
                rows=rows,
                bytes=rows * 120,
                occurred_at=now - timedelta(days=days_ago, minutes=5),
            )
            session.add(delivery)
            made.append(delivery)
            add_to_rows(  # what the meter keeps beside each delivery for the usage charts
                session,
                UsageDay.__table__,  # type: ignore[attr-defined]
                ("day", "product_id", "buyer_org_id", "operator_id", "mode"),
                [
                    {
                        "day": delivery.occurred_at.astimezone(UTC).date(),
                        "product_id": delivery.product_id,
                        "buyer_org_id": delivery.buyer_org_id,
                        "operator_id": delivery.operator_id,
                        "mode": delivery.mode,
                        "calls": 1,
                        "rows": delivery.rows,
                        "bytes": delivery.bytes,
                    }
                ],
            )
        session.commit()
        for delivery in made:
            session.refresh(delivery)
    return made


def index_products(database_url: str, *products: Product) -> None:
    """Write the catalog search documents of ``products`` (factories bypass the services that do it)."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from marketplace.catalog.search import reindex_product
    from marketplace.core.db import Database

    async def work() -> None:
        database = Database(database_url, pool_size=1)
        try:
            async with database.session() as session:
                for product in products:
                    stored = await session.get(Product, product.id)
                    assert stored is not None
                    await reindex_product(session, stored)
                await session.commit()
        finally:
            await database.dispose()

    # Playwright's sync API (and pytest-asyncio) may hold an event loop on this thread.
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, work()).result()
