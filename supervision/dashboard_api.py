"""``GET /api/supervision/dashboard`` and ``GET /api/supervision/scorecard[/{operator_id}]``: the supervision
dashboard's aggregates and the operators' scorecards."""

from __future__ import annotations

import uuid
from datetime import date
from typing import Annotated, Any, Literal

from litestar import Controller, Request, get
from litestar.params import FromPath, FromQuery, QueryParameter

from marketplace.core.http import DbSession, caller, problems, requires_all, requires_person, requires_supervisor
from supervision import dashboard, scorecard

PERIOD = (
    "`start`..`end` are UTC days, inclusive (by default the last six months: this one and the five before); at most "
    "366 days (400 `period_too_long`), not reversed (400 `period_reversed`)."
)
SCOPED = (
    "The owner and regulators see everything; an auditor only its engagement's operators and periods (403 "
    "`outside_engagement` without an engagement in force); operators and buyers are refused."
)


class DashboardController(Controller):
    """The dashboard and the operators' scorecards."""

    path = "/api/supervision"
    tags = ["supervision"]

    @get(
        "/dashboard",
        summary="The supervision dashboard",
        description="Transactions (payments received) and revenue (gross, refunds, net, per currency) over time "
        "(`bucket=month`, or `day` for at most 62 days), by operator and by product; deliveries by mode; franchise "
        "fee income (settlements issued); the share of public-welfare and research subscriptions; open alerts by "
        f"severity; the ledger's size and last checkpoint. {PERIOD} {SCOPED}",
        guards=[requires_all(requires_supervisor, requires_person)],
        responses=problems(400, 401, 403),
    )
    async def get_dashboard(
        self,
        request: Request[Any, Any, Any],
        db_session: DbSession,
        start: FromQuery[date | None] = None,
        end: FromQuery[date | None] = None,
        bucket: Annotated[Literal["month", "day"] | None, QueryParameter()] = None,
    ) -> dict[str, Any]:
        return await dashboard.read_dashboard(
            db_session, caller(request), start, end, bucket, path=request.url.path, query=request.url.query
        )

    @get(
        "/scorecard",
        summary="Operators' scorecards",
        description="Per operator, over the period: revenue (gross, refunds, net), distinct buyers, usage (API "
        "calls, deliveries, rows and bytes by mode), public-welfare share, refunds, alerts (open, total), findings "
        f"(raised, open, closed) and response times to findings (hours: median, max). {PERIOD} {SCOPED}",
        guards=[requires_all(requires_supervisor, requires_person)],
        responses=problems(400, 401, 403),
    )
    async def list_scorecards(
        self,
        request: Request[Any, Any, Any],
        db_session: DbSession,
        start: FromQuery[date | None] = None,
        end: FromQuery[date | None] = None,
    ) -> dict[str, Any]:
        items = await scorecard.read_scorecards(
            db_session, caller(request), start, end, path=request.url.path, query=request.url.query
        )
        return {"items": items, "total": len(items)}

    @get(
        "/scorecard/{operator_id:uuid}",
        summary="One operator's scorecard",
        description=f"As in the list, for one operator (404 `operator_not_found`). {PERIOD} {SCOPED} An auditor "
        "asking for an operator its engagement does not cover: 403 `outside_engagement`, the attempt recorded.",
        guards=[requires_all(requires_supervisor, requires_person)],
        responses=problems(400, 401, 403, 404),
    )
    async def get_scorecard(
        self,
        request: Request[Any, Any, Any],
        db_session: DbSession,
        operator_id: FromPath[uuid.UUID],
        start: FromQuery[date | None] = None,
        end: FromQuery[date | None] = None,
    ) -> dict[str, Any]:
        return await scorecard.read_scorecard(
            db_session, caller(request), operator_id, start, end, path=request.url.path, query=request.url.query
        )
