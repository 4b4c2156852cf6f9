"""What the catalog's services share: who may read or write which product (tenancy), a product's masking rules
and delivered fields, plan views, and the summaries of products shown in lists."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from sqlalchemy import or_
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession
from sqlmodel.sql.expression import SelectOfScalar

from licensing.auditing import covered_licence_ids
from licensing.models import Department, Licence, PlanType
from licensing.schemas import MaskingAction, MaskingRule
from marketplace.catalog.models import Plan, PlanBuyer, PlanVisibility, Product, ProductStatus
from marketplace.catalog.schemas import PlanView, ProductSummary
from marketplace.core.errors import Forbidden, NotFound
from marketplace.core.identity.models import Organisation
from marketplace.core.principal import OrgKind, Principal

#: Plan types in the order pages show them.
PLAN_TYPE_ORDER = (PlanType.free, PlanType.one_off, PlanType.monthly, PlanType.metered)


# --- tenancy -----------------------------------------------------------------------------------------------


def scope_readable_products(stmt: SelectOfScalar[Any], principal: Principal | None) -> SelectOfScalar[Any]:
    """Products the caller may read: listed ones for anyone (anonymous and buyers too); besides, an operator its
    own in every status, the owner those under its licences, regulators all, an auditor those under the licences
    its engagements in force cover (``licensing.auditing``)."""
    listed = col(Product.status) == ProductStatus.listed
    if principal is None or principal.org_kind is OrgKind.buyer:
        return stmt.where(listed)
    if principal.org_kind is OrgKind.regulator:
        return stmt
    if principal.org_kind is OrgKind.auditor:  # unlisted products only under licences its engagements cover
        return stmt.where(or_(listed, col(Product.licence_id).in_(covered_licence_ids(principal))))
    if principal.org_kind is OrgKind.operator:
        return stmt.where(or_(listed, col(Product.operator_id) == principal.org_id))
    owned = select(Licence.id).where(Licence.owner_org_id == principal.org_id)
    return stmt.where(or_(listed, col(Product.licence_id).in_(owned)))


def sees_every_plan(principal: Principal | None, product: Product) -> bool:
    """Whether the caller sees a product's private and retired plans: its operator, and the supervisors
    (the owner, regulators, auditors, who read what is offered under a licence)."""
    if principal is None:
        return False
    if principal.org_kind is OrgKind.operator:
        return principal.org_id == product.operator_id
    return principal.org_kind in (OrgKind.owner, OrgKind.regulator, OrgKind.auditor)


def require_operator(principal: Principal) -> None:
    """Only an operator writes products and plans (guards say so too; services never trust only the guard)."""
    if principal.org_kind is not OrgKind.operator:
        raise Forbidden("Only an operator manages products and plans.", code="party_not_allowed")


async def own_product(session: AsyncSession, principal: Principal, product_id: uuid.UUID, *, lock: bool = False) -> Product:
    """One of the operator's own products (another operator's: 404, never revealed)."""
    require_operator(principal)
    stmt = select(Product).where(Product.id == product_id, Product.operator_id == principal.org_id)
    if lock:
        stmt = stmt.with_for_update()
    product = (await session.exec(stmt)).first()
    if product is None:
        raise NotFound("No such product of yours.", code="product_not_found")
    return product


async def own_plan(session: AsyncSession, principal: Principal, plan_id: uuid.UUID) -> tuple[Plan, Product]:
    """One plan of one of the operator's own products (404 otherwise)."""
    require_operator(principal)
    row = (
        await session.exec(
            select(Plan, Product)
            .join(Product, col(Product.id) == col(Plan.product_id))
            .where(Plan.id == plan_id, Product.operator_id == principal.org_id)
        )
    ).first()
    if row is None:
        raise NotFound("No such plan of yours.", code="plan_not_found")
    return row[0], row[1]


# --- a product's projection ----------------------------------------------------------------------------------


def product_rules(product: Product) -> list[MaskingRule]:
    """The product's masking rules: how each delivered field is treated (fields without a rule are not delivered)."""
    return [MaskingRule.model_validate(r) for r in json.loads(product.rules_json)]


def delivered_fields(product: Product) -> list[str]:
    """The names of the fields the product delivers (every rule but ``drop``), in the order of its rules."""
    return [r.field for r in product_rules(product) if r.action is not MaskingAction.drop]


# --- plans -----------------------------------------------------------------------------------------------------


def cents(money: str | None) -> int | None:
    """A decimal money string as integer cents (None stays None)."""
    return None if money is None else int(Decimal(money) * 100)


def plan_view(plan: Plan, buyer_ids: Sequence[uuid.UUID] | None = None) -> PlanView:
    """The API view of a plan; ``buyer_ids`` only for callers who see private plans' buyers."""
    return PlanView(
        id=plan.id,
        product_id=plan.product_id,
        name=plan.name,
        name_zh=plan.name_zh,
        type=plan.type,
        currency=plan.currency,
        price=plan.price,
        free_calls=plan.free_calls,
        per_call_price=plan.per_call_price,
        monthly_cap=plan.monthly_cap,
        quota_calls=plan.quota_calls,
        quota_rows=plan.quota_rows,
        term_days=plan.term_days,
        grace_days=plan.grace_days,
        access=plan.access,
        visibility=plan.visibility,
        active=plan.active,
        buyer_ids=list(buyer_ids) if buyer_ids is not None else None,
        created_at=plan.created_at,
    )


async def plan_buyers(session: AsyncSession, plan_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, list[uuid.UUID]]:
    """The named buyers of each of ``plan_ids`` (private plans)."""
    buyers: dict[uuid.UUID, list[uuid.UUID]] = {pid: [] for pid in plan_ids}
    if plan_ids:
        rows = await session.exec(select(PlanBuyer).where(col(PlanBuyer.plan_id).in_(list(plan_ids))))
        for row in rows.all():
            buyers[row.plan_id].append(row.buyer_org_id)
    return buyers


async def plans_offered(session: AsyncSession, product: Product, buyer_org_id: uuid.UUID | None) -> list[Plan]:
    """The active plans offered to a buyer (``None``: to anyone, public plans only): public plans and the private
    plans naming the buyer, in the operator's order."""
    visible = col(Plan.visibility) == PlanVisibility.public
    if buyer_org_id is not None:
        named = select(PlanBuyer.plan_id).where(PlanBuyer.buyer_org_id == buyer_org_id)
        visible = or_(visible, col(Plan.id).in_(named))
    rows = await session.exec(
        select(Plan)
        .where(Plan.product_id == product.id, col(Plan.active).is_(True), visible)
        .order_by(col(Plan.position), col(Plan.created_at))
    )
    return list(rows.all())


async def public_plan_types(session: AsyncSession, product_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, list[PlanType]]:
    """The types of each product's active public plans, in the catalog's order."""
    found: dict[uuid.UUID, set[PlanType]] = {pid: set() for pid in product_ids}
    if product_ids:
        rows = await session.exec(
            select(Plan.product_id, Plan.type).where(
                col(Plan.product_id).in_(list(product_ids)),
                col(Plan.active).is_(True),
                Plan.visibility == PlanVisibility.public,
            )
        )
        for product_id, plan_type in rows.all():
            found[product_id].add(PlanType(plan_type))
    return {pid: [t for t in PLAN_TYPE_ORDER if t in types] for pid, types in found.items()}


# --- summaries -------------------------------------------------------------------------------------------------


async def names_of(
    session: AsyncSession, organisation_ids: Sequence[uuid.UUID], department_ids: Sequence[uuid.UUID]
) -> tuple[dict[uuid.UUID, Organisation], dict[uuid.UUID, Department]]:
    """The organisations and departments named by a list of products (two queries)."""
    orgs: dict[uuid.UUID, Organisation] = {}
    departments: dict[uuid.UUID, Department] = {}
    if organisation_ids:
        for org in (await session.exec(select(Organisation).where(col(Organisation.id).in_(set(organisation_ids))))).all():
            orgs[org.id] = org
    if department_ids:
        for dept in (await session.exec(select(Department).where(col(Department.id).in_(set(department_ids))))).all():
            departments[dept.id] = dept
    return orgs, departments


def summary_fields(
    product: Product, org: Organisation | None, department: Department | None, plan_types: list[PlanType]
) -> dict[str, Any]:
    """The fields of a ``ProductSummary`` of ``product`` (shared by the summary and the detail)."""
    return {
        "id": product.id,
        "name": product.name,
        "name_zh": product.name_zh,
        "summary": product.summary,
        "summary_zh": product.summary_zh,
        "status": product.status,
        "domain": product.domain,
        "mode": product.mode,
        "grade": product.grade,
        "operator_id": product.operator_id,
        "operator_name": org.name if org else "",
        "operator_name_zh": org.name_zh if org else None,
        "department_id": product.department_id,
        "department_name": department.name if department else "",
        "department_name_zh": department.name_zh if department else "",
        "price_from": product.price_from,
        "plan_types": plan_types,
        "listed_at": product.listed_at,
        "updated_at": product.updated_at,
    }


async def summaries(session: AsyncSession, products: Sequence[Product]) -> list[ProductSummary]:
    """Summaries of ``products``, in their order (three queries whatever their number)."""
    orgs, departments = await names_of(session, [p.operator_id for p in products], [p.department_id for p in products])
    types = await public_plan_types(session, [p.id for p in products])
    return [
        ProductSummary(**summary_fields(p, orgs.get(p.operator_id), departments.get(p.department_id), types[p.id]))
        for p in products
    ]
