"""Products: an operator builds a draft on one of its licences, edits it while a draft, submits it for the owner's
listing review (with a masked sample preview), and may delist it; anyone reads listed products.

``draft -> in_review -> listed -> delisted``; the owner's decisions and licence changes move products through
``marketplace.catalog.reactions``.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
from sqlalchemy import func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from licensing.models import DataResource, Department, Licence, LicenceResource, PlanType, Purpose, ResourceVersion
from licensing.privacy import masking_problems, projection_query, pseudonym_key
from licensing.schemas import FieldSpec, ListingSubmission, MaskingRule, PlanDraft
from licensing.services import reviews
from licensing.services.licences import licence_in_force
from marketplace.catalog.models import Plan, Product, ProductStatus
from marketplace.catalog.schemas import (
    FieldTreatment,
    OperatorProducts,
    PlanView,
    ProductCreate,
    ProductDetail,
    ProductUpdate,
)
from marketplace.catalog.search import reindex_product
from marketplace.catalog.services.common import (
    own_product,
    plan_buyers,
    plan_view,
    plans_offered,
    product_rules,
    public_plan_types,
    require_operator,
    scope_readable_products,
    sees_every_plan,
    summaries,
    summary_fields,
)
from marketplace.core.errors import Conflict, InvalidInput, NotFound
from marketplace.core.events import Actor, DomainEvent, publish
from marketplace.core.identity.models import Organisation
from marketplace.core.principal import OrgKind, Principal
from marketplace.core.settings import Settings
from marketplace.core.types import utcnow

#: How many masked rows the product page previews.
SAMPLE_ROWS = 5


# --- checks ------------------------------------------------------------------------------------------------


async def operator_licence(session: AsyncSession, principal: Principal, licence_id: uuid.UUID) -> Licence:
    """One of the operator's licences, in force (another operator's: 404 ``licence_not_found``; not in force: 409)."""
    require_operator(principal)
    licence = await session.get(Licence, licence_id)
    if licence is None or licence.operator_id != principal.org_id:
        raise NotFound("No such licence of yours.", code="licence_not_found")
    if not licence_in_force(licence):
        raise Conflict(
            f"Licence {licence.number} is not in force (status {licence.status.value}); nothing can be built on it.",
            code="licence_not_in_force",
            licence_status=licence.status.value,
        )
    return licence


def resource_fields(resource: DataResource) -> list[FieldSpec]:
    """The fields of a resource."""
    return [FieldSpec.model_validate(f) for f in json.loads(resource.fields_json)]


async def _check_terms(
    session: AsyncSession,
    licence: Licence,
    resource_id: uuid.UUID,
    mode: str,
    rules: list[MaskingRule],
    purposes: list[Purpose],
) -> DataResource:
    covered = (
        await session.exec(
            select(LicenceResource.resource_id).where(
                LicenceResource.licence_id == licence.id, LicenceResource.resource_id == resource_id
            )
        )
    ).first()
    resource = await session.get(DataResource, resource_id) if covered is not None else None
    if resource is None:
        raise InvalidInput(f"The resource is not covered by licence {licence.number}.", code="resource_not_in_licence")
    modes = json.loads(licence.modes_json)
    if mode not in modes:
        raise InvalidInput(
            f"Delivery mode {mode} is not permitted by licence {licence.number} (it permits {', '.join(modes)}).",
            code="mode_not_permitted",
            permitted=modes,
        )
    permitted = json.loads(licence.purposes_json)
    outside = [p.value for p in purposes if p.value not in permitted]
    if outside:
        raise InvalidInput(
            f"Purposes outside licence {licence.number}: {', '.join(outside)} (it permits {', '.join(permitted)}).",
            code="purpose_not_permitted",
            outside=outside,
            permitted=permitted,
        )
    problems = masking_problems(resource_fields(resource), rules)
    if problems:
        raise InvalidInput(
            "The masking rules are not valid: " + "; ".join(problems) + ".", code="masking_rules_invalid", problems=problems
        )
    return resource


def _event(
    kind: str, principal: Principal | None, product: Product, owner_org_id: uuid.UUID | None = None, **payload: Any
) -> DomainEvent:
    orgs = (product.operator_id,) if owner_org_id is None else (owner_org_id, product.operator_id)
    return DomainEvent(
        kind,
        Actor.of(principal),
        orgs=orgs,
        subjects={"product": str(product.id), "licence": str(product.licence_id)},
        payload={"status": product.status.value, **payload},
    )


# --- the operator's writes ----------------------------------------------------------------------------------


async def create_product(session: AsyncSession, principal: Principal, data: ProductCreate) -> Product:
    """A new draft product on one of the operator's licences in force, over a resource of that licence: its
    department and grade are copied from the resource; mode, purposes and masking must fit the licence and resource.
    Refused with 400 (``resource_not_in_licence``, ``mode_not_permitted``, ``purpose_not_permitted``,
    ``masking_rules_invalid``), 404 ``licence_not_found`` or 409 ``licence_not_in_force``; nothing is stored then."""
    licence = await operator_licence(session, principal, data.licence_id)
    resource = await _check_terms(session, licence, data.resource_id, data.mode.value, data.rules, data.purposes)
    product = Product(
        operator_id=principal.org_id,
        licence_id=licence.id,
        resource_id=resource.id,
        department_id=resource.department_id,
        grade=resource.grade,
        status=ProductStatus.draft,
        mode=data.mode,
        rules_json=json.dumps([r.model_dump(mode="json", exclude_none=True) for r in data.rules]),
        purposes_json=json.dumps([p.value for p in data.purposes]),
        name=data.name,
        name_zh=data.name_zh,
        summary=data.summary,
        summary_zh=data.summary_zh,
        description=data.description,
        description_zh=data.description_zh,
        documentation=data.documentation,
        domain=data.domain,
        created_by=principal.user_id,
    )
    session.add(product)
    await session.flush()
    await publish(
        session,
        _event(
            "product.created",
            principal,
            product,
            mode=product.mode.value,
            resource=str(resource.id),
            fields_delivered=sum(1 for r in data.rules if r.action.value != "drop"),
            purposes=[p.value for p in data.purposes],
        ),
    )
    await session.commit()
    await session.refresh(product)
    return product


async def update_product(session: AsyncSession, principal: Principal, product_id: uuid.UUID, data: ProductUpdate) -> Product:
    """Change a draft product (409 ``product_not_editable`` in any other status); the same checks as creation."""
    product = await own_product(session, principal, product_id, lock=True)
    if product.status is not ProductStatus.draft:
        raise Conflict(
            f"The product is {product.status.value}; only a draft can be edited.",
            code="product_not_editable",
            product_status=product.status.value,
        )
    licence = await operator_licence(session, principal, product.licence_id)
    changes = data.model_dump(exclude_unset=True)
    rules = data.rules if data.rules is not None else product_rules(product)
    purposes = data.purposes if data.purposes is not None else [Purpose(p) for p in json.loads(product.purposes_json)]
    resource = await _check_terms(
        session, licence, data.resource_id or product.resource_id, (data.mode or product.mode).value, rules, purposes
    )
    for name in ("name", "name_zh", "summary", "summary_zh", "description", "description_zh", "documentation"):
        if changes.get(name) is not None:
            setattr(product, name, changes[name])
    if data.domain is not None:
        product.domain = data.domain
    if data.mode is not None:
        product.mode = data.mode
    product.resource_id = resource.id
    product.department_id = resource.department_id
    product.grade = resource.grade
    product.rules_json = json.dumps([r.model_dump(mode="json", exclude_none=True) for r in rules])
    product.purposes_json = json.dumps([p.value for p in purposes])
    product.updated_at = utcnow()
    session.add(product)
    await publish(
        session, _event("product.updated", principal, product, changed=sorted(k for k, v in changes.items() if v is not None))
    )
    await session.commit()
    await session.refresh(product)
    return product


def _json_value(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, date | datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


def _sample_rows(path: Path, fields: list[FieldSpec], rules: list[MaskingRule], key: bytes) -> list[dict[str, Any]]:
    query = projection_query(path, fields, rules, key)
    with duckdb.connect() as con:
        con.execute("SET threads TO 1")
        cursor = con.execute(f"{query.sql} LIMIT {SAMPLE_ROWS}", query.parameters)
        rows = cursor.fetchall()
    return [{c: _json_value(v) for c, v in zip(query.columns, row, strict=True)} for row in rows]


async def masked_sample(session: AsyncSession, settings: Settings, product: Product) -> list[dict[str, Any]]:
    """The first rows of the product's delivered projection (masking applied) on the resource's current contents;
    empty when there are no contents or the rules do not fit them. DuckDB runs off the event loop."""
    resource = await session.get(DataResource, product.resource_id)
    if resource is None or not resource.current_version:
        return []
    version = (
        await session.exec(
            select(ResourceVersion).where(
                ResourceVersion.resource_id == resource.id, ResourceVersion.version == resource.current_version
            )
        )
    ).first()
    if version is None:
        return []
    root = settings.resolved_data_dir.resolve()
    path = (root / version.location).resolve()
    fields, rules = resource_fields(resource), product_rules(product)
    if not path.is_relative_to(root) or not path.exists() or masking_problems(fields, rules):
        return []
    try:
        return await asyncio.to_thread(_sample_rows, path, fields, rules, pseudonym_key(settings))
    except duckdb.Error:
        return []


async def listing_submission(session: AsyncSession, product: Product) -> ListingSubmission:
    """The listing submission of a product: its licence, resource, mode, masking, purposes and active plans (for a
    metered plan the price checked against the cap is the per-call price)."""
    plans = (
        await session.exec(
            select(Plan)
            .where(Plan.product_id == product.id, col(Plan.active).is_(True))
            .order_by(col(Plan.position), col(Plan.created_at))
        )
    ).all()
    drafts = [
        PlanDraft.model_validate(
            {
                "type": plan.type.value,
                "price": plan.per_call_price if plan.type is PlanType.metered and plan.per_call_price else plan.price,
                "name": plan.name,
                "plan_id": str(plan.id),
                "visibility": plan.visibility.value,
                **(
                    {"monthly_fee": plan.price, "free_calls": plan.free_calls, "monthly_cap": plan.monthly_cap}
                    if plan.type is PlanType.metered
                    else {}
                ),
            }
        )
        for plan in plans
    ]
    return ListingSubmission(
        licence_id=product.licence_id,
        product_ref=str(product.id),
        product_name=product.name,
        mode=product.mode,
        resource_id=product.resource_id,
        rules=product_rules(product),
        purposes=[Purpose(p) for p in json.loads(product.purposes_json)],
        plans=drafts,
    )


async def _active_plan_count(session: AsyncSession, product: Product) -> int:
    return int((await session.exec(select(func.count()).where(Plan.product_id == product.id, col(Plan.active).is_(True)))).one())


async def submit_product(session: AsyncSession, principal: Principal, settings: Settings, product_id: uuid.UUID) -> Product:
    """Submit a draft (or delisted) product for the owner's listing review: the automated checks run on the real
    contents (``licensing.services.reviews.submit_for_listing``); on success the product is ``in_review`` with its
    review and a masked sample preview, in the review's transaction. Refused with 409 ``product_not_submittable``,
    ``product_has_no_plans``, ``licence_not_in_force``, ``review_already_pending``, or 422 ``listing_checks_failed``
    (the product stays as it was and nothing is stored)."""
    product = await own_product(session, principal, product_id, lock=True)
    if product.status not in (ProductStatus.draft, ProductStatus.delisted):
        raise Conflict(
            f"The product is {product.status.value}; only a draft or delisted product can be submitted.",
            code="product_not_submittable",
            product_status=product.status.value,
        )
    if await _active_plan_count(session, product) == 0:
        raise Conflict("Add at least one plan before submitting the product.", code="product_has_no_plans")
    licence = await operator_licence(session, principal, product.licence_id)
    submission = await listing_submission(session, product)
    sample = await masked_sample(session, settings, product)
    previous = product.status
    try:
        # The product's change goes first, so that the review's commit (inside submit_for_listing) carries it and
        # the reaction to ``listing.submitted`` records the review's id in the same transaction.
        product.status = ProductStatus.in_review
        product.sample_json = json.dumps(sample, ensure_ascii=False)
        product.updated_at = utcnow()
        session.add(product)
        await publish(
            session,
            _event(
                "product.submitted",
                principal,
                product,
                licence.owner_org_id,
                previous=previous.value,
                plans=len(submission.plans),
            ),
        )
        await reviews.submit_for_listing(session, principal, settings, submission)
    except BaseException:
        await session.rollback()
        raise
    await session.refresh(product)
    return product


async def check_product(
    session: AsyncSession, principal: Principal, settings: Settings, product_id: uuid.UUID
) -> reviews.ListingCheckOutcome:
    """A dry run of the listing checks on the product as it stands (stores nothing)."""
    product = await own_product(session, principal, product_id)
    submission = await listing_submission(session, product)
    return await reviews.check_listing(session, principal, settings, submission)


async def delist_product(session: AsyncSession, principal: Principal, product_id: uuid.UUID, reason: str) -> Product:
    """The operator takes its listed product off the catalog, with a written reason (400 ``reason_required``;
    409 ``product_not_listed``); its approved listing review becomes delisted too. Existing subscriptions are the
    subscriptions' business (``product.delisted``)."""
    reason = reason.strip()
    if not reason:
        raise InvalidInput("A written reason is required.", code="reason_required")
    product = await own_product(session, principal, product_id, lock=True)
    if product.status is not ProductStatus.listed:
        raise Conflict(
            f"The product is {product.status.value}, not listed.", code="product_not_listed", product_status=product.status.value
        )
    product.status = ProductStatus.delisted
    product.updated_at = utcnow()
    session.add(product)
    await reindex_product(session, product)
    if product.review_id is not None:  # the owner's review of the listing says so too
        await reviews.delist_by_operator(session, principal, product.review_id, reason)
    licence = await session.get(Licence, product.licence_id)
    await publish(
        session,
        _event("product.delisted", principal, product, licence.owner_org_id if licence else None, reason=reason, by="operator"),
    )
    await session.commit()
    await session.refresh(product)
    return product


# --- reads ------------------------------------------------------------------------------------------------------


async def readable_product(session: AsyncSession, principal: Principal | None, product_id: uuid.UUID) -> Product:
    """A product the caller may read (404 otherwise: a product not listed exists only for its operator and supervisors)."""
    product = (await session.exec(scope_readable_products(select(Product), principal).where(Product.id == product_id))).first()
    if product is None:
        raise NotFound("No such product.", code="product_not_found")
    assert isinstance(product, Product)
    return product


def field_treatments(resource: DataResource | None, rules: list[MaskingRule]) -> list[FieldTreatment]:
    """The delivered fields, in the resource's order, each with how it is treated."""
    by_field = {r.field: r for r in rules}
    specs = resource_fields(resource) if resource is not None else []
    treatments = []
    for spec in specs:
        rule = by_field.get(spec.name)
        if rule is None or rule.action.value == "drop":
            continue
        treatments.append(
            FieldTreatment(
                name=spec.name,
                type=spec.type.value,
                description=spec.description,
                action=rule.action.value,
                method=rule.method.value if rule.method else None,
                size=rule.size,
            )
        )
    return treatments


async def visible_plans(session: AsyncSession, principal: Principal | None, product: Product) -> list[PlanView]:
    """The plans the caller sees: every plan (retired too, with private plans' buyers) for the operator and
    supervisors; the active public plans and the private ones naming it for a buyer; public ones for anyone else."""
    if sees_every_plan(principal, product):
        plans = (
            await session.exec(
                select(Plan).where(Plan.product_id == product.id).order_by(col(Plan.position), col(Plan.created_at))
            )
        ).all()
        buyers = await plan_buyers(session, [p.id for p in plans])
        return [plan_view(p, buyers[p.id]) for p in plans]
    buyer = principal.org_id if principal is not None and principal.org_kind is OrgKind.buyer else None
    return [plan_view(p) for p in await plans_offered(session, product, buyer)]


async def get_product(session: AsyncSession, principal: Principal | None, product_id: uuid.UUID) -> ProductDetail:
    """A product's page: description, documentation, delivered fields and their treatment, the masked sample, its
    licence's number and department, and the plans the caller may see. Anyone reads a listed product; one that is
    not listed only its operator, the owner of its licence, regulators and auditors (404 for others)."""
    product = await readable_product(session, principal, product_id)
    licence = await session.get(Licence, product.licence_id)
    resource = await session.get(DataResource, product.resource_id)
    org = await session.get(Organisation, product.operator_id)
    department = await session.get(Department, product.department_id)
    types = (await public_plan_types(session, [product.id]))[product.id]
    return ProductDetail(
        **summary_fields(product, org, department, types),
        description=product.description,
        description_zh=product.description_zh,
        documentation=product.documentation,
        licence_id=product.licence_id,
        licence_number=licence.number if licence else "",
        resource_id=product.resource_id,
        purposes=[Purpose(p) for p in json.loads(product.purposes_json)],
        fields=field_treatments(resource, product_rules(product)),
        sample=json.loads(product.sample_json),
        plans=await visible_plans(session, principal, product),
        review_id=product.review_id,
        subscriber_count=product.subscriber_count,
        created_at=product.created_at,
    )


async def list_operator_products(
    session: AsyncSession, principal: Principal, *, status: ProductStatus | None = None
) -> OperatorProducts:
    """The operator's own products (every status, or one), most recently changed first, with counts per status."""
    require_operator(principal)
    stmt = select(Product).where(Product.operator_id == principal.org_id)
    if status is not None:
        stmt = stmt.where(Product.status == status)
    products = (await session.exec(stmt.order_by(col(Product.updated_at).desc(), col(Product.id)))).all()
    counts = dict.fromkeys(ProductStatus, 0)
    grouped = await session.exec(
        select(Product.status, func.count()).where(Product.operator_id == principal.org_id).group_by(col(Product.status))
    )
    for product_status, count in grouped.all():
        counts[ProductStatus(product_status)] = int(count)
    return OperatorProducts(items=await summaries(session, products), total=len(products), counts=counts)
