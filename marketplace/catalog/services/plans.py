"""Plans: how a product is sold. Each is priced within its licence's cap for the plan type (a type the licence sets
no cap for may not be offered), offered self-serve or on request, publicly or to named buyers only.

``Product.price_from`` (the lowest active public plan price) and the product's search document follow every change.
"""

from __future__ import annotations

import json
import uuid
from decimal import Decimal
from typing import Any

from sqlalchemy import delete
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from licensing.models import Licence, PlanType
from licensing.services.licences import licence_in_force
from marketplace.catalog.models import Plan, PlanBuyer, PlanVisibility, Product, ProductStatus
from marketplace.catalog.schemas import PlanCreate, PlanUpdate
from marketplace.catalog.search import reindex_product
from marketplace.catalog.services.common import own_plan, own_product
from marketplace.core.errors import Conflict, InvalidInput
from marketplace.core.events import Actor, DomainEvent, publish
from marketplace.core.identity.models import Organisation
from marketplace.core.principal import OrgKind, Principal
from marketplace.core.types import utcnow

#: Statuses in which a product's plans may change (under review they are what the owner is reviewing).
PLANS_EDITABLE = frozenset({ProductStatus.draft, ProductStatus.listed})


def _caps(licence: Licence) -> dict[str, Decimal]:
    return {str(t): Decimal(str(v)) for t, v in json.loads(licence.price_caps_json).items() if v is not None}


def check_plan_terms(licence: Licence, terms: dict[str, Any]) -> None:
    """Whether a plan's terms fit its licence: a capped type, prices within the caps, metered terms only on metered
    plans and a monthly maximum not below the monthly fee. Raises ``InvalidInput`` with a stable code."""
    plan_type = PlanType(terms["type"])
    caps = _caps(licence)
    price = Decimal(terms.get("price") or "0")
    per_call = terms.get("per_call_price")
    monthly_cap = terms.get("monthly_cap")
    if plan_type.value not in caps:
        raise InvalidInput(
            f"Licence {licence.number} sets no price cap for {plan_type.value} plans, so they may not be offered.",
            code="plan_type_not_licensed",
            licensed=sorted(caps),
        )
    if plan_type is not PlanType.metered and (per_call is not None or monthly_cap is not None or terms.get("free_calls")):
        raise InvalidInput(
            "Free calls, a per-call price and a monthly maximum belong to metered plans only.", code="metered_terms_not_metered"
        )
    if plan_type is PlanType.free and price != 0:
        raise InvalidInput("A free plan costs 0.00.", code="free_plan_priced")
    if plan_type is PlanType.metered:
        if per_call is None:
            raise InvalidInput("A metered plan needs a per-call price.", code="per_call_price_required")
        _within(licence, "metered", Decimal(per_call), caps["metered"], "per-call price")
        if "monthly" in caps:
            _within(licence, "monthly", price, caps["monthly"], "monthly fee")
        if monthly_cap is not None and Decimal(monthly_cap) < price:
            raise InvalidInput(
                f"The monthly maximum charge {monthly_cap} is below the monthly fee {price:.2f}.", code="monthly_cap_below_fee"
            )
    elif plan_type is not PlanType.free:
        _within(licence, plan_type.value, price, caps[plan_type.value], "price")


def _within(licence: Licence, cap_type: str, price: Decimal, cap: Decimal, what: str) -> None:
    if price > cap:
        raise InvalidInput(
            f"The {what} {price:.2f} is above licence {licence.number}'s cap of {cap:.2f} for {cap_type} plans.",
            code="price_over_cap",
            cap=f"{cap:.2f}",
            cap_type=cap_type,
        )


async def _check_buyers(session: AsyncSession, visibility: PlanVisibility, buyer_ids: list[uuid.UUID]) -> None:
    if visibility is PlanVisibility.public:
        if buyer_ids:
            raise InvalidInput(
                "A public plan is offered to every buyer: name buyers on private plans only.", code="buyers_on_public_plan"
            )
        return
    if not buyer_ids:
        raise InvalidInput("A private plan names at least one buyer.", code="private_plan_without_buyers")
    found = set(
        (
            await session.exec(
                select(Organisation.id).where(col(Organisation.id).in_(buyer_ids), Organisation.kind == OrgKind.buyer)
            )
        ).all()
    )
    unknown = [str(b) for b in buyer_ids if b not in found]
    if unknown:
        raise InvalidInput("Some named buyers are not buyer organisations.", code="buyer_not_found", unknown=unknown)


async def _licence_in_force(session: AsyncSession, product: Product) -> Licence:
    licence = await session.get(Licence, product.licence_id)
    assert licence is not None
    if not licence_in_force(licence):
        raise Conflict(
            f"Licence {licence.number} is not in force; its products' plans cannot change.", code="licence_not_in_force"
        )
    return licence


def _editable(product: Product) -> None:
    if product.status not in PLANS_EDITABLE:
        raise Conflict(
            f"The product is {product.status.value}; its plans change only while it is a draft or listed.",
            code="product_not_editable",
            product_status=product.status.value,
        )


async def refresh_price_from(session: AsyncSession, product: Product) -> None:
    """``price_from`` = the lowest active public plan price (None without one); the search document follows."""
    await session.flush()
    prices = (
        await session.exec(
            select(Plan.price).where(
                Plan.product_id == product.id, col(Plan.active).is_(True), Plan.visibility == PlanVisibility.public
            )
        )
    ).all()
    product.price_from = f"{min(Decimal(p) for p in prices):.2f}" if prices else None
    product.updated_at = utcnow()
    session.add(product)
    await reindex_product(session, product)


async def _replace_buyers(session: AsyncSession, plan: Plan, buyer_ids: list[uuid.UUID]) -> None:
    await session.exec(delete(PlanBuyer).where(col(PlanBuyer.plan_id) == plan.id))  # type: ignore[call-overload]
    for buyer_id in buyer_ids:
        session.add(PlanBuyer(plan_id=plan.id, buyer_org_id=buyer_id))


def _event(kind: str, principal: Principal, product: Product, plan: Plan, **extra: Any) -> DomainEvent:
    return DomainEvent(
        kind,
        Actor.of(principal),
        orgs=(product.operator_id,),
        subjects={"product": str(product.id), "plan": str(plan.id)},
        payload={
            "type": plan.type.value,
            "price": plan.price,
            "per_call_price": plan.per_call_price,
            "monthly_cap": plan.monthly_cap,
            "visibility": plan.visibility.value,
            "access": plan.access.value,
            **extra,
        },
    )


async def add_plan(session: AsyncSession, principal: Principal, product_id: uuid.UUID, data: PlanCreate) -> Plan:
    """A new plan of the operator's draft or listed product, priced within the licence's cap for its type.
    Refused with 400 (``price_over_cap``, ``plan_type_not_licensed``, ``monthly_cap_below_fee``, ...), 404 or 409."""
    product = await own_product(session, principal, product_id, lock=True)
    _editable(product)
    licence = await _licence_in_force(session, product)
    terms = data.model_dump(mode="json")
    check_plan_terms(licence, terms)
    await _check_buyers(session, data.visibility, data.buyer_ids)
    position = len((await session.exec(select(Plan.id).where(Plan.product_id == product.id))).all())
    plan = Plan(
        product_id=product.id,
        position=position,
        **data.model_dump(exclude={"buyer_ids"}),
    )
    session.add(plan)
    await session.flush()
    await _replace_buyers(session, plan, data.buyer_ids)
    await refresh_price_from(session, product)
    await publish(session, _event("plan.added", principal, product, plan, buyers=len(data.buyer_ids)))
    await session.commit()
    await session.refresh(plan)
    return plan


async def update_plan(session: AsyncSession, principal: Principal, plan_id: uuid.UUID, data: PlanUpdate) -> Plan:
    """Change an active plan of the operator's draft or listed product (its type stays); the same checks as a new one."""
    plan, product = await own_plan(session, principal, plan_id)
    _editable(product)
    if not plan.active:
        raise Conflict("The plan was retired.", code="plan_retired")
    licence = await _licence_in_force(session, product)
    changes = data.model_dump(mode="json", exclude_unset=True)
    terms: dict[str, Any] = {**plan.model_dump(mode="json"), **changes, "type": plan.type.value}
    check_plan_terms(licence, terms)
    visibility = data.visibility or plan.visibility
    current_buyers = list((await session.exec(select(PlanBuyer.buyer_org_id).where(PlanBuyer.plan_id == plan.id))).all())
    buyer_ids = data.buyer_ids if data.buyer_ids is not None else ([] if visibility is PlanVisibility.public else current_buyers)
    await _check_buyers(session, visibility, buyer_ids)
    for name in changes:
        if name != "buyer_ids":
            setattr(plan, name, getattr(data, name))
    session.add(plan)
    await _replace_buyers(session, plan, buyer_ids)
    await refresh_price_from(session, product)
    await publish(session, _event("plan.updated", principal, product, plan, changed=sorted(changes), buyers=len(buyer_ids)))
    await session.commit()
    await session.refresh(plan)
    return plan


async def retire_plan(session: AsyncSession, principal: Principal, plan_id: uuid.UUID) -> Plan:
    """Stop offering a plan (existing subscriptions keep their terms); 409 ``plan_retired`` when already retired."""
    plan, product = await own_plan(session, principal, plan_id)
    if not plan.active:
        raise Conflict("The plan was already retired.", code="plan_retired")
    plan.active = False
    session.add(plan)
    await refresh_price_from(session, product)
    await publish(session, _event("plan.retired", principal, product, plan))
    await session.commit()
    await session.refresh(plan)
    return plan
