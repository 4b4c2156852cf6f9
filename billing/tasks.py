"""Billing tasks (Celery, thin over services; idempotent): renewal invoices and overdue invoices hourly, the
previous month's settlement drafts daily."""

from __future__ import annotations

from typing import Any

from billing import services
from billing.services import stripe_events
from billing.stripe_gateway import StripeGateway
from marketplace.core.tasks import celery_app, periodic, run_in_session, task_settings
from marketplace.core.types import utcnow


@periodic(seconds=3_600)
@celery_app.task(name="billing.invoice_renewals_task")
def invoice_renewals_task() -> dict[str, Any]:
    """Issue renewal invoices of periods ending soon, then mark unpaid invoices past their due date overdue (their
    renewals' subscriptions turn past due with the plan's grace period). Idempotent."""
    now = utcnow()
    settings = task_settings()
    issued = run_in_session(lambda session: services.issue_renewals(session, settings, now))
    overdue = run_in_session(lambda session: services.mark_overdue(session, now))
    return {"at": now.isoformat(), "issued": [str(i) for i in issued], "overdue": [str(i) for i in overdue]}


@periodic(seconds=86_400)
@celery_app.task(name="billing.settle_last_month_task")
def settle_last_month_task() -> dict[str, Any]:
    """Compute the draft settlement statements of last month for every operator (closed months are left). Idempotent."""
    now = utcnow()
    count = run_in_session(lambda session: services.settle_last_month(session, now))
    return {"at": now.isoformat(), "statements": count}


@periodic(seconds=3_600)
@celery_app.task(name="billing.reconcile_stripe_events_task")
def reconcile_stripe_events_task() -> dict[str, Any]:
    """List Stripe's events of the last three days and process any whose webhook we missed (nothing without Stripe).
    Idempotent: an event already processed is skipped."""
    settings = task_settings()
    if not settings.stripe_enabled:
        return {"stripe": False}
    gateway = StripeGateway(settings)
    now = utcnow()
    outcomes = run_in_session(lambda session: stripe_events.reconcile_events(session, gateway, now))
    return {"at": now.isoformat(), "outcomes": outcomes}
