"""The operator console: products and their review status, plans, buyer qualifications and subscription requests
to decide, subscribers, usage and contracted revenue charts; a product's page with plans, checks, submission and
delisting.

Every read and write goes through the catalog, subscriptions and delivery services, scoped to the operator.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

from litestar import Controller, Request, get, post
from litestar.datastructures import FormMultiDict, State
from litestar.params import FromPath
from litestar.response import Redirect, Template
from litestar.status_codes import HTTP_303_SEE_OTHER
from pydantic import ValidationError
from sqlmodel.ext.asyncio.session import AsyncSession

from licensing.models import PlanType
from licensing.schemas import CheckResult
from licensing.services import reviews as review_services
from marketplace.catalog.schemas import PlanCreate
from marketplace.catalog.services import plans as plan_services
from marketplace.catalog.services import products as product_services
from marketplace.core.errors import DomainError
from marketplace.core.http import DbSession
from marketplace.core.principal import OrgKind, Principal
from marketplace.delivery.services import usage as usage_services
from marketplace.subscriptions import services as subscriptions
from marketplace.subscriptions.models import QualificationStatus, SubscriptionStatus
from marketplace.web.buyer_pages import localised, usage_chart
from marketplace.web.charts import stacked_bars
from marketplace.web.i18n import gettext_ as _
from marketplace.web.pages import error_page, forbidden_page, login_redirect, page


def _who(request: Request[Any, Any, Any]) -> Principal | Template | Redirect:
    principal: Principal | None = request.scope.get("user")
    if principal is None:
        return login_redirect(request)
    if principal.org_kind is not OrgKind.operator:
        return forbidden_page(request, _("The operator console belongs to franchised operators."))
    return principal


def plan_form(form: FormMultiDict) -> dict[str, Any]:
    """A plan from the product page's form (empty optional numbers left out)."""
    values: dict[str, Any] = {
        key: str(form.get(key, "")).strip()
        for key in ("name", "name_zh", "type", "price", "per_call_price", "monthly_cap", "access", "visibility")
    }
    for key in ("free_calls", "quota_calls", "quota_rows", "term_days"):
        text = str(form.get(key, "")).strip()
        if text:
            values[key] = text
    values["buyer_ids"] = [b for b in form.getall("buyer_ids", []) if b]
    return {k: v for k, v in values.items() if v not in ("", None)}


class OperatorPageController(Controller):
    include_in_schema = False
    path = "/operator"

    @get("")
    async def console(self, request: Request[Any, Any, Any], db_session: DbSession) -> Template | Redirect:
        """The operator's console."""
        who = _who(request)
        if not isinstance(who, Principal):
            return who
        return page(request, "operator/console.html", **await self._console(db_session, who))

    async def _console(self, session: AsyncSession, principal: Principal, **extra: Any) -> dict[str, Any]:
        products = await product_services.list_operator_products(session, principal)
        subscribers = await subscriptions.subscribers_by_product(session, principal)
        revenue = await subscriptions.contracted_revenue_by_month(session, principal, months=6)
        usage = await usage_services.usage_by_day(session, principal, days=30)
        names = {p.id: localised(p, "name") for p in products.items}
        qualifications, _q = await subscriptions.list_qualifications(session, principal, status=QualificationStatus.submitted)
        requests, _r = await subscriptions.list_subscriptions(session, principal, status=SubscriptionStatus.awaiting_approval)
        recent, _n = await subscriptions.list_subscriptions(session, principal, limit=15)
        buyers = await subscriptions.counterpart_buyers(session, principal)
        revenue_chart = stacked_bars(
            revenue.months,
            {names.get(p.product_id, p.name): [Decimal(a) for a in p.amounts] for p in revenue.products},
            unit=" CNY",
        )
        return {
            "products": products,
            "subscribers": {s.product_id: s for s in subscribers},
            "active_subscribers": sum(s.active for s in subscribers),
            "names": names,
            "usage_chart": usage_chart(usage, names, 30, "calls"),
            "revenue_chart": revenue_chart,
            "revenue_total": sum((Decimal(t) for t in revenue.totals), Decimal(0)),
            "qualifications": qualifications,
            "requests": requests,
            "recent": recent,
            "org_names": {o.id: localised(o, "name") for o in buyers},
            "errors": extra.pop("errors", []),
            **extra,
        }

    async def _act(
        self,
        request: Request[Any, Any, Any],
        session: AsyncSession,
        action: Callable[[Principal, FormMultiDict], Awaitable[Any]],
        back: str | Callable[[Any], str],
        product_id: uuid.UUID | None = None,
    ) -> Template | Redirect:
        """Run a form's action; on a refusal show the page it came from (the product's, or the console) with it."""
        who = _who(request)
        if not isinstance(who, Principal):
            return who
        form = await request.form()
        try:
            done = await action(who, form)
        except (DomainError, ValidationError) as exc:
            await session.rollback()
            if isinstance(exc, DomainError):
                status, errors = exc.status, [exc.detail]
            else:
                status, errors = 400, [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
            if product_id is not None:
                return await self._product_page(request, session, who, product_id, status, errors=errors)
            return page(request, "operator/console.html", status_code=status, **await self._console(session, who, errors=errors))
        return Redirect(back if isinstance(back, str) else back(done), status_code=HTTP_303_SEE_OTHER)

    @post("/qualifications/{qualification_id:uuid}")
    async def decide_qualification(
        self, request: Request[Any, Any, Any], db_session: DbSession, qualification_id: FromPath[uuid.UUID]
    ) -> Template | Redirect:
        """Approve or reject a buyer's qualification (a rejection needs a reason)."""

        async def decide(who: Principal, form: FormMultiDict) -> Any:
            approve = form.get("decision") == "approve"
            return await subscriptions.decide_qualification(
                db_session, who, qualification_id, approve, str(form.get("reason", "")).strip()
            )

        return await self._act(request, db_session, decide, "/operator#qualifications")

    @post("/subscriptions/{subscription_id:uuid}")
    async def decide_subscription(
        self, request: Request[Any, Any, Any], db_session: DbSession, subscription_id: FromPath[uuid.UUID]
    ) -> Template | Redirect:
        """Approve or reject a subscription request, or revoke a subscription (with a written reason)."""

        async def decide(who: Principal, form: FormMultiDict) -> Any:
            decision, reason = form.get("decision"), str(form.get("reason", "")).strip()
            if decision == "revoke":
                return await subscriptions.revoke_subscription(db_session, who, subscription_id, reason)
            return await subscriptions.decide_subscription(db_session, who, subscription_id, decision == "approve", reason)

        return await self._act(request, db_session, decide, "/operator#requests")

    # --- a product ---------------------------------------------------------------------------------------------------

    @get("/products/{product_id:uuid}")
    async def product(
        self, request: Request[Any, Any, Any], db_session: DbSession, product_id: FromPath[uuid.UUID]
    ) -> Template | Redirect:
        """One of the operator's products: plans, review, checks, actions."""
        who = _who(request)
        if not isinstance(who, Principal):
            return who
        return await self._product_page(request, db_session, who, product_id)

    async def _product_page(
        self,
        request: Request[Any, Any, Any],
        session: AsyncSession,
        who: Principal,
        product_id: uuid.UUID,
        status_code: int = 200,
        **extra: Any,
    ) -> Template:
        try:
            detail = await product_services.get_product(session, who, product_id)
        except DomainError as exc:
            return error_page(request, exc)
        if detail.operator_id != who.org_id:
            return forbidden_page(request, _("This product belongs to another operator."))
        buyers = await subscriptions.counterpart_buyers(session, who)
        return page(
            request,
            "operator/product.html",
            status_code=status_code,
            product=detail,
            plan_types=list(PlanType),
            buyers=buyers,
            checks=extra.pop("checks", None),
            errors=extra.pop("errors", []),
            **extra,
        )

    @post("/products/{product_id:uuid}/plans")
    async def add_plan(
        self, request: Request[Any, Any, Any], db_session: DbSession, product_id: FromPath[uuid.UUID]
    ) -> Template | Redirect:
        """Add a plan, priced within the licence's cap."""

        async def add(who: Principal, form: FormMultiDict) -> Any:
            return await plan_services.add_plan(db_session, who, product_id, PlanCreate.model_validate(plan_form(form)))

        return await self._act(request, db_session, add, f"/operator/products/{product_id}", product_id)

    @post("/plans/{plan_id:uuid}/retire")
    async def retire_plan(
        self, request: Request[Any, Any, Any], db_session: DbSession, plan_id: FromPath[uuid.UUID]
    ) -> Template | Redirect:
        """Stop offering a plan (current subscriptions keep it), back to its product's page."""

        async def retire(who: Principal, _form: FormMultiDict) -> Any:
            return await plan_services.retire_plan(db_session, who, plan_id)

        return await self._act(request, db_session, retire, lambda plan: f"/operator/products/{plan.product_id}")

    @post("/products/{product_id:uuid}/submit")
    async def submit(
        self, request: Request[Any, Any, Any], db_session: DbSession, state: State, product_id: FromPath[uuid.UUID]
    ) -> Template | Redirect:
        """Run the automated checks only (``intent=check``), or submit the product for the owner's listing review."""
        who = _who(request)
        if not isinstance(who, Principal):
            return who
        form = await request.form()
        try:
            if form.get("intent") == "check":
                outcome = await product_services.check_product(db_session, who, state.settings, product_id)
                return await self._product_page(request, db_session, who, product_id, checks=outcome.checks)
            await product_services.submit_product(db_session, who, state.settings, product_id)
        except review_services.ListingChecksFailed as exc:
            await db_session.rollback()
            checks = [CheckResult.model_validate(c) for c in exc.extra.get("checks", [])]
            return await self._product_page(request, db_session, who, product_id, 422, checks=checks, errors=[exc.detail])
        except DomainError as exc:
            await db_session.rollback()
            return await self._product_page(request, db_session, who, product_id, exc.status, errors=[exc.detail])
        return Redirect(f"/operator/products/{product_id}", status_code=HTTP_303_SEE_OTHER)

    @post("/products/{product_id:uuid}/delist")
    async def delist(
        self, request: Request[Any, Any, Any], db_session: DbSession, product_id: FromPath[uuid.UUID]
    ) -> Template | Redirect:
        """Take a listed product off the catalog, with a written reason."""

        async def delist(who: Principal, form: FormMultiDict) -> Any:
            return await product_services.delist_product(db_session, who, product_id, str(form.get("reason", "")).strip())

        return await self._act(request, db_session, delist, f"/operator/products/{product_id}", product_id)
