"""Billing services: checkout, invoices and payments, refunds, receipts and settlement. The only place that
writes billing's tables."""

from __future__ import annotations

from billing.services.checkout import checkout
from billing.services.invoices import (
    InvoiceLine,
    checkout_by_invoice,
    get_invoice,
    invoice_lines,
    issue_renewals,
    list_invoices,
    mark_overdue,
    payment_of,
    record_transfer,
    scoped_billing,
    settle_invoice,
)
from billing.services.money import share, to_decimal, to_minor
from billing.services.receipts import Receipt, receipt
from billing.services.refunds import RefundGateway, get_payment, list_refunds, refund_payment
from billing.services.settlement import (
    acknowledge_statement,
    compute,
    get_statement,
    issue_statement,
    list_statements,
    month_bounds,
    run_settlement,
    settle_last_month,
    settle_operator_month,
    statement_csv,
)
from billing.services.stripe_checkout import portal_link

__all__ = [
    "InvoiceLine",
    "Receipt",
    "RefundGateway",
    "acknowledge_statement",
    "checkout",
    "checkout_by_invoice",
    "compute",
    "get_invoice",
    "get_payment",
    "get_statement",
    "invoice_lines",
    "issue_renewals",
    "issue_statement",
    "list_invoices",
    "list_refunds",
    "list_statements",
    "mark_overdue",
    "month_bounds",
    "payment_of",
    "portal_link",
    "receipt",
    "record_transfer",
    "refund_payment",
    "run_settlement",
    "scoped_billing",
    "settle_invoice",
    "settle_last_month",
    "settle_operator_month",
    "share",
    "statement_csv",
    "to_decimal",
    "to_minor",
]
