"""The alerts page: what the rules raised (newest first, filtered by state, severity and rule), each with its
evidence linked to the ledger, and a regulator's acknowledge and resolve (with a note); an audit firm sees the
alerts of its engagement only (``supervision.alerts`` scopes and records, as through the API)."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get, post
from litestar.params import FromPath
from litestar.response import Redirect, Template
from litestar.status_codes import HTTP_303_SEE_OTHER

from marketplace.core.errors import DomainError
from marketplace.core.http import DbSession
from marketplace.core.principal import OrgKind, Principal
from marketplace.web.i18n import gettext_ as _
from marketplace.web.pages import _n, page
from marketplace.web.supervision_pages import _refused_page, _supervisor, organisations, refusal
from supervision import alerts
from supervision.alerts import RULES, AlertFilter, AlertSeverity, AlertState
from supervision.engagements import read_scope

#: Each rule in plain words, for readers who are not technical.
RULE_TITLES = {
    "delivery.after_end": _n("Delivery after access ended"),
    "delivery.volume_spike": _n("Delivery volume far above the buyer's usual"),
    "purpose.not_permitted": _n("Declared purpose not permitted by the licence"),
    "product.outside_licence": _n("Product outside its licence's scope or price caps"),
    "settlement.mismatch": _n("Settlement statement does not match the payments"),
    "ledger.self_check_failed": _n("Ledger self-check failed"),
}
RULE_EXPLANATIONS = {
    "delivery.after_end": _n(
        "Data was delivered after the subscription or entitlement ended, or while the licence was suspended."
    ),
    "delivery.volume_spike": _n("A subscription received more than five times its usual daily deliveries."),
    "purpose.not_permitted": _n("A subscription declares a purpose that its product's licence does not permit."),
    "product.outside_licence": _n(
        "A product uses a resource its licence does not cover, or a plan is priced above the licence's cap."
    ),
    "settlement.mismatch": _n("An operator's monthly statement differs from the payments and refunds in the ledger."),
    "ledger.self_check_failed": _n("The stored ledger no longer gives the signed checkpoints: it may have been altered."),
}
DONE = {"acknowledged": _n("Alert acknowledged."), "resolved": _n("Alert resolved.")}


def _choice(value: str | None, allowed: set[str]) -> str | None:
    return value if value in allowed else None


class SupervisionAlertsController(Controller):
    include_in_schema = False

    async def _page(
        self,
        request: Request[Any, Any, Any],
        db_session: DbSession,
        who: Principal,
        *,
        failure: str | None = None,
        status_code: int = 200,
    ) -> Template:
        query = request.query_params
        state = _choice(query.get("state"), {s.value for s in AlertState})
        severity = _choice(query.get("severity"), {s.value for s in AlertSeverity})
        rule = _choice(query.get("rule"), set(RULES))
        scope = await read_scope(db_session, who, path=request.url.path, query=request.url.query)
        wanted = AlertFilter(
            state=AlertState(state) if state else None, severity=AlertSeverity(severity) if severity else None, rule=rule
        )
        before_raw = query.get("before")
        before = int(before_raw) if before_raw and before_raw.isdigit() else None
        rows, total, next_before = await alerts.list_alerts(db_session, who, scope, wanted, before=before, limit=50)
        kept = {k: v for k, v in (("state", state), ("severity", severity), ("rule", rule)) if v}
        return page(
            request,
            "supervision/alerts.html",
            status_code=status_code,
            alerts=await alerts.public(db_session, rows),
            total=total,
            next_before=next_before,
            filters=kept,
            next_query="&".join(f"{k}={v}" for k, v in kept.items()),
            rules=RULES,
            titles=RULE_TITLES,
            explanations=RULE_EXPLANATIONS,
            orgs={str(k): v for k, v in (await organisations(db_session, (OrgKind.operator,))).items()},
            may_handle=who.org_kind is OrgKind.regulator and not who.is_program,
            failure=failure,
            done=_(DONE[query["done"]]) if query.get("done") in DONE else None,
        )

    @get("/supervision/alerts")
    async def list_page(self, request: Request[Any, Any, Any], db_session: DbSession) -> Template | Redirect:
        """Alerts the caller may see."""
        who = _supervisor(request)
        if not isinstance(who, Principal):
            return who
        try:
            return await self._page(request, db_session, who)
        except DomainError as exc:
            return _refused_page(request, exc)

    async def _change(
        self, request: Request[Any, Any, Any], db_session: DbSession, alert_id: int, step: str
    ) -> Template | Redirect:
        who = _supervisor(request, frozenset({OrgKind.regulator}))
        if not isinstance(who, Principal):
            return who
        form = await request.form()
        try:
            if step == "acknowledge":
                await alerts.acknowledge(db_session, who, alert_id)
            else:
                await alerts.resolve(db_session, who, alert_id, str(form.get("note", ""))[: alerts.MAX_NOTE + 100])
        except DomainError as exc:
            await db_session.rollback()
            message = _("Say how the alert was resolved.") if exc.code == "note_required" else refusal(exc)
            return await self._page(request, db_session, who, failure=message, status_code=exc.status)
        done = "acknowledged" if step == "acknowledge" else "resolved"
        return Redirect(f"/supervision/alerts?done={done}#alert-{alert_id}", status_code=HTTP_303_SEE_OTHER)

    @post("/supervision/alerts/{alert_id:int}/acknowledge", opt={"read_only_ok": True})
    async def acknowledge(
        self, request: Request[Any, Any, Any], db_session: DbSession, alert_id: FromPath[int]
    ) -> Template | Redirect:
        """A regulator takes an alert in hand."""
        return await self._change(request, db_session, alert_id, "acknowledge")

    @post("/supervision/alerts/{alert_id:int}/resolve", opt={"read_only_ok": True})
    async def resolve(
        self, request: Request[Any, Any, Any], db_session: DbSession, alert_id: FromPath[int]
    ) -> Template | Redirect:
        """A regulator resolves an alert with a note."""
        return await self._change(request, db_session, alert_id, "resolve")
