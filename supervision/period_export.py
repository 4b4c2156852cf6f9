"""Events of a period, as CSV or Parquet, consistent with a signed checkpoint.

A period is ``[start, end)`` in days (UTC). The rows are the ledger entries whose event time falls in it and whose
index lies below the latest signed checkpoint's tree size: every row can then be checked against that checkpoint
(``GET /api/supervision/ledger/proof/inclusion?index=..&tree_size=..``), whose note is carried by the file (Parquet
key-value metadata ``ledger.checkpoint``; for CSV the ``X-Ledger-Checkpoint`` header, base64) and whose size and
root are columns of every row. Entries after that checkpoint wait for the next one (signed every minute).
"""

from __future__ import annotations

import base64
import csv
import io
import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any, Literal

import duckdb
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from marketplace.core.errors import InvalidInput
from supervision import services
from supervision.models import LedgerEntry

COLUMNS = (
    "leaf_index",
    "event_type",
    "occurred_at",
    "actor_kind",
    "actor_id",
    "orgs",
    "subjects",
    "payload",
    "leaf_hash",
    "checkpoint_size",
    "checkpoint_root",
)
#: The longest period one export may cover.
MAX_DAYS = 3660


@dataclass(frozen=True)
class PeriodExport:
    """A file of a period's events and the checkpoint it is consistent with."""

    content: bytes
    media_type: str
    filename: str
    rows: int
    checkpoint_size: int
    checkpoint_note: str | None


def period_bounds(start: date, end: date) -> tuple[datetime, datetime]:
    """``[start, end)`` as UTC instants; 400 ``period_reversed`` / ``period_empty`` / ``period_too_long``."""
    if end < start:
        raise InvalidInput("The period ends before it starts.", code="period_reversed")
    if end == start:
        raise InvalidInput("The period is empty: its end is the day after its last day.", code="period_empty")
    if (end - start).days > MAX_DAYS:
        raise InvalidInput(f"A period covers at most {MAX_DAYS} days.", code="period_too_long")
    return datetime.combine(start, time(), UTC), datetime.combine(end, time(), UTC)


async def export_period(
    session: AsyncSession,
    start: date,
    end: date,
    fmt: Literal["csv", "parquet"],
    *,
    in_scope: Callable[[dict[str, Any]], bool] | None = None,
) -> PeriodExport:
    """The period's events in ``fmt`` (``in_scope`` keeps only the events an auditor's engagement covers)."""
    first, after = period_bounds(start, end)
    checkpoint = await services.latest_checkpoint(session)
    size = checkpoint.size if checkpoint is not None else 0
    root = checkpoint.root_hash.hex() if checkpoint is not None else ""
    rows: list[tuple[Any, ...]] = []
    if size:
        entries = (
            await session.exec(
                select(LedgerEntry.leaf_index, LedgerEntry.leaf_input, LedgerEntry.leaf_hash)
                .where(LedgerEntry.occurred_at >= first, LedgerEntry.occurred_at < after, col(LedgerEntry.leaf_index) < size)
                .order_by(col(LedgerEntry.leaf_index))
            )
        ).all()
        for index, leaf, leaf_hash in entries:
            event = json.loads(leaf)
            if in_scope is not None and not in_scope(event):
                continue
            rows.append(
                (
                    index,
                    event["type"],
                    event["time"],
                    event["actor"]["kind"],
                    event["actor"]["id"],
                    json.dumps(event["orgs"]),
                    json.dumps(event["subjects"], ensure_ascii=False, sort_keys=True),
                    json.dumps(event["payload"], ensure_ascii=False, sort_keys=True),
                    bytes(leaf_hash).hex(),
                    size,
                    root,
                )
            )
    name = f"ledger-events-{start.isoformat()}-{end.isoformat()}.{fmt}"
    note = checkpoint.note if checkpoint is not None else None
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(COLUMNS)
        writer.writerows(rows)
        return PeriodExport(out.getvalue().encode(), "text/csv; charset=utf-8", name, len(rows), size, note)
    return PeriodExport(_parquet(rows, note), "application/vnd.apache.parquet", name, len(rows), size, note)


def _parquet(rows: list[tuple[Any, ...]], note: str | None) -> bytes:
    with tempfile.TemporaryDirectory(prefix="ledger-export-") as folder:
        path = Path(folder) / "events.parquet"
        connection = duckdb.connect()
        try:
            types = [
                "BIGINT",
                "VARCHAR",
                "VARCHAR",
                "VARCHAR",
                "VARCHAR",
                "VARCHAR",
                "VARCHAR",
                "VARCHAR",
                "VARCHAR",
                "BIGINT",
                "VARCHAR",
            ]
            columns = ", ".join(f"{name} {typ}" for name, typ in zip(COLUMNS, types, strict=True))
            connection.execute(f"CREATE TABLE events ({columns})")
            if rows:
                # Only placeholders are formatted in; the values are parameters.
                connection.executemany(f"INSERT INTO events VALUES ({', '.join('?' for _ in COLUMNS)})", rows)  # noqa: S608
            metadata = base64.b64encode((note or "").encode()).decode()
            # The path is our own temporary file and the metadata base64 (letters, digits, + / =): nothing to escape.
            connection.execute(
                f"COPY (SELECT * FROM events ORDER BY leaf_index) TO '{path}' "  # noqa: S608
                f"(FORMAT PARQUET, KV_METADATA {{'ledger.checkpoint': '{metadata}'}})"
            )
        finally:
            connection.close()
        return path.read_bytes()
