"""Data plane routes under ``/data/v1``: for buyer programs with an OAuth bearer token (and buyer people signed in).

Every data call re-checks the entitlement against the current state of subscription, product and licence, takes a
token from the caller's rate-limit bucket, counts against the entitlement's monthly quota and is metered (see
``marketplace.delivery.services``). Refusals are RFC 9457 problems with a stable code: ``not_entitled``,
``entitlement_expired``, ``entitlement_ended``, ``subscription_past_due``, ``licence_suspended``,
``licence_revoked``, ``licence_expired``, ``product_delisted``, ``mode_not_entitled`` (403), ``quota_exceeded``
and ``rate_limited`` (429 with Retry-After), ``insufficient_scope`` (403).

``delivery_lifespan`` must be in the app's ``lifespan`` list after the one that opens the database: it starts the
meter (group commit) and the rate limiter, and at shutdown flushes the deliveries still buffered.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

from litestar import Controller, Litestar, Request
from litestar.connection import ASGIConnection
from litestar.datastructures import State
from litestar.handlers.base import BaseRouteHandler
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, JSONBody, QueryParameter
from litestar.response import File
from litestar.response.base import ASGIResponse
from litestar.response.streaming import ASGIStreamingResponse
from litestar.status_codes import HTTP_200_OK, HTTP_202_ACCEPTED

from marketplace.core.errors import Forbidden
from marketplace.core.http import (
    DbSession,
    caller,
    hot_get,
    hot_post,
    problems,
    requires_all,
    requires_buyer,
    requires_scope,
)
from marketplace.core.tasks import enqueue
from marketplace.delivery.schemas import (
    EntitlementList,
    ExportCreate,
    ExportList,
    ExportView,
    RowsPage,
    SandboxQuery,
    SandboxResult,
)
from marketplace.delivery.services import exports as export_services
from marketplace.delivery.services.rows import DEFAULT_LIMIT, MAX_LIMIT, fetch_rows
from marketplace.delivery.services.runtime import STATE_KEY, DeliveryRuntime, runtime_of
from marketplace.delivery.services.sandbox_queries import run_sandbox
from marketplace.delivery.services.usage import list_entitlements
from marketplace.delivery.tasks import build_export_task

DATA_SCOPES = ("data:read", "data:export", "data:query")
CHUNK = 64 * 1024
SANDBOX_NOTE = '`{"sql": "..."}`, e.g. the district, count(*) and avg(cost) of `data` grouped by district.'
TOKEN = {"accepts_token": True}
REFUSALS = (
    " Refused with 403 `not_entitled` (no entitlement of your organisation for this product, also for another buyer's "
    "product), `licence_suspended`, `licence_revoked`, `licence_expired`, `product_delisted`, `entitlement_ended` "
    "(with `reason`), `entitlement_expired`, `subscription_past_due`, `mode_not_entitled`, `insufficient_scope`; "
    "429 `quota_exceeded` (monthly calls or rows of the entitlement) or `rate_limited`, both with Retry-After."
)


@asynccontextmanager
async def delivery_lifespan(app: Litestar) -> AsyncIterator[None]:
    """Start delivery's runtime (meter, rate limiter, projection cache); at shutdown, flush the meter.

    Register it in ``Litestar(lifespan=[...])`` after the lifespan that sets ``app.state.db``.
    """
    runtime = DeliveryRuntime.start(app.state.settings, app.state.db)
    app.state[STATE_KEY] = runtime
    try:
        yield
    finally:
        await runtime.close()
        if app.state.get(STATE_KEY) is runtime:
            del app.state[STATE_KEY]


async def requires_data_scope(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Programs must hold one of the data scopes; people pass."""
    principal = caller(connection)
    if principal.is_program and not principal.scopes.intersection(DATA_SCOPES):
        raise Forbidden("The access token holds none of the data scopes.", code="insufficient_scope")


async def _chunks(body: bytes) -> AsyncIterator[bytes]:
    # An async generator: Litestar would run a sync iterator's every step in a worker thread.
    for start in range(0, len(body), CHUNK):
        yield body[start : start + CHUNK]


class DataController(Controller):
    path = "/data/v1"
    tags = ["data"]

    @hot_get(
        "/entitlements",
        summary="What the caller's organisation may use",
        description="The running entitlements of the caller's organisation (not ended, not expired, subscription active "
        "or past due): product, mode, fields, monthly quota and what is used this month, valid until, subscription.",
        guards=[requires_all(requires_buyer, requires_data_scope)],
        opt=TOKEN,
        responses=problems(401, 403),
    )
    async def entitlements(self, request: Request[Any, Any, Any], db_session: DbSession, state: State) -> EntitlementList:
        items = await list_entitlements(db_session, caller(request), runtime_of(state).meter)
        return EntitlementList(items=items, total=len(items))

    @hot_get(
        "/products/{product_id:uuid}/rows",
        summary="Rows of a product (api mode)",
        description="A page of the product's delivered projection, masking applied. `fields=a,b` chooses among the "
        "entitled fields; `filter=field:value` (repeatable) keeps rows whose field equals the value (a field outside "
        "the projection: 400 `field_not_permitted`; a value of the wrong type: 400 `invalid_filter`). Pages of `limit` "
        f"rows (at most {MAX_LIMIT}, default {DEFAULT_LIMIT}; never more than the rows left in the month's quota); "
        "`next_cursor` (null on the last page) is passed back as `cursor` (altered or stale: 400 `invalid_cursor`). "
        "JSON `{items, next_cursor}` (streamed in 64 KiB chunks when larger), or CSV with `Accept: text/csv` or `format=csv` (the next cursor in "
        "the `X-Next-Cursor` header). Metered: one call and the rows delivered." + REFUSALS,
        guards=[requires_all(requires_buyer, requires_scope("data:read"))],
        opt=TOKEN,
        responses={
            **problems(401, 403, 409, 429),
            200: ResponseSpec(
                data_container=RowsPage,
                media_type="application/json",
                description="JSON {items: [...], next_cursor}, or CSV (next cursor in `X-Next-Cursor`)",
                generate_examples=False,
            ),
        },
    )
    async def rows(
        self,
        request: Request[Any, Any, Any],
        state: State,
        product_id: FromPath[uuid.UUID],
        fields: Annotated[str | None, QueryParameter(max_length=2000)] = None,
        filters: Annotated[list[str] | None, QueryParameter(name="filter", max_items=10)] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
        cursor: Annotated[str | None, QueryParameter(max_length=500)] = None,
        answer_format: Annotated[Literal["json", "csv"] | None, QueryParameter(name="format")] = None,
    ) -> ASGIResponse:
        fmt: Literal["json", "csv"] = answer_format or ("csv" if "text/csv" in request.headers.get("accept", "") else "json")
        page = await fetch_rows(
            runtime_of(state),
            caller(request),
            product_id,
            fields=fields,
            filters=filters or (),
            limit=limit,
            cursor=cursor,
            fmt=fmt,
        )
        # The media type goes as it is (an ASGI response would add a charset to a text type that already has one).
        headers = {"content-type": page.media_type}
        if page.next_cursor:
            headers["X-Next-Cursor"] = page.next_cursor
        # Answered as ASGI responses directly: the body is encoded already, and this is the busiest route.
        if len(page.body) <= CHUNK:  # one chunk: sent whole, with its length
            return ASGIResponse(body=page.body, media_type=page.media_type, headers=headers)
        return ASGIStreamingResponse(iterator=_chunks(page.body), media_type=page.media_type, headers=headers)

    @hot_post(
        "/products/{product_id:uuid}/exports",
        summary="Ask for a file export (file mode)",
        description="Queues an export of the product's delivered projection (entitled fields, optional equality "
        "`filters`) as CSV or Parquet, fingerprinted for your subscription; poll `GET /data/v1/exports/{id}` until "
        "`ready` for a short-lived signed download link. Counts as one call (and its rows) of the month's quota when "
        "built; a filter on a field outside the projection is 400 `field_not_permitted`." + REFUSALS,
        guards=[requires_all(requires_buyer, requires_scope("data:export"))],
        opt=TOKEN,
        status_code=HTTP_202_ACCEPTED,
        responses=problems(401, 403, 409, 429),
    )
    async def request_export(
        self,
        request: Request[Any, Any, Any],
        db_session: DbSession,
        state: State,
        product_id: FromPath[uuid.UUID],
        data: JSONBody[ExportCreate],
    ) -> ExportView:
        export = await export_services.request_export(db_session, runtime_of(state), caller(request), product_id, data)
        enqueue(build_export_task, str(export.id))
        return export_services.export_view(state.settings, export)

    @hot_get(
        "/exports",
        summary="Your exports",
        description="The exports of your organisation, newest first (at most 100), each with a fresh signed link when ready.",
        guards=[requires_all(requires_buyer, requires_scope("data:export"))],
        opt=TOKEN,
        responses=problems(401, 403),
    )
    async def list_exports(self, request: Request[Any, Any, Any], db_session: DbSession, state: State) -> ExportList:
        found = await export_services.list_exports(db_session, caller(request))
        return ExportList(items=[export_services.export_view(state.settings, e) for e in found], total=len(found))

    @hot_get(
        "/exports/{export_id:uuid}",
        summary="An export's state and download link",
        description="`queued`, `running`, `ready` (with `download_url`, a signed link valid for the configured time, "
        "no token needed) or `failed` (with `error`). Another organisation's export: 404 `export_not_found`.",
        guards=[requires_all(requires_buyer, requires_scope("data:export"))],
        opt=TOKEN,
        responses=problems(401, 403, 404),
    )
    async def get_export(
        self, request: Request[Any, Any, Any], db_session: DbSession, state: State, export_id: FromPath[uuid.UUID]
    ) -> ExportView:
        export = await export_services.get_export(db_session, caller(request), export_id)
        return export_services.export_view(state.settings, export)

    @hot_get(
        "/exports/{export_id:uuid}/download",
        summary="Download an export through its signed link",
        description="The link is the credential: no token or session is needed. An altered link is 403 `link_invalid`, "
        "an expired one 403 `link_expired`; the entitlement's current state is checked again (a suspended licence: "
        "403 `licence_suspended`, ...).",
        opt=TOKEN,
        responses=problems(403, 404),
        media_type="application/octet-stream",
    )
    async def download(
        self,
        db_session: DbSession,
        state: State,
        export_id: FromPath[uuid.UUID],
        expires: Annotated[str | None, QueryParameter(max_length=20)] = None,
        signature: Annotated[str | None, QueryParameter(max_length=128)] = None,
    ) -> File:
        found = await export_services.open_download(db_session, state.settings, export_id, expires, signature)
        return File(path=found.path, filename=found.filename, media_type=found.media_type, headers={"Cache-Control": "no-store"})

    @hot_post(
        "/products/{product_id:uuid}/sandbox/query",
        summary="Run an aggregate sandbox query (sandbox mode)",
        description=SANDBOX_NOTE + " One aggregating "
        "SELECT over the table `data` (the product's delivered projection, your entitled fields). Groups smaller than "
        "the licence's k are left out (`suppressed_groups`). Refused by the guard: 400 `sandbox_query_refused` with "
        "`reason` (raw_column, star, join, subquery, table, function, ...); longer than the time limit: 400 "
        "`query_timeout`; over the memory limit: 400 `query_too_large`; other errors: 400 `query_failed`. Metered: one "
        "call and the result rows." + REFUSALS,
        guards=[requires_all(requires_buyer, requires_scope("data:query"))],
        opt=TOKEN,
        status_code=HTTP_200_OK,
        responses=problems(401, 403, 409, 429),
    )
    async def sandbox_query(
        self,
        request: Request[Any, Any, Any],
        state: State,
        product_id: FromPath[uuid.UUID],
        data: JSONBody[SandboxQuery],
    ) -> SandboxResult:
        answer, _size = await run_sandbox(runtime_of(state), caller(request), product_id, data.sql)
        return SandboxResult(
            columns=list(answer.columns),
            rows=[list(r) for r in answer.rows],
            suppressed_groups=answer.suppressed_groups,
            truncated=answer.truncated,
            min_k=answer.min_k,
        )


#: Every delivery controller, composed by ``marketplace.app``.
CONTROLLERS: list[Any] = [DataController]
