"""``GET /api/supervision/exports``: a period's events as CSV or Parquet, consistent with a signed checkpoint."""

from __future__ import annotations

import base64
from datetime import date
from functools import partial
from typing import Annotated, Any, Literal

from litestar import Controller, Request, Response, get
from litestar.params import FromQuery, QueryParameter

from marketplace.core.http import DbSession, caller, problems, requires_all, requires_person, requires_supervisor
from supervision.engagements import event_in_scope, read_scope
from supervision.period_export import export_period


class PeriodExportController(Controller):
    """Exports of events for supervisors."""

    path = "/api/supervision"
    tags = ["supervision"]

    @get(
        "/exports",
        summary="A period's events as CSV or Parquet",
        description="Every event whose time falls in `[start, end)` (days, UTC) and that the latest signed "
        "checkpoint covers, one row each with its ledger index, type, time, actor, organisations, subjects, payload "
        "(JSON) and leaf hash, and the checkpoint's size and root; the checkpoint's signed note is the Parquet "
        "metadata `ledger.checkpoint` (base64) and the `X-Ledger-Checkpoint` header. An auditor gets only what its "
        "engagement covers (403 `outside_engagement` without one). Refused: 400 `period_reversed`, `period_empty`, "
        "`period_too_long`.",
        guards=[requires_all(requires_supervisor, requires_person)],
        responses=problems(401, 403),
        media_type="application/octet-stream",
    )
    async def export(
        self,
        request: Request[Any, Any, Any],
        db_session: DbSession,
        start: FromQuery[date],
        end: FromQuery[date],
        export_format: Annotated[Literal["csv", "parquet"], QueryParameter(name="format")] = "csv",
    ) -> Response[bytes]:
        scope = await read_scope(db_session, caller(request), path=request.url.path, query=request.url.query)
        made = await export_period(
            db_session, start, end, export_format, in_scope=None if scope is None else partial(event_in_scope, scope=scope)
        )
        return Response(
            made.content,
            media_type=made.media_type,
            headers={
                "Content-Disposition": f'attachment; filename="{made.filename}"',
                "X-Ledger-Checkpoint-Size": str(made.checkpoint_size),
                "X-Ledger-Checkpoint": base64.b64encode((made.checkpoint_note or "").encode()).decode(),
            },
        )
