"""Licensing API: listing reviews (operators submit, the owner's reviewer decides, supervisors read)."""

from __future__ import annotations

import json
import uuid
from typing import Annotated, Any

from litestar import Controller, Request, get, post
from litestar.datastructures import State
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED

from licensing.models import ListingReview, ReviewStatus
from licensing.schemas import ListingCheckReport, ListingReviewView, ListingSubmission, ReviewDecision
from licensing.services import reviews as services
from marketplace.core.http import DbSession, caller, problems, requires_operator, requires_owner, requires_party, requires_person
from marketplace.core.principal import OrgKind
from marketplace.core.schemas import Page

requires_licensing_reader = requires_party(OrgKind.owner, OrgKind.operator, OrgKind.regulator, OrgKind.auditor)


def review_view(review: ListingReview) -> ListingReviewView:
    """The API view of a stored review."""
    return ListingReviewView(
        id=review.id,
        operator_id=review.operator_id,
        licence_id=review.licence_id,
        product_ref=review.product_ref,
        product_name=review.product_name,
        mode=review.mode,
        submission=json.loads(review.submission_json),
        checks=services.review_checks(review),
        checks_passed=review.checks_passed,
        measured_k=review.measured_k,
        status=review.status,
        submitted_by=review.submitted_by,
        submitted_at=review.submitted_at,
        decided_by=review.decided_by,
        decided_at=review.decided_at,
        decision_reason=review.decision_reason,
    )


CHECKS = (
    "The automated checks: licence_in_force, resources_within_licence, no_l4_field, l3_sandbox_only, masking_rules_valid, "
    "direct_identifiers_protected (rules, and raw values looked for in a sample of the delivered contents), k_anonymity "
    "(measured on the delivered projection of the real contents against the licence's minimum k), purposes_within_licence, "
    "mode_within_licence, prices_within_caps. Each answers passed, an explanation and details."
)


class ReviewController(Controller):
    path = "/api/licensing"
    tags = ["licensing"]
    guards = [requires_person]

    @post(
        "/reviews",
        summary="Submit a product for listing",
        description="An operator submits a product built on its own licence (another operator's licence: 404). "
        + CHECKS
        + " If every check passes, a pending review is stored for the owner's reviewer (201). If any fails, the answer "
        "is 422 `listing_checks_failed` with `failed` (codes), `measured_k` and every check, and nothing is stored: "
        "a product delivering a direct identifier in clear or missing k never becomes a review. A rejected review "
        "therefore always carries the owner's reviewer's written reason. Try a submission first with "
        "`POST /api/licensing/reviews/check`.",
        guards=[requires_operator],
        status_code=HTTP_201_CREATED,
        responses=problems(401, 403, 404, 409, 422),
    )
    async def submit(
        self, request: Request[Any, Any, Any], data: JSONBody[ListingSubmission], db_session: DbSession, state: State
    ) -> ListingReviewView:
        review = await services.submit_for_listing(db_session, caller(request), state.settings, data)
        return review_view(review)

    @post(
        "/reviews/check",
        summary="Run the listing checks without submitting",
        description="The same automated checks as a submission, on the real contents, storing nothing: 200 with "
        "`passed`, `measured_k` and every check, whether they pass or not. " + CHECKS,
        guards=[requires_operator],
        status_code=HTTP_200_OK,
        responses=problems(401, 403, 404),
    )
    async def check(
        self, request: Request[Any, Any, Any], data: JSONBody[ListingSubmission], db_session: DbSession, state: State
    ) -> ListingCheckReport:
        outcome = await services.check_listing(db_session, caller(request), state.settings, data)
        return ListingCheckReport(passed=outcome.passed, measured_k=outcome.measured_k, checks=outcome.checks)

    @get(
        "/reviews",
        summary="Listing reviews",
        description="An operator sees the reviews it submitted; the owner those on its licences (its review queue: "
        "`status=pending`); regulators and auditors all. Newest first.",
        guards=[requires_licensing_reader],
        responses=problems(401, 403),
    )
    async def list_reviews(
        self,
        request: Request[Any, Any, Any],
        db_session: DbSession,
        status: FromQuery[ReviewStatus | None] = None,
        licence_id: FromQuery[uuid.UUID | None] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=500)] = 100,
        offset: Annotated[int, QueryParameter(ge=0, le=10**9)] = 0,
    ) -> Page[ListingReviewView]:
        rows, total = await services.list_reviews(
            db_session, caller(request), status=status, licence_id=licence_id, limit=limit, offset=offset
        )
        return Page(items=[review_view(r) for r in rows], total=total)

    @get(
        "/reviews/{review_id:uuid}",
        summary="One listing review",
        description="The submission as checked, every automated check with its explanation, and the decision.",
        guards=[requires_licensing_reader],
        responses=problems(401, 403, 404),
    )
    async def get_review(
        self, request: Request[Any, Any, Any], db_session: DbSession, review_id: FromPath[uuid.UUID]
    ) -> ListingReviewView:
        return review_view(await services.get_review(db_session, caller(request), review_id))

    @post(
        "/reviews/{review_id:uuid}/approve",
        summary="Approve a listing",
        description="The owner's reviewer lists the product, with a written reason. Only a pending review whose checks "
        "passed, under a licence still in force, and whose checks still pass on the current contents (409 otherwise: "
        "`review_not_pending`, `licence_not_in_force`, `listing_checks_no_longer_pass`).",
        guards=[requires_owner],
        status_code=HTTP_200_OK,
        responses=problems(401, 403, 404, 409),
    )
    async def approve(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[ReviewDecision],
        db_session: DbSession,
        state: State,
        review_id: FromPath[uuid.UUID],
    ) -> ListingReviewView:
        review = await services.approve(db_session, caller(request), state.settings, review_id, data.reason)
        return review_view(review)

    @post(
        "/reviews/{review_id:uuid}/reject",
        summary="Reject a listing",
        description="The owner's reviewer returns the product to draft, with a written reason. Only a pending review "
        "(409 `review_not_pending` otherwise).",
        guards=[requires_owner],
        status_code=HTTP_200_OK,
        responses=problems(401, 403, 404, 409),
    )
    async def reject(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[ReviewDecision],
        db_session: DbSession,
        review_id: FromPath[uuid.UUID],
    ) -> ListingReviewView:
        return review_view(await services.reject(db_session, caller(request), review_id, data.reason))
