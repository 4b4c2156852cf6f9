"""Billing records: invoices, payments, refunds, the Stripe objects we keep in step, webhook events received, usage
charges and settlement statements.

Money is stored as integers in the currency's minor unit (fen for CNY) and shown as decimal strings; never floats.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger, Column, Index, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from marketplace.core.types import UTCDateTime, enum_column, utcnow


class Gateway(StrEnum):
    """How a payment is made: a numbered invoice paid by bank transfer, or Stripe."""

    invoice = "invoice"
    stripe = "stripe"


class InvoiceStatus(StrEnum):
    """``open -> paid``; ``open -> overdue`` after its due date (the subscription turns ``past_due``) ``-> paid``;
    ``void`` when the subscription ended before payment."""

    open = "open"
    overdue = "overdue"
    paid = "paid"
    void = "void"


class InvoiceKind(StrEnum):
    """What an invoice is for: the first period of a subscription, a renewal, or metered usage of a month."""

    subscription = "subscription"
    renewal = "renewal"
    usage = "usage"


class StatementStatus(StrEnum):
    """``draft -> issued -> acknowledged`` (by the owner). A draft may be computed again; an issued one is closed."""

    draft = "draft"
    issued = "issued"
    acknowledged = "acknowledged"


class Invoice(SQLModel, table=True):
    """A numbered demand for payment of one subscription's period (or a month's usage)."""

    __tablename__ = "invoice"
    __table_args__ = (
        Index("ix_invoice_operator_issued", "operator_id", "issued_at"),
        Index("ix_invoice_buyer_issued", "buyer_org_id", "issued_at"),
        UniqueConstraint("subscription_id", "kind", "period_start", name="uq_invoice_period"),
    )

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    number: str = Field(max_length=40, unique=True)
    gateway: Gateway = Field(sa_column=enum_column(Gateway))
    kind: InvoiceKind = Field(sa_column=enum_column(InvoiceKind))
    status: InvoiceStatus = Field(default=InvoiceStatus.open, sa_column=enum_column(InvoiceStatus, index=True))
    buyer_org_id: uuid.UUID = Field(foreign_key="organisation.id")
    operator_id: uuid.UUID = Field(foreign_key="organisation.id")
    owner_org_id: uuid.UUID = Field(foreign_key="organisation.id")
    subscription_id: uuid.UUID = Field(foreign_key="subscription.id", index=True)
    product_id: uuid.UUID = Field(foreign_key="product.id")
    plan_id: uuid.UUID = Field(foreign_key="plan.id")
    licence_id: uuid.UUID = Field(foreign_key="licence.id")
    currency: str = Field(max_length=3)
    amount_minor: int = Field(sa_column=Column(BigInteger, nullable=False))
    #: JSON list of lines: {"description", "description_zh", "quantity", "unit_minor", "amount_minor"}.
    lines_json: str = Field(sa_column=Column(Text, nullable=False))
    #: The service period the invoice pays for (the entitlement runs until ``period_end`` once paid).
    period_start: datetime = Field(sa_type=UTCDateTime)
    period_end: datetime = Field(sa_type=UTCDateTime)
    issued_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    due_at: datetime = Field(sa_type=UTCDateTime)
    paid_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    voided_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    #: Stripe: the Checkout Session or Stripe invoice this invoice is paid through.
    external_id: str | None = Field(default=None, max_length=255, unique=True)
    checkout_url: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    created_by: uuid.UUID | None = Field(default=None, foreign_key="user_account.id")
    ledger_index: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))


class Payment(SQLModel, table=True):
    """Money received for an invoice: a bank transfer the operator recorded, or a Stripe payment."""

    __tablename__ = "payment"
    __table_args__ = (
        UniqueConstraint("gateway", "reference", name="uq_payment_reference"),
        Index("ix_payment_operator_received", "operator_id", "received_at"),
    )

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    invoice_id: uuid.UUID = Field(foreign_key="invoice.id", unique=True)
    subscription_id: uuid.UUID = Field(foreign_key="subscription.id", index=True)
    buyer_org_id: uuid.UUID = Field(foreign_key="organisation.id", index=True)
    operator_id: uuid.UUID = Field(foreign_key="organisation.id")
    owner_org_id: uuid.UUID = Field(foreign_key="organisation.id")
    licence_id: uuid.UUID = Field(foreign_key="licence.id")
    gateway: Gateway = Field(sa_column=enum_column(Gateway))
    currency: str = Field(max_length=3)
    amount_minor: int = Field(sa_column=Column(BigInteger, nullable=False))
    #: The gateway's fee, where known (Stripe's balance transaction); None for bank transfers.
    fee_minor: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    refunded_minor: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, default=0))
    #: The bank transfer's reference, or Stripe's payment intent id (unique per gateway: a payment is recorded once).
    reference: str = Field(max_length=255)
    received_at: datetime = Field(sa_type=UTCDateTime)
    recorded_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    recorded_by: uuid.UUID | None = Field(default=None, foreign_key="user_account.id")
    ledger_index: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))


class Refund(SQLModel, table=True):
    """Money given back on a payment, in part or in full, by the operator."""

    __tablename__ = "refund"
    __table_args__ = (
        UniqueConstraint("payment_id", "request_key", name="uq_refund_request"),
        Index("ix_refund_operator_created", "operator_id", "created_at"),
    )

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    payment_id: uuid.UUID = Field(foreign_key="payment.id", index=True)
    operator_id: uuid.UUID = Field(foreign_key="organisation.id")
    currency: str = Field(max_length=3)
    amount_minor: int = Field(sa_column=Column(BigInteger, nullable=False))
    reason: str = Field(sa_column=Column(Text, nullable=False))
    #: The operator chose to end the buyer's access with this refund.
    ends_access: bool = Field(default=False)
    #: The caller's idempotency key (a repeated request answers the refund already made).
    request_key: str = Field(max_length=255)
    external_id: str | None = Field(default=None, max_length=255, unique=True)
    created_by: uuid.UUID | None = Field(default=None, foreign_key="user_account.id")
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    ledger_index: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))


class GatewayObject(SQLModel, table=True):
    """An object of ours as the payment gateway knows it (a Stripe customer per buyer, a product and a price per
    plan and price, the meter), created once with an idempotency key derived from our record."""

    __tablename__ = "gateway_object"
    __table_args__ = (UniqueConstraint("gateway", "kind", "local_key", name="uq_gateway_object"),)

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    gateway: Gateway = Field(sa_column=enum_column(Gateway))
    kind: str = Field(max_length=40)
    local_key: str = Field(max_length=200)
    external_id: str = Field(max_length=255)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class WebhookEvent(SQLModel, table=True):
    """A Stripe event processed (stored once, in the transaction of its effect)."""

    __tablename__ = "webhook_event"

    id: str = Field(primary_key=True, max_length=255)
    type: str = Field(max_length=100)
    outcome: str = Field(max_length=40)
    created_at: datetime = Field(sa_type=UTCDateTime)
    processed_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class UsageCharge(SQLModel, table=True):
    """Metered usage of one subscription billed in one run: the calls counted, the charge, and where it went (the
    next invoice or Stripe's meter). Each delivery is billed by exactly one charge (``delivery.billed_at``)."""

    __tablename__ = "usage_charge"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    subscription_id: uuid.UUID = Field(foreign_key="subscription.id", index=True)
    month: str = Field(max_length=7)
    calls: int = Field(sa_column=Column(BigInteger, nullable=False))
    billable_calls: int = Field(sa_column=Column(BigInteger, nullable=False))
    currency: str = Field(max_length=3)
    amount_minor: int = Field(sa_column=Column(BigInteger, nullable=False))
    gateway: Gateway = Field(sa_column=enum_column(Gateway))
    invoice_id: uuid.UUID | None = Field(default=None, foreign_key="invoice.id")
    #: Stripe: the meter event's identifier (Stripe keeps one event per identifier).
    meter_event_identifier: str | None = Field(default=None, max_length=100)
    reported_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class SettlementStatement(SQLModel, table=True):
    """What an operator owes the owner for one month: gross, refunds, payment fees, franchise fee, net."""

    __tablename__ = "settlement_statement"
    __table_args__ = (UniqueConstraint("operator_id", "period", "currency", name="uq_statement_period"),)

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    number: str = Field(max_length=40, unique=True)
    operator_id: uuid.UUID = Field(foreign_key="organisation.id", index=True)
    owner_org_id: uuid.UUID = Field(foreign_key="organisation.id", index=True)
    period: str = Field(max_length=7)
    currency: str = Field(max_length=3)
    gross_minor: int = Field(sa_column=Column(BigInteger, nullable=False))
    refunds_minor: int = Field(sa_column=Column(BigInteger, nullable=False))
    fees_minor: int = Field(sa_column=Column(BigInteger, nullable=False))
    franchise_fee_minor: int = Field(sa_column=Column(BigInteger, nullable=False))
    net_minor: int = Field(sa_column=Column(BigInteger, nullable=False))
    payments: int = Field(default=0)
    refunds: int = Field(default=0)
    #: JSON list per licence: {"licence_id", "licence_number", "fee_rate", "gross_minor", "refunds_minor", ...}.
    lines_json: str = Field(sa_column=Column(Text, nullable=False))
    #: JSON list of differences found against the gateway's records (empty when reconciled).
    mismatches_json: str = Field(sa_column=Column(Text, nullable=False, default="[]"))
    status: StatementStatus = Field(default=StatementStatus.draft, sa_column=enum_column(StatementStatus, index=True))
    computed_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    issued_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    issued_by: uuid.UUID | None = Field(default=None, foreign_key="user_account.id")
    acknowledged_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    acknowledged_by: uuid.UUID | None = Field(default=None, foreign_key="user_account.id")
    ledger_index: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
