"""Identity housekeeping tasks."""

from __future__ import annotations

from marketplace.core.identity import services
from marketplace.core.tasks import celery_app, periodic, run_in_session


@periodic(seconds=3600)
@celery_app.task(name="identity.purge_expired_task")
def purge_expired_task() -> dict[str, int]:
    """Delete expired sign-in sessions and expired token revocations. Idempotent."""
    sessions, tokens = run_in_session(services.purge_expired)
    return {"sessions": sessions, "revoked_tokens": tokens}
