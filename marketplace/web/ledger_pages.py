"""The ledger page for supervisors: latest checkpoint, growth, entry lookup with its proof, and verify.

An auditor looks up only entries inside its firm's engagements in force (other operators' entries, entries outside
its period, or any entry without an engagement in force: a refused page, 403 ``outside_engagement``, the attempt
recorded as ``records.read_refused``). The rest of the page (counts, root, signed checkpoint, the self-check) shows
hashes and counts only, like the ledger export and the proof endpoints, and stays open to every auditor."""

from __future__ import annotations

import base64
import json
from typing import Any

from litestar import Controller, Request, get, post
from litestar.datastructures import State
from litestar.params import FromQuery
from litestar.response import Redirect, Template

from marketplace.core.errors import DomainError, Forbidden
from marketplace.core.http import DbSession
from marketplace.core.principal import OrgKind, Principal
from marketplace.web.i18n import gettext_ as _
from marketplace.web.pages import forbidden_page, login_redirect, page
from supervision import merkle, services
from supervision.engagements import auditor_scope, event_in_scope, refuse_outside
from supervision.models import LedgerEntry
from supervision.note import open_checkpoint

SUPERVISORS = frozenset({OrgKind.owner, OrgKind.regulator, OrgKind.auditor})


def _bars(growth: list[tuple[str, int]], width: int = 640, height: int = 120) -> list[dict[str, Any]]:
    """Bar geometry for the growth chart (SVG drawn in the template)."""
    if not growth:
        return []
    peak = max(n for _d, n in growth) or 1
    step = width / len(growth)
    return [
        {
            "x": round(i * step + 1, 1),
            "w": round(max(step - 2, 1), 1),
            "h": round(n / peak * (height - 20), 1),
            "day": day,
            "n": n,
        }
        for i, (day, n) in enumerate(growth)
    ]


class LedgerPageController(Controller):
    include_in_schema = False

    async def _context(self, db_session: DbSession, state: State, lookup: int | None) -> dict[str, Any]:
        size, root = await services.head(db_session)
        latest = await services.latest_checkpoint(db_session)
        growth = await services.daily_growth(db_session)
        entry: dict[str, Any] | None = None
        lookup_error = None
        if lookup is not None:
            try:
                row = await services.get_entry(db_session, lookup)
                entry = {"index": row.leaf_index, "event": json.dumps(json.loads(row.leaf_input), ensure_ascii=False, indent=2)}
                if latest is not None and lookup < latest.size:
                    path = await services.inclusion_proof(db_session, lookup, latest.size)
                    checkpoint = open_checkpoint(latest.note, state.ledger_signer.verifier)
                    merkle.verify_inclusion(lookup, latest.size, row.leaf_hash, path, checkpoint.root)
                    entry["proof"] = [base64.b64encode(p).decode() for p in path]
                    entry["proof_size"] = latest.size
            except DomainError as exc:
                lookup_error = exc.detail
        return {
            "size": size,
            "root": base64.b64encode(root).decode(),
            "latest": latest,
            "growth": growth,
            "bars": _bars(growth),
            "entry": entry,
            "lookup": lookup,
            "lookup_error": lookup_error,
        }

    @get("/supervision/ledger")
    async def ledger(
        self, request: Request[Any, Any, Any], db_session: DbSession, state: State, entry: FromQuery[int | None] = None
    ) -> Template | Redirect:
        principal: Principal | None = request.scope.get("user")  # type: ignore[assignment]
        if principal is None:
            return login_redirect(request)
        if principal.org_kind not in SUPERVISORS:
            return _not_a_supervisor(request)
        try:
            await _check_auditor(request, db_session, principal, entry)
        except Forbidden as refused:
            return _outside_engagement(request, refused.detail)
        return page(request, "ledger.html", check=None, **await self._context(db_session, state, entry))

    @post("/supervision/ledger/verify", opt={"read_only_ok": True})
    async def verify(self, request: Request[Any, Any, Any], db_session: DbSession, state: State) -> Template | Redirect:
        principal: Principal | None = request.scope.get("user")  # type: ignore[assignment]
        if principal is None:
            return login_redirect(request)
        if principal.org_kind not in SUPERVISORS:
            return _not_a_supervisor(request)
        result = await services.self_check(db_session, state.ledger_signer)
        return page(request, "ledger.html", check=result, **await self._context(db_session, state, None))


async def _check_auditor(request: Request[Any, Any, Any], db_session: DbSession, principal: Principal, entry: int | None) -> None:
    """An auditor looking up an entry outside its engagements in force (any entry, without one): record the attempt
    and refuse (Forbidden ``outside_engagement``). An entry that does not exist is left to the lookup (it says so)."""
    if entry is None or principal.org_kind is not OrgKind.auditor:
        return
    scope = await auditor_scope(db_session, principal)
    row = await db_session.get(LedgerEntry, entry)
    if row is not None and not event_in_scope(json.loads(row.leaf_input), scope):
        query = request.scope.get("query_string", b"").decode("latin-1")
        detail = _("This entry is outside your firm's engagements.")
        await refuse_outside(db_session, principal, path=request.url.path, query=query, detail=detail)


def _outside_engagement(request: Request[Any, Any, Any], detail: str) -> Template:
    return page(request, "error.html", status_code=403, status=403, code="outside_engagement", title="Forbidden", detail=detail)


def _not_a_supervisor(request: Request[Any, Any, Any]) -> Template:
    return forbidden_page(request, _("The ledger page is for the data authority, regulators and auditors."))
