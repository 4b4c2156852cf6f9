"""Catalog routes (``/api/catalog/*``): listed products for anyone, products and plans for their operator."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from litestar import Controller, Request, get, patch, post
from litestar.datastructures import State
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED

from licensing.models import DeliveryMode, Grade, PlanType
from licensing.schemas import ListingCheckReport
from marketplace.catalog.models import Domain, ProductStatus
from marketplace.catalog.schemas import (
    CatalogPage,
    CatalogQuery,
    CatalogSort,
    DelistRequest,
    OperatorProducts,
    PlanCreate,
    PlanUpdate,
    PlanView,
    ProductCreate,
    ProductDetail,
    ProductUpdate,
)
from marketplace.catalog.search import search_products
from marketplace.catalog.services import plans, products
from marketplace.catalog.services.common import plan_buyers, plan_view
from marketplace.core.http import DbSession, caller, problems, requires_operator, requires_person
from marketplace.core.principal import Principal

PRODUCT = "/products/{product_id:uuid}"
PLAN = "/plans/{plan_id:uuid}"
OPERATOR = [requires_person, requires_operator]


def _anyone(request: Request[Any, Any, Any]) -> Principal | None:
    principal: Principal | None = request.scope.get("user")
    return principal


class CatalogController(Controller):
    """The catalog search and listed products' pages for anyone; products and plans for their operator."""

    path = "/api/catalog"
    tags = ["catalog"]

    @get(
        "/products",
        summary="Search the catalog",
        description="Listed products, for anyone (no sign-in needed; buyer programs may call it with their token). "
        "`q` holds words in Chinese or English (Chinese is cut into words with jieba; every word must match; English "
        "words of three letters or more also match as prefixes). Filters: `department`, `operator` (ids), `domain`, "
        "`mode`, `plan_type` (a product with an active public plan of that type), `grade`. `sort`: relevance (the "
        "default; newest when there are no words), newest, price (lowest first), name. Answers `items`, `total`, "
        "`page`, `page_size` and `facets`: for each facet, its values with labels in both languages and the exact "
        "number of matching products, over the whole result.",
        opt={"accepts_token": True},
        responses=problems(),
    )
    async def search(
        self,
        db_session: DbSession,
        q: Annotated[str, QueryParameter(max_length=200)] = "",
        department: FromQuery[uuid.UUID | None] = None,
        domain: FromQuery[Domain | None] = None,
        mode: FromQuery[DeliveryMode | None] = None,
        plan_type: FromQuery[PlanType | None] = None,
        grade: FromQuery[Grade | None] = None,
        operator: FromQuery[uuid.UUID | None] = None,
        sort: FromQuery[CatalogSort] = CatalogSort.relevance,
        page: Annotated[int, QueryParameter(ge=1, le=10_000)] = 1,
        page_size: Annotated[int, QueryParameter(ge=1, le=100)] = 20,
    ) -> CatalogPage:
        query = CatalogQuery(
            q=q,
            department=department,
            domain=domain,
            mode=mode,
            plan_type=plan_type,
            grade=grade,
            operator=operator,
            sort=sort,
            page=page,
            page_size=page_size,
        )
        return await search_products(db_session, query)

    @get(
        PRODUCT,
        summary="A product's page",
        description="Description in both languages, documentation, the delivered fields and how each is treated, the "
        "masked sample preview, the licence's number and department, and the plans the caller may see: public plans "
        "for anyone, private plans only to the buyers they name; the operator and supervisors see every plan. A "
        "product that is not listed is 404 except for its operator, the owner of its licence, regulators and auditors.",
        opt={"accepts_token": True},
        responses=problems(404),
    )
    async def get_product(
        self, request: Request[Any, Any, Any], db_session: DbSession, product_id: FromPath[uuid.UUID]
    ) -> ProductDetail:
        return await products.get_product(db_session, _anyone(request), product_id)

    # --- the operator's products and plans ---------------------------------------------------------------------

    @get(
        "/operator/products",
        guards=OPERATOR,
        summary="Your products",
        description="The operator's own products in every status (or `status=`), most recently changed first, with "
        "`counts` of its products per status.",
        responses=problems(401, 403),
    )
    async def list_own(
        self, request: Request[Any, Any, Any], db_session: DbSession, status: FromQuery[ProductStatus | None] = None
    ) -> OperatorProducts:
        return await products.list_operator_products(db_session, caller(request), status=status)

    @post(
        "/products",
        guards=OPERATOR,
        summary="Create a draft product",
        description="On one of your licences in force, over a resource it covers (its department and grade are copied). "
        "Refused with 400 `resource_not_in_licence`, `mode_not_permitted`, `purpose_not_permitted`, "
        "`masking_rules_invalid`; 404 `licence_not_found` (not your licence); 409 `licence_not_in_force`.",
        status_code=HTTP_201_CREATED,
        responses=problems(401, 403, 404, 409),
    )
    async def create(
        self, request: Request[Any, Any, Any], db_session: DbSession, data: JSONBody[ProductCreate]
    ) -> ProductDetail:
        principal = caller(request)
        product = await products.create_product(db_session, principal, data)
        return await products.get_product(db_session, principal, product.id)

    @patch(
        PRODUCT,
        guards=OPERATOR,
        summary="Edit a draft product",
        description="Only the fields given change; the same checks as creation. Only a draft: 409 `product_not_editable`.",
        responses=problems(401, 403, 404, 409),
    )
    async def update(
        self,
        request: Request[Any, Any, Any],
        db_session: DbSession,
        product_id: FromPath[uuid.UUID],
        data: JSONBody[ProductUpdate],
    ) -> ProductDetail:
        principal = caller(request)
        await products.update_product(db_session, principal, product_id, data)
        return await products.get_product(db_session, principal, product_id)

    @post(
        f"{PRODUCT}/check",
        guards=OPERATOR,
        summary="Try the listing checks",
        description="The owner's automated listing checks on the product as it stands (masking, k-anonymity on the real "
        "contents, purposes, mode, prices within caps), storing nothing: 200 with `passed`, `measured_k` and every check.",
        status_code=HTTP_200_OK,
        responses=problems(401, 403, 404),
    )
    async def check(
        self, request: Request[Any, Any, Any], db_session: DbSession, state: State, product_id: FromPath[uuid.UUID]
    ) -> ListingCheckReport:
        outcome = await products.check_product(db_session, caller(request), state.settings, product_id)
        return ListingCheckReport(passed=outcome.passed, measured_k=outcome.measured_k, checks=outcome.checks)

    @post(
        f"{PRODUCT}/submit",
        guards=OPERATOR,
        summary="Submit for listing review",
        description="A draft (or delisted) product with at least one plan goes to the owner's listing review: the "
        "automated checks run on the real contents; on success the product is `in_review` with its review and a masked "
        "sample preview. 409 `product_not_submittable`, `product_has_no_plans`, `licence_not_in_force`, "
        "`review_already_pending`; 422 `listing_checks_failed` (the product stays as it was, nothing is stored).",
        status_code=HTTP_200_OK,
        responses=problems(401, 403, 404, 409, 422),
    )
    async def submit(
        self, request: Request[Any, Any, Any], db_session: DbSession, state: State, product_id: FromPath[uuid.UUID]
    ) -> ProductDetail:
        principal = caller(request)
        await products.submit_product(db_session, principal, state.settings, product_id)
        return await products.get_product(db_session, principal, product_id)

    @post(
        f"{PRODUCT}/delist",
        guards=OPERATOR,
        summary="Delist a product",
        description="Take your listed product off the catalog, with a written reason (400 `reason_required`; 409 "
        "`product_not_listed`).",
        status_code=HTTP_200_OK,
        responses=problems(401, 403, 404, 409),
    )
    async def delist(
        self,
        request: Request[Any, Any, Any],
        db_session: DbSession,
        product_id: FromPath[uuid.UUID],
        data: JSONBody[DelistRequest],
    ) -> ProductDetail:
        principal = caller(request)
        await products.delist_product(db_session, principal, product_id, data.reason)
        return await products.get_product(db_session, principal, product_id)

    @post(
        f"{PRODUCT}/plans",
        guards=OPERATOR,
        summary="Add a plan",
        description="free | one_off | monthly | metered (monthly fee in `price`, `free_calls`, `per_call_price`, "
        "`monthly_cap`), each priced within the licence's cap for its type (metered: the per-call price within the "
        "metered cap and the fee within the monthly cap, if any). Decimal strings with two decimals. 400 "
        "`price_over_cap`, `plan_type_not_licensed`, `monthly_cap_below_fee`, `per_call_price_required`, "
        "`metered_terms_not_metered`, `free_plan_priced`, `private_plan_without_buyers`, `buyers_on_public_plan`, "
        "`buyer_not_found`; 409 `product_not_editable` (in review or delisted), `licence_not_in_force`.",
        status_code=HTTP_201_CREATED,
        responses=problems(401, 403, 404, 409),
    )
    async def add_plan(
        self, request: Request[Any, Any, Any], db_session: DbSession, product_id: FromPath[uuid.UUID], data: JSONBody[PlanCreate]
    ) -> PlanView:
        plan = await plans.add_plan(db_session, caller(request), product_id, data)
        return plan_view(plan, (await plan_buyers(db_session, [plan.id]))[plan.id])

    @patch(
        PLAN,
        guards=OPERATOR,
        summary="Change a plan",
        description="Only the fields given change (not the type); the same checks as a new plan. 409 `plan_retired`.",
        responses=problems(401, 403, 404, 409),
    )
    async def update_plan(
        self, request: Request[Any, Any, Any], db_session: DbSession, plan_id: FromPath[uuid.UUID], data: JSONBody[PlanUpdate]
    ) -> PlanView:
        plan = await plans.update_plan(db_session, caller(request), plan_id, data)
        return plan_view(plan, (await plan_buyers(db_session, [plan.id]))[plan.id])

    @post(
        f"{PLAN}/retire",
        guards=OPERATOR,
        summary="Retire a plan",
        description="The plan is no longer offered (existing subscriptions keep their terms). 409 `plan_retired`.",
        status_code=HTTP_200_OK,
        responses=problems(401, 403, 404, 409),
    )
    async def retire_plan(self, request: Request[Any, Any, Any], db_session: DbSession, plan_id: FromPath[uuid.UUID]) -> PlanView:
        plan = await plans.retire_plan(db_session, caller(request), plan_id)
        return plan_view(plan, (await plan_buyers(db_session, [plan.id]))[plan.id])


#: Every catalog controller, composed by ``marketplace.app``.
CONTROLLERS: list[Any] = [CatalogController]
