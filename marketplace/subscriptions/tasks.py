"""Subscriptions tasks (Celery, thin over services; idempotent): subscription expiry, hourly."""

from __future__ import annotations

from typing import Any

from marketplace.core.tasks import celery_app, periodic, run_in_session
from marketplace.core.types import utcnow
from marketplace.subscriptions.services import expire_due_subscriptions


@periodic(seconds=3_600)
@celery_app.task(name="subscriptions.expire_subscriptions_task")
def expire_subscriptions_task() -> dict[str, Any]:
    """Expire active or past-due subscriptions whose ``valid_until`` has passed, ending their entitlements. Idempotent."""
    now = utcnow()
    expired = run_in_session(lambda session: expire_due_subscriptions(session, now))
    return {"at": now.isoformat(), "expired": [str(subscription_id) for subscription_id in expired]}
