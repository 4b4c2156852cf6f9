"""Catalog pages: search with facets (anyone), a product's page with its fields, masked preview and plans, and
the subscribe flow (plan, declared purpose, the data use agreement, a proof for reduced purposes).

Reads go through the catalog services (listed products for everyone; drafts only for their operator and the
supervisors); the subscription is created by the subscriptions service, which checks every rule again.
"""

from __future__ import annotations

import json
import uuid
from typing import Any
from urllib.parse import urlencode

from litestar import Controller, Request, get, post
from litestar.datastructures import State, UploadFile
from litestar.params import FromPath
from litestar.response import Redirect, Template
from litestar.status_codes import HTTP_303_SEE_OTHER
from pydantic import ValidationError
from sqlmodel.ext.asyncio.session import AsyncSession

from licensing.models import Purpose
from marketplace.catalog import search as catalog_search
from marketplace.catalog.schemas import CatalogQuery
from marketplace.catalog.services import products as product_services
from marketplace.core.errors import DomainError
from marketplace.core.http import DbSession
from marketplace.core.principal import OrgKind, Principal
from marketplace.subscriptions import services as subscriptions
from marketplace.subscriptions.schemas import SubscriptionCreate
from marketplace.web.i18n import gettext_ as _
from marketplace.web.pages import error_page, login_redirect, page

FACETS = ("domain", "mode", "plan_type", "grade", "department", "operator")


def _query_of(request: Request[Any, Any, Any]) -> tuple[CatalogQuery | None, dict[str, str]]:
    raw = {k: v for k, v in request.query_params.items() if k in CatalogQuery.model_fields and v != ""}
    try:
        return CatalogQuery.model_validate(raw), raw
    except ValidationError:
        return None, raw


def _link(raw: dict[str, str], **changes: Any) -> str:
    values = {**raw, **changes}
    values = {k: str(v) for k, v in values.items() if v not in (None, "")}
    return "/catalog" + ("?" + urlencode(values) if values else "")


class CatalogPageController(Controller):
    include_in_schema = False

    @get("/catalog")
    async def catalog(self, request: Request[Any, Any, Any], db_session: DbSession) -> Template:
        """Search the catalog: words in either language, facets, sort, pages."""
        query, raw = _query_of(request)
        error = None
        if query is None:
            error = _("Some filters were not understood and were left out.")
            query, raw = CatalogQuery(q=raw.get("q", "")[:200]), {"q": raw.get("q", "")[:200]}
        result = await catalog_search.search_products(db_session, query)
        pages = max(1, -(-result.total // query.page_size))
        return page(
            request,
            "catalog/search.html",
            query=query,
            raw=raw,
            result=result,
            pages=pages,
            facets=FACETS,
            link=lambda **changes: _link(raw, **changes),
            error=error,
        )

    @get("/catalog/{product_id:uuid}")
    async def product(self, request: Request[Any, Any, Any], db_session: DbSession, product_id: FromPath[uuid.UUID]) -> Template:
        """A product's page: what it delivers, a masked preview, its plans and the subscribe form."""
        return await self._product_page(request, db_session, product_id)

    async def _product_page(
        self, request: Request[Any, Any, Any], session: AsyncSession, product_id: uuid.UUID, status_code: int = 200, **extra: Any
    ) -> Template:
        principal: Principal | None = request.scope.get("user")
        try:
            detail = await product_services.get_product(session, principal, product_id)
        except DomainError as exc:
            shown: DomainError = extra.get("refusal") or exc  # the product went out of sight: say why the form was refused
            return error_page(request, shown)
        extra.pop("refusal", None)
        qualification = None
        mine: list[Any] = []
        if principal is not None and principal.org_kind is OrgKind.buyer:
            qualification = await subscriptions.qualification_status(session, principal.org_id, detail.operator_id)
            rows, _n = await subscriptions.list_subscriptions(session, principal, product_id=product_id, limit=20)
            mine = list(rows)
        agreement = subscriptions.current_agreement()
        return page(
            request,
            "catalog/product.html",
            status_code=status_code,
            product=detail,
            columns=list(detail.sample[0].keys()) if detail.sample else [],
            qualification=qualification,
            mine=mine,
            agreement=agreement,
            proof_purposes=[p.value for p in (Purpose.public_welfare, Purpose.academic_research)],
            form=extra.pop("form", {}),
            errors=extra.pop("errors", []),
            **extra,
        )

    @get("/agreement")
    async def agreement(self, request: Request[Any, Any, Any]) -> Template:
        """The current data use agreement, in the page language."""
        return page(request, "catalog/agreement.html", agreement=subscriptions.current_agreement())

    @post("/catalog/{product_id:uuid}/subscribe", request_max_body_size=16 * 1024 * 1024)
    async def subscribe(
        self, request: Request[Any, Any, Any], db_session: DbSession, state: State, product_id: FromPath[uuid.UUID]
    ) -> Template | Redirect:
        """Subscribe: plan, purpose, agreement; a proof goes with a reduced purpose."""
        principal: Principal | None = request.scope.get("user")
        if principal is None:
            return login_redirect(request)
        form = await request.form()
        values = {
            "plan_id": str(form.get("plan_id", "")),
            "purpose": str(form.get("purpose", "")),
            "purpose_note": str(form.get("purpose_note", "")).strip(),
            "agreement_version": str(form.get("agreement_version", "")) if form.get("agree") else "",
        }
        if not form.get("agree"):
            return await self._product_page(
                request, db_session, product_id, 400, form=values, errors=[_("Read and accept the data use agreement first.")]
            )
        try:
            record = await subscriptions.create_subscription(
                db_session, principal, state.settings, SubscriptionCreate.model_validate(values)
            )
        except ValidationError as exc:
            errors = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
            return await self._product_page(request, db_session, product_id, 400, form=values, errors=errors)
        except DomainError as exc:
            await db_session.rollback()
            return await self._product_page(
                request, db_session, product_id, exc.status, form=values, errors=[exc.detail], refusal=exc
            )
        subscription = record.subscription
        upload = form.get("proof")
        if isinstance(upload, UploadFile) and upload.filename:
            content = await upload.read()
            try:
                await subscriptions.upload_proof(
                    db_session, principal, state.settings, subscription.id, filename=upload.filename, content=content
                )
            except DomainError:
                await db_session.rollback()  # the subscription stands; its page asks for the proof again
        return Redirect(f"/buyer/subscriptions/{subscription.id}", status_code=HTTP_303_SEE_OTHER)


def sample_json(rows: list[dict[str, Any]]) -> str:
    """The preview as JSON (for the copy button)."""
    return json.dumps(rows, ensure_ascii=False, indent=2, default=str)
