"""Drill-down with proofs: ``GET /api/supervision/licences/{licence_id}/trail`` and ``GET /api/supervision/events/{index}``.

Who may read: the owner and regulators everything; an auditor only licences of the operators its engagements in
force cover, and only events in their periods (anything else: 403 ``outside_engagement``, the attempt recorded as
``records.read_refused``). Operators and buyers are refused (least privilege: an operator reads its own licences,
subscriptions and invoices through its own pages; the cross-buyer delivery trail is a supervisor's view).
Successful reads by regulators and auditors are recorded by the central ``records.read`` rule.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from litestar import Controller, Request, get
from litestar.datastructures import State
from litestar.params import FromPath, Parameter, QueryParameter

from marketplace.core.http import DbSession, caller, problems, requires_all, requires_person, requires_supervisor
from supervision.engagements import read_scope, refuse_outside
from supervision.trail import DEFAULT_DELIVERIES, MAX_DELIVERIES, OutsideEngagement, event_with_proof, licence_trail

SCOPE_NOTE = (
    " The owner and regulators see everything; an auditor only what its engagements in force cover (otherwise 403 "
    "`outside_engagement`, and the attempt is recorded); operators and buyers are refused (403 `party_not_allowed`)."
)


def _query(request: Request[Any, Any, Any]) -> str:
    return request.scope.get("query_string", b"").decode("latin-1")


class TrailController(Controller):
    """A licence's trail, and one event with its proof."""

    path = "/api/supervision"
    tags = ["supervision"]

    @get(
        "/licences/{licence_id:uuid}/trail",
        summary="Drill down from a licence to its products, subscriptions, payments and deliveries",
        description="The tree licence -> products -> subscriptions -> billing events (invoices, payments, refunds, "
        "usage) and deliveries (a count and the latest `deliveries` of them, with a `more` link to page through the "
        "rest in the explorer), built from the ledger. Every listed event has its ledger `index` and an inclusion "
        "`proof` (base64 audit path) against the latest signed `checkpoint` (size, base64 root, note), or the status "
        "`not yet in a checkpoint`. 404 `licence_not_found` when the ledger names no such licence. An auditor's "
        "trail leaves out events outside its engagement's periods (`left_out` counts them)." + SCOPE_NOTE,
        guards=[requires_all(requires_supervisor, requires_person)],
        responses=problems(400, 401, 403, 404),
    )
    async def trail(
        self,
        request: Request[Any, Any, Any],
        db_session: DbSession,
        licence_id: FromPath[uuid.UUID],
        deliveries: Annotated[int, QueryParameter(ge=1, le=MAX_DELIVERIES)] = DEFAULT_DELIVERIES,
    ) -> dict[str, Any]:
        principal = caller(request)
        scope = await read_scope(db_session, principal, path=request.url.path, query=_query(request))
        try:
            return await licence_trail(db_session, scope, licence_id, deliveries=deliveries)
        except OutsideEngagement:
            await refuse_outside(
                db_session,
                principal,
                path=request.url.path,
                query=_query(request),
                detail="Your firm's engagements in force do not cover this licence's operator.",
            )
            raise

    @get(
        "/events/{index:int}",
        summary="One ledger event with its inclusion proof",
        description="The event decoded, the base64 of its exact hashed bytes (`leaf_input`), its `leaf_hash`, its "
        "inclusion `proof` against the latest signed `checkpoint`, and `verified`: whether the proof leads to the "
        "checkpoint's root and the checkpoint's signature holds (null when the event is not yet in a checkpoint). "
        "404 `entry_not_found`." + SCOPE_NOTE,
        guards=[requires_all(requires_supervisor, requires_person)],
        responses=problems(401, 403, 404),
    )
    async def event(
        self,
        request: Request[Any, Any, Any],
        db_session: DbSession,
        state: State,
        index: Annotated[int, Parameter(ge=0, le=2**62)],
    ) -> dict[str, Any]:
        principal = caller(request)
        scope = await read_scope(db_session, principal, path=request.url.path, query=_query(request))
        signer = state.ledger_signer
        try:
            return await event_with_proof(db_session, scope, index, signer.verifier, signer.origin)
        except OutsideEngagement:
            await refuse_outside(
                db_session,
                principal,
                path=request.url.path,
                query=_query(request),
                detail="Your firm's engagements in force do not cover this event.",
            )
            raise
