"""Subscriptions: a buyer takes a plan of a listed product for a declared purpose under the current agreement;
the operator checks requests and proofs; billing completes payment; cancel, revoke and expiry end access.

Lifecycle (``SubscriptionStatus``)::

    awaiting_approval --approve--> pending_payment --activate (billing)--> active --> cancelled | revoked | expired
          |                 \\--approve (price 0)------------------------> active
          \\--reject--> rejected

A new subscription is ``awaiting_approval`` when its plan is on request or its purpose is a reduced one
(public welfare, academic research, or any purpose the licence reduces: the operator checks the uploaded proof);
otherwise ``pending_payment`` when its price is above zero, else ``active`` at once. Becoming active grants the
entitlement (mode, delivered fields, quota, valid until); cancel, revoke and expiry end it. Every change publishes
its event in the same transaction; payloads carry metadata only.

Reads are scoped: a buyer sees its own subscriptions, an operator those to its products, the owner those under its
licences, regulators all; an auditor only those its firm's engagements in force cover (its operator is covered and
its life overlaps the engagement's period: created on or before the period's end, and still open or ended on or
after the period's start; see :mod:`marketplace.subscriptions.auditing`). An auditor without an engagement in force
is refused these reads (403 ``outside_engagement``, recorded), and one subscription outside its engagements is
refused (403, recorded) when it exists, 404 otherwise.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any, NamedTuple, TypeVar

from sqlalchemy import func
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession
from sqlmodel.sql.expression import Select, SelectOfScalar

from licensing.models import Licence, PlanType, Purpose
from licensing.services.licences import licence_in_force
from marketplace.catalog.models import Plan, PlanAccess, PlanBuyer, PlanVisibility, Product, ProductStatus
from marketplace.core.errors import Conflict, Forbidden, InvalidInput, NotFound
from marketplace.core.events import Actor, DomainEvent, publish
from marketplace.core.identity.models import Organisation
from marketplace.core.principal import OrgKind, Principal
from marketplace.core.settings import Settings
from marketplace.core.types import utcnow
from marketplace.subscriptions import auditing
from marketplace.subscriptions.models import (
    OPEN_STATUSES,
    Entitlement,
    QualificationStatus,
    Subscription,
    SubscriptionStatus,
)
from marketplace.subscriptions.schemas import SubscriptionCreate
from marketplace.subscriptions.services.agreement import require_current_agreement
from marketplace.subscriptions.services.qualifications import qualification_status

#: Purposes that always need a proof the operator checks (others only when the licence reduces their price).
PROOF_PURPOSES = frozenset({Purpose.public_welfare, Purpose.academic_research})
#: Parties that read every subscription (read-only); auditors read those their engagements cover.
READS_ALL = frozenset({OrgKind.regulator})
#: Statuses from which billing may activate a subscription (``active`` only to renew it with ``paid_until``).
ACTIVATABLE = frozenset({SubscriptionStatus.pending_payment, SubscriptionStatus.past_due, SubscriptionStatus.active})
CENT = Decimal("0.01")
#: A query over subscriptions (of whole rows or of some columns).
Query = TypeVar("Query", SelectOfScalar[Any], Select[Any])
MAX_REASON = 2000


class SubscriptionRecord(NamedTuple):
    """A subscription and its entitlement (None until it first became active)."""

    subscription: Subscription
    entitlement: Entitlement | None


# --- small rules ---------------------------------------------------------------------------------------------------------


def proof_required(subscription: Subscription) -> bool:
    """Whether the subscription's purpose needs a proof the operator checks (reduced or public-interest purposes)."""
    return subscription.purpose in PROOF_PURPOSES or subscription.reduction_percent > 0


def delivered_fields(product: Product) -> list[str]:
    """The fields a product delivers: every masking rule's field except those dropped."""
    return [str(rule["field"]) for rule in json.loads(product.rules_json) if rule.get("action", "keep") != "drop"]


def reduction_for(licence: Licence, purpose: Purpose) -> int:
    """The licence's reduction for a purpose, in percent (0 when none; 100 = free)."""
    try:
        value = int(json.loads(licence.reductions_json or "{}").get(purpose.value, 0))
    except (TypeError, ValueError):
        return 0
    return max(0, min(100, value))


def reduced_price(price: str, reduction_percent: int) -> Decimal:
    """A plan's price after a reduction in percent, to the cent (half up)."""
    try:
        amount = Decimal(price)
    except InvalidOperation:
        amount = Decimal(0)
    return (amount * (100 - reduction_percent) / 100).quantize(CENT, rounding=ROUND_HALF_UP)


def add_month(moment: datetime) -> datetime:
    """One calendar month later (the last day of a shorter month when the day does not exist)."""
    year, month = (moment.year + 1, 1) if moment.month == 12 else (moment.year, moment.month + 1)
    for day in range(moment.day, 27, -1):
        try:
            return moment.replace(year=year, month=month, day=day)
        except ValueError:
            continue
    return moment.replace(year=year, month=month, day=min(moment.day, 28))


def entitlement_until(plan: Plan, start: datetime) -> datetime:
    """How long an entitlement lasts: a one-off or free plan its term; monthly and metered plans one calendar month
    (billing renews them)."""
    if plan.type in (PlanType.monthly, PlanType.metered):
        return add_month(start)
    return start + timedelta(days=plan.term_days)


def _reason(reason: str, *, required: bool) -> str:
    text = reason.strip()
    if required and not text:
        raise InvalidInput("Give a written reason.", code="reason_required")
    if len(text) > MAX_REASON:
        raise InvalidInput(f"A reason is at most {MAX_REASON} characters.", code="reason_too_long")
    return text


def _actor(actor: Principal | Actor | None) -> Actor:
    return actor if isinstance(actor, Actor) else Actor.of(actor)


# --- scoping and reads ---------------------------------------------------------------------------------------------------


def scoped_subscriptions(stmt: Query, principal: Principal) -> Query:
    """Subscriptions the caller may see: a buyer its own, an operator those to its products, the owner those under
    its licences, regulators all, auditors those their engagements in force cover."""
    if principal.org_kind is OrgKind.buyer:
        return stmt.where(Subscription.buyer_org_id == principal.org_id)
    if principal.org_kind is OrgKind.operator:
        return stmt.where(Subscription.operator_id == principal.org_id)
    if principal.org_kind is OrgKind.owner:
        owned = select(Licence.id).where(Licence.owner_org_id == principal.org_id)
        return stmt.where(col(Subscription.licence_id).in_(owned))
    if auditing.is_auditor(principal):
        return stmt.where(col(Subscription.id).in_(auditing.covered_subscription_ids(principal)))
    if principal.org_kind in READS_ALL:
        return stmt
    raise Forbidden("Not allowed.", code="party_not_allowed")


async def find_scoped(
    session: AsyncSession, principal: Principal, subscription_id: uuid.UUID, *, lock: bool = False
) -> Subscription:
    """One subscription the caller may see, optionally locked for a change (404 ``subscription_not_found``; an
    auditor asking for one outside its engagements, or without an engagement in force: 403 ``outside_engagement``,
    recorded)."""
    stmt = scoped_subscriptions(select(Subscription), principal).where(Subscription.id == subscription_id)
    if lock:
        stmt = stmt.with_for_update()
    subscription: Subscription | None = (await session.exec(stmt)).first()
    if subscription is None:
        exists = auditing.is_auditor(principal) and await session.get(Subscription, subscription_id) is not None
        await auditing.refuse_record(session, principal, auditing.record_path("subscriptions", subscription_id), exists)
        raise NotFound("No such subscription.", code="subscription_not_found")
    return subscription


async def entitlement_of(session: AsyncSession, subscription_id: uuid.UUID) -> Entitlement | None:
    """The entitlement of a subscription (None before it first became active)."""
    return (await session.exec(select(Entitlement).where(Entitlement.subscription_id == subscription_id))).first()


async def get_subscription(session: AsyncSession, principal: Principal, subscription_id: uuid.UUID) -> SubscriptionRecord:
    """One subscription the caller may see, with its entitlement (404 ``subscription_not_found`` otherwise)."""
    subscription = await find_scoped(session, principal, subscription_id)
    return SubscriptionRecord(subscription, await entitlement_of(session, subscription.id))


async def list_subscriptions(
    session: AsyncSession,
    principal: Principal,
    *,
    status: SubscriptionStatus | None = None,
    product_id: uuid.UUID | None = None,
    buyer_org_id: uuid.UUID | None = None,
    limit: int = 100,
    offset: int = 0,
) -> tuple[Sequence[Subscription], int]:
    """The subscriptions the caller may see, newest first, and how many match in all (an auditor without an
    engagement in force: 403 ``outside_engagement``, recorded)."""
    await auditing.require_engagement(session, principal, "/api/subscriptions")
    stmt = scoped_subscriptions(select(Subscription), principal)
    if status is not None:
        stmt = stmt.where(Subscription.status == status)
    if product_id is not None:
        stmt = stmt.where(Subscription.product_id == product_id)
    if buyer_org_id is not None:
        stmt = stmt.where(Subscription.buyer_org_id == buyer_org_id)
    total = (await session.exec(select(func.count()).select_from(stmt.subquery()))).one()
    rows = (
        await session.exec(
            stmt.order_by(col(Subscription.created_at).desc(), col(Subscription.number).desc()).offset(offset).limit(limit)
        )
    ).all()
    return rows, int(total)


# --- events --------------------------------------------------------------------------------------------------------------


async def publish_subscription_event(
    session: AsyncSession,
    type_: str,
    actor: Actor,
    subscription: Subscription,
    owner_org_id: uuid.UUID,
    plan_type: PlanType | None,
    **payload: Any,
) -> None:
    """Publish a ``subscription.*`` event: the three organisations, the four subjects, and the subscription's terms."""
    await publish(
        session,
        DomainEvent(
            type_,
            actor,
            orgs=(subscription.buyer_org_id, subscription.operator_id, owner_org_id),
            subjects={
                "subscription": str(subscription.id),
                "product": str(subscription.product_id),
                "plan": str(subscription.plan_id),
                "licence": str(subscription.licence_id),
            },
            payload={
                "number": subscription.number,
                "status": subscription.status.value,
                "purpose": subscription.purpose.value,
                "reduction_percent": subscription.reduction_percent,
                "price": subscription.price,
                "currency": subscription.currency,
                "plan_type": plan_type.value if plan_type else None,
                **payload,
            },
        ),
    )


async def subscription_context(session: AsyncSession, subscription: Subscription) -> tuple[Product, Plan, Licence]:
    """The product, plan and licence a subscription was taken under."""
    product = await session.get(Product, subscription.product_id)
    plan = await session.get(Plan, subscription.plan_id)
    licence = await session.get(Licence, subscription.licence_id)
    assert product is not None
    assert plan is not None
    assert licence is not None
    return product, plan, licence


def _require_deliverable(product: Product, licence: Licence) -> None:
    """The licence is in force and the product listed (409 otherwise; the licence first, as its end delists)."""
    if not licence_in_force(licence):
        raise Conflict(
            f"Licence {licence.number} is not in force (status {licence.status.value}).",
            code="licence_not_in_force",
            licence_status=licence.status.value,
        )
    if product.status is not ProductStatus.listed:
        raise Conflict(f"The product is {product.status.value}, not listed.", code="product_not_listed")


# --- entitlement ---------------------------------------------------------------------------------------------------------


async def _grant(
    session: AsyncSession,
    subscription: Subscription,
    product: Product,
    plan: Plan,
    licence: Licence,
    actor: Actor,
    paid_until: datetime | None,
) -> Entitlement:
    """Make the subscription active and grant (or restore) its entitlement; publishes activated and granted."""
    now = utcnow()
    valid_until = paid_until or entitlement_until(plan, now)
    entitlement = await entitlement_of(session, subscription.id)
    if entitlement is None:
        entitlement = Entitlement(
            subscription_id=subscription.id,
            buyer_org_id=subscription.buyer_org_id,
            product_id=subscription.product_id,
            mode=product.mode,
            fields_json=json.dumps(delivered_fields(product)),
            quota_calls=plan.quota_calls,
            quota_rows=plan.quota_rows,
            valid_from=now,
            valid_until=valid_until,
        )
    else:
        entitlement.valid_until = valid_until
        entitlement.ended_at = None
        entitlement.ended_reason = None
    subscription.status = SubscriptionStatus.active
    subscription.starts_at = subscription.starts_at or now
    subscription.valid_until = valid_until
    subscription.updated_at = now
    session.add(subscription)
    session.add(entitlement)
    await session.flush()
    await publish_subscription_event(
        session,
        "subscription.activated",
        actor,
        subscription,
        licence.owner_org_id,
        plan.type,
        valid_until=valid_until.isoformat(),
    )
    await publish(
        session,
        DomainEvent(
            "entitlement.granted",
            actor,
            orgs=(subscription.buyer_org_id, subscription.operator_id, licence.owner_org_id),
            subjects={
                "entitlement": str(entitlement.id),
                "subscription": str(subscription.id),
                "product": str(subscription.product_id),
                "licence": str(subscription.licence_id),
            },
            payload={
                "mode": entitlement.mode.value,
                "field_count": len(json.loads(entitlement.fields_json)),
                "quota_calls": entitlement.quota_calls,
                "quota_rows": entitlement.quota_rows,
                "valid_until": valid_until.isoformat(),
            },
        ),
    )
    return entitlement


async def _end(
    session: AsyncSession,
    subscription: Subscription,
    status: SubscriptionStatus,
    reason: str,
    actor: Actor,
) -> None:
    """Close a subscription in ``status`` and end its entitlement at once; publishes both events."""
    now = utcnow()
    _product, plan, licence = await subscription_context(session, subscription)
    previous = subscription.status
    subscription.status = status
    subscription.status_reason = reason or None
    subscription.updated_at = now
    session.add(subscription)
    await publish_subscription_event(
        session,
        f"subscription.{status.value}",
        actor,
        subscription,
        licence.owner_org_id,
        plan.type,
        reason=reason,
        previous_status=previous.value,
    )
    entitlement = await entitlement_of(session, subscription.id)
    if entitlement is not None and entitlement.ended_at is None:
        entitlement.ended_at = now
        entitlement.ended_reason = status.value
        session.add(entitlement)
        await publish(
            session,
            DomainEvent(
                "entitlement.ended",
                actor,
                orgs=(subscription.buyer_org_id, subscription.operator_id, licence.owner_org_id),
                subjects={
                    "entitlement": str(entitlement.id),
                    "subscription": str(subscription.id),
                    "product": str(subscription.product_id),
                    "licence": str(subscription.licence_id),
                },
                payload={"ended_reason": status.value, "reason": reason},
            ),
        )


# --- creating ------------------------------------------------------------------------------------------------------------


async def _offered_plan(session: AsyncSession, principal: Principal, plan_id: uuid.UUID) -> Plan:
    """An active plan offered to the caller: public, or private and naming the caller (404 otherwise)."""
    plan = await session.get(Plan, plan_id)
    if plan is None or not plan.active:
        raise NotFound("No such plan.", code="plan_not_found")
    if plan.visibility is PlanVisibility.private:
        named = await session.get(PlanBuyer, (plan.id, principal.org_id))
        if named is None:
            raise NotFound("No such plan.", code="plan_not_found")
    return plan


async def _next_number(session: AsyncSession, year: int) -> str:
    """``SUB-<year>-<six digits>``: one more than the year's highest (fixed width, so the text maximum is the highest)."""
    prefix = f"SUB-{year}-"
    highest = (await session.exec(select(func.max(Subscription.number)).where(col(Subscription.number).startswith(prefix)))).one()
    tail = str(highest).removeprefix(prefix) if highest else "0"
    return f"{prefix}{(int(tail) if tail.isdigit() else 0) + 1:06d}"


async def create_subscription(
    session: AsyncSession, principal: Principal, settings: Settings | None, data: SubscriptionCreate
) -> SubscriptionRecord:
    """A buyer person subscribes to a plan for a purpose, accepting the current agreement.

    Every rule is checked before anything is written; each refusal has its code: ``plan_not_found`` (404: unknown,
    inactive, or private and not offered to this buyer), ``product_not_listed`` (409), ``purpose_not_permitted``
    (400: not offered by the product or not permitted by the licence), ``licence_not_in_force`` (409),
    ``agreement_outdated`` (409), ``qualification_required`` (403: a plan with a price after reduction, or any
    metered plan, needs an approved qualification with the product's operator), ``subscription_exists`` (409: one
    open subscription per buyer and product). ``settings`` is accepted for symmetry with the other writes."""
    del settings
    for attempt in range(5):
        try:
            return await _create(session, principal, data)
        except IntegrityError:
            # Another subscription took the same number at once: nothing is kept, so check and number again.
            await session.rollback()
            if attempt == 4:
                raise Conflict("Could not number the subscription; try again.", code="subscription_number_taken") from None
    raise AssertionError("unreachable")


async def _create(session: AsyncSession, principal: Principal, data: SubscriptionCreate) -> SubscriptionRecord:
    if principal.org_kind is not OrgKind.buyer or principal.is_program:
        raise Forbidden("Only a person of a buyer organisation subscribes.", code="party_not_allowed")
    plan = await _offered_plan(session, principal, data.plan_id)
    product = await session.get(Product, plan.product_id)
    assert product is not None
    if product.status is not ProductStatus.listed:
        raise Conflict(
            f"The product is {product.status.value}; only a listed product can be subscribed to.", code="product_not_listed"
        )
    licence = await session.get(Licence, product.licence_id)
    assert licence is not None
    offered = set(json.loads(product.purposes_json))
    permitted = set(json.loads(licence.purposes_json))
    if data.purpose.value not in offered or data.purpose.value not in permitted:
        raise InvalidInput(
            f"The purpose {data.purpose.value} is not one this product is offered for under its licence.",
            code="purpose_not_permitted",
            permitted=sorted(offered & permitted),
        )
    _require_deliverable(product, licence)
    agreement = require_current_agreement(data.agreement_version)
    reduction = reduction_for(licence, data.purpose)
    price = reduced_price(plan.price, reduction)
    paid = price > 0 or plan.type is PlanType.metered
    if paid and await qualification_status(session, principal.org_id, product.operator_id) is not QualificationStatus.approved:
        raise Forbidden(
            "A paid plan needs your organisation's qualification approved by the product's operator.",
            code="qualification_required",
            operator_id=str(product.operator_id),
        )
    # One open subscription per buyer and product: serialise this buyer's subscribing (row lock on PostgreSQL).
    await session.exec(select(Organisation.id).where(Organisation.id == principal.org_id).with_for_update())
    existing = (
        await session.exec(
            select(Subscription.number).where(
                Subscription.buyer_org_id == principal.org_id,
                Subscription.product_id == product.id,
                col(Subscription.status).in_(list(OPEN_STATUSES)),
            )
        )
    ).first()
    if existing is not None:
        raise Conflict(
            f"Your organisation already has subscription {existing} to this product.", code="subscription_exists", number=existing
        )

    needs_proof = data.purpose in PROOF_PURPOSES or reduction > 0
    if needs_proof or plan.access is PlanAccess.on_request:
        status = SubscriptionStatus.awaiting_approval
    elif price > 0:
        status = SubscriptionStatus.pending_payment
    else:
        status = SubscriptionStatus.active
    now = utcnow()
    subscription = Subscription(
        number=await _next_number(session, now.year),
        buyer_org_id=principal.org_id,
        product_id=product.id,
        plan_id=plan.id,
        operator_id=product.operator_id,
        licence_id=licence.id,
        purpose=data.purpose,
        purpose_note=data.purpose_note,
        reduction_percent=reduction,
        price=str(price),
        currency=plan.currency,
        agreement_version=agreement.version,
        agreed_by=principal.user_id,
        agreed_at=now,
        status=status,
        created_by=principal.user_id,
        created_at=now,
        updated_at=now,
    )
    session.add(subscription)
    await session.flush()
    actor = Actor.of(principal)
    first_event = "subscription.requested" if status is SubscriptionStatus.awaiting_approval else "subscription.created"
    await publish_subscription_event(
        session,
        first_event,
        actor,
        subscription,
        licence.owner_org_id,
        plan.type,
        status=status.value,
        access=plan.access.value,
        proof_required=needs_proof,
        agreement_version=agreement.version,
        plan_price=plan.price,
    )
    entitlement = None
    if status is SubscriptionStatus.active:
        entitlement = await _grant(session, subscription, product, plan, licence, actor, None)
    await session.commit()
    await session.refresh(subscription)
    if entitlement is not None:
        await session.refresh(entitlement)
    return SubscriptionRecord(subscription, entitlement)


# --- the operator's decisions --------------------------------------------------------------------------------------------


def _require_operator_person(principal: Principal) -> None:
    if principal.org_kind is not OrgKind.operator or principal.is_program:
        raise Forbidden("Only the product's operator may do this.", code="party_not_allowed")


async def decide_subscription(
    session: AsyncSession, principal: Principal, subscription_id: uuid.UUID, approve: bool, reason: str = ""
) -> SubscriptionRecord:
    """The operator decides on a subscription awaiting approval (an on-request plan, or a reduced purpose's proof).

    Approving (``subscription.approved``) marks the proof checked and moves it to ``pending_payment`` when its price
    is above zero, else makes it ``active`` with its entitlement; refused without an uploaded proof when one is
    needed (409 ``proof_missing``), or when the product is no longer listed or the licence not in force (409).
    Rejecting needs a written reason (400 ``reason_required``) -> ``rejected``. Only a subscription awaiting
    approval is decided (409 ``subscription_not_awaiting_approval``)."""
    _require_operator_person(principal)
    reason = _reason(reason, required=not approve)
    subscription = await find_scoped(session, principal, subscription_id, lock=True)
    if subscription.status is not SubscriptionStatus.awaiting_approval:
        raise Conflict(
            f"Subscription {subscription.number} is {subscription.status.value}, not awaiting approval.",
            code="subscription_not_awaiting_approval",
        )
    product, plan, licence = await subscription_context(session, subscription)
    actor = Actor.of(principal)
    if not approve:
        subscription.status = SubscriptionStatus.rejected
        subscription.status_reason = reason
        subscription.updated_at = utcnow()
        session.add(subscription)
        await publish_subscription_event(
            session, "subscription.rejected", actor, subscription, licence.owner_org_id, plan.type, reason=reason
        )
        await session.commit()
        await session.refresh(subscription)
        return SubscriptionRecord(subscription, None)
    needs_proof = proof_required(subscription)
    if needs_proof and subscription.proof_location is None:
        raise Conflict("The buyer has not uploaded the proof of its purpose yet.", code="proof_missing")
    _require_deliverable(product, licence)
    subscription.proof_checked = needs_proof
    paid = Decimal(subscription.price) > 0
    subscription.status = SubscriptionStatus.pending_payment
    subscription.status_reason = reason or None
    subscription.updated_at = utcnow()
    session.add(subscription)
    await publish_subscription_event(
        session,
        "subscription.approved",
        actor,
        subscription,
        licence.owner_org_id,
        plan.type,
        reason=reason,
        proof_checked=needs_proof,
        proof_sha256=subscription.proof_sha256,
    )
    entitlement = None
    if not paid:
        entitlement = await _grant(session, subscription, product, plan, licence, actor, None)
    await session.commit()
    await session.refresh(subscription)
    if entitlement is not None:
        await session.refresh(entitlement)
    return SubscriptionRecord(subscription, entitlement)


async def activate_subscription(
    session: AsyncSession,
    subscription_id: uuid.UUID,
    actor: Principal | Actor | None,
    *,
    paid_until: datetime | None = None,
    commit: bool = True,
    keep_past_due: bool = False,
) -> SubscriptionRecord:
    """Billing confirms payment: a ``pending_payment`` (or ``past_due``) subscription becomes ``active`` with its
    entitlement, valid until ``paid_until`` or the plan's period; an active one given ``paid_until`` is renewed
    (``subscription.renewed``, entitlement extended, never shortened). ``keep_past_due``: the payment is for an
    earlier period while a later one is still unpaid, so a past-due subscription is renewed but stays past due.

    No caller scoping (billing has already checked the payment). Refused (409) when the subscription is in another
    status (``subscription_not_activatable``), its product is no longer listed or its licence not in force.
    ``commit=False`` leaves the transaction open, for billing to commit with its payment record."""
    subscription = (await session.exec(select(Subscription).where(Subscription.id == subscription_id).with_for_update())).first()
    if subscription is None:
        raise NotFound("No such subscription.", code="subscription_not_found")
    if subscription.status not in ACTIVATABLE or (subscription.status is SubscriptionStatus.active and paid_until is None):
        raise Conflict(
            f"Subscription {subscription.number} is {subscription.status.value}; it cannot be activated.",
            code="subscription_not_activatable",
        )
    product, plan, licence = await subscription_context(session, subscription)
    _require_deliverable(product, licence)
    event_actor = _actor(actor)
    renewing = subscription.status is SubscriptionStatus.active or (
        keep_past_due and subscription.status is SubscriptionStatus.past_due
    )
    if renewing and paid_until is not None:
        entitlement = await entitlement_of(session, subscription.id)
        assert entitlement is not None
        entitlement.valid_until = max(entitlement.valid_until, paid_until)
        subscription.valid_until = entitlement.valid_until
        subscription.updated_at = utcnow()
        session.add_all([entitlement, subscription])
        await publish_subscription_event(
            session,
            "subscription.renewed",
            event_actor,
            subscription,
            licence.owner_org_id,
            plan.type,
            valid_until=entitlement.valid_until.isoformat(),
        )
    else:
        entitlement = await _grant(session, subscription, product, plan, licence, event_actor, paid_until)
    if commit:
        await session.commit()
        await session.refresh(subscription)
        await session.refresh(entitlement)
    else:
        await session.flush()
    return SubscriptionRecord(subscription, entitlement)


async def mark_past_due(
    session: AsyncSession, subscription_id: uuid.UUID, actor: Principal | Actor | None, *, grace_until: datetime, reason: str
) -> SubscriptionRecord:
    """Billing saw a renewal go unpaid: an ``active`` subscription becomes ``past_due`` and its entitlement runs on
    until ``grace_until`` (the plan's grace period; deliveries are then refused ``subscription_past_due`` until it is
    paid). Idempotent: a subscription already past due is left as it is. Leaves the transaction open (billing
    commits it with its invoice change)."""
    subscription = (await session.exec(select(Subscription).where(Subscription.id == subscription_id).with_for_update())).first()
    if subscription is None:
        raise NotFound("No such subscription.", code="subscription_not_found")
    entitlement = await entitlement_of(session, subscription.id)
    if subscription.status is SubscriptionStatus.past_due:
        return SubscriptionRecord(subscription, entitlement)
    if subscription.status is not SubscriptionStatus.active:
        raise Conflict(
            f"Subscription {subscription.number} is {subscription.status.value}, not active.", code="subscription_not_active"
        )
    _product, plan, licence = await subscription_context(session, subscription)
    subscription.status = SubscriptionStatus.past_due
    subscription.status_reason = _reason(reason, required=True)
    subscription.updated_at = utcnow()
    if entitlement is not None and entitlement.valid_until < grace_until:
        entitlement.valid_until = grace_until
        subscription.valid_until = grace_until
        session.add(entitlement)
    session.add(subscription)
    await session.flush()
    await publish_subscription_event(
        session,
        "subscription.past_due",
        _actor(actor),
        subscription,
        licence.owner_org_id,
        plan.type,
        grace_until=grace_until.isoformat(),
        reason=subscription.status_reason,
    )
    return SubscriptionRecord(subscription, entitlement)


# --- ending --------------------------------------------------------------------------------------------------------------


async def cancel_subscription(
    session: AsyncSession, principal: Principal, subscription_id: uuid.UUID, reason: str = ""
) -> SubscriptionRecord:
    """The buyer cancels its open subscription: ``cancelled``, access ends at once (``entitlement.ended``).
    Refused when it is no longer open (409 ``subscription_not_open``)."""
    if principal.org_kind is not OrgKind.buyer or principal.is_program:
        raise Forbidden("Only a person of the subscribing buyer cancels.", code="party_not_allowed")
    reason = _reason(reason, required=False)
    subscription = await find_scoped(session, principal, subscription_id, lock=True)
    _require_open(subscription)
    await _end(session, subscription, SubscriptionStatus.cancelled, reason, Actor.of(principal))
    return await _committed(session, subscription)


async def revoke_subscription(
    session: AsyncSession, principal: Principal, subscription_id: uuid.UUID, reason: str
) -> SubscriptionRecord:
    """The operator revokes an open subscription to its product, with a written reason (400 ``reason_required``):
    ``revoked``, access ends at once. Refused when it is no longer open (409 ``subscription_not_open``)."""
    _require_operator_person(principal)
    reason = _reason(reason, required=True)
    subscription = await find_scoped(session, principal, subscription_id, lock=True)
    _require_open(subscription)
    await _end(session, subscription, SubscriptionStatus.revoked, reason, Actor.of(principal))
    return await _committed(session, subscription)


async def end_for_refund(session: AsyncSession, subscription_id: uuid.UUID, actor: Principal | Actor, reason: str) -> None:
    """Billing refunded a subscription in full and the operator chose to end its access: ``revoked`` with the
    refund's reason, entitlement ended at once. Leaves the transaction open (billing commits it with the refund).
    A subscription no longer open is left as it is."""
    await end_for_billing(session, subscription_id, actor, SubscriptionStatus.revoked, reason)


async def end_for_billing(
    session: AsyncSession, subscription_id: uuid.UUID, actor: Principal | Actor, status: SubscriptionStatus, reason: str
) -> bool:
    """Billing ends an open subscription (``revoked`` after a full refund, ``cancelled`` when the buyer cancelled
    at the payment provider), entitlement ended at once; returns whether it was open. Leaves the transaction open."""
    subscription = (await session.exec(select(Subscription).where(Subscription.id == subscription_id).with_for_update())).first()
    if subscription is None:
        raise NotFound("No such subscription.", code="subscription_not_found")
    if subscription.status not in OPEN_STATUSES:
        return False
    await _end(session, subscription, status, _reason(reason, required=True), _actor(actor))
    return True


def _require_open(subscription: Subscription) -> None:
    if subscription.status not in OPEN_STATUSES:
        raise Conflict(
            f"Subscription {subscription.number} is {subscription.status.value}; it is no longer open.",
            code="subscription_not_open",
        )


async def _committed(session: AsyncSession, subscription: Subscription) -> SubscriptionRecord:
    await session.commit()
    await session.refresh(subscription)
    return SubscriptionRecord(subscription, await entitlement_of(session, subscription.id))


async def expire_due_subscriptions(session: AsyncSession, now: datetime) -> list[uuid.UUID]:
    """End every active subscription whose ``valid_until`` has passed (``expired``, entitlement ended). A past-due
    one is left to billing: its access stops when its grace ends, and it becomes active again when paid.
    Idempotent: returns the ids expired by this call (none when run again)."""
    due = (
        await session.exec(
            select(Subscription)
            .where(
                col(Subscription.status) == SubscriptionStatus.active,
                col(Subscription.valid_until).is_not(None),
                col(Subscription.valid_until) < now,
            )
            .order_by(col(Subscription.number))
            .with_for_update()
        )
    ).all()
    for subscription in due:
        assert subscription.valid_until is not None
        await _end(
            session,
            subscription,
            SubscriptionStatus.expired,
            f"Valid until {subscription.valid_until.isoformat()}.",
            Actor.of(None),
        )
    await session.commit()
    return [subscription.id for subscription in due]
