"""Delivery tasks (Celery, thin over services; idempotent): building a file export."""

from __future__ import annotations

import uuid
from typing import Any

from marketplace.core.tasks import celery_app, run_in_session, task_settings
from marketplace.delivery.services.exports import build_export


@celery_app.task(name="delivery.build_export_task")
def build_export_task(export_id: str) -> dict[str, Any]:
    """Build a queued export (fingerprinted file, metered delivery). Idempotent: a built or failed one is left alone."""
    settings = task_settings()
    export = run_in_session(lambda session: build_export(session, settings, uuid.UUID(export_id)))
    return {"export": export_id, "status": export.status.value if export is not None else "missing"}
