"""Delivery services: the access check, rows, exports, sandbox queries, metering and usage reads.

What other layers call (pages, demo, the composition root):

- ``usage_by_day(session, principal, *, days=30, product_id=None) -> list[DayUsage]`` (day, product_id, calls,
  rows, bytes), ``usage_by_mode(...) -> list[ModeUsage]``, ``list_entitlements(session, principal, meter=None)``;
- ``list_exports(session, principal) -> list[Export]``, ``get_export``, ``export_view(settings, export)`` (with a
  fresh signed link when ready);
- ``DeliveryRuntime`` / ``runtime_of(app.state)``: the meter, rate limiter and projection cache of a running app;
- ``write_deliveries(session, deliveries)``: meter deliveries in the caller's transaction (the demo's history).
"""

from __future__ import annotations

from marketplace.core.keys import fingerprint_key
from marketplace.delivery.services.access import Grant, check_access, state_refusal
from marketplace.delivery.services.exports import (
    build_export,
    export_view,
    get_export,
    list_exports,
    open_download,
    request_export,
    signed_link,
    verify_link,
)
from marketplace.delivery.services.metering import Meter, MeteredDelivery, record_deliveries_now, write_deliveries
from marketplace.delivery.services.runtime import DeliveryRuntime, runtime_of
from marketplace.delivery.services.usage import DayUsage, ModeUsage, list_entitlements, usage_by_day, usage_by_mode

__all__ = [
    "DayUsage",
    "DeliveryRuntime",
    "Grant",
    "Meter",
    "MeteredDelivery",
    "ModeUsage",
    "build_export",
    "check_access",
    "export_view",
    "fingerprint_key",
    "get_export",
    "list_entitlements",
    "list_exports",
    "open_download",
    "record_deliveries_now",
    "request_export",
    "runtime_of",
    "signed_link",
    "state_refusal",
    "usage_by_day",
    "usage_by_mode",
    "verify_link",
    "write_deliveries",
]
