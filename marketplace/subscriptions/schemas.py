"""Request and response shapes of subscriptions: buyer qualifications, the data use agreement, subscriptions
and the entitlements they yield. Money is a decimal string.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from licensing.models import DeliveryMode, Purpose
from marketplace.subscriptions.models import QualificationStatus, SubscriptionStatus

ShortText = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=120)]


class QualificationSubmit(BaseModel):
    """A buyer organisation's qualification, submitted to one operator."""

    model_config = ConfigDict(extra="forbid")

    operator_id: uuid.UUID = Field(description="The operator that checks this qualification")
    business_licence_number: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=40)] = Field(
        description="The 18-character unified social credit code (GB 32100-2015), its check character included"
    )
    industry: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=80)]
    contact_name: ShortText
    contact_email: Annotated[
        str, StringConstraints(strip_whitespace=True, min_length=3, max_length=254, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
    ]
    contact_phone: Annotated[
        str, StringConstraints(strip_whitespace=True, min_length=5, max_length=40, pattern=r"^\+?[0-9][0-9 ()\-]{3,38}$")
    ]


class QualificationView(BaseModel):
    """A buyer qualification as its buyer, its operator and supervisors see it."""

    id: uuid.UUID
    buyer_org_id: uuid.UUID
    operator_id: uuid.UUID
    status: QualificationStatus
    business_licence_number: str
    industry: str
    contact_name: str
    contact_email: str
    contact_phone: str
    submitted_by: uuid.UUID | None
    submitted_at: datetime
    decided_by: uuid.UUID | None
    decided_at: datetime | None
    decision_reason: str | None


class Decision(BaseModel):
    """An operator's decision. A rejection, a revocation or a refused request needs a written reason."""

    model_config = ConfigDict(extra="forbid")

    reason: Annotated[str, StringConstraints(max_length=2000)] = ""


class AgreementView(BaseModel):
    """The platform's data use agreement, in English and Chinese."""

    version: str
    effective_on: date
    title: str
    title_zh: str
    text: str
    text_zh: str


class SubscriptionCreate(BaseModel):
    """A buyer subscribes to a plan for a declared purpose, accepting the current agreement."""

    model_config = ConfigDict(extra="forbid")

    plan_id: uuid.UUID
    purpose: Purpose
    purpose_note: Annotated[str, StringConstraints(strip_whitespace=True, max_length=2000)] = Field(
        default="", description="What the data will be used for, in the buyer's words"
    )
    agreement_version: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=40)] = Field(
        description="The version of the data use agreement the buyer accepts (must be the current one)"
    )


class EntitlementView(BaseModel):
    """What an active subscription lets the buyer do."""

    id: uuid.UUID
    subscription_id: uuid.UUID
    product_id: uuid.UUID
    mode: DeliveryMode
    fields: list[str]
    quota_calls: int | None
    quota_rows: int | None
    valid_from: datetime
    valid_until: datetime
    ended_at: datetime | None
    ended_reason: str | None


class SubscriptionView(BaseModel):
    """A subscription: who, what, for which purpose, at what price, and where it stands."""

    id: uuid.UUID
    number: str
    buyer_org_id: uuid.UUID
    operator_id: uuid.UUID
    product_id: uuid.UUID
    plan_id: uuid.UUID
    licence_id: uuid.UUID
    purpose: Purpose
    purpose_note: str
    reduction_percent: int
    price: str = Field(description="Decimal string: the plan's price after the purpose's reduction")
    currency: str
    agreement_version: str
    agreed_at: datetime
    proof_required: bool
    proof_name: str | None
    proof_sha256: str | None
    proof_checked: bool
    status: SubscriptionStatus
    status_reason: str | None
    starts_at: datetime | None
    valid_until: datetime | None
    created_at: datetime
    updated_at: datetime


class SubscriptionDetail(SubscriptionView):
    """A subscription with its entitlement (none before it first became active)."""

    entitlement: EntitlementView | None
