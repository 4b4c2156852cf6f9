"""The ledger export: one JSON Lines file with the verifier key, every entry and every checkpoint.

Format ``market-ledger-export/1`` (checked by ``python -m supervision.verify``):
header ``{"format","origin","vkey","size","checkpoints"}``, then one ``{"index","leaf_input"}`` line per
entry in index order (``leaf_input`` is base64 of the exact hashed bytes), then one
``{"checkpoint": "<signed note>"}`` line per checkpoint, oldest first.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from supervision import services
from supervision.models import LedgerEntry
from supervision.signing import LedgerSigner

FORMAT = "market-ledger-export/1"
BATCH = 5000


async def export_lines(
    open_session: Callable[[], AbstractAsyncContextManager[AsyncSession]], signer: LedgerSigner
) -> AsyncIterator[bytes]:
    """The export, line by line, of the log as it is when the export starts.

    The stream outlives the request handler, so it opens (and always closes) its own session
    rather than borrowing the request's, which is closed once the handler returns.
    """
    async with open_session() as session:
        async for line in _lines(session, signer):
            yield line


async def _lines(session: AsyncSession, signer: LedgerSigner) -> AsyncIterator[bytes]:
    size, _root = await services.head(session)
    checkpoints = [cp for cp in await services.list_checkpoints(session) if cp.size <= size]
    header = {"format": FORMAT, "origin": signer.origin, "vkey": signer.vkey, "size": size, "checkpoints": len(checkpoints)}
    yield (json.dumps(header, separators=(",", ":")) + "\n").encode()
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
    for checkpoint in checkpoints:
        yield (json.dumps({"checkpoint": checkpoint.note}, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
