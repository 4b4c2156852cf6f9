"""Subscription tables: buyer qualifications (per operator), subscriptions with their declared purpose and
accepted agreement, and the entitlements active subscriptions yield.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import Column, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from licensing.models import DeliveryMode, Purpose
from marketplace.core.types import UTCDateTime, enum_column, utcnow


class QualificationStatus(StrEnum):
    """``submitted -> approved | rejected`` by the operator; a rejected buyer may submit again."""

    submitted = "submitted"
    approved = "approved"
    rejected = "rejected"


class SubscriptionStatus(StrEnum):
    """``awaiting_approval`` (an on-request plan, or a reduced purpose whose proof the operator checks) ->
    ``pending_payment`` (paid plans, until billing confirms) -> ``active`` -> ``past_due`` -> ``cancelled`` |
    ``expired`` | ``revoked`` (with a written reason); ``rejected`` when the operator turns a request down."""

    awaiting_approval = "awaiting_approval"
    pending_payment = "pending_payment"
    active = "active"
    past_due = "past_due"
    cancelled = "cancelled"
    expired = "expired"
    revoked = "revoked"
    rejected = "rejected"


#: Statuses in which a subscription still counts (one per buyer and product at a time).
OPEN_STATUSES = frozenset(
    {
        SubscriptionStatus.awaiting_approval,
        SubscriptionStatus.pending_payment,
        SubscriptionStatus.active,
        SubscriptionStatus.past_due,
    }
)


class QualificationBase(SQLModel):
    business_licence_number: str = Field(max_length=18)
    industry: str = Field(max_length=80)
    contact_name: str = Field(max_length=120)
    contact_email: str = Field(max_length=254)
    contact_phone: str = Field(max_length=40)


class BuyerQualification(QualificationBase, table=True):
    """A buyer organisation's qualification as checked by one operator (required before a paid plan)."""

    __tablename__ = "buyer_qualification"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    buyer_org_id: uuid.UUID = Field(foreign_key="organisation.id", index=True)
    operator_id: uuid.UUID = Field(foreign_key="organisation.id", index=True)
    status: QualificationStatus = Field(
        default=QualificationStatus.submitted, sa_column=enum_column(QualificationStatus, index=True)
    )
    submitted_by: uuid.UUID | None = Field(default=None, foreign_key="user_account.id")
    submitted_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    decided_by: uuid.UUID | None = Field(default=None, foreign_key="user_account.id")
    decided_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    decision_reason: str | None = Field(default=None, sa_column=Column(Text, nullable=True))


class Subscription(SQLModel, table=True):
    """A buyer's subscription to a product under one plan, for one declared purpose."""

    __tablename__ = "subscription"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    number: str = Field(max_length=40, unique=True)
    buyer_org_id: uuid.UUID = Field(foreign_key="organisation.id", index=True)
    product_id: uuid.UUID = Field(foreign_key="product.id", index=True)
    plan_id: uuid.UUID = Field(foreign_key="plan.id", index=True)
    #: copied from the product so that operators' reads are scoped without a join.
    operator_id: uuid.UUID = Field(foreign_key="organisation.id", index=True)
    licence_id: uuid.UUID = Field(foreign_key="licence.id", index=True)
    purpose: Purpose = Field(sa_column=enum_column(Purpose))
    purpose_note: str = Field(default="", max_length=2000)
    #: the licence's reduction for the purpose (percent, 0 when none) and the resulting price (decimal string).
    reduction_percent: int = Field(default=0)
    price: str = Field(default="0.00", max_length=20)
    currency: str = Field(default="CNY", max_length=3)
    agreement_version: str = Field(max_length=40)
    agreed_by: uuid.UUID | None = Field(default=None, foreign_key="user_account.id")
    agreed_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    #: the uploaded proof of a public-welfare or research purpose (stored under the data folder), and its check.
    proof_location: str | None = Field(default=None, max_length=500)
    proof_name: str | None = Field(default=None, max_length=200)
    proof_sha256: str | None = Field(default=None, max_length=64)
    proof_checked: bool = Field(default=False)
    status: SubscriptionStatus = Field(sa_column=enum_column(SubscriptionStatus, index=True))
    status_reason: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    starts_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    valid_until: datetime | None = Field(default=None, sa_type=UTCDateTime)
    created_by: uuid.UUID | None = Field(default=None, foreign_key="user_account.id")
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class Entitlement(SQLModel, table=True):
    """What an active subscription lets the buyer do: mode, fields, quota, until when."""

    __tablename__ = "entitlement"
    __table_args__ = (UniqueConstraint("subscription_id"),)

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    subscription_id: uuid.UUID = Field(foreign_key="subscription.id")
    buyer_org_id: uuid.UUID = Field(foreign_key="organisation.id", index=True)
    product_id: uuid.UUID = Field(foreign_key="product.id", index=True)
    mode: DeliveryMode = Field(sa_column=enum_column(DeliveryMode))
    #: the delivered field names (JSON list), as the product's projection had them when the entitlement began.
    fields_json: str = Field(sa_column=Column(Text, nullable=False))
    quota_calls: int | None = None
    quota_rows: int | None = None
    valid_from: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    valid_until: datetime = Field(sa_type=UTCDateTime)
    ended_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    ended_reason: str | None = Field(default=None, max_length=40)
