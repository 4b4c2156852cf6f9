"""``GET /api/supervision/events``: the transaction explorer."""

from __future__ import annotations

import uuid
from datetime import date
from decimal import Decimal
from typing import Annotated, Any

from litestar import Controller, Request, get
from litestar.params import FromQuery, QueryParameter

from marketplace.core.http import DbSession, caller, problems, requires_all, requires_person, requires_supervisor
from supervision.engagements import read_scope, refuse_outside
from supervision.explorer import MAX_LIMIT, EventFilter, explore

#: A decimal amount of money in a query (not negative).
AMOUNT = r"^\d{1,12}(\.\d{1,4})?$"


class ExplorerController(Controller):
    """Every event, filtered, newest first."""

    path = "/api/supervision"
    tags = ["supervision"]

    @get(
        "/events",
        summary="Explore the ledger's events",
        description="Events newest first, filtered by `type` (repeatable), `org` (an organisation the event "
        "concerns), `product`, `licence`, `subscription`, the days `start`..`end` (UTC, inclusive) and "
        "`min_amount`/`max_amount` (decimal, in `currency`, CNY by default). Keyset pagination: pass the answer's "
        "`next_before` as `before`. Each item is the event as the ledger holds it, with its `index` (for the "
        "inclusion proof). An auditor sees only its engagement (403 `outside_engagement` without one, or for an "
        "organisation it does not cover).",
        guards=[requires_all(requires_supervisor, requires_person)],
        responses=problems(401, 403),
    )
    async def events(
        self,
        request: Request[Any, Any, Any],
        db_session: DbSession,
        event_type: Annotated[list[str] | None, QueryParameter(name="type", max_items=20)] = None,
        org: FromQuery[uuid.UUID | None] = None,
        product: FromQuery[uuid.UUID | None] = None,
        licence: FromQuery[uuid.UUID | None] = None,
        subscription: FromQuery[uuid.UUID | None] = None,
        start: FromQuery[date | None] = None,
        end: FromQuery[date | None] = None,
        min_amount: Annotated[str | None, QueryParameter(pattern=AMOUNT)] = None,
        max_amount: Annotated[str | None, QueryParameter(pattern=AMOUNT)] = None,
        currency: Annotated[str, QueryParameter(pattern=r"^[A-Z]{3}$")] = "CNY",
        before: Annotated[int | None, QueryParameter(ge=0)] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=MAX_LIMIT)] = 50,
    ) -> dict[str, Any]:
        principal = caller(request)
        scope = await read_scope(db_session, principal, path=request.url.path, query=request.url.query)
        if scope is not None and org is not None and org not in scope.operator_ids:
            await refuse_outside(
                db_session,
                principal,
                path=request.url.path,
                query=request.url.query,
                detail="Your firm's engagements in force do not cover this organisation.",
            )
        wanted = EventFilter(
            types=tuple(event_type or ()),
            org=org,
            product=product,
            licence=licence,
            subscription=subscription,
            start=start,
            end=end,
            min_amount=None if min_amount is None else Decimal(min_amount),
            max_amount=None if max_amount is None else Decimal(max_amount),
            currency=currency,
        )
        page = await explore(db_session, scope, wanted, before=before, limit=limit)
        return {"items": page.items, "next_before": page.next_before}
