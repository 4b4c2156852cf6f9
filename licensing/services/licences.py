"""Franchise licences: drafts, their lifecycle, the one "in force" rule and the cascade of a licence ending.

The only place that writes licences. Lifecycle: draft -> granted -> suspended <-> granted -> revoked | expired.
Every change bumps ``Licence.version``, writes a ``LicenceVersion`` (change, status, reason, actor, whole terms)
and publishes ``licence.<change>`` in the same transaction. Suspension, revocation and expiry also withdraw the
licence's pending listing reviews and delist its approved ones (:func:`cascade_licence_ended`); other domains
(catalog, subscriptions, delivery) react to the published events and call :func:`require_licence_in_force`.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import func
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from licensing import auditing
from licensing.models import (
    DataResource,
    DeliveryMode,
    Grade,
    Licence,
    LicenceResource,
    LicenceStatus,
    LicenceVersion,
    ListingReview,
    PlanType,
    Purpose,
    ReviewStatus,
)
from licensing.schemas import (
    LicenceAmend,
    LicenceCreate,
    LicenceDetail,
    LicenceTerm,
    LicenceTerms,
    LicenceVersionView,
    LicenceView,
    LicensedResource,
    VolumeCaps,
)
from marketplace.core.errors import Conflict, Forbidden, InvalidInput, NotFound
from marketplace.core.events import Actor, DomainEvent, publish
from marketplace.core.identity.models import Organisation
from marketplace.core.principal import OrgKind, Principal
from marketplace.core.types import utcnow

#: The longest term a licence may have.
MAX_TERM_YEARS = 5
MAX_REASON = 2000
#: Parties that read every licence (the auditor's engagement scoping comes with the engagements issue).
READS_ALL = frozenset({OrgKind.regulator, OrgKind.auditor})


@dataclass(frozen=True)
class Transition:
    """A change of status: from which statuses it is allowed, and where it leads."""

    change: str
    allowed_from: frozenset[LicenceStatus]
    to: LicenceStatus


GRANT = Transition("granted", frozenset({LicenceStatus.draft}), LicenceStatus.granted)
SUSPEND = Transition("suspended", frozenset({LicenceStatus.granted}), LicenceStatus.suspended)
REINSTATE = Transition("reinstated", frozenset({LicenceStatus.suspended}), LicenceStatus.granted)
REVOKE = Transition("revoked", frozenset({LicenceStatus.granted, LicenceStatus.suspended}), LicenceStatus.revoked)
EXPIRE = Transition("expired", frozenset({LicenceStatus.granted, LicenceStatus.suspended}), LicenceStatus.expired)
TRANSITIONS = {t.change: t for t in (GRANT, SUSPEND, REINSTATE, REVOKE, EXPIRE)}
#: Changes after which nothing may be built on the licence any more: its listings are withdrawn or delisted.
ENDING_CHANGES = frozenset({SUSPEND.change, REVOKE.change, EXPIRE.change})


def today() -> date:
    """The platform's calendar day (UTC)."""
    return utcnow().date()


# --- the rule later issues hook into ----------------------------------------------------------------


def licence_in_force(licence: Licence, on: date | None = None) -> bool:
    """Whether anything may be built on or delivered under ``licence`` on a day: granted, and the day within its term.

    The term is inclusive at both ends: in force from ``starts_on`` through ``ends_on``.
    """
    day = on or today()
    return licence.status is LicenceStatus.granted and licence.starts_on <= day <= licence.ends_on


async def require_licence_in_force(session: AsyncSession, licence_id: uuid.UUID, on: date | None = None) -> Licence:
    """The licence, when it is in force; otherwise Conflict ``licence_not_in_force`` (404 when unknown).

    Every product listing, subscription, entitlement check and delivery calls this (no caller scoping here:
    callers have already scoped the record that names the licence).
    """
    licence = await session.get(Licence, licence_id)
    if licence is None:
        raise NotFound("No such licence.", code="licence_not_found")
    if not licence_in_force(licence, on):
        raise Conflict(
            f"Licence {licence.number} is not in force (status {licence.status.value}, term {licence.starts_on} to {licence.ends_on}).",
            code="licence_not_in_force",
            licence_status=licence.status.value,
        )
    return licence


# --- terms ----------------------------------------------------------------------------------------


def _add_years(day: date, years: int) -> date:
    if day.year + years > date.max.year:
        return date.max
    try:
        return day.replace(year=day.year + years)
    except ValueError:  # 29 February -> 28 February
        return day.replace(year=day.year + years, day=28)


def check_term(starts_on: date, ends_on: date) -> None:
    """The term ends after it starts and lasts at most five years (ends no later than the start's fifth anniversary)."""
    if ends_on <= starts_on:
        raise InvalidInput(f"The term must end after it starts ({starts_on} to {ends_on}).", code="term_invalid")
    latest = _add_years(starts_on, MAX_TERM_YEARS)
    if ends_on > latest:
        raise InvalidInput(
            f"A licence lasts at most {MAX_TERM_YEARS} years: a term starting on {starts_on} ends on {latest} at the latest.",
            code="term_too_long",
        )


def check_reason(reason: str) -> str:
    """A written reason: not blank, at most 2000 characters. Returns it without surrounding spaces."""
    text = reason.strip()
    if not text:
        raise InvalidInput("Give a written reason for this change.", code="reason_required")
    if len(text) > MAX_REASON:
        raise InvalidInput(f"A reason is at most {MAX_REASON} characters.", code="reason_too_long")
    return text


async def _check_terms(session: AsyncSession, principal: Principal, terms: LicenceTerms) -> list[DataResource]:
    """Every rule on the terms that needs more than their shape; returns the licensed resources."""
    operator = await session.get(Organisation, terms.operator_id)
    if operator is None or operator.kind != OrgKind.operator:
        raise InvalidInput("A licence is granted to an organisation of kind operator.", code="licensee_not_an_operator")
    check_term(terms.starts_on, terms.ends_on)
    not_permitted = sorted(p.value for p in terms.reductions if p not in terms.purposes)
    if not_permitted:
        raise InvalidInput(
            f"Reductions apply only to permitted purposes; not permitted: {', '.join(not_permitted)}.",
            code="reduction_purpose_not_permitted",
            purposes=not_permitted,
        )
    rows = (
        await session.exec(
            select(DataResource).where(
                col(DataResource.id).in_(terms.resource_ids), DataResource.owner_org_id == principal.org_id
            )
        )
    ).all()
    found = {r.id: r for r in rows}
    unknown = [str(i) for i in terms.resource_ids if i not in found]
    if unknown:
        raise InvalidInput("Some resources are not yours or do not exist.", code="resource_not_found", resource_ids=unknown)
    _refuse_l4(found.values())
    return [found[i] for i in terms.resource_ids]


def _refuse_l4(resources: Iterable[DataResource]) -> None:
    core = sorted(r.code for r in resources if r.grade is Grade.L4)
    if core:
        raise InvalidInput(
            f"L4 (core) resources are never licensable: {', '.join(core)}.", code="l4_not_licensable", resources=core
        )


async def _resource_ids(session: AsyncSession, licence_id: uuid.UUID) -> list[uuid.UUID]:
    rows = await session.exec(select(LicenceResource.resource_id).where(LicenceResource.licence_id == licence_id))
    return sorted(rows.all(), key=str)


def _terms_of(licence: Licence, resource_ids: Sequence[uuid.UUID]) -> LicenceTerms:
    return LicenceTerms(
        operator_id=licence.operator_id,
        resource_ids=list(resource_ids),
        purposes=[Purpose(p) for p in json.loads(licence.purposes_json)],
        modes=[DeliveryMode(m) for m in json.loads(licence.modes_json)],
        territory=licence.territory,
        starts_on=licence.starts_on,
        ends_on=licence.ends_on,
        price_caps={PlanType(k): v for k, v in json.loads(licence.price_caps_json).items()},
        volume_caps=VolumeCaps.model_validate(json.loads(licence.volume_caps_json)),
        min_k=licence.min_k,
        fee_rate=licence.fee_rate,
        reductions={Purpose(k): int(v) for k, v in json.loads(licence.reductions_json).items()},
    )


def _apply_terms(licence: Licence, terms: LicenceTerms) -> None:
    licence.operator_id = terms.operator_id
    licence.purposes_json = json.dumps([p.value for p in terms.purposes])
    licence.modes_json = json.dumps([m.value for m in terms.modes])
    licence.territory = terms.territory
    licence.starts_on = terms.starts_on
    licence.ends_on = terms.ends_on
    licence.price_caps_json = json.dumps({k.value: v for k, v in terms.price_caps.items()}, sort_keys=True)
    licence.volume_caps_json = json.dumps(terms.volume_caps.model_dump(mode="json"), sort_keys=True)
    licence.min_k = terms.min_k
    licence.fee_rate = terms.fee_rate
    licence.reductions_json = json.dumps({k.value: v for k, v in terms.reductions.items()}, sort_keys=True)


# --- versions and events ----------------------------------------------------------------------------


async def _record_change(
    session: AsyncSession, licence: Licence, change: str, reason: str, actor: Actor, actor_id: uuid.UUID | None
) -> None:
    """The version row and the event of a change already applied to ``licence`` (its version already bumped)."""
    resource_ids = await _resource_ids(session, licence.id)
    terms = _terms_of(licence, resource_ids).model_dump(mode="json")
    session.add(
        LicenceVersion(
            licence_id=licence.id,
            version=licence.version,
            change=change,
            status=licence.status,
            reason=reason,
            terms_json=json.dumps(terms, sort_keys=True),
            actor_id=actor_id,
        )
    )
    await publish(
        session,
        DomainEvent(
            f"licence.{change}",
            actor,
            orgs=(licence.owner_org_id, licence.operator_id),
            subjects={"licence": str(licence.id)},
            payload={
                "number": licence.number,
                "version": licence.version,
                "status": licence.status.value,
                "reason": reason,
                "resource_ids": [str(i) for i in resource_ids],
                "term": {"starts_on": licence.starts_on.isoformat(), "ends_on": licence.ends_on.isoformat()},
                # What supervision's alert rules check subscriptions and plans against.
                "purposes": terms["purposes"],
                "price_caps": terms["price_caps"],
                # The franchise fee rate, for the annual public disclosure.
                "fee_rate": str(licence.fee_rate),
            },
        ),
    )


async def _next_number(session: AsyncSession, year: int) -> str:
    """The next readable number of the year, ``LIC-<year>-<sequence>`` (four digits at least)."""
    prefix = f"LIC-{year}-"
    numbers = (await session.exec(select(Licence.number).where(col(Licence.number).startswith(prefix)))).all()
    sequences = [int(tail) for number in numbers if (tail := number.removeprefix(prefix)).isdigit()]
    return f"{prefix}{max(sequences, default=0) + 1:04d}"


# --- writes ----------------------------------------------------------------------------------------


def _require_owner(principal: Principal) -> None:
    if principal.org_kind is not OrgKind.owner or principal.is_program:
        raise Forbidden("Only the owner (data authority) manages licences.", code="party_not_allowed")


async def _owned_licence(session: AsyncSession, principal: Principal, licence_id: uuid.UUID) -> Licence:
    """The owner's licence, locked for the change (404 when it is not the caller's)."""
    _require_owner(principal)
    stmt = select(Licence).where(Licence.id == licence_id, Licence.owner_org_id == principal.org_id).with_for_update()
    licence = (await session.exec(stmt)).first()
    if licence is None:
        raise NotFound("No such licence.", code="licence_not_found")
    return licence


async def create_licence(session: AsyncSession, principal: Principal, data: LicenceCreate) -> LicenceDetail:
    """The owner drafts a licence for an operator. Everything is checked before anything is written."""
    _require_owner(principal)
    reason = check_reason(data.reason)
    terms = LicenceTerms.model_validate(data.model_dump(exclude={"reason"}))
    await _check_terms(session, principal, terms)
    for attempt in range(5):
        licence = Licence(
            number=await _next_number(session, utcnow().year),
            owner_org_id=principal.org_id,
            operator_id=terms.operator_id,
            territory=terms.territory,
            starts_on=terms.starts_on,
            ends_on=terms.ends_on,
            purposes_json="[]",
            modes_json="[]",
            price_caps_json="{}",
            volume_caps_json="{}",
            reductions_json="{}",
            fee_rate=terms.fee_rate,
            created_by=principal.user_id,
        )
        _apply_terms(licence, terms)
        session.add(licence)
        try:
            await session.flush()
            break
        except IntegrityError:
            # Two drafts took the same number at once: nothing else was written yet, so start again.
            await session.rollback()
            if attempt == 4:
                raise Conflict("Could not number the licence; try again.", code="licence_number_taken") from None
    for resource_id in terms.resource_ids:
        session.add(LicenceResource(licence_id=licence.id, resource_id=resource_id))
    await session.flush()
    await _record_change(session, licence, "created", reason, Actor.of(principal), principal.user_id)
    await session.commit()
    return await describe_licence(session, licence)


async def amend_licence(session: AsyncSession, principal: Principal, licence_id: uuid.UUID, data: LicenceAmend) -> LicenceDetail:
    """The owner changes a draft's terms (only the fields given); the whole terms are checked again."""
    licence = await _owned_licence(session, principal, licence_id)
    reason = check_reason(data.reason)
    if licence.status is not LicenceStatus.draft:
        raise Conflict(
            f"Only a draft can be amended; licence {licence.number} is {licence.status.value}.",
            code="licence_not_draft",
            licence_status=licence.status.value,
        )
    changes = data.model_dump(exclude_unset=True, exclude={"reason"})
    changes = {k: v for k, v in changes.items() if v is not None}
    if not changes:
        raise InvalidInput("Name at least one term to change.", code="nothing_to_amend")
    current = _terms_of(licence, await _resource_ids(session, licence.id))
    terms = LicenceTerms.model_validate({**current.model_dump(), **changes})
    resources = await _check_terms(session, principal, terms)
    _apply_terms(licence, terms)
    if set(terms.resource_ids) != set(current.resource_ids):
        for link in (await session.exec(select(LicenceResource).where(LicenceResource.licence_id == licence.id))).all():
            await session.delete(link)
        await session.flush()
        for resource in resources:
            session.add(LicenceResource(licence_id=licence.id, resource_id=resource.id))
    licence.version += 1
    licence.updated_at = utcnow()
    session.add(licence)
    await session.flush()
    await _record_change(session, licence, "amended", reason, Actor.of(principal), principal.user_id)
    await session.commit()
    return await describe_licence(session, licence)


async def _transition(
    session: AsyncSession,
    licence: Licence,
    transition: Transition,
    reason: str,
    actor: Actor,
    actor_id: uuid.UUID | None,
) -> list[ListingReview]:
    """Apply ``transition`` (already known to be allowed), version it, publish it and run the cascade."""
    licence.status = transition.to
    licence.version += 1
    licence.updated_at = utcnow()
    session.add(licence)
    await session.flush()
    await _record_change(session, licence, transition.change, reason, actor, actor_id)
    if transition.change in ENDING_CHANGES:
        return await cascade_licence_ended(session, licence, transition.change, reason, actor, actor_id)
    return []


def _refuse_unless_allowed(licence: Licence, transition: Transition) -> None:
    if licence.status not in transition.allowed_from:
        allowed = " or ".join(sorted(s.value for s in transition.allowed_from))
        raise Conflict(
            f"Licence {licence.number} is {licence.status.value}; it can be {transition.change} only when {allowed}.",
            code="licence_transition_refused",
            licence_status=licence.status.value,
        )


async def change_status(
    session: AsyncSession, principal: Principal, licence_id: uuid.UUID, change: str, reason: str
) -> LicenceDetail:
    """The owner grants, suspends, reinstates or revokes a licence, with a written reason.

    ``change`` is one of ``granted``, ``suspended``, ``reinstated``, ``revoked`` (expiry is the task's).
    """
    transition = TRANSITIONS.get(change)
    if transition is None or transition is EXPIRE:
        raise InvalidInput(f"Unknown licence change {change!r}.", code="invalid_input")
    licence = await _owned_licence(session, principal, licence_id)
    text = check_reason(reason)
    _refuse_unless_allowed(licence, transition)
    if transition in (GRANT, REINSTATE):
        if licence.ends_on < today():
            raise Conflict(
                f"The term of licence {licence.number} ended on {licence.ends_on}; amend a draft or draft a new licence.",
                code="licence_term_ended",
            )
        resources = (
            await session.exec(
                select(DataResource)
                .join(LicenceResource, col(LicenceResource.resource_id) == col(DataResource.id))
                .where(LicenceResource.licence_id == licence.id)
            )
        ).all()
        _refuse_l4(resources)
    await _transition(session, licence, transition, text, Actor.of(principal), principal.user_id)
    await session.commit()
    return await describe_licence(session, licence)


async def grant_licence(session: AsyncSession, principal: Principal, licence_id: uuid.UUID, reason: str) -> LicenceDetail:
    """draft -> granted (the term must not have ended)."""
    return await change_status(session, principal, licence_id, GRANT.change, reason)


async def suspend_licence(session: AsyncSession, principal: Principal, licence_id: uuid.UUID, reason: str) -> LicenceDetail:
    """granted -> suspended; its listings are withdrawn or delisted at once."""
    return await change_status(session, principal, licence_id, SUSPEND.change, reason)


async def reinstate_licence(session: AsyncSession, principal: Principal, licence_id: uuid.UUID, reason: str) -> LicenceDetail:
    """suspended -> granted (delisted products must go through review again)."""
    return await change_status(session, principal, licence_id, REINSTATE.change, reason)


async def revoke_licence(session: AsyncSession, principal: Principal, licence_id: uuid.UUID, reason: str) -> LicenceDetail:
    """granted or suspended -> revoked, for good; its listings are withdrawn or delisted at once."""
    return await change_status(session, principal, licence_id, REVOKE.change, reason)


async def cascade_licence_ended(
    session: AsyncSession, licence: Licence, change: str, reason: str, actor: Actor, actor_id: uuid.UUID | None = None
) -> list[ListingReview]:
    """A licence stopped being in force: its pending reviews are withdrawn and its approved ones delisted.

    Runs inside the transaction of the licence change; each review changed publishes ``listing.withdrawn`` or
    ``listing.delisted``. Returns the reviews changed.
    """
    reviews = (
        await session.exec(
            select(ListingReview)
            .where(
                ListingReview.licence_id == licence.id,
                col(ListingReview.status).in_([ReviewStatus.pending, ReviewStatus.approved]),
            )
            .order_by(col(ListingReview.submitted_at))
            .with_for_update()
        )
    ).all()
    now = utcnow()
    why = f"Licence {licence.number} was {change}: {reason}"
    for review in reviews:
        review.status = ReviewStatus.withdrawn if review.status is ReviewStatus.pending else ReviewStatus.delisted
        review.decision_reason = why
        review.decided_at = now
        review.decided_by = actor_id
        session.add(review)
        await publish(
            session,
            DomainEvent(
                f"listing.{review.status.value}",
                actor,
                orgs=(licence.owner_org_id, review.operator_id),
                subjects={"listing_review": str(review.id), "licence": str(licence.id)},
                payload={
                    "product_ref": review.product_ref,
                    "licence_number": licence.number,
                    "licence_change": change,
                    "status": review.status.value,
                    "reason": why,
                },
            ),
        )
    await session.flush()
    return list(reviews)


async def expire_due_licences(session: AsyncSession, on: date) -> list[uuid.UUID]:
    """Expire every granted or suspended licence whose term ended before ``on``; runs the cascade. Idempotent.

    Returns the ids of the licences expired by this call (none when run again the same day).
    """
    due = (
        await session.exec(
            select(Licence)
            .where(
                col(Licence.status).in_([LicenceStatus.granted, LicenceStatus.suspended]),
                col(Licence.ends_on) < on,
            )
            .order_by(col(Licence.number))
            .with_for_update()
        )
    ).all()
    for licence in due:
        await _transition(session, licence, EXPIRE, f"The term ended on {licence.ends_on.isoformat()}.", Actor.of(None), None)
    await session.commit()
    return [licence.id for licence in due]


# --- reads ------------------------------------------------------------------------------------------


def _scoped(principal: Principal) -> Any:
    """Licences the caller may see: the owner its own, an operator those granted to it, supervisors all."""
    stmt = select(Licence)
    if principal.org_kind is OrgKind.owner:
        return stmt.where(Licence.owner_org_id == principal.org_id)
    if principal.org_kind is OrgKind.operator:
        return stmt.where(Licence.operator_id == principal.org_id)
    if auditing.is_auditor(principal):
        return stmt.where(col(Licence.id).in_(auditing.covered_licence_ids(principal)))
    if principal.org_kind in READS_ALL:
        return stmt
    raise Forbidden("Buyers see no licensing records.", code="party_not_allowed")


async def get_licence(session: AsyncSession, principal: Principal, licence_id: uuid.UUID) -> Licence:
    """One licence the caller may see (404 ``licence_not_found`` otherwise, without revealing that it exists; an
    auditor asking for a licence outside its engagements: 403 ``outside_engagement``, recorded)."""
    licence = (await session.exec(_scoped(principal).where(Licence.id == licence_id))).first()
    if licence is None:
        path = auditing.record_path("licensing/licences", licence_id)
        await auditing.refuse_record(session, principal, path, await session.get(Licence, licence_id) is not None)
        raise NotFound("No such licence.", code="licence_not_found")
    return licence  # type: ignore[no-any-return]


async def list_licences(
    session: AsyncSession,
    principal: Principal,
    *,
    status: LicenceStatus | None = None,
    operator_id: uuid.UUID | None = None,
    limit: int = 100,
    offset: int = 0,
) -> tuple[list[LicenceView], int]:
    """Licences the caller may see, newest first, and how many match in all (an auditor without an engagement in
    force: 403 ``outside_engagement``, recorded)."""
    await auditing.require_engagement(session, principal, "/api/licensing/licences")
    stmt = _scoped(principal)
    if status is not None:
        stmt = stmt.where(Licence.status == status)
    if operator_id is not None:
        stmt = stmt.where(Licence.operator_id == operator_id)
    total = (await session.exec(select(func.count()).select_from(stmt.subquery()))).one()
    page = (
        await session.exec(stmt.order_by(col(Licence.created_at).desc(), col(Licence.number).desc()).offset(offset).limit(limit))
    ).all()
    return await describe_licences(session, list(page)), int(total)


async def _resources_of(session: AsyncSession, licence_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, list[LicensedResource]]:
    found: dict[uuid.UUID, list[LicensedResource]] = {i: [] for i in licence_ids}
    if not licence_ids:
        return found
    rows = await session.exec(
        select(LicenceResource.licence_id, DataResource)
        .join(DataResource, col(DataResource.id) == col(LicenceResource.resource_id))
        .where(col(LicenceResource.licence_id).in_(licence_ids))
        .order_by(col(DataResource.code))
    )
    for licence_id, resource in rows.all():
        found[licence_id].append(
            LicensedResource(
                id=resource.id, code=resource.code, title=resource.title, title_zh=resource.title_zh, grade=resource.grade
            )
        )
    return found


def _view(licence: Licence, resources: list[LicensedResource]) -> dict[str, Any]:
    terms = _terms_of(licence, [r.id for r in resources])
    return {
        "id": licence.id,
        "number": licence.number,
        "status": licence.status,
        "in_force": licence_in_force(licence),
        "owner_org_id": licence.owner_org_id,
        "operator_id": licence.operator_id,
        "resources": resources,
        "purposes": terms.purposes,
        "modes": terms.modes,
        "territory": licence.territory,
        "term": LicenceTerm(starts_on=licence.starts_on, ends_on=licence.ends_on),
        "price_caps": terms.price_caps,
        "volume_caps": terms.volume_caps,
        "min_k": licence.min_k,
        "fee_rate": licence.fee_rate,
        "reductions": terms.reductions,
        "version": licence.version,
        "created_at": licence.created_at,
        "updated_at": licence.updated_at,
    }


async def describe_licences(session: AsyncSession, licences: Sequence[Licence]) -> list[LicenceView]:
    """Views of licences (with their resources), in the order given."""
    resources = await _resources_of(session, [licence.id for licence in licences])
    return [LicenceView(**_view(licence, resources[licence.id])) for licence in licences]


async def licence_versions(session: AsyncSession, principal: Principal, licence_id: uuid.UUID) -> list[LicenceVersionView]:
    """The timeline of a licence the caller may see, oldest change first."""
    licence = await get_licence(session, principal, licence_id)
    return await _timeline(session, licence.id)


async def _timeline(session: AsyncSession, licence_id: uuid.UUID) -> list[LicenceVersionView]:
    rows = (
        await session.exec(
            select(LicenceVersion).where(LicenceVersion.licence_id == licence_id).order_by(col(LicenceVersion.version))
        )
    ).all()
    return [
        LicenceVersionView(
            version=v.version,
            change=v.change,
            status=v.status,
            reason=v.reason,
            actor_id=v.actor_id,
            created_at=v.created_at,
            terms=json.loads(v.terms_json),
        )
        for v in rows
    ]


async def read_licence(session: AsyncSession, principal: Principal, licence_id: uuid.UUID) -> LicenceDetail:
    """One licence the caller may see, with its resources and timeline."""
    return await describe_licence(session, await get_licence(session, principal, licence_id))


async def describe_licence(session: AsyncSession, licence: Licence) -> LicenceDetail:
    """The view of one licence with its resources and timeline (no scoping: callers have scoped ``licence``)."""
    resources = await _resources_of(session, [licence.id])
    return LicenceDetail(**_view(licence, resources[licence.id]), timeline=await _timeline(session, licence.id))
