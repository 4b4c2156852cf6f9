"""Request and response shapes of licensing, and the value types shared by its services.

``FieldSpec`` (a resource's field) and ``MaskingRule`` (how a product delivers a field) are the
vocabulary between resources, contents checks, privacy checks and listing review.
"""

from __future__ import annotations

import re
import uuid
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, field_validator

from licensing.models import (
    DeliveryMode,
    FieldTag,
    FieldType,
    Grade,
    LicenceStatus,
    PlanType,
    Purpose,
    ReviewStatus,
    UpdateFrequency,
)

FIELD_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


class FieldSpec(BaseModel):
    """One field of a data resource: its column name, type and what it reveals about a person."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(description="Column name: lower case letters, digits and _, starting with a letter")
    type: FieldType
    tag: FieldTag = FieldTag.none
    description: str = Field(default="", max_length=500)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not FIELD_NAME.match(value):
            raise ValueError("a field name is 1-63 lower case letters, digits or _, starting with a letter")
        return value


class MaskingAction(StrEnum):
    """What a product does with a field of its source resource."""

    keep = "keep"  # delivered as stored
    drop = "drop"  # not delivered
    pseudonymise = "pseudonymise"  # keyed hash (HMAC-SHA-256, key held by the platform), hex
    generalise = "generalise"  # coarsened, see GeneraliseMethod


class GeneraliseMethod(StrEnum):
    prefix = "prefix"  # strings: keep the first `size` characters, the rest become '*'
    bucket = "bucket"  # numbers: the interval of width `size` holding the value, e.g. "30-39"
    year = "year"  # dates and timestamps: the year
    month = "month"  # dates and timestamps: year and month, "2026-11"
    suppress = "suppress"  # every value becomes '*'


class MaskingRule(BaseModel):
    """How one field is delivered. Fields of the resource without a rule are not delivered."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    field: str
    action: MaskingAction = MaskingAction.keep
    method: GeneraliseMethod | None = Field(default=None, description="Required when action is generalise")
    size: int | None = Field(default=None, ge=1, le=1_000_000_000, description="prefix length or bucket width")


class CheckResult(BaseModel):
    """One automated listing-review check: passed or not, and why, in words a reviewer can act on."""

    code: str
    passed: bool
    explanation: str
    details: dict[str, Any] = Field(default_factory=dict)


# --- franchise licences ---------------------------------------------------------------------------

MONEY = re.compile(r"^\d{1,12}(\.\d{1,2})?$")
RATE = re.compile(r"^\d(\.\d{1,6})?$")


def _money(value: str) -> str:
    if not MONEY.match(value):
        raise ValueError("a price is a decimal string >= 0 with at most two decimals, such as 1200.00")
    return f"{Decimal(value):.2f}"


def _rate(value: str) -> str:
    if not RATE.match(value) or not Decimal(0) <= Decimal(value) <= Decimal(1):
        raise ValueError("the fee rate is a decimal string between 0 and 1 with at most six decimals, such as 0.12")
    return value


#: Money: a decimal string (CNY), never a float; normalised to two decimals.
Money = Annotated[str, StringConstraints(strip_whitespace=True, max_length=16), AfterValidator(_money)]
#: The franchise fee rate: the share of gross owed to the owner, a decimal string in [0, 1].
FeeRate = Annotated[str, StringConstraints(strip_whitespace=True, max_length=8), AfterValidator(_rate)]
#: A reduction of the price for a purpose, in percent; 100 means free.
ReductionPercent = Annotated[int, Field(ge=1, le=100)]
#: A written reason for a change of a licence (blank reasons are refused by the service).
Reason = Annotated[str, StringConstraints(max_length=2000)]


class VolumeCaps(BaseModel):
    """Monthly volume caps of a licence; null means no cap."""

    model_config = ConfigDict(extra="forbid")

    rows_per_month: int | None = Field(default=None, ge=1, le=10**15)
    calls_per_month: int | None = Field(default=None, ge=1, le=10**15)


class LicenceTerms(BaseModel):
    """The whole terms of a franchise licence, as the owner writes them (also the body of a new draft)."""

    model_config = ConfigDict(extra="forbid")

    operator_id: uuid.UUID = Field(description="The licensee: an organisation of kind operator")
    resource_ids: list[uuid.UUID] = Field(min_length=1, max_length=200, description="The owner's resources (never L4)")
    purposes: list[Purpose] = Field(min_length=1, max_length=len(Purpose), description="Permitted purposes")
    modes: list[DeliveryMode] = Field(min_length=1, max_length=len(DeliveryMode), description="Permitted delivery modes")
    territory: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
    starts_on: date
    ends_on: date = Field(description="Last day of the term (inclusive); at most five years after the start")
    price_caps: dict[PlanType, Money] = Field(
        default_factory=dict,
        description="Maximum price per plan type (decimal strings, CNY); a plan type left out may not be offered",
    )
    volume_caps: VolumeCaps = Field(default_factory=VolumeCaps)
    min_k: int = Field(default=5, ge=2, le=1000, description="The minimum k of k-anonymity for delivered projections")
    fee_rate: FeeRate = Field(description='Share of gross owed to the owner, a decimal string in [0, 1], e.g. "0.12"')
    reductions: dict[Purpose, ReductionPercent] = Field(
        default_factory=dict, description="Price reduction in percent per permitted purpose (100 = free)"
    )

    @field_validator("resource_ids", "purposes", "modes")
    @classmethod
    def _unique(cls, values: list[Any]) -> list[Any]:
        return list(dict.fromkeys(values))


class LicenceCreate(LicenceTerms):
    """A new draft licence; ``reason`` is the note kept in its timeline."""

    reason: Reason = "Draft created"


class LicenceAmend(BaseModel):
    """Changes to a draft licence: only the fields given are replaced; the reason is required."""

    model_config = ConfigDict(extra="forbid")

    reason: Reason
    operator_id: uuid.UUID | None = None
    resource_ids: list[uuid.UUID] | None = Field(default=None, min_length=1, max_length=200)
    purposes: list[Purpose] | None = Field(default=None, min_length=1, max_length=len(Purpose))
    modes: list[DeliveryMode] | None = Field(default=None, min_length=1, max_length=len(DeliveryMode))
    territory: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)] | None = None
    starts_on: date | None = None
    ends_on: date | None = None
    price_caps: dict[PlanType, Money] | None = None
    volume_caps: VolumeCaps | None = None
    min_k: int | None = Field(default=None, ge=2, le=1000)
    fee_rate: FeeRate | None = None
    reductions: dict[Purpose, ReductionPercent] | None = None


class LicenceDecision(BaseModel):
    """A transition of a licence (grant, suspend, reinstate, revoke) and its written reason."""

    model_config = ConfigDict(extra="forbid")

    reason: Reason = Field(description="Why: required, not blank, at most 2000 characters")


class LicensedResource(BaseModel):
    """A resource covered by a licence."""

    id: uuid.UUID
    code: str
    title: str
    title_zh: str
    grade: Grade


class LicenceTerm(BaseModel):
    """The term of a licence: first and last day (inclusive)."""

    starts_on: date
    ends_on: date


class LicenceView(BaseModel):
    """A franchise licence as its parties and supervisors see it."""

    id: uuid.UUID
    number: str = Field(description="Readable unique number, e.g. LIC-2026-0001")
    status: LicenceStatus
    in_force: bool = Field(description="Granted and today within its term")
    owner_org_id: uuid.UUID
    operator_id: uuid.UUID
    resources: list[LicensedResource]
    purposes: list[Purpose]
    modes: list[DeliveryMode]
    territory: str
    term: LicenceTerm
    price_caps: dict[PlanType, str]
    volume_caps: VolumeCaps
    min_k: int
    fee_rate: str
    reductions: dict[Purpose, int]
    version: int
    created_at: datetime
    updated_at: datetime


class LicenceVersionView(BaseModel):
    """One change in a licence's timeline: what changed, why, by whom, and the terms after it."""

    version: int
    change: str = Field(description="created, amended, granted, suspended, reinstated, revoked or expired")
    status: LicenceStatus
    reason: str
    actor_id: uuid.UUID | None
    created_at: datetime
    terms: dict[str, Any]


class LicenceDetail(LicenceView):
    """A licence with its timeline, oldest change first."""

    timeline: list[LicenceVersionView]


# --- departments, data resources and their content versions ----------------------------------------

#: A department's or resource's short code: lower case letters, digits, '-', '_' and '.', starting with a letter or digit.
CODE_PATTERN = r"^[a-z0-9][a-z0-9_.-]*$"
Title = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Description = Annotated[str, StringConstraints(strip_whitespace=True, max_length=5000)]


class DepartmentCreate(BaseModel):
    """A new department of the data authority."""

    model_config = ConfigDict(extra="forbid")

    code: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=40, pattern=CODE_PATTERN)]
    name: Title
    name_zh: Title


class DepartmentView(BaseModel):
    """A department as the API shows it."""

    id: uuid.UUID
    owner_org_id: uuid.UUID
    code: str
    name: str
    name_zh: str
    created_at: datetime


class ResourceCreate(BaseModel):
    """A new data resource: what it is (both languages), how sensitive, how often it changes, its fields."""

    model_config = ConfigDict(extra="forbid")

    department_id: uuid.UUID = Field(description="One of the owner's departments")
    code: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=60, pattern=CODE_PATTERN)] = Field(
        description="Unique among the owner's resources"
    )
    title: Title
    title_zh: Title
    description: Description = ""
    description_zh: Description = ""
    grade: Grade = Field(description="L1 public, L2 internal, L3 sensitive, L4 core (never licensable)")
    update_frequency: UpdateFrequency
    fields: list[FieldSpec] = Field(min_length=1, max_length=500, description="The columns of the contents; names unique")


class ResourceUpdate(BaseModel):
    """A change of a resource's description; fields may change only while no contents were uploaded."""

    model_config = ConfigDict(extra="forbid")

    department_id: uuid.UUID | None = None
    title: Title | None = None
    title_zh: Title | None = None
    description: Description | None = None
    description_zh: Description | None = None
    grade: Grade | None = Field(default=None, description="Refused while a licence that is not revoked or expired covers it")
    update_frequency: UpdateFrequency | None = None
    fields: list[FieldSpec] | None = Field(default=None, min_length=1, max_length=500)


class ResourceVersionView(BaseModel):
    """One uploaded version of a resource's contents (stored as Parquet): its size and SHA-256, never its rows."""

    id: uuid.UUID
    resource_id: uuid.UUID
    version: int
    source_format: str = Field(description="What was uploaded: csv or parquet")
    row_count: int
    byte_size: int = Field(description="Size of the stored Parquet file in bytes")
    content_hash: str = Field(description="SHA-256 (hex) of the stored Parquet file")
    uploaded_by: uuid.UUID | None
    created_at: datetime


class ResourceView(BaseModel):
    """A data resource as the API shows it."""

    id: uuid.UUID
    owner_org_id: uuid.UUID
    department_id: uuid.UUID
    code: str
    title: str
    title_zh: str
    description: str
    description_zh: str
    grade: Grade
    update_frequency: UpdateFrequency
    fields: list[FieldSpec]
    current_version: int = Field(description="The latest uploaded version; 0 while no contents were uploaded")
    created_at: datetime
    updated_at: datetime


class ResourceDetail(ResourceView):
    """A resource with every version of its contents, newest first."""

    versions: list[ResourceVersionView]


# --- listing review -------------------------------------------------------------------------------

PLAN_PRICE = re.compile(r"^\d{1,12}(\.\d{1,6})?$")


def _plan_price(value: str) -> str:
    if not PLAN_PRICE.match(value):
        raise ValueError('a price is a decimal string >= 0 with at most six decimals, e.g. "1200.00" or "0.002"')
    return value


class PlanDraft(BaseModel):
    """A plan of the product under review: its type and price (checked against the licence's cap for the type).
    Further plan terms (name, free calls, monthly maximum, ...) are kept with the submission as given."""

    model_config = ConfigDict(extra="allow")

    type: PlanType
    price: Annotated[str, StringConstraints(strip_whitespace=True, max_length=20), AfterValidator(_plan_price)] = Field(
        description="Decimal string (CNY): the price of the plan, per call or row for metered plans"
    )


class ListingSubmission(BaseModel):
    """A product submitted for listing: its licence, source resource, delivery mode, masking, purposes and plans."""

    model_config = ConfigDict(extra="forbid")

    licence_id: uuid.UUID
    product_ref: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=80)] | None = Field(
        default=None, description="The catalog's product id; a new id is given when left out"
    )
    product_name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
    mode: DeliveryMode
    resource_id: uuid.UUID = Field(description="The source resource (one per product for now)")
    rules: list[MaskingRule] = Field(
        max_length=500, description="How each field is delivered; fields without a rule are not delivered"
    )
    purposes: list[Purpose] = Field(max_length=len(Purpose), description="Purposes the product is offered for")
    plans: list[PlanDraft] = Field(max_length=20)


class ReviewDecision(BaseModel):
    """The owner's reviewer's decision: a written reason is required."""

    model_config = ConfigDict(extra="forbid")

    reason: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)]


class ListingCheckReport(BaseModel):
    """The automated checks of a submission, without storing anything."""

    passed: bool
    measured_k: int | None
    checks: list[CheckResult]


class ListingReviewView(BaseModel):
    """A listing review: the submission as checked, the automated checks and the owner's decision."""

    id: uuid.UUID
    operator_id: uuid.UUID
    licence_id: uuid.UUID
    product_ref: str
    product_name: str
    mode: DeliveryMode
    submission: dict[str, Any]
    checks: list[CheckResult]
    checks_passed: bool
    measured_k: int | None
    status: ReviewStatus
    submitted_by: uuid.UUID | None
    submitted_at: datetime
    decided_by: uuid.UUID | None
    decided_at: datetime | None
    decision_reason: str | None
