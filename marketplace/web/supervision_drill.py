"""The drill-down page: from a licence to its products, subscriptions, payments and deliveries, every event with its
ledger index and its inclusion proof, checked here against the signed checkpoint (``supervision.trail`` builds the
tree, scoped to the reader; an auditor outside its engagement is refused and the attempt recorded)."""

from __future__ import annotations

import base64
import uuid
from typing import Any

from litestar import Controller, Request, get
from litestar.datastructures import State
from litestar.params import FromPath
from litestar.response import Redirect, Template
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from marketplace.catalog.models import Product
from marketplace.core.errors import DomainError
from marketplace.core.http import DbSession
from marketplace.core.principal import Principal
from marketplace.web.buyer_pages import localised
from marketplace.web.pages import page
from marketplace.web.supervision_pages import _refused_page, _supervisor, organisations
from supervision import merkle
from supervision.engagements import read_scope, refuse_outside
from supervision.note import NoteError, open_checkpoint
from supervision.trail import OutsideEngagement, licence_trail


def _events_of(trail: dict[str, Any]) -> list[dict[str, Any]]:
    found = list(trail["events"])
    subscriptions = [s for p in trail["products"] for s in p["subscriptions"]] + trail["subscriptions_without_product"]
    for product in trail["products"]:
        found += product["events"]
    for s in subscriptions:
        found += s["events"] + s["billing"] + s["deliveries"]["latest"]
    return found


def check_proofs(trail: dict[str, Any], verifier: Any) -> tuple[bool | None, int]:
    """Check every listed event's inclusion proof against the trail's checkpoint, and the checkpoint's signature;
    marks each event ``verified`` (True, False, or None when it is newer than the checkpoint). Returns whether the
    checkpoint's signature holds (None without a checkpoint) and how many proofs failed."""
    checkpoint = trail["checkpoint"]
    signed: bool | None = None
    if checkpoint is not None:
        try:
            opened = open_checkpoint(checkpoint["note"], verifier)
            signed = opened.size == checkpoint["size"] and base64.b64encode(opened.root).decode() == checkpoint["root"]
        except NoteError:
            signed = False
    failed = 0
    for event in _events_of(trail):
        proof = event["proof"]
        if proof["tree_size"] is None:
            event["verified"] = None
            continue
        try:
            merkle.verify_inclusion(
                event["index"],
                proof["tree_size"],
                base64.b64decode(event["leaf_hash"]),
                [base64.b64decode(step) for step in proof["audit_path"]],
                base64.b64decode(proof["root"]),
            )
            event["verified"] = True
        except merkle.ProofError:
            event["verified"] = False
            failed += 1
    return signed, failed


async def product_names(session: AsyncSession, ids: list[str]) -> dict[str, str]:
    """Product names in the page language, by id text."""
    wanted = []
    for raw in ids:
        try:
            wanted.append(uuid.UUID(raw))
        except (TypeError, ValueError):
            continue
    if not wanted:
        return {}
    return {
        str(p.id): localised(p, "name") for p in (await session.exec(select(Product).where(col(Product.id).in_(wanted)))).all()
    }


class SupervisionDrillController(Controller):
    include_in_schema = False

    @get("/supervision/licences/{licence_id:uuid}")
    async def licence(
        self, request: Request[Any, Any, Any], db_session: DbSession, state: State, licence_id: FromPath[uuid.UUID]
    ) -> Template | Redirect:
        """A licence's trail, each event with its proof checked."""
        who = _supervisor(request)
        if not isinstance(who, Principal):
            return who
        try:
            scope = await read_scope(db_session, who, path=request.url.path)
            try:
                trail = await licence_trail(db_session, scope, licence_id, deliveries=10)
            except OutsideEngagement:
                await refuse_outside(
                    db_session,
                    who,
                    path=request.url.path,
                    detail="Your firm's engagements in force do not cover this licence's operator.",
                )
                raise AssertionError("refuse_outside raises") from None
        except DomainError as exc:
            return _refused_page(request, exc)
        signed, failed = check_proofs(trail, state.ledger_signer.verifier)
        subscriptions = [s for p in trail["products"] for s in p["subscriptions"]] + trail["subscriptions_without_product"]
        buyers: dict[str, str] = {}
        orgs = await organisations(db_session)
        names = {str(k): v for k, v in orgs.items()}
        for s in subscriptions:
            for e in s["events"] + s["billing"]:
                for org in e["orgs"]:
                    if org in names and names[org].kind.value == "buyer":
                        buyers[s["id"]] = org
        number = next((e["payload"]["number"] for e in trail["events"] if isinstance(e["payload"].get("number"), str)), None)
        return page(
            request,
            "supervision/licence.html",
            number=number,
            trail=trail,
            signed=signed,
            failed=failed,
            products=await product_names(db_session, [p["id"] for p in trail["products"]]),
            buyers=buyers,
            orgs=names,
        )
