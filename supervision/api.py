"""Supervision HTTP interface (DESIGN.md §8): the ledger (checkpoint and key for anyone, entries and proofs for
supervisors, auditors within their engagements) and the owner's engagements of audit firms."""

from __future__ import annotations

import base64
import uuid
from typing import Annotated, Any

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from litestar.params import FromPath, JSONBody, Parameter, QueryParameter
from litestar.response import Stream
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED

from marketplace.core.events import Actor, DomainEvent
from marketplace.core.http import (
    DbSession,
    caller,
    problems,
    requires_org_admin,
    requires_owner,
    requires_person,
    requires_supervisor,
)
from marketplace.core.schemas import Page
from supervision import engagements, services
from supervision.export import export_lines
from supervision.schemas import (
    ConsistencyProof,
    EngagementCreate,
    EngagementPublic,
    EngagementRevoke,
    InclusionProof,
    LedgerEntries,
    LedgerEntryView,
    SelfCheckResult,
)

NonNegative = Annotated[int, Parameter(ge=0, le=2**62)]
TEXT = "text/plain; charset=utf-8"


def _b64(values: list[bytes]) -> list[str]:
    return [base64.b64encode(v).decode() for v in values]


OUTSIDE_ENGAGEMENT = (
    "An auditor reads only inside an engagement in force: without one, 403 `outside_engagement` (the attempt is "
    "itself recorded in the ledger as `records.read_refused`); within one, entries of other operators or outside "
    "its period are left out. The proof endpoints stay open to auditors: they reveal hashes only."
)


async def _read_scope(request: Request[Any, Any, Any], db_session: DbSession) -> engagements.Scope | None:
    return await engagements.read_scope(
        db_session, caller(request), path=request.url.path, query=request.scope.get("query_string", b"").decode("latin-1")
    )


async def _record_read(request: Request[Any, Any, Any], db_session: DbSession, kind: str, payload: dict[str, Any]) -> None:
    principal = caller(request)
    await services.record(db_session, DomainEvent(kind, Actor.of(principal), orgs=(principal.org_id,), payload=payload))
    await db_session.commit()


class LedgerController(Controller):
    path = "/api/supervision/ledger"
    tags = ["ledger"]

    @get(
        "/checkpoint",
        summary="Latest signed checkpoint",
        description="C2SP signed note (tlog-checkpoint): origin, tree size, base64 root, Ed25519 signature. Public.",
        media_type=TEXT,
        opt={"accepts_token": True},
        responses=problems(),
    )
    async def checkpoint(self, db_session: DbSession, state: State) -> str:
        latest = await services.latest_checkpoint(db_session)
        if latest is None:
            latest = await services.sign_checkpoint(db_session, state.ledger_signer)
        return latest.note

    @get(
        "/public-key",
        summary="Checkpoint verifier key",
        description="Signed-note vkey: <name>+<key hash hex>+<base64(0x01 || Ed25519 public key)>. Public.",
        media_type=TEXT,
        opt={"accepts_token": True},
        responses=problems(),
    )
    async def public_key(self, state: State) -> str:
        return str(state.ledger_signer.vkey)

    @get(
        "/entries",
        summary="Ledger entries [start, end)",
        description="At most 1000 indices per read (`end` is one past the last index read). Supervisors only; every "
        "read is itself recorded in the ledger. " + OUTSIDE_ENGAGEMENT,
        guards=[requires_person, requires_supervisor],
        responses=problems(401, 403),
    )
    async def entries(
        self, request: Request[Any, Any, Any], db_session: DbSession, start: NonNegative, end: NonNegative
    ) -> LedgerEntries:
        scope = await _read_scope(request, db_session)
        size, _root = await services.head(db_session)
        rows = await services.read_entries(db_session, start, min(end, size))
        stop = rows[-1].leaf_index + 1 if rows else min(start, size)
        views = [services.entry_view(row) for row in rows]
        items = [LedgerEntryView(**view) for view in views if engagements.event_in_scope(view["event"], scope)]
        payload: dict[str, Any] = {"start": start, "end": stop}
        if scope is not None:
            payload |= {"returned": len(items), "left_out": len(views) - len(items)}
        await _record_read(request, db_session, "ledger.entries_read", payload)
        return LedgerEntries(items=items, start=start, end=stop, tree_size=size)

    @get(
        "/proof/inclusion",
        summary="Inclusion proof (RFC 9162)",
        guards=[requires_person, requires_supervisor],
        responses=problems(401, 403),
    )
    async def inclusion(self, db_session: DbSession, index: NonNegative, tree_size: NonNegative) -> InclusionProof:
        path = await services.inclusion_proof(db_session, index, tree_size)
        return InclusionProof(leaf_index=index, tree_size=tree_size, audit_path=_b64(path))

    @get(
        "/proof/consistency",
        summary="Consistency proof (RFC 9162)",
        guards=[requires_person, requires_supervisor],
        responses=problems(401, 403),
    )
    async def consistency(self, db_session: DbSession, first: NonNegative, second: NonNegative) -> ConsistencyProof:
        proof = await services.consistency_proof(db_session, first, second)
        return ConsistencyProof(first=first, second=second, proof=_b64(proof))

    @get(
        "/export",
        summary="Export the whole ledger",
        description="JSON Lines (market-ledger-export/1): verifier key, every entry, every checkpoint. "
        "Check it offline with `python -m supervision.verify FILE`. The export is itself recorded. "
        + OUTSIDE_ENGAGEMENT
        + ' In an auditor\'s export an entry left out is a line `{"index", "leaf_hash"}` (base64 of its leaf hash), '
        "so the whole log still verifies offline.",
        guards=[requires_person, requires_supervisor],
        responses=problems(401, 403),
        media_type="application/x-ndjson",
    )
    async def export(self, request: Request[Any, Any, Any], db_session: DbSession, state: State) -> Stream:
        scope = await _read_scope(request, db_session)
        size, _root = await services.head(db_session)
        payload: dict[str, Any] = {"size": size}
        if scope is not None:
            payload["scope"] = scope.describe()
        await _record_read(request, db_session, "ledger.exported", payload)
        return Stream(
            export_lines(state.db.session, state.ledger_signer, scope=scope),
            media_type="application/x-ndjson",
            headers={"Content-Disposition": 'attachment; filename="ledger-export.jsonl"'},
        )

    @post(
        "/checkpoint",
        summary="Sign a checkpoint now",
        description="On demand (the platform also signs one every minute while the log grows). Owner only.",
        guards=[requires_person, requires_owner],
        media_type=TEXT,
        status_code=HTTP_200_OK,
        responses=problems(401, 403),
    )
    async def sign_now(self, db_session: DbSession, state: State) -> str:
        return (await services.sign_checkpoint(db_session, state.ledger_signer)).note

    @post(
        "/self-check",
        summary="Verify the stored log against every checkpoint",
        description="Recomputes every leaf and subtree hash; raises a supervision alert when anything differs.",
        guards=[requires_person, requires_supervisor],
        opt={"read_only_ok": True},
        status_code=HTTP_200_OK,
        responses=problems(401, 403),
    )
    async def self_check(self, db_session: DbSession, state: State) -> Response[SelfCheckResult]:
        result = await services.self_check(db_session, state.ledger_signer)
        return Response(
            SelfCheckResult(
                ok=result.ok, checked_entries=result.checked_entries, checkpoints=result.checkpoints, problems=result.problems
            )
        )


class EngagementController(Controller):
    path = "/api/supervision/engagements"
    tags = ["engagements"]
    guards = [requires_person]

    @get(
        "/",
        summary="Auditors' engagements",
        description="The owner sees the engagements it granted, regulators all, an auditor its own (with their status: "
        "`in_force`, `expired` or `revoked`); operators and buyers are refused (403 `party_not_allowed`). Newest first.",
        guards=[requires_supervisor],
        responses=problems(401, 403),
    )
    async def list_engagements(
        self,
        request: Request[Any, Any, Any],
        db_session: DbSession,
        limit: Annotated[int, QueryParameter(ge=1, le=500)] = 100,
        offset: Annotated[int, QueryParameter(ge=0, le=10**9)] = 0,
    ) -> Page[EngagementPublic]:
        items, total = await engagements.list_engagements(db_session, caller(request), limit=limit, offset=offset)
        return Page(items=items, total=total)

    @post(
        "/",
        summary="Grant an audit firm an engagement",
        description="The owner's administrators only (403 `party_not_allowed`, `org_admin_required`). Which operators, "
        "which period of transactions (UTC days, inclusive), until when. Refused with 400, writing nothing: "
        "`operators_required` (no operator), `engagement_period_invalid` (ends before it starts), "
        "`engagement_expired` (expiry not in the future), `not_an_auditor`, `not_an_operator`. "
        "Recorded in the ledger as `engagement.granted`.",
        guards=[requires_owner, requires_org_admin],
        status_code=HTTP_201_CREATED,
        responses=problems(401, 403),
    )
    async def grant(
        self, request: Request[Any, Any, Any], data: JSONBody[EngagementCreate], db_session: DbSession
    ) -> EngagementPublic:
        return await engagements.grant_engagement(db_session, caller(request), data)

    @post(
        "/{engagement_id:uuid}/revoke",
        summary="Revoke an engagement",
        description="The owner's administrators only; takes effect at once. A written reason is required "
        "(400 `reason_required`); 404 `engagement_not_found`; 409 `engagement_already_revoked`. "
        "Recorded in the ledger as `engagement.revoked`.",
        guards=[requires_owner, requires_org_admin],
        status_code=HTTP_200_OK,
        responses=problems(401, 403, 404, 409),
    )
    async def revoke(
        self,
        request: Request[Any, Any, Any],
        engagement_id: FromPath[uuid.UUID],
        data: JSONBody[EngagementRevoke],
        db_session: DbSession,
    ) -> EngagementPublic:
        return await engagements.revoke_engagement(db_session, caller(request), engagement_id, data.reason)
