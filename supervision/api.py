"""Ledger HTTP interface (DESIGN.md §8): checkpoint and key for anyone, entries and proofs for supervisors."""

from __future__ import annotations

import base64
from typing import Annotated, Any

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from litestar.params import Parameter
from litestar.response import Stream
from litestar.status_codes import HTTP_200_OK

from marketplace.core.events import Actor, DomainEvent
from marketplace.core.http import DbSession, caller, problems, requires_owner, requires_person, requires_supervisor
from supervision import services
from supervision.export import export_lines
from supervision.schemas import ConsistencyProof, InclusionProof, LedgerEntries, LedgerEntryView, SelfCheckResult

NonNegative = Annotated[int, Parameter(ge=0, le=2**62)]
TEXT = "text/plain; charset=utf-8"


def _b64(values: list[bytes]) -> list[str]:
    return [base64.b64encode(v).decode() for v in values]


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
        description="At most 1000 per read. Supervisors only; every read is itself recorded in the ledger.",
        guards=[requires_person, requires_supervisor],
        responses=problems(401, 403),
    )
    async def entries(
        self, request: Request[Any, Any, Any], db_session: DbSession, start: NonNegative, end: NonNegative
    ) -> LedgerEntries:
        size, _root = await services.head(db_session)
        rows = await services.read_entries(db_session, start, min(end, size))
        stop = rows[-1].leaf_index + 1 if rows else min(start, size)
        await _record_read(request, db_session, "ledger.entries_read", {"start": start, "end": stop})
        return LedgerEntries(
            items=[LedgerEntryView(**services.entry_view(row)) for row in rows], start=start, end=stop, tree_size=size
        )

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
        "Check it offline with `python -m supervision.verify FILE`. The export is itself recorded.",
        guards=[requires_person, requires_supervisor],
        responses=problems(401, 403),
        media_type="application/x-ndjson",
    )
    async def export(self, request: Request[Any, Any, Any], db_session: DbSession, state: State) -> Stream:
        size, _root = await services.head(db_session)
        await _record_read(request, db_session, "ledger.exported", {"size": size})
        return Stream(
            export_lines(state.db.session, state.ledger_signer),
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
