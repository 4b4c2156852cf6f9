"""``POST /api/supervision/leak-trace``: name the subscription a leaked file export was made for."""

from __future__ import annotations

from dataclasses import asdict
from functools import partial
from typing import Any

from litestar import Controller, Request, post
from litestar.datastructures import State
from litestar.status_codes import HTTP_200_OK

from marketplace.core.http import DbSession, caller, problems, requires_all, requires_person, requires_supervisor
from marketplace.core.keys import fingerprint_key
from supervision.engagements import event_in_scope, read_scope
from supervision.leaks import MAX_LEAK_BYTES, trace_leak


class LeakTraceController(Controller):
    """Leak tracing for supervisors."""

    path = "/api/supervision"
    tags = ["supervision"]

    @post(
        "/leak-trace",
        summary="Trace a leaked file to its subscription",
        description="The request body is the suspected file itself, CSV or Parquet (anything else: 400 "
        "`not_csv_or_parquet`; at most 200 MiB). Its fingerprint is checked against every subscription that "
        "received a file export (the candidates come from the ledger's `export.ready` events): the answer names "
        "the subscription, its buyer organisation, the product and the exports with their ledger indices, or "
        "`found: false`. An auditor traces among the exports its engagement covers (403 `outside_engagement` "
        "without one). The trace is recorded as `leak.traced` (file hash, outcome), nothing else is written.",
        guards=[requires_all(requires_supervisor, requires_person)],
        status_code=HTTP_200_OK,
        responses=problems(401, 403),
        request_max_body_size=MAX_LEAK_BYTES,
        opt={"read_only_ok": True},
    )
    async def leak_trace(self, request: Request[Any, Any, Any], db_session: DbSession, state: State) -> dict[str, Any]:
        principal = caller(request)
        scope = await read_scope(db_session, principal, path=request.url.path)
        content = await request.body()
        in_scope = None if scope is None else partial(event_in_scope, scope=scope)
        result = await trace_leak(db_session, principal, fingerprint_key(state.settings), content, in_scope)
        return asdict(result)
