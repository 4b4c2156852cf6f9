"""The supervision dashboard page: transactions and revenue over time, by operator and product, deliveries by mode,
franchise fee income, the share of public-welfare use, open alerts and the ledger's size and last checkpoint, drawn
as charts with their figures beside them (``supervision.dashboard`` computes them, scoped to the reader)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from litestar import Controller, Request, get
from litestar.response import Redirect, Template

from marketplace.core.errors import DomainError
from marketplace.core.http import DbSession
from marketplace.core.identity.models import Organisation
from marketplace.core.principal import OrgKind, Principal
from marketplace.web.charts import Chart, stacked_bars
from marketplace.web.i18n import current_locale
from marketplace.web.i18n import gettext_ as _
from marketplace.web.pages import _n, page
from marketplace.web.supervision_drill import product_names
from marketplace.web.supervision_pages import _day, _refused_page, _supervisor, organisations, refusal
from supervision.dashboard import read_dashboard
from supervision.scorecard import read_scorecards

#: Delivery modes in the page language (the same words as ``_macros.html``'s ``mode_name``).
MODE_NAMES = {"api": _n("API"), "file": _n("file"), "sandbox": _n("sandbox")}
#: The currency the charts draw (the others are in the tables).
CHART_CURRENCY = "CNY"


def _dec(value: str | None) -> Decimal:
    return Decimal(value) if value else Decimal(0)


def _org_label(org: Organisation | None, fallback: str) -> str:
    if org is None:
        return fallback
    return org.name_zh if current_locale() == "zh-CN" and org.name_zh else org.name


def charts(board: dict[str, Any], product_names: dict[str, str], orgs: dict[str, Organisation]) -> dict[str, Chart]:
    """The dashboard's charts from its figures."""
    buckets = [s["bucket"] for s in board["series"]]
    modes = sorted({m for s in board["series"] for m in s["deliveries"]})
    operators = board["by_operator"]
    products = board["by_product"][:10]
    return {
        "revenue": stacked_bars(
            buckets,
            {_("Payments received"): [_dec(s["gross"].get(CHART_CURRENCY)) for s in board["series"]]},
            unit=f" {CHART_CURRENCY}",
        ),
        "transactions": stacked_bars(buckets, {_("Payments"): [s["transactions"] for s in board["series"]]}),
        "deliveries": stacked_bars(
            buckets, {_(MODE_NAMES.get(mode, mode)): [s["deliveries"].get(mode, 0) for s in board["series"]] for mode in modes}
        ),
        "operators": stacked_bars(
            [_org_label(orgs.get(o["operator_id"]), o["name"] or o["operator_id"][:8]) for o in operators],
            {_("Payments received"): [_dec(o["gross"].get(CHART_CURRENCY)) for o in operators]},
            unit=f" {CHART_CURRENCY}",
        ),
        "products": stacked_bars(
            [product_names.get(p["product_id"], p["product_id"][:8]) for p in products],
            {_("Payments received"): [_dec(p["gross"].get(CHART_CURRENCY)) for p in products]},
            unit=f" {CHART_CURRENCY}",
        ),
    }


class SupervisionDashboardController(Controller):
    include_in_schema = False

    @get("/supervision")
    async def dashboard(self, request: Request[Any, Any, Any], db_session: DbSession) -> Template | Redirect:
        """The dashboard of a period (by default the last six months, month by month)."""
        who = _supervisor(request)
        if not isinstance(who, Principal):
            return who
        query = request.query_params
        values = {k: str(query.get(k) or "") for k in ("start", "end", "bucket")}
        problem = None
        try:
            try:
                start, end = _day(values["start"], "start"), _day(values["end"], "end")
                board = await read_dashboard(
                    db_session, who, start, end, values["bucket"] or None, path=request.url.path, query=request.url.query
                )
            except DomainError as exc:
                if exc.status == 403:
                    raise
                problem = refusal(exc)
                board = await read_dashboard(db_session, who, None, None, None, path=request.url.path)
        except DomainError as exc:
            return _refused_page(request, exc)
        names = await product_names(db_session, [p["product_id"] for p in board["by_product"]])
        orgs = {str(k): v for k, v in (await organisations(db_session, (OrgKind.operator,))).items()}
        share = board["public_welfare"]["share"]
        return page(
            request,
            "supervision/dashboard.html",
            status_code=400 if problem else 200,
            board=board,
            charts=charts(board, names, orgs),
            orgs=orgs,
            product_names=names,
            problem=problem,
            values=values,
            welfare_percent=None if share is None else round(Decimal(share) * 100, 1),
            currency=CHART_CURRENCY,
        )

    @get("/supervision/scorecard")
    async def scorecard(self, request: Request[Any, Any, Any], db_session: DbSession) -> Template | Redirect:
        """Every operator's scorecard for a period (an audit firm: its engagement's operators)."""
        who = _supervisor(request)
        if not isinstance(who, Principal):
            return who
        query = request.query_params
        values = {k: str(query.get(k) or "") for k in ("start", "end")}
        problem = None
        try:
            try:
                start, end = _day(values["start"], "start"), _day(values["end"], "end")
                cards = await read_scorecards(db_session, who, start, end, path=request.url.path, query=request.url.query)
            except DomainError as exc:
                if exc.status == 403:
                    raise
                problem = refusal(exc)
                cards = await read_scorecards(db_session, who, None, None, path=request.url.path)
        except DomainError as exc:
            return _refused_page(request, exc)
        orgs = {str(k): v for k, v in (await organisations(db_session, (OrgKind.operator,))).items()}
        return page(
            request,
            "supervision/scorecard.html",
            status_code=400 if problem else 200,
            cards=cards,
            problem=problem,
            values=values,
            orgs=orgs,
            revenue=stacked_bars(
                [_org_label(orgs.get(c["operator_id"]), c["name"]) for c in cards],
                {_("Net revenue"): [_dec(c["revenue"]["net"].get(CHART_CURRENCY)) for c in cards]},
                unit=f" {CHART_CURRENCY}",
            ),
            currency=CHART_CURRENCY,
        )
