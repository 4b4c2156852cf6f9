"""Billing tasks (Celery, thin over services; idempotent): renewal invoices and overdue invoices hourly, the
previous month's settlement drafts daily."""

from __future__ import annotations

from typing import Any

from billing import services
from billing.services import stripe_events, usage
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
    settings = task_settings()
    reconcile = stripe_events.stripe_reconciler(StripeGateway(settings)) if settings.stripe_enabled else None
    count = run_in_session(lambda session: services.settle_last_month(session, now, reconcile))
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


@periodic(seconds=3_600)
@celery_app.task(name="billing.usage_billing_task")
def usage_billing_task() -> dict[str, Any]:
    """Charge metered deliveries not billed yet (each exactly once), report Stripe charges to the meter and invoice
    finished months paid by transfer. Safe to re-run, also after a run stopped halfway."""
    settings = task_settings()
    gateway = StripeGateway(settings) if settings.stripe_enabled else None
    now = utcnow()
    run = run_in_session(lambda session: usage.bill_usage(session, now, settings, gateway))
    return {"at": now.isoformat(), "charges": run.charges, "calls": run.calls, "reported": run.reported, "invoices": run.invoices}


@periodic(seconds=600)
@celery_app.task(name="billing.cancel_ended_stripe_subscriptions_task")
def cancel_ended_stripe_subscriptions_task() -> dict[str, Any]:
    """Cancel at Stripe the subscriptions that ended here (cancelled, revoked, expired), so that Stripe stops
    charging for them. Idempotent (each is cancelled once)."""
    settings = task_settings()
    if not settings.stripe_enabled:
        return {"stripe": False}
    gateway = StripeGateway(settings)
    cancelled = run_in_session(lambda session: stripe_events.cancel_ended_at_stripe(session, gateway))
    return {"at": utcnow().isoformat(), "cancelled": cancelled}
