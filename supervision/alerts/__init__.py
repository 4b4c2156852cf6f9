"""Alert rules: supervision's second line behind the domains' own checks. Each rule reads ledger events (through the
explorer's read model, ``event_index``/``event_org``) and raises a :class:`SupervisionAlert` with a severity, a plain
English detail, the figures (params) and the ledger indexes that show it (evidence). Raising is idempotent by the
alert's ``key``; every alert raised records ``alert.raised``, and its handling (``open -> acknowledged -> resolved``
with a note, by a regulator) records ``alert.acknowledged`` / ``alert.resolved``.

The rules (:data:`RULES`):

* ``delivery.after_end`` (critical): a ``delivery.recorded`` that occurred after its entitlement or subscription
  ended (``entitlement.ended``, ``subscription.cancelled|expired|revoked``, with no later ``entitlement.granted``,
  ``subscription.activated|renewed``), or while its licence was suspended, revoked or expired (the licence's latest
  ``licence.*`` status event before the delivery). One alert per entitlement and UTC day.
* ``delivery.volume_spike`` (warning): a subscription's (one buyer, one product) deliveries on a UTC day are more
  than :data:`SPIKE_FACTOR` times the mean of its previous :data:`BASELINE_DAYS` active days (days with deliveries,
  looking back :data:`LOOKBACK_DAYS` days, at least :data:`MIN_BASELINE_DAYS` of them) and at least
  :data:`MIN_SPIKE_CALLS` deliveries: a new subscriber has no baseline, and a quiet one going from 2 to 12 calls is
  not worth a supervisor's time. One alert per subscription and day.
* ``purpose.not_permitted`` (critical): a subscription whose declared purpose is not among the purposes of its
  licence's latest ``licence.*`` event before it. One alert per subscription.
* ``product.outside_licence`` (critical): a product created or listed over a resource its licence does not cover,
  or a plan added or changed with a type the licence sets no cap for or a price over the cap (the rules of
  ``check_plan_terms``, over the events). One alert per product and resource, or per plan and terms.
* ``settlement.mismatch`` (warning): a ``settlement.computed|issued`` statement whose gross or refunds differ from
  the ``payment.received`` (received in the month) and ``payment.refunded`` (made in the month) events of the same
  operator and currency recorded before it, or that counts reconciliation mismatches. One alert per statement.
* ``ledger.self_check_failed`` (critical): raised by ``services.self_check``. One alert per UTC day.

:func:`evaluate` runs every rule over the relevant ledger entries from an index on (a cursor kept by the caller,
see :class:`StoredCursor`); rules that need context (the end of an entitlement, a licence's purposes) look it up in
the read model, whatever its index.
"""

from supervision.alerts._core import (
    BASELINE_DAYS,
    LOOKBACK_DAYS,
    MAX_EVIDENCE,
    MAX_NOTE,
    MIN_BASELINE_DAYS,
    MIN_SPIKE_CALLS,
    RULES,
    SPIKE_FACTOR,
    TRIGGERS,
    AlertSeverity,
    AlertState,
    Hit,
    is_trigger,
    raise_alert,
)
from supervision.alerts.handling import (
    AlertFilter,
    AlertResolve,
    acknowledge,
    alert_in_scope,
    get_alert,
    list_alerts,
    public,
    resolve,
)
from supervision.alerts.rules import (
    Evaluation,
    StoredCursor,
    evaluate,
    evaluate_new_events,
    raise_self_check_failure,
)

__all__ = [
    "BASELINE_DAYS",
    "LOOKBACK_DAYS",
    "MAX_EVIDENCE",
    "MAX_NOTE",
    "MIN_BASELINE_DAYS",
    "MIN_SPIKE_CALLS",
    "RULES",
    "SPIKE_FACTOR",
    "TRIGGERS",
    "AlertFilter",
    "AlertResolve",
    "AlertSeverity",
    "AlertState",
    "Evaluation",
    "Hit",
    "StoredCursor",
    "acknowledge",
    "alert_in_scope",
    "evaluate",
    "evaluate_new_events",
    "get_alert",
    "is_trigger",
    "list_alerts",
    "public",
    "raise_alert",
    "raise_self_check_failure",
    "resolve",
]
