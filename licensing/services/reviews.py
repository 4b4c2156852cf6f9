"""Listing review: an operator submits a product built on its licence, the automated privacy and licence
checks run on the real contents, and the owner's reviewer approves (listed) or rejects (back to draft).

A submission whose checks fail is refused with ``listing_checks_failed`` (422) listing the checks, and
nothing is stored: only a submission that passed every check becomes a review, ``pending`` until the owner's
reviewer decides. ``check_listing`` runs the same checks without storing anything, for the operator to try.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from sqlalchemy import func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession
from sqlmodel.sql.expression import SelectOfScalar

from licensing import auditing
from licensing.models import (
    DataResource,
    DeliveryMode,
    Licence,
    LicenceResource,
    LicenceStatus,
    ListingReview,
    PlanType,
    Purpose,
    ResourceVersion,
    ReviewStatus,
)
from licensing.privacy import (
    LicenceScope,
    PlanTerms,
    ProductDraft,
    ProductSource,
    SourceResource,
    all_passed,
    measured_k_of,
    pseudonym_key,
    run_checks,
)
from licensing.schemas import CheckResult, FieldSpec, ListingSubmission
from marketplace.core.errors import Conflict, DomainError, Forbidden, InvalidInput, NotFound
from marketplace.core.events import Actor, DomainEvent, publish
from marketplace.core.principal import OrgKind, Principal
from marketplace.core.settings import Settings
from marketplace.core.types import utcnow


class ListingChecksFailed(DomainError):
    """The automated checks refused the product; the answer lists every check (``checks``) and the failed codes."""

    status, code, title = 422, "listing_checks_failed", "Listing checks failed"


@dataclass(frozen=True)
class ListingCheckOutcome:
    """The automated checks of a submission."""

    checks: list[CheckResult]

    @property
    def passed(self) -> bool:
        """Whether every check passed."""
        return all_passed(self.checks)

    @property
    def measured_k(self) -> int | None:
        """The k measured on the delivered projection (None when it delivers no quasi-identifier or was not measured)."""
        return measured_k_of(self.checks)

    @property
    def failed(self) -> list[str]:
        """Codes of the failed checks."""
        return [c.code for c in self.checks if not c.passed]


def _today() -> date:
    return utcnow().date()


def _reason(reason: str) -> str:
    reason = reason.strip()
    if not reason:
        raise InvalidInput("A written reason is required.", code="reason_required")
    return reason


# --- reading what the checks need -----------------------------------------------------------------------------


async def _operator_licence(session: AsyncSession, principal: Principal, licence_id: uuid.UUID) -> Licence:
    if principal.org_kind is not OrgKind.operator:
        raise Forbidden("Only an operator submits products for listing.", code="party_not_allowed")
    licence = await session.get(Licence, licence_id)
    if licence is None or licence.operator_id != principal.org_id:
        raise NotFound("No such licence of yours.", code="licence_not_found")
    return licence


def _licence_scope(licence: Licence, resource_ids: set[uuid.UUID]) -> LicenceScope:
    caps = json.loads(licence.price_caps_json)
    return LicenceScope(
        number=licence.number,
        status=LicenceStatus(licence.status),
        starts_on=licence.starts_on,
        ends_on=licence.ends_on,
        resource_ids=frozenset(resource_ids),
        purposes=frozenset(Purpose(p) for p in json.loads(licence.purposes_json)),
        modes=frozenset(DeliveryMode(m) for m in json.loads(licence.modes_json)),
        price_caps={PlanType(t): Decimal(str(v)) for t, v in caps.items() if v is not None and t in PlanType.__members__},
        min_k=licence.min_k,
    )


def _contents_path(settings: Settings, location: str) -> Path:
    root = settings.resolved_data_dir.resolve()
    path = (root / location).resolve()
    if not path.is_relative_to(root):  # a stored location never points outside the data folder
        raise ValueError(f"resource contents outside the data folder: {location}")
    return path


async def _source_resource(session: AsyncSession, settings: Settings, resource_id: uuid.UUID) -> SourceResource | None:
    resource = await session.get(DataResource, resource_id)
    if resource is None:
        return None
    contents = None
    if resource.current_version:
        version = (
            await session.exec(
                select(ResourceVersion).where(
                    ResourceVersion.resource_id == resource.id, ResourceVersion.version == resource.current_version
                )
            )
        ).first()
        if version is not None:
            contents = _contents_path(settings, version.location)
    return SourceResource(
        id=resource.id,
        code=resource.code,
        title=resource.title,
        grade=resource.grade,
        fields=tuple(FieldSpec.model_validate(f) for f in json.loads(resource.fields_json)),
        contents=contents,
    )


async def _evaluate(
    session: AsyncSession, settings: Settings, licence: Licence, submission: ListingSubmission
) -> ListingCheckOutcome:
    covered = set((await session.exec(select(LicenceResource.resource_id).where(LicenceResource.licence_id == licence.id))).all())
    # A resource outside the licence is never read: its contents are none of the operator's business.
    resource = await _source_resource(session, settings, submission.resource_id) if submission.resource_id in covered else None
    product = ProductDraft(
        mode=submission.mode,
        purposes=tuple(submission.purposes),
        plans=tuple(PlanTerms(type=p.type, price=Decimal(p.price)) for p in submission.plans),
        sources=(ProductSource(resource_id=submission.resource_id, resource=resource, rules=tuple(submission.rules)),),
    )
    scope = _licence_scope(licence, covered)
    key = pseudonym_key(settings)
    # DuckDB reads the Parquet contents: off the event loop.
    checks = await asyncio.to_thread(run_checks, scope, product, key, _today())
    return ListingCheckOutcome(checks=checks)


def _failure(outcome: ListingCheckOutcome, detail: str) -> ListingChecksFailed:
    return ListingChecksFailed(
        detail,
        failed=outcome.failed,
        measured_k=outcome.measured_k,
        checks=[c.model_dump(mode="json") for c in outcome.checks],
    )


# --- the operator's side -------------------------------------------------------------------------------------------


async def check_listing(
    session: AsyncSession, principal: Principal, settings: Settings, submission: ListingSubmission
) -> ListingCheckOutcome:
    """Run the automated checks of a submission on the operator's own licence, storing nothing."""
    licence = await _operator_licence(session, principal, submission.licence_id)
    return await _evaluate(session, settings, licence, submission)


async def submit_for_listing(
    session: AsyncSession, principal: Principal, settings: Settings, submission: ListingSubmission
) -> ListingReview:
    """Submit a product for listing under the operator's own licence (another operator's licence: 404).

    The automated checks run first on the real contents; if any fails, ``ListingChecksFailed`` (422) lists
    them and nothing is stored. Otherwise a ``pending`` review is stored for the owner's reviewer, with
    ``listing.submitted`` and ``listing.checks_passed`` in the ledger.
    """
    licence = await _operator_licence(session, principal, submission.licence_id)
    product_ref = submission.product_ref or str(uuid.uuid4())
    pending = (
        await session.exec(
            select(ListingReview.id).where(
                ListingReview.operator_id == principal.org_id,
                ListingReview.product_ref == product_ref,
                ListingReview.status == ReviewStatus.pending,
            )
        )
    ).first()
    if pending is not None:
        raise Conflict(f"Product {product_ref} already waits for review {pending}.", code="review_already_pending")
    outcome = await _evaluate(session, settings, licence, submission)
    if not outcome.passed:
        raise _failure(
            outcome,
            "The automated listing checks failed: " + ", ".join(outcome.failed) + ". Nothing was stored; fix the product "
            "and submit it again.",
        )
    stored = submission.model_copy(update={"product_ref": product_ref})
    review = ListingReview(
        operator_id=principal.org_id,
        licence_id=licence.id,
        product_ref=product_ref,
        product_name=submission.product_name,
        mode=submission.mode,
        submission_json=json.dumps(stored.model_dump(mode="json")),
        checks_json=json.dumps([c.model_dump(mode="json") for c in outcome.checks]),
        checks_passed=True,
        measured_k=outcome.measured_k,
        status=ReviewStatus.pending,
        submitted_by=principal.user_id,
    )
    session.add(review)
    await session.flush()
    subjects = {"review": str(review.id), "licence": str(licence.id), "resource": str(submission.resource_id)}
    orgs = (licence.owner_org_id, licence.operator_id)
    actor = Actor.of(principal)
    await publish(
        session,
        DomainEvent(
            "listing.submitted",
            actor,
            orgs=orgs,
            subjects=subjects,
            payload={
                "product_ref": product_ref,
                "product_name": submission.product_name,
                "mode": submission.mode.value,
                "purposes": [p.value for p in submission.purposes],
                "plans": [p.type.value for p in submission.plans],
                "fields_delivered": sum(1 for r in submission.rules if r.action.value != "drop"),
            },
        ),
    )
    await publish(
        session,
        DomainEvent(
            "listing.checks_passed",
            Actor("system", "platform"),
            orgs=orgs,
            subjects=subjects,
            payload={"checks": [c.code for c in outcome.checks], "measured_k": outcome.measured_k, "min_k": licence.min_k},
        ),
    )
    await session.commit()
    await session.refresh(review)
    return review


# --- reads -------------------------------------------------------------------------------------------------------------


def _scoped(stmt: SelectOfScalar[Any], principal: Principal) -> SelectOfScalar[Any]:
    if auditing.is_auditor(principal):  # reviews of the licences its engagements cover
        return stmt.where(col(ListingReview.licence_id).in_(auditing.covered_licence_ids(principal)))
    if principal.org_kind is OrgKind.regulator:
        return stmt
    if principal.org_kind is OrgKind.operator:
        return stmt.where(ListingReview.operator_id == principal.org_id)
    if principal.org_kind is OrgKind.owner:
        owned = select(Licence.id).where(Licence.owner_org_id == principal.org_id)
        return stmt.where(col(ListingReview.licence_id).in_(owned))
    raise Forbidden("Buyers see no licensing records.", code="party_not_allowed")


async def count_reviews_by_status(session: AsyncSession, principal: Principal) -> dict[ReviewStatus, int]:
    """How many reviews the caller may see are in each status (one query; statuses with none count 0)."""
    await auditing.require_engagement(session, principal, "/api/licensing/reviews")
    counted: Any = select(ListingReview.status, func.count())  # rows of (status, count): scoped like any review read
    stmt = _scoped(counted, principal).group_by(col(ListingReview.status))
    counts = dict.fromkeys(ReviewStatus, 0)
    for status, count in (await session.exec(stmt)).all():
        counts[ReviewStatus(status)] = count
    return counts


async def list_reviews(
    session: AsyncSession,
    principal: Principal,
    *,
    status: ReviewStatus | None = None,
    licence_id: uuid.UUID | None = None,
    limit: int = 100,
    offset: int = 0,
) -> tuple[list[ListingReview], int]:
    """Reviews the caller may see, newest first, and how many match: an operator its own, the owner those on its
    licences (its review queue with ``status=pending``), regulators all, auditors those of the licences their
    engagements in force cover (none in force: 403 ``outside_engagement``, recorded)."""
    await auditing.require_engagement(session, principal, "/api/licensing/reviews")
    stmt = _scoped(select(ListingReview), principal)
    if status is not None:
        stmt = stmt.where(ListingReview.status == status)
    if licence_id is not None:
        stmt = stmt.where(ListingReview.licence_id == licence_id)
    total = (await session.exec(select(func.count()).select_from(stmt.subquery()))).one()
    rows = await session.exec(
        stmt.order_by(col(ListingReview.submitted_at).desc(), col(ListingReview.id)).offset(offset).limit(limit)
    )
    return list(rows.all()), int(total)


async def get_review(session: AsyncSession, principal: Principal, review_id: uuid.UUID) -> ListingReview:
    """One review the caller may see (404 otherwise)."""
    review = (await session.exec(_scoped(select(ListingReview), principal).where(ListingReview.id == review_id))).first()
    if review is None:
        path = auditing.record_path("licensing/reviews", review_id)
        await auditing.refuse_record(session, principal, path, await session.get(ListingReview, review_id) is not None)
        raise NotFound("No such listing review.", code="review_not_found")
    assert isinstance(review, ListingReview)
    return review


def review_checks(review: ListingReview) -> list[CheckResult]:
    """The automated checks stored with a review."""
    return [CheckResult.model_validate(c) for c in json.loads(review.checks_json)]


# --- the owner's reviewer -----------------------------------------------------------------------------------------------


async def _pending_for_owner(session: AsyncSession, principal: Principal, review_id: uuid.UUID) -> tuple[ListingReview, Licence]:
    if principal.org_kind is not OrgKind.owner:
        raise Forbidden("Only the owner's reviewer decides on listings.", code="party_not_allowed")
    review = await get_review(session, principal, review_id)
    licence = await session.get(Licence, review.licence_id)
    assert licence is not None
    if review.status is not ReviewStatus.pending:
        raise Conflict(f"The review is {review.status.value}; only a pending review can be decided.", code="review_not_pending")
    return review, licence


async def _record_decision(
    session: AsyncSession,
    principal: Principal,
    review: ListingReview,
    licence: Licence,
    status: ReviewStatus,
    reason: str,
    **payload: Any,
) -> None:
    """Set the review's decision and publish ``listing.<status>`` in the caller's transaction."""
    review.status = status
    review.decided_by = principal.user_id
    review.decided_at = utcnow()
    review.decision_reason = reason
    session.add(review)
    await publish(
        session,
        DomainEvent(
            f"listing.{status.value}",
            Actor.of(principal),
            orgs=(licence.owner_org_id, licence.operator_id),
            subjects={"review": str(review.id), "licence": str(licence.id)},
            payload={"product_ref": review.product_ref, "reason": reason, **payload},
        ),
    )


async def _decide(
    session: AsyncSession, principal: Principal, review: ListingReview, licence: Licence, status: ReviewStatus, reason: str
) -> ListingReview:
    await _record_decision(session, principal, review, licence, status, reason)
    await session.commit()
    await session.refresh(review)
    return review


async def approve(
    session: AsyncSession, principal: Principal, settings: Settings, review_id: uuid.UUID, reason: str
) -> ListingReview:
    """The owner's reviewer approves a pending review: the product is listed (``listing.approved``).

    Refused (409) unless the review is pending, its checks passed, the licence is still in force, and the
    checks still pass on the current contents (a new version may have lowered k)."""
    reason = _reason(reason)
    review, licence = await _pending_for_owner(session, principal, review_id)
    if not review.checks_passed:
        raise Conflict("The automated checks of this review did not pass.", code="review_checks_failed")
    today = _today()
    if not (licence.status is LicenceStatus.granted and licence.starts_on <= today <= licence.ends_on):
        raise Conflict(
            f"Licence {licence.number} is {licence.status.value} or outside its term; nothing can be listed under it.",
            code="licence_not_in_force",
        )
    try:
        submission = ListingSubmission.model_validate(json.loads(review.submission_json))
    except ValidationError as exc:
        raise Conflict(
            "The stored submission cannot be checked again; submit the product anew.", code="review_unreadable"
        ) from exc
    outcome = await _evaluate(session, settings, licence, submission)
    if not outcome.passed:
        failure = _failure(
            outcome, "The automated checks no longer pass on the current contents: " + ", ".join(outcome.failed) + "."
        )
        raise Conflict(failure.detail, code="listing_checks_no_longer_pass", **failure.extra)
    return await _decide(session, principal, review, licence, ReviewStatus.approved, reason)


async def reject(session: AsyncSession, principal: Principal, review_id: uuid.UUID, reason: str) -> ListingReview:
    """The owner's reviewer rejects a pending review: the product returns to draft (``listing.rejected``)."""
    reason = _reason(reason)
    review, licence = await _pending_for_owner(session, principal, review_id)
    return await _decide(session, principal, review, licence, ReviewStatus.rejected, reason)


async def delist_by_operator(
    session: AsyncSession, principal: Principal, review_id: uuid.UUID, reason: str
) -> ListingReview | None:
    """The operator took its listed product off the catalog: the product's approved review becomes ``delisted``
    (``listing.delisted`` with ``by: operator``), so that the owner's reviews say what the catalog says. Runs in the
    caller's transaction (no commit). None when the review is not an approved review of the caller's organisation."""
    review = await session.get(ListingReview, review_id, with_for_update=True)
    if review is None or review.operator_id != principal.org_id or review.status is not ReviewStatus.approved:
        return None
    licence = await session.get(Licence, review.licence_id)
    assert licence is not None
    await _record_decision(
        session,
        principal,
        review,
        licence,
        ReviewStatus.delisted,
        f"Delisted by the operator: {reason}",
        by="operator",
    )
    return review
