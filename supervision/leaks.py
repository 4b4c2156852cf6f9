"""Leak tracing: a supervisor uploads a file suspected to be a leaked copy of a file export; its fingerprint
(``marketplace.core.fingerprint``) names the subscription it was exported for, or nothing.

The candidates come from the ledger only (DESIGN.md §3: supervision sees the other domains through their events):
every ``export.ready`` event names its export, product and subscription (older events name the entitlement,
whose ``entitlement.granted`` event names the subscription). The answer names the buyer organisation, the product
and the exports of that subscription with their times, and the trace itself is recorded as ``leak.traced``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from marketplace.core.errors import InvalidInput
from marketplace.core.events import Actor, DomainEvent
from marketplace.core.fingerprint import score_export, trace_export
from marketplace.core.identity.models import Organisation
from marketplace.core.principal import OrgKind, Principal
from supervision import services as ledger
from supervision.models import LedgerEntry

#: The most a suspected file may weigh.
MAX_LEAK_BYTES = 200 * 1024 * 1024


@dataclass(frozen=True)
class ExportSeen:
    """One file export of the traced subscription, as the ledger recorded it."""

    export_id: str
    product_id: str
    format: str
    rows: int
    at: str
    ledger_index: int


@dataclass
class LeakTrace:
    """What a trace found."""

    found: bool
    file_sha256: str
    file_format: str
    candidates: int
    subscription_id: str | None = None
    buyer_org_id: str | None = None
    buyer_name: str | None = None
    product_id: str | None = None
    evidence_z: float | None = None
    exports: list[ExportSeen] = field(default_factory=list)
    ledger_index: int | None = None


def file_format(content: bytes) -> Literal["csv", "parquet"]:
    """``parquet`` (the PAR1 magic at both ends) or ``csv`` (UTF-8 text with a header and a separator); anything
    else is 400 ``not_csv_or_parquet``."""
    if len(content) >= 12 and content[:4] == b"PAR1" and content[-4:] == b"PAR1":
        return "parquet"
    try:
        text = content[:65536].decode("utf-8")
    except UnicodeDecodeError:
        text = ""
    first = text.splitlines()[0] if text.strip() else ""
    if first and "\x00" not in text and ("," in first or ";" in first or "\t" in first) and "\n" in text:
        return "csv"
    raise InvalidInput("The file is neither CSV nor Parquet.", code="not_csv_or_parquet")


async def _export_events(
    session: AsyncSession, in_scope: Callable[[dict[str, Any]], bool] | None
) -> dict[str, list[tuple[int, dict[str, Any]]]]:
    """The ``export.ready`` events by subscription id (from the ledger; only those ``in_scope`` keeps)."""
    rows = (
        await session.exec(
            select(LedgerEntry.leaf_index, LedgerEntry.leaf_input)
            .where(col(LedgerEntry.event_type).in_(["export.ready", "entitlement.granted"]))
            .order_by(col(LedgerEntry.leaf_index))
        )
    ).all()
    subscription_of: dict[str, str] = {}
    exports: list[tuple[int, dict[str, Any]]] = []
    for index, leaf in rows:
        event = json.loads(leaf)
        subjects = event.get("subjects", {})
        if event["type"] == "entitlement.granted" and "subscription" in subjects:
            subscription_of[subjects["entitlement"]] = subjects["subscription"]
        elif event["type"] == "export.ready" and (in_scope is None or in_scope(event)):
            exports.append((index, event))
    by_subscription: dict[str, list[tuple[int, dict[str, Any]]]] = {}
    for index, event in exports:
        subjects = event["subjects"]
        subscription = subjects.get("subscription") or subscription_of.get(subjects.get("entitlement", ""))
        if subscription:
            by_subscription.setdefault(subscription, []).append((index, event))
    return by_subscription


async def _buyer_among(session: AsyncSession, orgs: list[str]) -> Organisation | None:
    """The buyer organisation among an event's organisations (events keep them sorted, not by role)."""
    ids = [uuid.UUID(org) for org in orgs]
    found = (
        await session.exec(select(Organisation).where(col(Organisation.id).in_(ids), Organisation.kind == OrgKind.buyer))
    ).first()
    return found


async def trace_leak(
    session: AsyncSession,
    principal: Principal,
    key: bytes,
    content: bytes,
    in_scope: Callable[[dict[str, Any]], bool] | None = None,
) -> LeakTrace:
    """Trace ``content`` against every subscription that received a file export (an auditor: those its engagement
    covers, ``in_scope``); record the trace."""
    if not content:
        raise InvalidInput("The file is empty.", code="not_csv_or_parquet")
    if len(content) > MAX_LEAK_BYTES:
        raise InvalidInput(f"The file is larger than {MAX_LEAK_BYTES // (1024 * 1024)} MiB.", code="file_too_large")
    fmt = file_format(content)
    by_subscription = await _export_events(session, in_scope)
    digest = hashlib.sha256(content).hexdigest()
    found: str | None = None
    evidence: float | None = None
    if by_subscription:
        with tempfile.TemporaryDirectory(prefix="leak-") as folder:
            path = Path(folder) / f"suspect.{fmt}"
            path.write_bytes(content)
            try:
                found = await asyncio.to_thread(trace_export, path, fmt, list(by_subscription), key)
                if found is not None:
                    scores = await asyncio.to_thread(score_export, path, fmt, [found], key)
                    evidence = round(scores[0].evidence, 2)
            except InvalidInput as exc:
                raise InvalidInput(f"The file could not be read as {fmt}: {exc.detail}", code="not_csv_or_parquet") from None
    result = LeakTrace(found=found is not None, file_sha256=digest, file_format=fmt, candidates=len(by_subscription))
    if found is not None:
        events = by_subscription[found]
        buyer = await _buyer_among(session, events[-1][1].get("orgs", []))
        result.subscription_id = found
        result.buyer_org_id = str(buyer.id) if buyer else None
        result.buyer_name = buyer.name if buyer else None
        result.product_id = events[-1][1]["subjects"].get("product")
        result.evidence_z = evidence
        result.exports = [
            ExportSeen(
                export_id=event["subjects"]["export"],
                product_id=event["subjects"].get("product", ""),
                format=event["payload"].get("format", ""),
                rows=int(event["payload"].get("rows", 0)),
                at=event["time"],
                ledger_index=index,
            )
            for index, event in events
        ]
    subjects = {"subscription": found} if found else {}
    result.ledger_index = await ledger.record(
        session,
        DomainEvent(
            "leak.traced",
            Actor.of(principal),
            orgs=(principal.org_id,),
            subjects=subjects,
            payload={
                "file_sha256": digest,
                "bytes": len(content),
                "format": fmt,
                "found": found is not None,
                "candidates": len(by_subscription),
                "party": principal.org_kind.value,
            },
        ),
    )
    await session.commit()
    return result
