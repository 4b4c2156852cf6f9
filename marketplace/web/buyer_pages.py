"""The buyer console: subscriptions and their entitlements, usage charts per product and day, exports, the
organisation's qualifications with each operator, and a subscription's page (payment, proof upload, cancel).

Every read and write goes through the subscriptions and delivery services, which scope it to the buyer.
"""

from __future__ import annotations

import json
import uuid
from datetime import date, timedelta
from typing import Any

from litestar import Controller, Request, get, post
from litestar.datastructures import State, UploadFile
from litestar.params import FromPath
from litestar.response import Redirect, Template
from litestar.status_codes import HTTP_303_SEE_OTHER
from pydantic import ValidationError
from sqlmodel.ext.asyncio.session import AsyncSession

from billing import services as billing
from billing.models import Gateway
from marketplace.core.errors import DomainError
from marketplace.core.http import DbSession
from marketplace.core.identity import services as identity
from marketplace.core.principal import OrgKind, Principal
from marketplace.delivery.services import exports as export_services
from marketplace.delivery.services import usage as usage_services
from marketplace.subscriptions import services as subscriptions
from marketplace.subscriptions.models import SubscriptionStatus
from marketplace.subscriptions.schemas import QualificationSubmit
from marketplace.web import i18n
from marketplace.web.billing_forms import refusal_message, subscription_billing
from marketplace.web.charts import Chart, stacked_bars
from marketplace.web.i18n import gettext_ as _
from marketplace.web.pages import error_page, forbidden_page, login_redirect, page

OPEN = (SubscriptionStatus.active, SubscriptionStatus.past_due)
WAITING = (SubscriptionStatus.awaiting_approval, SubscriptionStatus.pending_payment)


def _who(request: Request[Any, Any, Any]) -> Principal | Template | Redirect:
    principal: Principal | None = request.scope.get("user")
    if principal is None:
        return login_redirect(request)
    if principal.org_kind is not OrgKind.buyer:
        return forbidden_page(request, _("The buyer console belongs to enterprise buyers."))
    return principal


def localised(record: Any, field: str) -> str:
    """A record's field in the page language (its ``<field>_zh`` on Chinese pages, when filled)."""
    if i18n.current_locale() == "zh-CN":
        text = getattr(record, f"{field}_zh", "") or ""
        if text:
            return str(text)
    return str(getattr(record, field, "") or "")


def usage_chart(rows: list[Any], names: dict[uuid.UUID, str], days: int, measure: str = "calls") -> Chart:
    """Calls (or rows) per product and day over the last ``days`` days, one series per product."""
    today = date.today()
    categories = [(today - timedelta(days=days - 1 - i)).isoformat() for i in range(days)]
    index = {day: i for i, day in enumerate(categories)}
    series: dict[str, list[int]] = {}
    for row in rows:
        day = row.day if isinstance(row.day, str) else row.day.isoformat()
        if day not in index:
            continue
        label = names.get(row.product_id, str(row.product_id)[:8])
        series.setdefault(label, [0] * days)[index[day]] += int(getattr(row, measure))
    return stacked_bars(categories, series)


async def _product_names(session: AsyncSession, ids: set[uuid.UUID]) -> dict[uuid.UUID, str]:
    products = await subscriptions.products_by_id(session, ids)
    return {pid: localised(p, "name") for pid, p in products.items()}


class BuyerPageController(Controller):
    include_in_schema = False

    @get("/buyer")
    async def console(self, request: Request[Any, Any, Any], db_session: DbSession) -> Template | Redirect:
        """The buyer's console."""
        who = _who(request)
        if not isinstance(who, Principal):
            return who
        return page(request, "buyer/console.html", **await self._console(db_session, who))

    async def _console(self, session: AsyncSession, principal: Principal, **extra: Any) -> dict[str, Any]:
        rows, _total = await subscriptions.list_subscriptions(session, principal, limit=200)
        usage = await usage_services.usage_by_day(session, principal, days=30)
        names = await _product_names(session, {s.product_id for s in rows} | {u.product_id for u in usage})
        qualifications, _count = await subscriptions.list_qualifications(session, principal, limit=200)
        operators = await identity.list_organisations(session, principal, kind=OrgKind.operator)
        exports = await export_services.list_exports(session, principal, limit=20)
        month = date.today().strftime("%Y-%m")
        this_month = [u for u in usage if (u.day if isinstance(u.day, str) else u.day.isoformat()).startswith(month)]
        return {
            "subscriptions": rows,
            "names": names,
            "active": sum(1 for s in rows if s.status in OPEN),
            "waiting": sum(1 for s in rows if s.status in WAITING),
            "calls_month": sum(u.calls for u in this_month),
            "rows_month": sum(u.rows for u in this_month),
            "calls_chart": usage_chart(usage, names, 30, "calls"),
            "rows_chart": usage_chart(usage, names, 30, "rows"),
            "qualifications": qualifications,
            "operators": operators,
            "operator_names": {o.id: localised(o, "name") for o in operators},
            "exports": exports,
            "form": {},
            "errors": [],
            **extra,
        }

    @post("/buyer/qualifications")
    async def submit_qualification(self, request: Request[Any, Any, Any], db_session: DbSession) -> Template | Redirect:
        """Submit the organisation's qualification to an operator."""
        who = _who(request)
        if not isinstance(who, Principal):
            return who
        form = await request.form()
        values = {
            key: str(form.get(key, "")).strip()
            for key in ("operator_id", "business_licence_number", "industry", "contact_name", "contact_email", "contact_phone")
        }
        try:
            await subscriptions.submit_qualification(db_session, who, QualificationSubmit.model_validate(values))
        except ValidationError as exc:
            errors = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
            return page(
                request, "buyer/console.html", status_code=400, **await self._console(db_session, who, form=values, errors=errors)
            )
        except DomainError as exc:
            await db_session.rollback()
            return page(
                request,
                "buyer/console.html",
                status_code=exc.status,
                **await self._console(db_session, who, form=values, errors=[exc.detail]),
            )
        return Redirect("/buyer#qualifications", status_code=HTTP_303_SEE_OTHER)

    @get("/buyer/subscriptions/{subscription_id:uuid}")
    async def subscription(
        self, request: Request[Any, Any, Any], db_session: DbSession, subscription_id: FromPath[uuid.UUID]
    ) -> Template | Redirect:
        """One subscription: its entitlement, purpose, proof and usage."""
        who = _who(request)
        if not isinstance(who, Principal):
            return who
        return await self._subscription_page(request, db_session, who, subscription_id)

    async def _subscription_page(
        self,
        request: Request[Any, Any, Any],
        session: AsyncSession,
        who: Principal,
        subscription_id: uuid.UUID,
        status_code: int = 200,
        **extra: Any,
    ) -> Template:
        try:
            record = await subscriptions.get_subscription(session, who, subscription_id)
        except DomainError as exc:
            return error_page(request, exc)
        sub = record.subscription
        usage = await usage_services.usage_by_day(session, who, days=30, product_id=sub.product_id)
        names = await _product_names(session, {sub.product_id})
        return page(
            request,
            "buyer/subscription.html",
            status_code=status_code,
            sub=sub,
            entitlement=record.entitlement,
            fields=[] if record.entitlement is None else _fields(record.entitlement.fields_json),
            product_name=names.get(sub.product_id, ""),
            proof_required=subscriptions.proof_required(sub),
            chart=usage_chart(usage, names, 30, "calls"),
            can_cancel=sub.status in (*OPEN, *WAITING),
            stripe_enabled=request.app.state.settings.stripe_enabled,
            errors=extra.pop("errors", []),
            **await subscription_billing(session, who, sub.id),
            **extra,
        )

    @post("/buyer/subscriptions/{subscription_id:uuid}/checkout")
    async def checkout(
        self, request: Request[Any, Any, Any], db_session: DbSession, state: State, subscription_id: FromPath[uuid.UUID]
    ) -> Template | Redirect:
        """Pay a subscription waiting for payment: by bank transfer (on to its invoice) or by card (on to Stripe)."""
        who = _who(request)
        if not isinstance(who, Principal):
            return who
        form = await request.form()
        method = Gateway.stripe if form.get("method") == Gateway.stripe.value else Gateway.invoice
        try:
            invoice = await billing.checkout(
                db_session, who, state.settings, state.get("stripe_gateway"), subscription_id, method
            )
        except DomainError as exc:
            await db_session.rollback()
            return await self._subscription_page(
                request, db_session, who, subscription_id, exc.status, errors=[refusal_message(exc)]
            )
        if method is Gateway.stripe and invoice.checkout_url:
            return Redirect(invoice.checkout_url, status_code=HTTP_303_SEE_OTHER)
        return Redirect(f"/billing/invoices/{invoice.id}", status_code=HTTP_303_SEE_OTHER)

    @post("/buyer/subscriptions/{subscription_id:uuid}/cancel")
    async def cancel(
        self, request: Request[Any, Any, Any], db_session: DbSession, subscription_id: FromPath[uuid.UUID]
    ) -> Template | Redirect:
        """Cancel a subscription: access ends at once."""
        who = _who(request)
        if not isinstance(who, Principal):
            return who
        form = await request.form()
        try:
            await subscriptions.cancel_subscription(db_session, who, subscription_id, str(form.get("reason", "")).strip())
        except DomainError as exc:
            await db_session.rollback()
            return await self._subscription_page(request, db_session, who, subscription_id, exc.status, errors=[exc.detail])
        return Redirect(f"/buyer/subscriptions/{subscription_id}", status_code=HTTP_303_SEE_OTHER)

    @post("/buyer/subscriptions/{subscription_id:uuid}/proof", request_max_body_size=16 * 1024 * 1024)
    async def proof(
        self, request: Request[Any, Any, Any], db_session: DbSession, state: State, subscription_id: FromPath[uuid.UUID]
    ) -> Template | Redirect:
        """Upload the proof of a public-welfare or research purpose."""
        who = _who(request)
        if not isinstance(who, Principal):
            return who
        form = await request.form()
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            return await self._subscription_page(
                request, db_session, who, subscription_id, 400, errors=[_("Choose a file to upload.")]
            )
        content = await upload.read()
        try:
            await subscriptions.upload_proof(
                db_session, who, state.settings, subscription_id, filename=upload.filename or "proof", content=content
            )
        except DomainError as exc:
            await db_session.rollback()
            return await self._subscription_page(request, db_session, who, subscription_id, exc.status, errors=[exc.detail])
        return Redirect(f"/buyer/subscriptions/{subscription_id}", status_code=HTTP_303_SEE_OTHER)


def _fields(fields_json: str) -> list[str]:
    return [str(f) for f in json.loads(fields_json)]
