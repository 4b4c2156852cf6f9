"""Ledger jobs: sign a checkpoint on an interval, and check the stored log against its checkpoints."""

from __future__ import annotations

from typing import Any

from marketplace.core.tasks import celery_app, periodic, run_in_session, task_settings
from supervision import explorer, services
from supervision.signing import load_ledger_signer


@periodic(seconds=60)
@celery_app.task(name="supervision.sign_checkpoint_task")
def sign_checkpoint_task() -> dict[str, Any]:
    """Sign the current tree head (nothing new when the log has not grown). Idempotent."""
    signer = load_ledger_signer(task_settings())
    checkpoint = run_in_session(lambda session: services.sign_checkpoint(session, signer))
    return {"size": checkpoint.size, "root": checkpoint.root_hash.hex()}


@periodic(seconds=3600)
@celery_app.task(name="supervision.self_check_task")
def self_check_task() -> dict[str, Any]:
    """Recompute the log and compare it with every signed checkpoint; an alert is raised on any difference."""
    signer = load_ledger_signer(task_settings())
    result = run_in_session(lambda session: services.self_check(session, signer))
    return {"ok": result.ok, "entries": result.checked_entries, "checkpoints": result.checkpoints, "problems": result.problems}


@periodic(seconds=30)
@celery_app.task(name="supervision.index_events_task")
def index_events_task() -> dict[str, Any]:
    """Bring the explorer's read model up to the ledger (the explorer also catches up before every query).
    Idempotent."""
    return {"indexed": run_in_session(explorer.index_new_events)}
