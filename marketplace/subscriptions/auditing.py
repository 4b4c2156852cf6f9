"""What an auditor may read of subscriptions and buyer qualifications: only inside its firm's engagements in force
(DESIGN.md §2), as :mod:`licensing.auditing` does for licensing records.

- A subscription is covered when its operator is covered by an engagement in force and its life overlaps that
  engagement's period (UTC days, inclusive): it was created on or before the period's end, and it is still open
  (awaiting approval, pending payment, active, past due) or it ended (its ``valid_until``, else its last change) on
  or after the period's start.
- A buyer qualification is covered when its operator (the one that decides it) is covered by an engagement in force,
  whatever the period.

An auditor with no engagement in force is refused every such read, and an auditor asking for one record outside its
engagements is refused when the record exists (403 ``outside_engagement``); both refusals are recorded in the ledger
(``records.read_refused``) by :mod:`supervision.engagements`. Lists leave out what is outside.

The refusals and the SQL date helpers are :mod:`supervision.auditor_reads`' (re-exported here for billing, which
scopes invoices and settlement statements with them).
"""

from __future__ import annotations

from typing import Any

from sqlmodel import and_, col, func, or_, select

from marketplace.core.principal import Principal
from marketplace.subscriptions.models import OPEN_STATUSES, BuyerQualification, Subscription
from supervision.auditor_reads import is_auditor, record_path, refuse_record, require_engagement, utc_day, year_month
from supervision.engagements import spans_in_force

__all__ = [
    "covered_qualification_ids",
    "covered_subscription_ids",
    "is_auditor",
    "record_path",
    "refuse_record",
    "require_engagement",
    "utc_day",
    "year_month",
]


def covered_subscription_ids(principal: Principal) -> Any:
    """A select of the ids of the subscriptions the auditor's engagements in force cover."""
    spans = spans_in_force(principal.org_id)
    ended_on = utc_day(func.coalesce(col(Subscription.valid_until), col(Subscription.updated_at)))
    return (
        select(Subscription.id)
        .join(spans, col(spans.c.operator_id) == col(Subscription.operator_id))
        .where(
            and_(
                utc_day(col(Subscription.created_at)) <= spans.c.period_end,
                or_(col(Subscription.status).in_(sorted(OPEN_STATUSES)), ended_on >= spans.c.period_start),
            )
        )
    )


def covered_qualification_ids(principal: Principal) -> Any:
    """A select of the ids of the qualifications decided by operators the auditor's engagements in force cover."""
    spans = spans_in_force(principal.org_id)
    return select(BuyerQualification.id).join(spans, col(spans.c.operator_id) == col(BuyerQualification.operator_id))
