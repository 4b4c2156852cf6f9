"""Ledger jobs: sign a checkpoint on an interval, and check the stored log against its checkpoints."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import event as orm_event
from sqlalchemy.orm import Session

from marketplace.core.events import DomainEvent
from marketplace.core.tasks import celery_app, enqueue, periodic, run_in_session, task_settings
from supervision import alerts, explorer, services
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


#: At most one run queued by new events per this many seconds per process (the periodic run catches the rest).
ALERT_RUN_DEBOUNCE_SECONDS = 5.0


@periodic(seconds=60)
@celery_app.task(name="supervision.evaluate_alert_rules_task")
def evaluate_alert_rules_task() -> dict[str, Any]:
    """Run the alert rules over the ledger entries recorded since the last run. Idempotent (alerts are raised once
    per key; a lost cursor only means a longer run)."""
    cursor = alerts.StoredCursor("alert_rules")
    result = run_in_session(lambda session: alerts.evaluate_new_events(session, cursor))
    return {"start": result.start, "next_index": result.next_index, "examined": result.examined, "raised": len(result.raised)}


_last_queued = [0.0]
_queue_lock = threading.Lock()


def _runs_background_jobs() -> bool:
    """Whether queued tasks run somewhere: Celery workers (Redis), or this process's periodic-jobs thread (the
    embedded web server). Not in tests, commands or the demo seeding, where a concurrent run would only compete."""
    if task_settings().redis_url:
        return True
    return any(thread.name == "periodic-jobs" and thread.is_alive() for thread in threading.enumerate())


def _queue_alert_rules() -> None:
    """Queue a run of the alert rules, unless one was queued moments ago or nothing runs background jobs. The
    debounce comes first: metering flushes call this many times a second under load."""
    with _queue_lock:
        now = time.monotonic()
        if now - _last_queued[0] < ALERT_RUN_DEBOUNCE_SECONDS:
            return
        _last_queued[0] = now
    if _runs_background_jobs():
        enqueue(evaluate_alert_rules_task)


def queue_alert_rules_after_commit(session: Session, events: Sequence[DomainEvent]) -> None:
    """A ledger append watcher: when ``events`` include one an alert rule starts from, run the rules once the
    transaction has committed (a rolled-back change raises nothing)."""
    if not any(alerts.is_trigger(e.type) for e in events) or session.info.get("alert_rules_queued"):
        return
    session.info["alert_rules_queued"] = True

    def after_commit(_session: Any) -> None:
        session.info.pop("alert_rules_queued", None)
        _queue_alert_rules()

    orm_event.listen(session, "after_commit", after_commit, once=True)
