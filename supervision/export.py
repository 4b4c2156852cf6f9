"""The ledger export: one JSON Lines file with the verifier key, every entry and every checkpoint.

Format ``market-ledger-export/1`` (checked by ``python -m supervision.verify``):
header ``{"format","origin","vkey","size","checkpoints"}``, then one ``{"index","leaf_input"}`` line per
entry in index order (``leaf_input`` is base64 of the exact hashed bytes), then one
``{"checkpoint": "<signed note>"}`` line per checkpoint, oldest first.

An auditor's export holds only the entries its engagement covers: any other entry is a line
``{"index","leaf_hash"}`` (base64 of its RFC 9162 leaf hash, which reveals nothing of the event), so that the
whole tree and every checkpoint still verify offline. Its header then carries ``"scope"`` (covered operators
and periods) and ``"withheld"`` (how many entries are hashes only).
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from supervision import services
from supervision.engagements import Scope, event_in_scope
from supervision.models import LedgerEntry
from supervision.signing import LedgerSigner

FORMAT = "market-ledger-export/1"
BATCH = 5000


async def export_lines(
    open_session: Callable[[], AbstractAsyncContextManager[AsyncSession]], signer: LedgerSigner, scope: Scope | None = None
) -> AsyncIterator[bytes]:
    """The export, line by line, of the log as it is when the export starts.

    The stream outlives the request handler, so it opens (and always closes) its own session
    rather than borrowing the request's, which is closed once the handler returns.
    """
    async with open_session() as session:
        async for line in _lines(session, signer, scope):
            yield line


async def _lines(session: AsyncSession, signer: LedgerSigner, scope: Scope | None = None) -> AsyncIterator[bytes]:
    size, _root = await services.head(session)
    checkpoints = [cp for cp in await services.list_checkpoints(session) if cp.size <= size]
    header: dict[str, object] = {
        "format": FORMAT,
        "origin": signer.origin,
        "vkey": signer.vkey,
        "size": size,
        "checkpoints": len(checkpoints),
    }
    if scope is not None:
        async for line in _scoped_lines(session, header, size, scope):
            yield line
    else:
        yield (json.dumps(header, separators=(",", ":")) + "\n").encode()
        async for line in _entry_lines(session, size):
            yield line
    for checkpoint in checkpoints:
        yield (json.dumps({"checkpoint": checkpoint.note}, ensure_ascii=False, separators=(",", ":")) + "\n").encode()


async def _entry_lines(session: AsyncSession, size: int) -> AsyncIterator[bytes]:
    for start in range(0, size, BATCH):
        rows = await session.exec(
            select(LedgerEntry.leaf_index, LedgerEntry.leaf_input)
            .where(col(LedgerEntry.leaf_index) >= start, col(LedgerEntry.leaf_index) < min(size, start + BATCH))
            .order_by(col(LedgerEntry.leaf_index))
        )
        chunk = [
            f'{{"index":{index},"leaf_input":"{base64.b64encode(leaf_input.encode()).decode()}"}}\n'
            for index, leaf_input in rows.all()
        ]
        yield "".join(chunk).encode()


async def _scoped_lines(session: AsyncSession, header: dict[str, object], size: int, scope: Scope) -> AsyncIterator[bytes]:
    """Header and entry lines of an auditor's export. Two passes over the entries: the first counts what is
    withheld (for the header), the second writes the lines."""
    withheld = 0
    async for batch in _batches(session, size):
        withheld += sum(1 for _index, leaf_input, _hash in batch if not event_in_scope(json.loads(leaf_input), scope))
    header = {**header, "scope": scope.describe(), "withheld": withheld}
    yield (json.dumps(header, separators=(",", ":")) + "\n").encode()
    async for batch in _batches(session, size):
        chunk = []
        for index, leaf_input, leaf_hash in batch:
            if event_in_scope(json.loads(leaf_input), scope):
                chunk.append(f'{{"index":{index},"leaf_input":"{base64.b64encode(leaf_input.encode()).decode()}"}}\n')
            else:
                chunk.append(f'{{"index":{index},"leaf_hash":"{base64.b64encode(bytes(leaf_hash)).decode()}"}}\n')
        yield "".join(chunk).encode()


async def _batches(session: AsyncSession, size: int) -> AsyncIterator[list[tuple[int, str, bytes]]]:
    for start in range(0, size, BATCH):
        rows = await session.exec(
            select(LedgerEntry.leaf_index, LedgerEntry.leaf_input, LedgerEntry.leaf_hash)
            .where(col(LedgerEntry.leaf_index) >= start, col(LedgerEntry.leaf_index) < min(size, start + BATCH))
            .order_by(col(LedgerEntry.leaf_index))
        )
        yield list(rows.all())
