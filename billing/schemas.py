"""Request and response shapes of billing. Money is always a decimal string with the currency's digits."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from billing.models import Gateway, InvoiceKind, InvoiceStatus, StatementStatus

Money = Annotated[str, StringConstraints(pattern=r"^\d{1,12}(\.\d{1,4})?$", max_length=20)]
Period = Annotated[str, StringConstraints(pattern=r"^\d{4}-(0[1-9]|1[0-2])$")]


class CheckoutRequest(BaseModel):
    """Pay a subscription waiting for payment: by invoice (bank transfer) or through Stripe Checkout."""

    model_config = ConfigDict(extra="forbid")

    subscription_id: uuid.UUID
    method: Gateway = Gateway.invoice


class InvoiceLineView(BaseModel):
    """One line of an invoice."""

    description: str
    description_zh: str
    quantity: int
    unit_price: str
    amount: str


class InvoiceView(BaseModel):
    """An invoice as the API shows it."""

    id: uuid.UUID
    number: str
    gateway: Gateway
    kind: InvoiceKind
    status: InvoiceStatus
    buyer_org_id: uuid.UUID
    operator_id: uuid.UUID
    subscription_id: uuid.UUID
    product_id: uuid.UUID
    licence_id: uuid.UUID
    currency: str
    amount: str
    lines: list[InvoiceLineView]
    period_start: datetime
    period_end: datetime
    issued_at: datetime
    due_at: datetime
    paid_at: datetime | None
    checkout_url: str | None = None
    payment_id: uuid.UUID | None = None
    ledger_index: int | None


class CheckoutView(BaseModel):
    """What checkout gives: the invoice to pay and, for Stripe, the page to pay it on."""

    invoice: InvoiceView
    checkout_url: str | None = Field(description="Stripe Checkout page (null for bank transfer)")


class TransferRecord(BaseModel):
    """A bank transfer the operator received for an invoice."""

    model_config = ConfigDict(extra="forbid")

    amount: Money
    reference: Annotated[str, StringConstraints(min_length=1, max_length=100, strip_whitespace=True)]
    received_on: date | None = Field(default=None, description="Day the transfer arrived (today if omitted)")


class PaymentView(BaseModel):
    """A payment as the API shows it."""

    id: uuid.UUID
    invoice_id: uuid.UUID
    subscription_id: uuid.UUID
    buyer_org_id: uuid.UUID
    operator_id: uuid.UUID
    gateway: Gateway
    currency: str
    amount: str
    fee: str | None
    refunded: str
    reference: str
    received_at: datetime
    ledger_index: int | None


class RefundCreate(BaseModel):
    """A refund of a payment: an amount (all that is left when omitted), the reason, and whether access ends."""

    model_config = ConfigDict(extra="forbid")

    amount: Money | None = None
    reason: Annotated[str, StringConstraints(min_length=1, max_length=2000, strip_whitespace=True)]
    end_access: bool = Field(default=False, description="End the buyer's access (only with a refund of everything left)")


class RefundView(BaseModel):
    """A refund as the API shows it."""

    id: uuid.UUID
    payment_id: uuid.UUID
    currency: str
    amount: str
    reason: str
    ends_access: bool
    created_at: datetime
    ledger_index: int | None


class SettlementRun(BaseModel):
    """Compute the draft statements of a month (the owner names the operator)."""

    model_config = ConfigDict(extra="forbid")

    period: Period
    operator_id: uuid.UUID | None = None


class StatementLineView(BaseModel):
    """One licence's part of a statement."""

    licence_id: uuid.UUID
    licence_number: str
    fee_rate: str
    payments: int
    gross: str
    refunds: str
    payment_fees: str
    franchise_fee: str


class StatementView(BaseModel):
    """A settlement statement: operator, period, gross, refunds, payment fees, franchise fee, net and status."""

    id: uuid.UUID
    number: str
    operator_id: uuid.UUID
    operator_name: str
    owner_org_id: uuid.UUID
    period: str
    currency: str
    gross: str
    refunds: str
    payment_fees: str
    franchise_fee: str
    net: str
    payments: int
    refund_count: int
    lines: list[StatementLineView]
    mismatches: list[dict[str, Any]]
    status: StatementStatus
    computed_at: datetime
    issued_at: datetime | None
    acknowledged_at: datetime | None


class StatementList(BaseModel):
    """Statements (``items``)."""

    items: list[StatementView]
    total: int


class InvoiceList(BaseModel):
    """Invoices (``items``) with the total count."""

    items: list[InvoiceView]
    total: int


class ReceiptView(BaseModel):
    """A payment's receipt: the payment, and where its ``payment.received`` event stands in the ledger with the
    inclusion proof against a signed checkpoint (or the current tree when none covers it yet)."""

    payment: PaymentView
    invoice_number: str
    ledger_index: int
    tree_size: int
    root_hash: str
    inclusion_proof: list[str]
    checkpoint: str | None
    proof_against: Literal["checkpoint", "current_tree"]
