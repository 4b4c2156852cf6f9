"""What the billing pages and the buyer's subscription page share: refusals in the page language (with the form
field they are about), money as shown and as typed, and a subscription's invoices."""

from __future__ import annotations

import dataclasses
import uuid
from decimal import Decimal
from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession

from billing import services
from billing.models import InvoiceStatus
from billing.services import reports
from marketplace.core.errors import DomainError
from marketplace.core.principal import Principal
from marketplace.web.i18n import gettext_ as _
from marketplace.web.pages import _n

UNPAID = (InvoiceStatus.open, InvoiceStatus.overdue)

#: What a page says about a refusal, by its code (the service's English detail when a code is not listed here).
REFUSALS = {
    "party_not_allowed": _n("Your organisation may not do this."),
    "role_not_allowed": _n("Your role may not do this: ask an administrator of your organisation."),
    "subscription_not_found": _n("No such subscription."),
    "subscription_not_payable": _n("This subscription is not waiting for payment any more."),
    "method_not_available": _n("Payment by card is not available here: pay by bank transfer."),
    "gateway_error": _n("The card payment service did not answer. Try again in a moment."),
    "checkout_in_progress": _n("This payment is being prepared at the same time. Reload the page."),
    "invoice_number_taken": _n("The invoice could not be numbered. Try again."),
    "invoice_not_found": _n("No such invoice."),
    "invoice_not_payable": _n("This invoice is no longer open (paid or void): nothing was recorded."),
    "not_a_transfer": _n("This invoice is paid by card through Stripe, not by bank transfer."),
    "amount_mismatch": _n("The amount must be exactly the invoice's amount."),
    "invalid_amount": _n("Give a positive amount of money, such as 1000.00."),
    "currency_not_supported": _n("This currency is not supported."),
    "reference_required": _n("Give the bank reference of the transfer."),
    "payment_reference_used": _n("A payment with this bank reference is already recorded."),
    "received_in_future": _n("The transfer cannot have been received in the future."),
    "invalid_date": _n("Give the date as YYYY-MM-DD."),
    "payment_not_found": _n("No such payment."),
    "reason_required": _n("Give the reason for the refund."),
    "refund_exceeds_payment": _n("That is more than is left to refund: at most {refundable} of this payment can be refunded."),
    "end_access_needs_full_refund": _n(
        "Access ends only with a refund of everything left: leave the amount empty or give all of it."
    ),
    "gateway_unavailable": _n("Stripe is not configured: this card payment cannot be refunded now."),
    "refund_in_progress": _n("This refund was requested at the same time. Reload the page."),
    "receipt_unavailable": _n("This payment has no ledger entry, so it has no receipt."),
    "statement_not_found": _n("No such settlement statement."),
    "statement_not_draft": _n("Only a draft statement can be issued."),
    "statement_not_issued": _n("Only an issued statement can be acknowledged."),
    "period_closed": _n("The statement of this month is already issued: the month is closed."),
    "invalid_period": _n("Give a month that has already begun, as YYYY-MM."),
    "settlement_in_progress": _n("The month was settled at the same time. Reload the page."),
    "operator_required": _n("Choose the operator to settle."),
    "operator_not_found": _n("None of your licensed operators has this identifier."),
}

#: The form field a refusal is about, when the service does not name one.
REFUSED_FIELDS = {
    "amount_mismatch": "amount",
    "invalid_amount": "amount",
    "refund_exceeds_payment": "amount",
    "end_access_needs_full_refund": "end_access",
    "reference_required": "reference",
    "payment_reference_used": "reference",
    "received_in_future": "received_on",
    "invalid_date": "received_on",
    "reason_required": "reason",
    "invalid_period": "period",
    "operator_required": "operator_id",
    "operator_not_found": "operator_id",
}


def refusal_message(exc: DomainError) -> str:
    """A refusal in the page language (the service's own words when its code has no translation here)."""
    message = REFUSALS.get(exc.code)
    if message is None:
        return exc.detail
    try:
        return _(message).format(**exc.extra)
    except (KeyError, IndexError, ValueError):
        return exc.detail


@dataclasses.dataclass
class Failure:
    """A form that was refused: which one (``<kind>-<record id>``), the message, the field it is about, what was typed."""

    form: str
    message: str
    field: str | None = None
    values: dict[str, str] = dataclasses.field(default_factory=dict)


def failure(form: str, exc: DomainError, values: dict[str, str] | None = None) -> Failure:
    """The failure of ``form`` refused with ``exc``."""
    named = exc.extra.get("field")
    return Failure(form, refusal_message(exc), str(named) if named else REFUSED_FIELDS.get(exc.code), values or {})


def money(minor: int, currency: str) -> str:
    """Minor units shown with the currency: ``1,000.00 CNY``."""
    return f"{Decimal(services.to_decimal(minor, currency)):,} {currency}"


def amount(minor: int, currency: str) -> str:
    """Minor units as the decimal string a form takes back: ``1000.00``."""
    return services.to_decimal(minor, currency)


async def subscription_billing(session: AsyncSession, principal: Principal, subscription_id: uuid.UUID) -> dict[str, Any]:
    """What a subscription's page shows of billing: its invoices (the unpaid ones apart) and their payments."""
    invoices, _total = await services.list_invoices(session, principal, subscription_id=subscription_id, limit=50)
    payments = await reports.payments_of_invoices(session, principal, [i.id for i in invoices])
    return {
        "invoices": invoices,
        "unpaid": [i for i in invoices if i.status in UNPAID],
        "invoice_payments": payments,
        "money": money,
    }
