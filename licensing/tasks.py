"""Licensing tasks: licence expiry, daily."""

from __future__ import annotations

from typing import Any

from licensing.services import licences
from marketplace.core.tasks import celery_app, periodic, run_in_session


@periodic(seconds=86_400)
@celery_app.task(name="licensing.expire_licences_task")
def expire_licences_task() -> dict[str, Any]:
    """Expire licences whose term has ended (their listings are withdrawn or delisted). Idempotent."""
    day = licences.today()
    expired = run_in_session(lambda session: licences.expire_due_licences(session, day))
    return {"on": day.isoformat(), "expired": [str(licence_id) for licence_id in expired]}
