"""Licensing pages: the owner's resources (grades, fields, uploads with progress), licences (editor,
timeline, suspension and its cascade) and listing review queue; operators see their own licences and
review outcomes; regulators and auditors read everything. Every read and write goes through the
licensing services, which scope it to the caller.
"""

from __future__ import annotations

import uuid
from datetime import date, timedelta
from typing import Any

from litestar import Controller, Request, get, post
from litestar.datastructures import FormMultiDict, State
from litestar.params import FromPath, FromQuery
from litestar.response import Redirect, Template
from litestar.status_codes import HTTP_303_SEE_OTHER
from pydantic import ValidationError
from sqlmodel.ext.asyncio.session import AsyncSession

from licensing.models import (
    DeliveryMode,
    FieldTag,
    FieldType,
    Grade,
    LicenceStatus,
    PlanType,
    Purpose,
    ReviewStatus,
    UpdateFrequency,
)
from licensing.schemas import CheckResult, FieldSpec, LicenceCreate, ListingSubmission, ResourceCreate
from licensing.services import licences as licence_services
from licensing.services import resources as resource_services
from licensing.services import reviews as review_services
from marketplace.catalog.models import Domain
from marketplace.catalog.schemas import PlanCreate, ProductCreate
from marketplace.catalog.services import plans as plan_services
from marketplace.catalog.services import products as product_services
from marketplace.core.errors import DomainError, NotFound
from marketplace.core.http import DbSession
from marketplace.core.identity import services as identity
from marketplace.core.principal import OrgKind, Principal
from marketplace.web.i18n import gettext_ as _
from marketplace.web.pages import error_page, forbidden_page, login_redirect, page

READERS = frozenset({OrgKind.owner, OrgKind.operator, OrgKind.regulator, OrgKind.auditor})
TRANSITIONS = {
    "grant": licence_services.grant_licence,
    "suspend": licence_services.suspend_licence,
    "reinstate": licence_services.reinstate_licence,
    "revoke": licence_services.revoke_licence,
}
#: Which actions the owner may take from each status (the services refuse the rest anyway).
ACTIONS = {
    LicenceStatus.draft: ("grant",),
    LicenceStatus.granted: ("suspend", "revoke"),
    LicenceStatus.suspended: ("reinstate", "revoke"),
}


def _errors_of(exc: ValidationError) -> list[str]:
    return [f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()]


def _forbidden(request: Request[Any, Any, Any]) -> Template:
    return forbidden_page(request, _("Licensing records are for the data authority, operators, regulators and auditors."))


def _who(request: Request[Any, Any, Any]) -> Principal | Template | Redirect:
    principal: Principal | None = request.scope.get("user")
    if principal is None:
        return login_redirect(request)
    if principal.org_kind not in READERS:
        return _forbidden(request)
    return principal


def parse_fields(text: str) -> list[FieldSpec]:
    """Fields typed one per line as ``name, type, tag`` (tag optional), as on the registration form."""
    fields = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = [p.strip() for p in line.split(",")]
        if len(parts) not in (2, 3):
            raise ValueError(_("Line {n}: write name, type and optionally a tag, separated by commas.").format(n=number))
        try:
            fields.append(
                FieldSpec(name=parts[0], type=FieldType(parts[1]), tag=FieldTag(parts[2] if len(parts) == 3 else "none"))
            )
        except (ValueError, ValidationError):
            raise ValueError(_("Line {n}: “{line}” is not a valid field.").format(n=number, line=line.strip())) from None
    return fields


def _licence_form(form: FormMultiDict) -> dict[str, Any]:
    caps = {plan.value: form.get(f"cap_{plan.value}", "").strip() for plan in PlanType}
    reductions = {p.value: form.get(f"reduction_{p.value}", "").strip() for p in Purpose}
    volume = {key: form.get(key, "").strip() for key in ("rows_per_month", "calls_per_month")}
    return {
        "operator_id": form.get("operator_id", ""),
        "resource_ids": form.getall("resource_ids", []),
        "purposes": form.getall("purposes", []),
        "modes": form.getall("modes", []),
        "territory": form.get("territory", ""),
        "starts_on": form.get("starts_on", ""),
        "ends_on": form.get("ends_on", ""),
        "price_caps": {k: v for k, v in caps.items() if v},
        "volume_caps": {k: int(v) if v.isdigit() else v for k, v in volume.items() if v},
        "min_k": form.get("min_k", "5") or "5",
        "fee_rate": form.get("fee_rate", ""),
        "reductions": {k: v for k, v in reductions.items() if v},
        "reason": form.get("reason", "").strip() or "Draft created",
    }


def submission_of(form: FormMultiDict) -> dict[str, Any]:
    """A listing submission from the operator's form: one rule per field (``rule_<field>``, ``size_<field>``),
    up to three plans (``plan_type_<i>``, ``plan_price_<i>``, ``plan_name_<i>``)."""
    licence_id, _sep, resource_id = str(form.get("choice", "")).partition(":")
    rules = []
    for key in form:
        if not key.startswith("rule_"):
            continue
        name, action = key.removeprefix("rule_"), str(form.get(key, "keep"))
        rule: dict[str, Any] = {"field": name}
        if action.startswith("generalise:"):
            rule.update(action="generalise", method=action.partition(":")[2])
            size = str(form.get(f"size_{name}", "")).strip()
            if size:
                rule["size"] = size
        else:
            rule["action"] = action
        rules.append(rule)
    plans = []
    for i in range(3):
        plan_type = str(form.get(f"plan_type_{i}", "")).strip()
        if plan_type:
            plans.append(
                {"type": plan_type, "price": str(form.get(f"plan_price_{i}", "")).strip(), "name": form.get(f"plan_name_{i}", "")}
            )
    return {
        "licence_id": licence_id,
        "resource_id": resource_id,
        "product_name": form.get("product_name", ""),
        "mode": form.get("mode", ""),
        "rules": rules,
        "purposes": form.getall("purposes", []),
        "plans": plans,
    }


async def _create_and_submit(
    session: AsyncSession, principal: Principal, state: State, submission: ListingSubmission, form: FormMultiDict
) -> uuid.UUID:
    """The operator's product from the submission form: a draft product with its plans in the catalog, then
    submitted for listing review (its checks passed just before)."""
    name = submission.product_name
    product = await product_services.create_product(
        session,
        principal,
        ProductCreate(
            licence_id=submission.licence_id,
            resource_id=submission.resource_id,
            mode=submission.mode,
            rules=submission.rules,
            purposes=submission.purposes,
            name=name,
            name_zh=str(form.get("product_name_zh", "")).strip() or name,
            summary=str(form.get("summary", "")).strip()[:500],
            domain=Domain(str(form.get("domain"))) if form.get("domain") in Domain.__members__ else Domain.other,
        ),
    )
    for plan in submission.plans:
        plan_name = str(getattr(plan, "name", "") or "").strip() or plan.type.value
        metered = plan.type is PlanType.metered
        await plan_services.add_plan(
            session,
            principal,
            product.id,
            PlanCreate(
                name=plan_name,
                name_zh=plan_name,
                type=plan.type,
                price="0.00" if metered else plan.price,
                per_call_price=plan.price if metered else None,
            ),
        )
    await product_services.submit_product(session, principal, state.settings, product.id)
    return product.id


class LicensingPageController(Controller):
    include_in_schema = False
    path = "/licensing"

    async def _org_names(self, db_session: DbSession, principal: Principal) -> dict[uuid.UUID, str]:
        return {o.id: o.name for o in await identity.list_organisations(db_session, principal)}

    # --- data resources -------------------------------------------------------------------------------

    async def _resources_page(
        self, request: Request[Any, Any, Any], db_session: DbSession, principal: Principal, **extra: Any
    ) -> Template:
        resources = await resource_services.list_resources(db_session, principal)
        departments = await resource_services.list_departments(db_session, principal)
        context: dict[str, Any] = {
            "resources": resources,
            "departments": {d.id: d for d in departments},
            "grades": list(Grade),
            "frequencies": list(UpdateFrequency),
            "field_types": list(FieldType),
            "field_tags": list(FieldTag),
            "errors": [],
            "form": {},
        }
        context.update(extra)
        return page(request, "licensing/resources.html", status_code=400 if context["errors"] else 200, **context)

    @get("/resources")
    async def resources(self, request: Request[Any, Any, Any], db_session: DbSession) -> Template | Redirect:
        principal = _who(request)
        if not isinstance(principal, Principal):
            return principal
        return await self._resources_page(request, db_session, principal)

    @post("/resources")
    async def register_resource(self, request: Request[Any, Any, Any], db_session: DbSession) -> Template | Redirect:
        principal = _who(request)
        if not isinstance(principal, Principal):
            return principal
        if principal.org_kind is not OrgKind.owner:
            return forbidden_page(request, _("Only the data authority registers resources and grants licences."))
        form = await request.form()
        values = {
            key: form.get(key, "") for key in ("department_id", "code", "title", "title_zh", "description", "description_zh")
        }
        values.update(
            grade=form.get("grade", ""), update_frequency=form.get("update_frequency", ""), fields_text=form.get("fields", "")
        )
        try:
            fields = parse_fields(str(values["fields_text"]))
            data = ResourceCreate(
                department_id=values["department_id"],  # type: ignore[arg-type]
                code=values["code"],
                title=values["title"],
                title_zh=values["title_zh"],
                description=values["description"],
                description_zh=values["description_zh"],
                grade=values["grade"],  # type: ignore[arg-type]
                update_frequency=values["update_frequency"],  # type: ignore[arg-type]
                fields=fields,
            )
            resource = await resource_services.register_resource(db_session, principal, data)
        except ValidationError as exc:
            return await self._resources_page(request, db_session, principal, errors=_errors_of(exc), form=values)
        except ValueError as exc:
            return await self._resources_page(request, db_session, principal, errors=[str(exc)], form=values)
        except DomainError as exc:
            return await self._resources_page(request, db_session, principal, errors=[exc.detail], form=values)
        return Redirect(f"/licensing/resources/{resource.id}", status_code=HTTP_303_SEE_OTHER)

    @get("/resources/{resource_id:uuid}")
    async def resource(
        self, request: Request[Any, Any, Any], resource_id: FromPath[uuid.UUID], db_session: DbSession, state: State
    ) -> Template | Redirect:
        principal = _who(request)
        if not isinstance(principal, Principal):
            return principal
        resource = await resource_services.get_resource(db_session, principal, resource_id)
        versions = await resource_services.list_versions(db_session, principal, resource_id)
        departments = {d.id: d for d in await resource_services.list_departments(db_session, principal)}
        return page(
            request,
            "licensing/resource.html",
            resource=resource,
            fields=resource_services.fields_of(resource),
            versions=versions,
            department=departments.get(resource.department_id),
            max_upload_mb=state.settings.max_upload_bytes // (1024 * 1024),
        )

    # --- licences -------------------------------------------------------------------------------------

    @get("/licences")
    async def licences(
        self, request: Request[Any, Any, Any], db_session: DbSession, status: FromQuery[LicenceStatus | None] = None
    ) -> Template | Redirect:
        principal = _who(request)
        if not isinstance(principal, Principal):
            return principal
        items, total = await licence_services.list_licences(db_session, principal, status=status, limit=200)
        return page(
            request,
            "licensing/licences.html",
            licences=items,
            total=total,
            status=status,
            statuses=list(LicenceStatus),
            org_names=await self._org_names(db_session, principal),
        )

    async def _licence_editor(
        self, request: Request[Any, Any, Any], db_session: DbSession, principal: Principal, **extra: Any
    ) -> Template:
        operators = await identity.list_organisations(db_session, principal, kind=OrgKind.operator)
        resources = await resource_services.list_resources(db_session, principal)
        today = date.today()
        context: dict[str, Any] = {
            "operators": operators,
            "resources": resources,
            "purposes": list(Purpose),
            "modes": list(DeliveryMode),
            "plans": list(PlanType),
            "errors": [],
            "form": {"starts_on": today.isoformat(), "ends_on": (today + timedelta(days=3 * 365)).isoformat(), "min_k": "5"},
        }
        context.update(extra)
        return page(request, "licensing/licence_new.html", status_code=400 if context["errors"] else 200, **context)

    @get("/licences/new")
    async def new_licence(self, request: Request[Any, Any, Any], db_session: DbSession) -> Template | Redirect:
        principal = _who(request)
        if not isinstance(principal, Principal):
            return principal
        if principal.org_kind is not OrgKind.owner:
            return forbidden_page(request, _("Only the data authority registers resources and grants licences."))
        return await self._licence_editor(request, db_session, principal)

    @post("/licences")
    async def create_licence(self, request: Request[Any, Any, Any], db_session: DbSession) -> Template | Redirect:
        principal = _who(request)
        if not isinstance(principal, Principal):
            return principal
        if principal.org_kind is not OrgKind.owner:
            return forbidden_page(request, _("Only the data authority registers resources and grants licences."))
        form = await request.form()
        values = _licence_form(form)
        try:
            detail = await licence_services.create_licence(db_session, principal, LicenceCreate.model_validate(values))
        except ValidationError as exc:
            return await self._licence_editor(request, db_session, principal, errors=_errors_of(exc), form=values)
        except DomainError as exc:
            return await self._licence_editor(request, db_session, principal, errors=[exc.detail], form=values)
        return Redirect(f"/licensing/licences/{detail.id}", status_code=HTTP_303_SEE_OTHER)

    async def _licence_page(
        self,
        request: Request[Any, Any, Any],
        db_session: DbSession,
        principal: Principal,
        licence_id: uuid.UUID,
        error: str | None = None,
    ) -> Template:
        detail = await licence_services.read_licence(db_session, principal, licence_id)
        reviews, _total = await review_services.list_reviews(db_session, principal, licence_id=licence_id, limit=200)
        return page(
            request,
            "licensing/licence.html",
            status_code=409 if error else 200,
            licence=detail,
            reviews=reviews,
            actions=ACTIONS.get(detail.status, ()) if principal.org_kind is OrgKind.owner else (),
            org_names=await self._org_names(db_session, principal),
            error=error,
        )

    @get("/licences/{licence_id:uuid}")
    async def licence(
        self, request: Request[Any, Any, Any], licence_id: FromPath[uuid.UUID], db_session: DbSession
    ) -> Template | Redirect:
        principal = _who(request)
        if not isinstance(principal, Principal):
            return principal
        return await self._licence_page(request, db_session, principal, licence_id)

    @post("/licences/{licence_id:uuid}/{action:str}")
    async def change_licence(
        self, request: Request[Any, Any, Any], licence_id: FromPath[uuid.UUID], action: FromPath[str], db_session: DbSession
    ) -> Template | Redirect:
        principal = _who(request)
        if not isinstance(principal, Principal):
            return principal
        transition = TRANSITIONS.get(action)
        if transition is None:
            return error_page(request, NotFound(_("No such action.")))
        form = await request.form()
        try:
            await transition(db_session, principal, licence_id, str(form.get("reason", "")))
        except DomainError as exc:
            if exc.status in (401, 403, 404):
                raise
            return await self._licence_page(request, db_session, principal, licence_id, error=exc.detail)
        return Redirect(f"/licensing/licences/{licence_id}", status_code=HTTP_303_SEE_OTHER)

    # --- submitting a product for listing (operators) -------------------------------------------------------

    async def _submission_page(
        self,
        request: Request[Any, Any, Any],
        db_session: DbSession,
        principal: Principal,
        choice: str,
        *,
        form: dict[str, Any] | None = None,
        checks: list[CheckResult] | None = None,
        errors: list[str] | None = None,
        status_code: int = 200,
    ) -> Template:
        licences, _count = await licence_services.list_licences(db_session, principal, status=LicenceStatus.granted, limit=200)
        pairs = [(f"{lic.id}:{res.id}", lic, res) for lic in licences for res in lic.resources]
        chosen = next((p for p in pairs if p[0] == choice), None)
        fields = []
        if chosen is not None:
            resource = await resource_services.get_resource(db_session, principal, chosen[2].id)
            fields = resource_services.fields_of(resource)
        return page(
            request,
            "licensing/submit.html",
            status_code=status_code,
            pairs=pairs,
            choice=choice if chosen else "",
            chosen=chosen,
            fields=fields,
            plans=list(PlanType),
            form=form or {},
            checks=checks,
            errors=errors or [],
        )

    @get("/reviews/new")
    async def new_submission(
        self, request: Request[Any, Any, Any], db_session: DbSession, choice: FromQuery[str] = ""
    ) -> Template | Redirect:
        principal = _who(request)
        if not isinstance(principal, Principal):
            return principal
        if principal.org_kind is not OrgKind.operator:
            return forbidden_page(request, _("Products are submitted for listing by operators."))
        return await self._submission_page(request, db_session, principal, choice)

    @post("/reviews/new")
    async def submit(self, request: Request[Any, Any, Any], db_session: DbSession, state: State) -> Template | Redirect:
        principal = _who(request)
        if not isinstance(principal, Principal):
            return principal
        if principal.org_kind is not OrgKind.operator:
            return forbidden_page(request, _("Products are submitted for listing by operators."))
        form = await request.form()
        choice = str(form.get("choice", ""))
        values = {key: form.get(key, "") for key in form}
        values["purposes"] = form.getall("purposes", [])
        try:
            submission = ListingSubmission.model_validate(submission_of(form))
            outcome = await review_services.check_listing(db_session, principal, state.settings, submission)
            if form.get("intent") == "check" or not outcome.passed:
                status = 200 if form.get("intent") == "check" else 422
                errors = [] if status == 200 else [_("The automated checks failed; nothing was stored.")]
                return await self._submission_page(
                    request, db_session, principal, choice, form=values, checks=outcome.checks, errors=errors, status_code=status
                )
            product_id = await _create_and_submit(db_session, principal, state, submission, form)
        except ValidationError as exc:
            return await self._submission_page(
                request, db_session, principal, choice, form=values, errors=_errors_of(exc), status_code=400
            )
        except review_services.ListingChecksFailed as exc:
            checks = [CheckResult.model_validate(c) for c in exc.extra.get("checks", [])]
            return await self._submission_page(
                request, db_session, principal, choice, form=values, checks=checks, errors=[exc.detail], status_code=422
            )
        except DomainError as exc:
            if exc.status in (401, 403, 404):
                raise
            return await self._submission_page(
                request, db_session, principal, choice, form=values, errors=[exc.detail], status_code=exc.status
            )
        return Redirect(f"/operator/products/{product_id}", status_code=HTTP_303_SEE_OTHER)

    # --- listing reviews ------------------------------------------------------------------------------

    @get("/reviews")
    async def reviews(
        self, request: Request[Any, Any, Any], db_session: DbSession, status: FromQuery[ReviewStatus | None] = None
    ) -> Template | Redirect:
        principal = _who(request)
        if not isinstance(principal, Principal):
            return principal
        return await self._reviews_page(request, db_session, principal, status)

    async def _reviews_page(
        self,
        request: Request[Any, Any, Any],
        db_session: DbSession,
        principal: Principal,
        status: ReviewStatus | None,
        error: str | None = None,
    ) -> Template:
        items, total = await review_services.list_reviews(db_session, principal, status=status, limit=200)
        licences, _count = await licence_services.list_licences(db_session, principal, limit=1000)
        counts = await review_services.count_reviews_by_status(db_session, principal)
        return page(
            request,
            "licensing/reviews.html",
            status_code=409 if error else 200,
            reviews=[(r, review_services.review_checks(r)) for r in items],
            total=total,
            status=status,
            statuses=list(ReviewStatus),
            counts=counts,
            licences={lic.id: lic for lic in licences},
            org_names=await self._org_names(db_session, principal),
            can_decide=principal.org_kind is OrgKind.owner,
            error=error,
        )

    @post("/reviews/{review_id:uuid}/{decision:str}")
    async def decide(
        self,
        request: Request[Any, Any, Any],
        review_id: FromPath[uuid.UUID],
        decision: FromPath[str],
        db_session: DbSession,
        state: State,
    ) -> Template | Redirect:
        principal = _who(request)
        if not isinstance(principal, Principal):
            return principal
        form = await request.form()
        reason = str(form.get("reason", ""))
        try:
            if decision == "approve":
                await review_services.approve(db_session, principal, state.settings, review_id, reason)
            elif decision == "reject":
                await review_services.reject(db_session, principal, review_id, reason)
            else:
                return error_page(request, NotFound(_("No such decision.")))
        except DomainError as exc:
            if exc.status in (401, 403, 404):
                raise
            return await self._reviews_page(request, db_session, principal, ReviewStatus.pending, error=exc.detail)
        return Redirect("/licensing/reviews?status=pending", status_code=HTTP_303_SEE_OTHER)
