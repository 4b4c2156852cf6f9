"""Licensing tables: departments, data resources and their content versions, franchise licences with
their version history, and listing reviews. Families follow XBase -> X(table=True); request and
response shapes live in schemas.py.

JSON-shaped terms (schema fields, purposes, modes, caps, projection) are stored as JSON text: they are
read and written whole, validated by the schemas, and never queried field by field.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from enum import StrEnum

from sqlalchemy import BigInteger, Column, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from marketplace.core.types import UTCDateTime, enum_column, utcnow


class Grade(StrEnum):
    """Classification and grading: L1 public, L2 internal, L3 sensitive, L4 core (never licensable)."""

    L1 = "L1"
    L2 = "L2"
    L3 = "L3"
    L4 = "L4"


class FieldType(StrEnum):
    string = "string"
    integer = "integer"
    decimal = "decimal"
    boolean = "boolean"
    date = "date"
    timestamp = "timestamp"


class FieldTag(StrEnum):
    """What a field reveals about a person."""

    direct_identifier = "direct_identifier"
    quasi_identifier = "quasi_identifier"
    sensitive = "sensitive"
    none = "none"


class UpdateFrequency(StrEnum):
    realtime = "realtime"
    daily = "daily"
    weekly = "weekly"
    monthly = "monthly"
    quarterly = "quarterly"
    yearly = "yearly"
    static = "static"


class DeliveryMode(StrEnum):
    api = "api"
    file = "file"
    sandbox = "sandbox"


class Purpose(StrEnum):
    """Permitted purposes (application scenarios) a licence may allow."""

    credit_assessment = "credit_assessment"
    logistics_planning = "logistics_planning"
    academic_research = "academic_research"
    public_welfare = "public_welfare"
    urban_planning = "urban_planning"
    environmental_monitoring = "environmental_monitoring"
    healthcare_management = "healthcare_management"
    market_analysis = "market_analysis"


class PlanType(StrEnum):
    free = "free"
    one_off = "one_off"
    monthly = "monthly"
    metered = "metered"


class LicenceStatus(StrEnum):
    draft = "draft"
    granted = "granted"
    suspended = "suspended"
    revoked = "revoked"
    expired = "expired"


class ReviewStatus(StrEnum):
    """A listing review: automated checks run at submission; the owner's reviewer decides."""

    pending = "pending"  # checks ran, waiting for the owner's reviewer
    approved = "approved"  # listed
    rejected = "rejected"  # back to draft, with reasons
    withdrawn = "withdrawn"  # its licence was suspended or revoked before a decision
    delisted = "delisted"  # approved, then its licence was suspended or revoked


class Department(SQLModel, table=True):
    """A department of the data authority that provides data resources."""

    __tablename__ = "department"
    __table_args__ = (UniqueConstraint("owner_org_id", "code"),)

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    owner_org_id: uuid.UUID = Field(foreign_key="organisation.id", index=True)
    code: str = Field(max_length=40)
    name: str = Field(max_length=200)
    name_zh: str = Field(max_length=200)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class DataResourceBase(SQLModel):
    """A governed data resource: what it is, how sensitive, how often it changes, its fields."""

    code: str = Field(max_length=60)
    title: str = Field(max_length=200)
    title_zh: str = Field(max_length=200)
    description: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    description_zh: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    grade: Grade = Field(sa_column=enum_column(Grade, index=True))
    update_frequency: UpdateFrequency = Field(sa_column=enum_column(UpdateFrequency))


class DataResource(DataResourceBase, table=True):
    __tablename__ = "data_resource"
    __table_args__ = (UniqueConstraint("owner_org_id", "code"),)

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    owner_org_id: uuid.UUID = Field(foreign_key="organisation.id", index=True)
    department_id: uuid.UUID = Field(foreign_key="department.id", index=True)
    #: JSON list of {"name", "type", "tag", "description"}; see schemas.FieldSpec.
    fields_json: str = Field(sa_column=Column(Text, nullable=False))
    current_version: int = Field(default=0)
    created_by: uuid.UUID | None = Field(default=None, foreign_key="user_account.id")
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class ResourceVersion(SQLModel, table=True):
    """One upload of a resource's contents, stored as Parquet; earlier versions are kept."""

    __tablename__ = "resource_version"
    __table_args__ = (UniqueConstraint("resource_id", "version"),)

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    resource_id: uuid.UUID = Field(foreign_key="data_resource.id", index=True)
    version: int
    #: Where the Parquet file is, relative to the data folder.
    location: str = Field(max_length=500)
    source_format: str = Field(max_length=16)
    row_count: int = Field(sa_column=Column(BigInteger, nullable=False))
    byte_size: int = Field(sa_column=Column(BigInteger, nullable=False))
    #: SHA-256 (hex) of the stored Parquet file.
    content_hash: str = Field(max_length=64)
    uploaded_by: uuid.UUID | None = Field(default=None, foreign_key="user_account.id")
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class Licence(SQLModel, table=True):
    """A franchise licence: the owner lets one operator operate some resources, within these terms."""

    __tablename__ = "licence"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    number: str = Field(max_length=40, unique=True)
    owner_org_id: uuid.UUID = Field(foreign_key="organisation.id", index=True)
    operator_id: uuid.UUID = Field(foreign_key="organisation.id", index=True)
    status: LicenceStatus = Field(default=LicenceStatus.draft, sa_column=enum_column(LicenceStatus, index=True))
    version: int = Field(default=1)
    territory: str = Field(max_length=200)
    starts_on: date
    ends_on: date
    #: JSON list of Purpose values.
    purposes_json: str = Field(sa_column=Column(Text, nullable=False))
    #: JSON list of DeliveryMode values.
    modes_json: str = Field(sa_column=Column(Text, nullable=False))
    #: JSON object PlanType -> maximum price (decimal string, CNY).
    price_caps_json: str = Field(sa_column=Column(Text, nullable=False))
    #: JSON object of volume caps: {"rows_per_month": int | null, "calls_per_month": int | null}.
    volume_caps_json: str = Field(sa_column=Column(Text, nullable=False))
    #: JSON object Purpose -> reduction in percent (100 = free).
    reductions_json: str = Field(sa_column=Column(Text, nullable=False, default="{}"))
    min_k: int = Field(default=5)
    #: Share of gross owed to the owner, a decimal string between 0 and 1 (e.g. "0.12").
    fee_rate: str = Field(max_length=12)
    created_by: uuid.UUID | None = Field(default=None, foreign_key="user_account.id")
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class LicenceResource(SQLModel, table=True):
    """A resource covered by a licence."""

    __tablename__ = "licence_resource"

    licence_id: uuid.UUID = Field(foreign_key="licence.id", primary_key=True)
    resource_id: uuid.UUID = Field(foreign_key="data_resource.id", primary_key=True, index=True)


class LicenceVersion(SQLModel, table=True):
    """Every change of a licence: the whole terms after the change, who made it and the written reason."""

    __tablename__ = "licence_version"
    __table_args__ = (UniqueConstraint("licence_id", "version"),)

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    licence_id: uuid.UUID = Field(foreign_key="licence.id", index=True)
    version: int
    change: str = Field(max_length=32)  # created, amended, granted, suspended, reinstated, revoked, expired
    status: LicenceStatus = Field(sa_column=enum_column(LicenceStatus))
    reason: str = Field(sa_column=Column(Text, nullable=False))
    #: The licence's terms after this change, as JSON.
    terms_json: str = Field(sa_column=Column(Text, nullable=False))
    actor_id: uuid.UUID | None = Field(default=None, foreign_key="user_account.id")
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class ListingReview(SQLModel, table=True):
    """An operator's request to list a product, the automated checks' results and the owner's decision."""

    __tablename__ = "listing_review"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    operator_id: uuid.UUID = Field(foreign_key="organisation.id", index=True)
    licence_id: uuid.UUID = Field(foreign_key="licence.id", index=True)
    #: The catalog's product id once products exist (catalog issue); the product's name meanwhile.
    product_ref: str = Field(max_length=80)
    product_name: str = Field(max_length=200)
    mode: DeliveryMode = Field(sa_column=enum_column(DeliveryMode))
    #: JSON: the submission (resources, projection and masking, purposes, plans) as checked.
    submission_json: str = Field(sa_column=Column(Text, nullable=False))
    #: JSON list of {"code", "passed", "explanation", "details"}.
    checks_json: str = Field(sa_column=Column(Text, nullable=False))
    checks_passed: bool = False
    measured_k: int | None = None
    status: ReviewStatus = Field(default=ReviewStatus.pending, sa_column=enum_column(ReviewStatus, index=True))
    submitted_by: uuid.UUID | None = Field(default=None, foreign_key="user_account.id")
    submitted_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    decided_by: uuid.UUID | None = Field(default=None, foreign_key="user_account.id")
    decided_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    decision_reason: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
