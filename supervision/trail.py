"""Drill-down from a licence to everything done under it, each event with its ledger index and inclusion proof.

Built only from the ledger's read model (``event_index``, DESIGN.md §3): the licence's own events, its products'
events, each product's subscriptions, and for each subscription its billing events (invoices, payments, refunds,
usage charges), its other events (entitlements, exports) and its deliveries (counted; only the latest few listed,
with a link to page through the rest in the explorer). Every listed event carries an RFC 9162 inclusion proof
against the latest signed checkpoint, or says that it is not yet in one. Proofs are built for the listed events
only, so a licence with millions of deliveries costs a count and a few dozen proofs.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, false, or_
from sqlmodel import col, func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from marketplace.core.errors import InvalidInput, NotFound
from supervision import merkle, services
from supervision.engagements import Scope, event_in_scope
from supervision.explorer import EventIndex, index_new_events
from supervision.models import LedgerCheckpoint, LedgerEntry
from supervision.note import NoteError, Verifier, open_checkpoint

DELIVERY = "delivery.recorded"
#: Billing events listed under a subscription.
BILLING_PREFIXES = ("invoice.", "payment.", "usage.")
#: Events other than deliveries listed for one licence (newest first); the rest is said to be left out.
MAX_EVENTS = 300
#: Deliveries listed per subscription, by default and at most.
DEFAULT_DELIVERIES = 5
MAX_DELIVERIES = 50
NOT_CHECKPOINTED = "not yet in a checkpoint"
EVENTS_PATH = "/api/supervision/events"


@dataclass(frozen=True)
class CheckpointRef:
    """The checkpoint proofs are made against."""

    size: int
    root: bytes
    note: str

    def public(self) -> dict[str, Any]:
        """As the interface shows it."""
        return {"size": self.size, "root": _b64(self.root), "note": self.note}


def _b64(value: bytes) -> str:
    return base64.b64encode(value).decode()


def _checkpoint(row: LedgerCheckpoint | None) -> CheckpointRef | None:
    return None if row is None else CheckpointRef(size=int(row.size), root=bytes(row.root_hash), note=row.note)


#: Proofs read per statement (their subtree hashes are read together).
PROOF_BATCH = 64


async def _proofs(session: AsyncSession, checkpoint: CheckpointRef | None, indices: Iterable[int]) -> dict[int, dict[str, Any]]:
    """The inclusion proofs of entries ``indices`` against ``checkpoint`` (or why there is none), in a few reads."""
    pending: dict[str, Any] = {"status": NOT_CHECKPOINTED, "tree_size": None, "root": None, "audit_path": []}
    wanted = sorted(set(indices))
    found: dict[int, dict[str, Any]] = {index: dict(pending) for index in wanted}
    if checkpoint is None:
        return found
    covered = [index for index in wanted if index < checkpoint.size]
    for start in range(0, len(covered), PROOF_BATCH):
        paths = await services.inclusion_proofs(session, covered[start : start + PROOF_BATCH], checkpoint.size)
        for index, path in paths.items():
            found[index] = {
                "status": "in checkpoint",
                "tree_size": checkpoint.size,
                "root": _b64(checkpoint.root),
                "audit_path": [_b64(step) for step in path],
            }
    return found


async def _leaves(session: AsyncSession, indices: Iterable[int]) -> dict[int, tuple[str, bytes]]:
    wanted = sorted(set(indices))
    if not wanted:
        return {}
    rows = await session.exec(
        select(LedgerEntry.leaf_index, LedgerEntry.leaf_input, LedgerEntry.leaf_hash).where(
            col(LedgerEntry.leaf_index).in_(wanted)
        )
    )
    return {int(index): (leaf, bytes(value)) for index, leaf, value in rows.all()}


def _item(index: int, event: dict[str, Any], leaf_hash: bytes, proof: dict[str, Any]) -> dict[str, Any]:
    return {
        "index": index,
        "type": event["type"],
        "time": event["time"],
        "actor": event.get("actor"),
        "orgs": event.get("orgs") or [],
        "subjects": event.get("subjects") or {},
        "payload": event.get("payload") or {},
        "leaf_hash": _b64(leaf_hash),
        "proof": proof,
    }


def _day_start(day: date) -> datetime:
    return datetime.combine(day, time(), UTC)


def _periods(scope: Scope | None, orgs: Iterable[str]) -> list[tuple[date, date]] | None:
    """The periods ``scope`` covers for any of ``orgs`` (None: no limit)."""
    if scope is None:
        return None
    found: list[tuple[date, date]] = []
    for operator, spans in scope.periods.items():
        if str(operator) in orgs:
            found.extend(spans)
    return found


def _within(periods: list[tuple[date, date]] | None) -> ColumnElement[bool] | None:
    if periods is None:
        return None
    if not periods:
        return false()
    return or_(
        *(
            and_(
                col(EventIndex.occurred_at) >= _day_start(first),
                col(EventIndex.occurred_at) < _day_start(last + timedelta(days=1)),
            )
            for first, last in periods
        )
    )


@dataclass
class _Event:
    index: int
    event: dict[str, Any]
    leaf_hash: bytes


async def _decoded(session: AsyncSession, indices: Sequence[int]) -> list[_Event]:
    leaves = await _leaves(session, indices)
    return [_Event(i, json.loads(leaves[i][0]), leaves[i][1]) for i in indices if i in leaves]


def _licence_operators(events: Sequence[_Event], scope: Scope) -> set[str]:
    """The covered operators a licence's events name (a licence has one operator: the others are the owner and
    buyers, which are never covered)."""
    covered = {str(operator) for operator in scope.operator_ids}
    return {org for e in events for org in e.event.get("orgs") or () if org in covered}


class OutsideEngagement(Exception):
    """The licence belongs to no operator the auditor's engagements cover (the caller records and refuses)."""


async def licence_trail(
    session: AsyncSession,
    scope: Scope | None,
    licence_id: uuid.UUID,
    *,
    deliveries: int = DEFAULT_DELIVERIES,
) -> dict[str, Any]:
    """The tree licence -> products -> subscriptions -> billing events and deliveries, every listed event with its
    inclusion proof against the latest checkpoint. 404 ``licence_not_found`` when the ledger names no such licence;
    :class:`OutsideEngagement` when ``scope`` (an auditor's) does not cover the licence's operator. Within scope,
    events outside the engagement's periods are left out (and counted)."""
    if not 1 <= deliveries <= MAX_DELIVERIES:
        raise InvalidInput(f"deliveries is between 1 and {MAX_DELIVERIES}.", code="invalid_input", field="deliveries")
    await index_new_events(session)
    licence = str(licence_id)
    indices = list(
        (
            await session.exec(
                select(EventIndex.leaf_index)
                .where(EventIndex.licence_id == licence, EventIndex.event_type != DELIVERY)
                .order_by(col(EventIndex.leaf_index).desc())
                .limit(MAX_EVENTS + 1)
            )
        ).all()
    )
    truncated = len(indices) > MAX_EVENTS
    indices = indices[:MAX_EVENTS]
    if not indices:
        raise NotFound("The ledger names no such licence.", code="licence_not_found")
    events = await _decoded(session, indices)
    # Plan events name their product but not the licence: fetch them for the licence's products.
    products = sorted({e.event["subjects"]["product"] for e in events if (e.event.get("subjects") or {}).get("product")})
    if products:
        extra = list(
            (
                await session.exec(
                    select(EventIndex.leaf_index)
                    .where(
                        col(EventIndex.product_id).in_(products),
                        col(EventIndex.licence_id).is_(None),
                        col(EventIndex.subscription_id).is_(None),
                    )
                    .order_by(col(EventIndex.leaf_index).desc())
                    .limit(MAX_EVENTS)
                )
            ).all()
        )
        events += await _decoded(session, extra)
    operators: set[str] = set()
    if scope is not None:
        operators = _licence_operators(events, scope)
        if not operators:
            raise OutsideEngagement(licence)
    periods = _periods(scope, operators)
    shown = [e for e in events if event_in_scope(e.event, scope)]
    left_out = len(events) - len(shown)

    # Deliveries: counted per subscription (within the engagement's periods), the latest few listed.
    count_stmt = (
        select(EventIndex.subscription_id, func.count())
        .where(EventIndex.licence_id == licence, EventIndex.event_type == DELIVERY)
        .group_by(col(EventIndex.subscription_id))
    )
    window = _within(periods)
    if window is not None:
        count_stmt = count_stmt.where(window)
    counted = {subscription: int(count) for subscription, count in (await session.exec(count_stmt)).all() if subscription}
    latest: dict[str, list[int]] = {}
    for subscription in counted:
        stmt = (
            select(EventIndex.leaf_index)
            .where(EventIndex.subscription_id == subscription, EventIndex.event_type == DELIVERY)
            .order_by(col(EventIndex.leaf_index).desc())
            .limit(deliveries)
        )
        if window is not None:
            stmt = stmt.where(window)
        latest[subscription] = list((await session.exec(stmt)).all())
    delivered = {e.index: e for e in await _decoded(session, [i for found in latest.values() for i in found])}
    # Per subscription: its product (as its latest delivery names it) and its count of deliveries.
    delivery_counts: dict[str, tuple[str | None, int]] = {
        subscription: (
            next((delivered[i].event["subjects"].get("product") for i in latest[subscription] if i in delivered), None),
            count,
        )
        for subscription, count in counted.items()
    }

    checkpoint = _checkpoint(await services.latest_checkpoint(session))
    proofs = await _proofs(session, checkpoint, [e.index for e in [*shown, *delivered.values()]])

    def view(e: _Event) -> dict[str, Any]:
        return _item(e.index, e.event, e.leaf_hash, proofs[e.index])

    # Group: licence events; product events; subscriptions (by product, learnt from any event naming both).
    product_of: dict[str, str | None] = {}
    for e in shown:
        subjects = e.event.get("subjects") or {}
        if subjects.get("subscription") and subjects.get("product"):
            product_of[subjects["subscription"]] = subjects["product"]
    for delivered_to, (delivered_product, _count) in delivery_counts.items():
        product_of.setdefault(delivered_to, delivered_product)
    licence_events: list[dict[str, Any]] = []
    product_events: dict[str | None, list[dict[str, Any]]] = {}
    subscription_events: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for e in sorted(shown, key=lambda item: item.index):
        subjects = e.event.get("subjects") or {}
        named: str | None = subjects.get("subscription")
        its_product: str | None = subjects.get("product")
        if named:
            product_of.setdefault(named, its_product)
            kind = "billing" if e.event["type"].startswith(BILLING_PREFIXES) else "events"
            subscription_events.setdefault(named, {"billing": [], "events": []})[kind].append(view(e))
        elif its_product:
            product_events.setdefault(its_product, []).append(view(e))
        else:
            licence_events.append(view(e))
    for subscription in delivery_counts:
        subscription_events.setdefault(subscription, {"billing": [], "events": []})

    def subscription_node(subscription: str) -> dict[str, Any]:
        count = delivery_counts.get(subscription, (None, 0))[1]
        listed = [view(delivered[i]) for i in latest.get(subscription, []) if i in delivered]
        more = None
        if count > len(listed) and listed:
            more = f"{EVENTS_PATH}?subscription={subscription}&type={DELIVERY}&before={listed[-1]['index']}"
        return {
            "id": subscription,
            "events": subscription_events[subscription]["events"],
            "billing": subscription_events[subscription]["billing"],
            "deliveries": {"count": count, "latest": listed, "more": more},
        }

    product_ids = sorted(
        {p for p in product_events if p is not None} | {p for s, p in product_of.items() if p and s in subscription_events}
    )
    by_product: dict[str | None, list[str]] = {}
    for subscription in sorted(subscription_events):
        by_product.setdefault(product_of.get(subscription), []).append(subscription)
    tree_products = [
        {
            "id": product,
            "events": product_events.get(product, []),
            "subscriptions": [subscription_node(s) for s in by_product.get(product, [])],
        }
        for product in product_ids
    ]
    return {
        "licence_id": licence,
        "checkpoint": None if checkpoint is None else checkpoint.public(),
        "events": licence_events,
        "products": tree_products,
        "subscriptions_without_product": [subscription_node(s) for s in by_product.get(None, [])],
        "truncated": truncated,
        "left_out": left_out,
        "explore": f"{EVENTS_PATH}?licence={licence}",
    }


async def event_with_proof(
    session: AsyncSession, scope: Scope | None, index: int, verifier: Verifier | None = None, origin: str | None = None
) -> dict[str, Any]:
    """One ledger entry, decoded, with its inclusion proof against the latest checkpoint and whether it verifies
    (the proof against the checkpoint's root, and the checkpoint's signature when ``verifier`` is given). 404
    ``entry_not_found``; :class:`OutsideEngagement` when ``scope`` does not cover the event."""
    entry = await services.get_entry(session, index)
    event = json.loads(entry.leaf_input)
    if not event_in_scope(event, scope):
        raise OutsideEngagement(index)
    checkpoint = _checkpoint(await services.latest_checkpoint(session))
    proof = (await _proofs(session, checkpoint, [index]))[index]
    verified: bool | None = None
    if checkpoint is not None and proof["tree_size"] is not None:
        path = [base64.b64decode(step) for step in proof["audit_path"]]
        try:
            merkle.verify_inclusion(index, checkpoint.size, merkle.leaf_hash(entry.leaf_input.encode()), path, checkpoint.root)
            if verifier is not None:
                opened = open_checkpoint(checkpoint.note, verifier, origin=origin)
                if (opened.size, opened.root) != (checkpoint.size, checkpoint.root):
                    raise merkle.ProofError("the signed note names another tree")
            verified = True
        except (merkle.ProofError, NoteError):
            verified = False
    return {
        **_item(index, event, bytes(entry.leaf_hash), proof),
        "leaf_input": _b64(entry.leaf_input.encode()),
        "checkpoint": None if checkpoint is None else checkpoint.public(),
        "verified": verified,
    }
