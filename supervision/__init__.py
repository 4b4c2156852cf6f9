"""Supervision: the verifiable ledger, proofs, engagements, alerts, findings and reports.

``supervision.record(session, event)`` writes a domain event to the ledger inside the caller's
transaction. The package imports nothing heavy at import time, so ``python -m supervision.verify``
runs with the standard library and ``cryptography`` alone.
"""

from __future__ import annotations

from typing import Any

__all__ = ["record", "record_many"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from supervision import services

        return getattr(services, name)
    raise AttributeError(f"module 'supervision' has no attribute {name!r}")
