"""Catalog tables: data products built on a licence, their plans, the named buyers of private plans, and the
search documents the catalog search reads.

A product's delivered projection (masking rules) and offered purposes are JSON text: read and written whole,
validated by the schemas. Facets (department, domain, mode, grade, operator) are plain indexed columns, copied
from the licence's resource when the product is written, so a search never joins licensing tables.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger, Column, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from licensing.models import DeliveryMode, Grade, PlanType
from marketplace.core.types import UTCDateTime, enum_column, utcnow


class ProductStatus(StrEnum):
    """``draft -> in_review -> listed -> delisted``; a rejected review returns the product to draft."""

    draft = "draft"
    in_review = "in_review"
    listed = "listed"
    delisted = "delisted"


class Domain(StrEnum):
    """The subject area of a product (a catalog facet)."""

    enterprise = "enterprise"
    environment = "environment"
    transport = "transport"
    health = "health"
    property = "property"
    population = "population"
    finance = "finance"
    other = "other"


class PlanAccess(StrEnum):
    """How a buyer takes a plan: at once (self-serve) or after the operator approves the request."""

    self_serve = "self_serve"
    on_request = "on_request"


class PlanVisibility(StrEnum):
    """Public plans are offered to every buyer; private plans only to the named buyers."""

    public = "public"
    private = "private"


class ProductBase(SQLModel):
    name: str = Field(max_length=200)
    name_zh: str = Field(max_length=200)
    summary: str = Field(default="", max_length=500)
    summary_zh: str = Field(default="", max_length=500)
    description: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    description_zh: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    documentation: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    domain: Domain = Field(default=Domain.other, sa_column=enum_column(Domain, index=True))
    mode: DeliveryMode = Field(sa_column=enum_column(DeliveryMode, index=True))


class Product(ProductBase, table=True):
    """A data product: one licence, one source resource, a delivery mode and the delivered projection."""

    __tablename__ = "product"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    operator_id: uuid.UUID = Field(foreign_key="organisation.id", index=True)
    licence_id: uuid.UUID = Field(foreign_key="licence.id", index=True)
    resource_id: uuid.UUID = Field(foreign_key="data_resource.id", index=True)
    department_id: uuid.UUID = Field(foreign_key="department.id", index=True)
    grade: Grade = Field(sa_column=enum_column(Grade, index=True))
    status: ProductStatus = Field(default=ProductStatus.draft, sa_column=enum_column(ProductStatus, index=True))
    #: list of MaskingRule (licensing.schemas): how each delivered field is treated; others are not delivered.
    rules_json: str = Field(sa_column=Column(Text, nullable=False))
    #: list of Purpose the product is offered for (within the licence's).
    purposes_json: str = Field(sa_column=Column(Text, nullable=False))
    #: the masked preview rows shown on the product page (computed from the real contents when submitted).
    sample_json: str = Field(default="[]", sa_column=Column(Text, nullable=False, default="[]"))
    review_id: uuid.UUID | None = Field(default=None, foreign_key="listing_review.id")
    #: the lowest plan price, for sorting by price (decimal string; None without plans).
    price_from: str | None = Field(default=None, max_length=20)
    subscriber_count: int = Field(default=0)
    created_by: uuid.UUID | None = Field(default=None, foreign_key="user_account.id")
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, index=True)
    listed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class PlanBase(SQLModel):
    name: str = Field(max_length=120)
    name_zh: str = Field(max_length=120)
    type: PlanType = Field(sa_column=enum_column(PlanType))
    currency: str = Field(default="CNY", max_length=3)
    #: free: 0; one_off: the price; monthly: the monthly price; metered: the monthly fee (decimal strings).
    price: str = Field(default="0.00", max_length=20)
    #: metered plans: calls included each month, price of each further call, and the monthly maximum charge.
    free_calls: int = Field(default=0)
    per_call_price: str | None = Field(default=None, max_length=20)
    monthly_cap: str | None = Field(default=None, max_length=20)
    #: quota of the entitlement: calls (api/sandbox) or exports (file) per month, and rows per month; None = no cap.
    quota_calls: int | None = None
    quota_rows: int | None = None
    #: how long an entitlement of a one-off or free plan lasts; monthly and metered plans renew by the month.
    term_days: int = Field(default=365)
    #: monthly and metered plans: days an unpaid renewal keeps access (subscription past_due) before it is suspended.
    grace_days: int = Field(default=7)
    access: PlanAccess = Field(default=PlanAccess.self_serve, sa_column=enum_column(PlanAccess))
    visibility: PlanVisibility = Field(default=PlanVisibility.public, sa_column=enum_column(PlanVisibility))


class Plan(PlanBase, table=True):
    """A way to subscribe to a product, priced within the licence's cap for its type."""

    __tablename__ = "plan"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    product_id: uuid.UUID = Field(foreign_key="product.id", index=True)
    active: bool = Field(default=True)
    position: int = Field(default=0)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class PlanBuyer(SQLModel, table=True):
    """A buyer a private plan is offered to."""

    __tablename__ = "plan_buyer"

    plan_id: uuid.UUID = Field(foreign_key="plan.id", primary_key=True)
    buyer_org_id: uuid.UUID = Field(foreign_key="organisation.id", primary_key=True, index=True)


class ProductSearchDocument(SQLModel, table=True):
    """What the catalog search reads: one row per listed product, with its words in both languages (Chinese
    segmented into words) and copies of its facets and sort keys, so a search reads this one narrow table and
    never joins products, plans or licensing tables.

    On PostgreSQL a GIN index over ``to_tsvector('simple', terms)`` answers the match; on SQLite a contentless
    FTS5 table ``product_fts`` (created by the migration, kept in step by triggers on this table) indexes the
    terms, the facets as words and the names' words. Frequent words, facets and orders are answered by each
    process's in-memory index (``marketplace.catalog.search_index``), kept fresh by ``CatalogSearchState``.
    """

    __tablename__ = "product_search"
    __table_args__ = (UniqueConstraint("product_id"),)

    id: int | None = Field(default=None, primary_key=True)
    product_id: uuid.UUID = Field(foreign_key="product.id")
    operator_id: uuid.UUID = Field(index=True)
    department_id: uuid.UUID = Field(index=True)
    domain: Domain = Field(sa_column=enum_column(Domain, index=True))
    mode: DeliveryMode = Field(sa_column=enum_column(DeliveryMode, index=True))
    grade: Grade = Field(sa_column=enum_column(Grade, index=True))
    #: the types of the product's active public plans, space-separated and space-framed: " free monthly ".
    plan_types: str = Field(default=" ", max_length=64)
    #: the lowest active public plan price in cents (None without such a plan), for sorting by price.
    price_cents: int | None = Field(default=None, sa_type=BigInteger, index=True)
    listed_at: datetime = Field(sa_type=UTCDateTime, index=True)
    #: the English name in lower case, for sorting by name.
    sort_name: str = Field(max_length=200, index=True)
    terms: str = Field(sa_column=Column(Text, nullable=False))
    #: the words of the product's names only (English and Chinese): relevance puts name matches first.
    name_terms: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))


class CatalogSearchState(SQLModel, table=True):
    """One row: the catalog search documents' version, bumped by every change to them in the writer's transaction,
    and an epoch made afresh with the row. Each process's in-memory search index compares them on every search."""

    __tablename__ = "catalog_search_state"

    id: int = Field(default=1, primary_key=True, sa_column_kwargs={"autoincrement": False})
    epoch: str = Field(max_length=32)
    version: int = Field(default=0, sa_type=BigInteger)


class CatalogSearchChange(SQLModel, table=True):
    """Which product's search document each version changed (so indexes apply changes instead of rebuilding);
    old entries are pruned."""

    __tablename__ = "catalog_search_change"

    revision: int = Field(primary_key=True, sa_type=BigInteger, sa_column_kwargs={"autoincrement": False})
    product_id: uuid.UUID
