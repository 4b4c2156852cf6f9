"""The supervision console's pages for regulators, audit firms and the data authority: the transaction explorer,
findings (raise, respond, close), engagements (grant, revoke), period exports and leak tracing.

Every read goes through the supervision services with the caller's scope (an auditor sees only its engagement, and
every read by a regulator or an auditor is recorded, as through the API); a refusal is shown beside the form that
caused it, in the page language.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import asdict
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from functools import partial
from typing import Any
from urllib.parse import urlencode

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import FormMultiDict, State, UploadFile
from litestar.params import FromPath
from litestar.response import Redirect, Template
from litestar.status_codes import HTTP_303_SEE_OTHER
from pydantic import ValidationError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from marketplace.core.errors import DomainError, InvalidInput
from marketplace.core.http import DbSession
from marketplace.core.identity.models import Organisation
from marketplace.core.keys import fingerprint_key
from marketplace.core.principal import OrgKind, Principal
from marketplace.core.types import utcnow
from marketplace.web.i18n import gettext_ as _
from marketplace.web.pages import _n, forbidden_page, login_redirect, page
from supervision import engagements, findings
from supervision.engagements import event_in_scope, read_scope, refuse_outside
from supervision.explorer import MAX_LIMIT, EventFilter, explore
from supervision.leaks import MAX_LEAK_BYTES, trace_leak
from supervision.period_export import export_period
from supervision.rollup import EventRollup
from supervision.schemas import EngagementCreate

SUPERVISORS = frozenset({OrgKind.owner, OrgKind.regulator, OrgKind.auditor})

#: Refusals worded for the pages (the service's own words otherwise).
REFUSALS = {
    "outside_engagement": _n("Your firm's engagement does not cover this."),
    "party_not_allowed": _n("Your organisation may not do this."),
    "org_admin_required": _n("Only an administrator of the data authority manages engagements."),
    "engagement_period_invalid": _n("The period ends before it starts."),
    "engagement_expired": _n("The engagement would already have expired."),
    "operators_required": _n("Choose at least one operator."),
    "not_an_auditor": _n("Choose an audit firm."),
    "not_an_operator": _n("Choose an operator."),
    "reason_required": _n("Give a written reason."),
    "engagement_already_revoked": _n("The engagement was already revoked."),
    "evidence_not_found": _n("An evidence index is beyond the end of the ledger."),
    "finding_closed": _n("The finding is closed."),
    "period_reversed": _n("The period ends before it starts."),
    "period_empty": _n("The period is empty: the end is the day after its last day."),
    "period_too_long": _n("The period is too long."),
    "not_csv_or_parquet": _n("The file is neither CSV nor Parquet."),
    "file_too_large": _n("The file is too large."),
    "invalid_filter": _n("A filter is not valid."),
}

#: What a page says after a form went through (``?done=<key>``).
DONE = {
    "raised": _n("Finding raised and recorded in the ledger."),
    "responded": _n("Response recorded in the ledger."),
    "closed": _n("Finding closed."),
    "granted": _n("Engagement granted."),
    "revoked": _n("Engagement revoked."),
}


def refusal(exc: DomainError) -> str:
    """A refusal in the page language."""
    message = REFUSALS.get(exc.code)
    return _(message) if message else exc.detail


def _done(request: Request[Any, Any, Any]) -> str | None:
    key = request.query_params.get("done")
    return _(DONE[key]) if key in DONE else None


def _supervisor(request: Request[Any, Any, Any], kinds: frozenset[OrgKind] = SUPERVISORS) -> Principal | Template | Redirect:
    principal: Principal | None = request.scope.get("user")
    if principal is None:
        return login_redirect(request)
    if principal.org_kind not in kinds:
        return forbidden_page(request, _("The supervision console is for the data authority, regulators and audit firms."))
    return principal


def _refused_page(request: Request[Any, Any, Any], exc: DomainError) -> Template:
    return page(
        request, "error.html", status_code=exc.status, status=exc.status, code=exc.code, title=exc.title, detail=refusal(exc)
    )


async def organisations(session: AsyncSession, kinds: tuple[OrgKind, ...] | None = None) -> dict[uuid.UUID, Organisation]:
    """Organisations by id (of ``kinds`` when given), for names on the pages."""
    stmt = select(Organisation)
    if kinds is not None:
        stmt = stmt.where(col(Organisation.kind).in_(kinds))
    return {o.id: o for o in (await session.exec(stmt.order_by(col(Organisation.name)))).all()}


async def event_types(session: AsyncSession) -> list[str]:
    """The kinds of events the ledger holds, from the monthly rollup (small, and current once the explorer has
    caught its read model up)."""
    found = await session.exec(select(EventRollup.event_type).where(EventRollup.span == "m").distinct())
    return sorted(found.all())


def _uuid(value: str | None, name: str) -> uuid.UUID | None:
    if not value:
        return None
    try:
        return uuid.UUID(value.strip())
    except ValueError:
        raise InvalidInput(f"{name} is not an identifier.", code="invalid_filter", field=name) from None


def _day(value: str | None, name: str) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        raise InvalidInput(f"{name} is not a date.", code="invalid_filter", field=name) from None


def _amount(value: str | None, name: str) -> Decimal | None:
    if not value:
        return None
    try:
        amount = Decimal(value.strip())
    except InvalidOperation:
        raise InvalidInput(f"{name} is not an amount.", code="invalid_filter", field=name) from None
    if not amount.is_finite() or amount < 0 or amount > Decimal("1e12"):
        raise InvalidInput(f"{name} is not an amount.", code="invalid_filter", field=name)
    return amount


def event_filter(query: Any) -> EventFilter:
    """The explorer's filters from a page's query string (400 ``invalid_filter`` naming the field)."""
    currency = (query.get("currency") or "CNY").strip().upper()
    if len(currency) != 3 or not currency.isalpha():
        raise InvalidInput("currency is not a currency code.", code="invalid_filter", field="currency")
    return EventFilter(
        types=tuple(t for t in query.getall("type", []) if t)[:20],
        org=_uuid(query.get("org"), "org"),
        product=_uuid(query.get("product"), "product"),
        licence=_uuid(query.get("licence"), "licence"),
        subscription=_uuid(query.get("subscription"), "subscription"),
        start=_day(query.get("start"), "start"),
        end=_day(query.get("end"), "end"),
        min_amount=_amount(query.get("min_amount"), "min_amount"),
        max_amount=_amount(query.get("max_amount"), "max_amount"),
        currency=currency,
    )


def _text(form: FormMultiDict, key: str, limit: int = 2000) -> str:
    return str(form.get(key, "")).strip()[:limit]


def _evidence(raw: str) -> list[int]:
    """Ledger indexes typed as ``12, 15 18``."""
    out = []
    for part in raw.replace(",", " ").split():
        if not part.isdigit():
            raise InvalidInput("Evidence is a list of ledger indexes.", code="evidence_not_found", field="evidence")
        out.append(int(part))
    return out


class SupervisionPageController(Controller):
    include_in_schema = False

    # --- the transaction explorer ------------------------------------------------------------------------------------

    @get("/supervision/events")
    async def explorer(self, request: Request[Any, Any, Any], db_session: DbSession) -> Template | Redirect:
        """Every event the caller may see, newest first, with the explorer's filters and keyset pages."""
        who = _supervisor(request)
        if not isinstance(who, Principal):
            return who
        query = request.query_params
        problem = None
        scope = None
        items: list[dict[str, Any]] = []
        next_before = None
        try:
            scope = await read_scope(db_session, who, path=request.url.path, query=request.url.query)
            wanted = event_filter(query)
            if scope is not None and wanted.org is not None and wanted.org not in scope.operator_ids:
                await refuse_outside(
                    db_session, who, path=request.url.path, query=request.url.query, detail="Outside your firm's engagements."
                )
            before_raw = query.get("before")
            before = int(before_raw) if before_raw and before_raw.isdigit() else None
            found = await explore(db_session, scope, wanted, before=before, limit=min(MAX_LIMIT, 50))
            items, next_before = found.items, found.next_before
        except DomainError as exc:
            if exc.status == 403:
                return _refused_page(request, exc)
            problem = refusal(exc)
        orgs = await organisations(db_session)
        operators = [o for o in orgs.values() if o.kind is OrgKind.operator]
        buyers = [o for o in orgs.values() if o.kind is OrgKind.buyer]
        if who.org_kind is OrgKind.auditor:  # the filters offer only what the engagement covers
            covered = scope.operator_ids if scope is not None else frozenset()
            operators, buyers = [o for o in operators if o.id in covered], []
        kept = [(k, v) for k, v in query.multi_items() if k != "before" and v]
        return page(
            request,
            "supervision/events.html",
            status_code=400 if problem else 200,
            items=items,
            next_before=next_before,
            problem=problem,
            query=dict(kept),
            chosen_types=[v for k, v in kept if k == "type"],
            next_query=urlencode(kept),
            types=await event_types(db_session),
            orgs={str(k): v for k, v in orgs.items()},
            operators=operators,
            buyers=buyers,
        )

    # --- findings ------------------------------------------------------------------------------------------------------

    async def _findings_page(
        self,
        request: Request[Any, Any, Any],
        db_session: DbSession,
        who: Principal,
        *,
        failure: str | None = None,
        values: dict[str, str] | None = None,
        status_code: int = 200,
    ) -> Template:
        wanted = request.query_params.get("status")
        status = findings.FindingStatus(wanted) if wanted in {s.value for s in findings.FindingStatus} else None
        rows = await findings.list_findings(db_session, who, status)
        orgs = await organisations(db_session)
        operators = [o for o in orgs.values() if o.kind is OrgKind.operator]
        if who.org_kind is OrgKind.auditor:
            scope = await engagements.auditor_scope(db_session, who)
            covered = scope.operator_ids if scope is not None else frozenset()
            operators = [o for o in operators if o.id in covered]
        return page(
            request,
            "supervision/findings.html",
            status_code=status_code,
            findings=rows,
            status=status.value if status else "",
            orgs=orgs,
            operators=operators,
            may_raise=who.org_kind in (OrgKind.regulator, OrgKind.auditor) and not who.is_program,
            failure=failure,
            values=values or {},
            done=_done(request),
            evidence=request.query_params.get("evidence", ""),
        )

    @get("/supervision/findings")
    async def findings_list(self, request: Request[Any, Any, Any], db_session: DbSession) -> Template | Redirect:
        """Findings the caller may see, and the form to raise one (regulators and auditors)."""
        who = _supervisor(request, SUPERVISORS | {OrgKind.operator})
        if not isinstance(who, Principal):
            return who
        return await self._findings_page(request, db_session, who)

    @post("/supervision/findings", opt={"read_only_ok": True})
    async def raise_finding(self, request: Request[Any, Any, Any], db_session: DbSession) -> Template | Redirect:
        """Raise a finding against an operator, with ledger evidence."""
        who = _supervisor(request, frozenset({OrgKind.regulator, OrgKind.auditor}))
        if not isinstance(who, Principal):
            return who
        form = await request.form()
        values = {k: _text(form, k) for k in ("operator_id", "title", "description", "severity", "evidence")}
        try:
            try:
                data = findings.FindingCreate(
                    operator_id=values["operator_id"],  # type: ignore[arg-type]
                    title=values["title"],
                    description=values["description"],
                    severity=values["severity"] or "medium",  # type: ignore[arg-type]
                    evidence=_evidence(values["evidence"]),
                )
            except ValidationError as exc:
                field = str(exc.errors()[0]["loc"][0]) if exc.errors() else "form"
                raise InvalidInput(f"Check {field}.", code="invalid_finding", field=field) from None
            finding = await findings.raise_finding(db_session, who, data)
        except DomainError as exc:
            await db_session.rollback()
            message = (
                refusal(exc)
                if exc.code != "invalid_finding"
                else _("Check the field: {field}").format(field=exc.extra.get("field", ""))
            )
            return await self._findings_page(request, db_session, who, failure=message, values=values, status_code=exc.status)
        return Redirect(f"/supervision/findings/{finding.id}?done=raised", status_code=HTTP_303_SEE_OTHER)

    async def _finding_page(
        self,
        request: Request[Any, Any, Any],
        db_session: DbSession,
        who: Principal,
        finding_id: uuid.UUID,
        failure: str | None = None,
        status_code: int = 200,
    ) -> Template:
        found = next((f for f in await findings.list_findings(db_session, who) if f.id == finding_id), None)
        if found is None:
            return page(
                request,
                "error.html",
                status_code=404,
                status=404,
                code="finding_not_found",
                title="Not Found",
                detail=_("No such finding."),
            )
        open_ = found.status is not findings.FindingStatus.closed and not who.is_program
        return page(
            request,
            "supervision/finding.html",
            status_code=status_code,
            finding=found,
            evidence=json.loads(found.evidence_json),
            orgs=await organisations(db_session),
            may_respond=open_ and who.org_kind is OrgKind.operator,
            may_close=open_ and who.org_kind is OrgKind.regulator,
            failure=failure,
            done=_done(request),
        )

    @get("/supervision/findings/{finding_id:uuid}")
    async def finding(
        self, request: Request[Any, Any, Any], db_session: DbSession, finding_id: FromPath[uuid.UUID]
    ) -> Template | Redirect:
        """One finding: what it says, its evidence (each entry linked to its proof), the response and the close."""
        who = _supervisor(request, SUPERVISORS | {OrgKind.operator})
        if not isinstance(who, Principal):
            return who
        return await self._finding_page(request, db_session, who, finding_id)

    async def _finding_step(
        self, request: Request[Any, Any, Any], db_session: DbSession, finding_id: uuid.UUID, step: str
    ) -> Template | Redirect:
        who = _supervisor(request, frozenset({OrgKind.regulator, OrgKind.operator}))
        if not isinstance(who, Principal):
            return who
        form = await request.form()
        text = _text(form, "text")
        try:
            if not text:
                raise InvalidInput("Write the text.", code="text_required", field="text")
            if step == "respond":
                await findings.respond(db_session, who, finding_id, text)
            else:
                await findings.close(db_session, who, finding_id, text)
        except DomainError as exc:
            await db_session.rollback()
            message = _("Write the text first.") if exc.code == "text_required" else refusal(exc)
            return await self._finding_page(request, db_session, who, finding_id, failure=message, status_code=exc.status)
        return Redirect(
            f"/supervision/findings/{finding_id}?done={'responded' if step == 'respond' else 'closed'}",
            status_code=HTTP_303_SEE_OTHER,
        )

    @post("/supervision/findings/{finding_id:uuid}/respond")
    async def respond(
        self, request: Request[Any, Any, Any], db_session: DbSession, finding_id: FromPath[uuid.UUID]
    ) -> Template | Redirect:
        """The operator's response."""
        return await self._finding_step(request, db_session, finding_id, "respond")

    @post("/supervision/findings/{finding_id:uuid}/close", opt={"read_only_ok": True})
    async def close(
        self, request: Request[Any, Any, Any], db_session: DbSession, finding_id: FromPath[uuid.UUID]
    ) -> Template | Redirect:
        """The regulator's closing note."""
        return await self._finding_step(request, db_session, finding_id, "close")

    # --- engagements ---------------------------------------------------------------------------------------------------

    async def _engagements_page(
        self,
        request: Request[Any, Any, Any],
        db_session: DbSession,
        who: Principal,
        *,
        failure: str | None = None,
        values: dict[str, Any] | None = None,
        status_code: int = 200,
    ) -> Template:
        rows, total = await engagements.list_engagements(db_session, who, limit=200)
        orgs = await organisations(db_session)
        today = utcnow().date()
        return page(
            request,
            "supervision/engagements.html",
            status_code=status_code,
            engagements=rows,
            total=total,
            orgs=orgs,
            auditors=[o for o in orgs.values() if o.kind is OrgKind.auditor],
            operators=[o for o in orgs.values() if o.kind is OrgKind.operator],
            may_grant=who.org_kind is OrgKind.owner and who.is_org_admin and not who.is_program,
            failure=failure,
            values=values
            or {
                "period_start": today.replace(month=1, day=1).isoformat(),
                "period_end": today.isoformat(),
                "expires_on": (today + timedelta(days=90)).isoformat(),
                "operator_ids": [],
            },
            done=_done(request),
        )

    @get("/supervision/engagements")
    async def engagements_list(self, request: Request[Any, Any, Any], db_session: DbSession) -> Template | Redirect:
        """Engagements (the owner's, all for regulators, an audit firm's own) and the grant form for the owner."""
        who = _supervisor(request)
        if not isinstance(who, Principal):
            return who
        return await self._engagements_page(request, db_session, who)

    @post("/supervision/engagements")
    async def grant(self, request: Request[Any, Any, Any], db_session: DbSession) -> Template | Redirect:
        """The owner's administrator grants an engagement."""
        who = _supervisor(request, frozenset({OrgKind.owner}))
        if not isinstance(who, Principal):
            return who
        form = await request.form()
        values: dict[str, Any] = {k: _text(form, k) for k in ("auditor_id", "period_start", "period_end", "expires_on")}
        values["operator_ids"] = [str(v) for v in form.getall("operator_ids", [])]
        try:
            try:
                expires = date.fromisoformat(values["expires_on"])
                data = EngagementCreate(
                    auditor_id=values["auditor_id"],  # type: ignore[arg-type]
                    operator_ids=values["operator_ids"],
                    period_start=values["period_start"],  # type: ignore[arg-type]
                    period_end=values["period_end"],  # type: ignore[arg-type]
                    expires_at=datetime.combine(expires, datetime.max.time(), UTC).replace(microsecond=0),
                )
            except (ValidationError, ValueError):
                raise InvalidInput("Check the form.", code="invalid_engagement") from None
            await engagements.grant_engagement(db_session, who, data)
        except DomainError as exc:
            await db_session.rollback()
            message = _("Fill in every field with a valid value.") if exc.code == "invalid_engagement" else refusal(exc)
            return await self._engagements_page(request, db_session, who, failure=message, values=values, status_code=exc.status)
        return Redirect("/supervision/engagements?done=granted", status_code=HTTP_303_SEE_OTHER)

    @post("/supervision/engagements/{engagement_id:uuid}/revoke")
    async def revoke(
        self, request: Request[Any, Any, Any], db_session: DbSession, engagement_id: FromPath[uuid.UUID]
    ) -> Template | Redirect:
        """The owner's administrator ends an engagement early, with a reason."""
        who = _supervisor(request, frozenset({OrgKind.owner}))
        if not isinstance(who, Principal):
            return who
        form = await request.form()
        try:
            await engagements.revoke_engagement(db_session, who, engagement_id, _text(form, "reason"))
        except DomainError as exc:
            await db_session.rollback()
            return await self._engagements_page(request, db_session, who, failure=refusal(exc), status_code=exc.status)
        return Redirect("/supervision/engagements?done=revoked", status_code=HTTP_303_SEE_OTHER)

    # --- exports and leak tracing ------------------------------------------------------------------------------------

    def _exports_page(
        self,
        request: Request[Any, Any, Any],
        *,
        failure: str | None = None,
        trace: dict[str, Any] | None = None,
        status_code: int = 200,
        values: dict[str, str] | None = None,
    ) -> Template:
        today = utcnow().date()
        first = today.replace(day=1)
        last_month = (first - timedelta(days=1)).replace(day=1)
        return page(
            request,
            "supervision/exports.html",
            status_code=status_code,
            failure=failure,
            trace=trace,
            values=values or {"start": last_month.isoformat(), "end": first.isoformat(), "format": "csv"},
            max_mib=MAX_LEAK_BYTES // (1024 * 1024),
        )

    @get("/supervision/exports")
    async def exports(self, request: Request[Any, Any, Any]) -> Template | Redirect:
        """Export a period's events; trace a leaked file."""
        who = _supervisor(request)
        if not isinstance(who, Principal):
            return who
        return self._exports_page(request)

    @get("/supervision/exports/download")
    async def download(self, request: Request[Any, Any, Any], db_session: DbSession) -> Response[bytes] | Template | Redirect:
        """The period's events as a file (the same as ``GET /api/supervision/exports``), or the form with the reason."""
        who = _supervisor(request)
        if not isinstance(who, Principal):
            return who
        query = request.query_params
        values = {k: str(query.get(k) or "") for k in ("start", "end", "format")}
        try:
            start, end = _day(values["start"], "start"), _day(values["end"], "end")
            if start is None or end is None or values["format"] not in ("csv", "parquet"):
                raise InvalidInput("Give both days and a format.", code="invalid_filter")
            scope = await read_scope(db_session, who, path=request.url.path, query=request.url.query)
            made = await export_period(
                db_session,
                start,
                end,
                values["format"],  # type: ignore[arg-type]
                in_scope=None if scope is None else partial(event_in_scope, scope=scope),
            )
        except DomainError as exc:
            if exc.status == 403:
                return _refused_page(request, exc)
            return self._exports_page(request, failure=refusal(exc), status_code=exc.status, values=values)
        return Response(
            made.content, media_type=made.media_type, headers={"Content-Disposition": f'attachment; filename="{made.filename}"'}
        )

    @post("/supervision/leak-trace", opt={"read_only_ok": True}, request_max_body_size=MAX_LEAK_BYTES + 1024 * 1024)
    async def leak_trace(self, request: Request[Any, Any, Any], db_session: DbSession, state: State) -> Template | Redirect:
        """Trace an uploaded file to the subscription it was exported for."""
        who = _supervisor(request, frozenset({OrgKind.regulator, OrgKind.auditor, OrgKind.owner}))
        if not isinstance(who, Principal):
            return who
        form = await request.form()
        upload = form.get("file")
        content = await upload.read() if isinstance(upload, UploadFile) else b""
        try:
            scope = await read_scope(db_session, who, path=request.url.path)
            result = await trace_leak(
                db_session,
                who,
                fingerprint_key(state.settings),
                content,
                None if scope is None else partial(event_in_scope, scope=scope),
            )
        except DomainError as exc:
            await db_session.rollback()
            if exc.status == 403:
                return _refused_page(request, exc)
            return self._exports_page(request, failure=refusal(exc), status_code=exc.status)
        trace = asdict(result)
        trace["filename"] = upload.filename if isinstance(upload, UploadFile) else ""
        return self._exports_page(request, trace=trace)
