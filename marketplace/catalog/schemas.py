"""Request and response shapes of the catalog: products and plans as operators write them, the catalog search
query and its answer (items, paging, facets), and a product's detail as each party sees it.

Money is a decimal string with two decimals (``licensing.schemas.Money``), never a float.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from licensing.models import DeliveryMode, Grade, PlanType, Purpose
from licensing.schemas import MaskingRule, Money
from marketplace.catalog.models import Domain, PlanAccess, PlanVisibility, ProductStatus

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Summary = Annotated[str, StringConstraints(strip_whitespace=True, max_length=500)]
LongText = Annotated[str, StringConstraints(strip_whitespace=True, max_length=20_000)]
PlanName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=120)]
Reason = Annotated[str, StringConstraints(max_length=2000)]


def _unique(values: list[Any] | None) -> list[Any] | None:
    return None if values is None else list(dict.fromkeys(values))


# --- products ----------------------------------------------------------------------------------------------


class ProductCreate(BaseModel):
    """A new draft product on one of the operator's own licences."""

    model_config = ConfigDict(extra="forbid")

    licence_id: uuid.UUID = Field(description="One of your licences, in force")
    resource_id: uuid.UUID = Field(description="A resource covered by the licence; its department and grade are copied")
    mode: DeliveryMode = Field(description="api, file or sandbox: one the licence permits")
    rules: list[MaskingRule] = Field(
        min_length=1, max_length=500, description="How each delivered field is treated; fields without a rule are not delivered"
    )
    purposes: list[Purpose] = Field(min_length=1, max_length=len(Purpose), description="Within the licence's purposes")
    name: Name
    name_zh: Name
    summary: Summary = ""
    summary_zh: Summary = ""
    description: LongText = ""
    description_zh: LongText = ""
    documentation: LongText = ""
    domain: Domain = Domain.other

    @field_validator("purposes")
    @classmethod
    def _unique_purposes(cls, values: list[Any] | None) -> list[Any] | None:
        return _unique(values)


class ProductUpdate(BaseModel):
    """Changes to a draft product: only the fields given are replaced."""

    model_config = ConfigDict(extra="forbid")

    resource_id: uuid.UUID | None = None
    mode: DeliveryMode | None = None
    rules: list[MaskingRule] | None = Field(default=None, min_length=1, max_length=500)
    purposes: list[Purpose] | None = Field(default=None, min_length=1, max_length=len(Purpose))
    name: Name | None = None
    name_zh: Name | None = None
    summary: Summary | None = None
    summary_zh: Summary | None = None
    description: LongText | None = None
    description_zh: LongText | None = None
    documentation: LongText | None = None
    domain: Domain | None = None

    @field_validator("purposes")
    @classmethod
    def _unique_purposes(cls, values: list[Any] | None) -> list[Any] | None:
        return _unique(values)


class DelistRequest(BaseModel):
    """The operator takes a listed product off the catalog, with a written reason."""

    model_config = ConfigDict(extra="forbid")

    reason: Reason = Field(description="Why: required, not blank")


# --- plans -------------------------------------------------------------------------------------------------


class PlanCreate(BaseModel):
    """A plan of a product. ``price`` is the one-off price, the monthly price, or the monthly fee of a metered
    plan (free plans: 0). Metered plans add ``free_calls``, ``per_call_price`` and ``monthly_cap``."""

    model_config = ConfigDict(extra="forbid")

    name: PlanName
    name_zh: PlanName
    type: PlanType
    price: Money = Field(default="0.00", description="Decimal string (CNY), two decimals")
    free_calls: int = Field(default=0, ge=0, le=10**12, description="Metered: calls included each month")
    per_call_price: Money | None = Field(default=None, description="Metered: the price of each further call")
    monthly_cap: Money | None = Field(default=None, description="Metered: the most a month can cost (>= the monthly fee)")
    quota_calls: int | None = Field(default=None, ge=1, le=10**15, description="Calls (or exports) per month; null = no cap")
    quota_rows: int | None = Field(default=None, ge=1, le=10**15, description="Rows per month; null = no cap")
    term_days: int = Field(default=365, ge=1, le=3660, description="How long a free or one-off plan's entitlement lasts")
    grace_days: int = Field(
        default=7, ge=0, le=60, description="Monthly and metered: days an unpaid renewal keeps access before it is suspended"
    )
    access: PlanAccess = PlanAccess.self_serve
    visibility: PlanVisibility = PlanVisibility.public
    buyer_ids: list[uuid.UUID] = Field(
        default_factory=list, max_length=200, description="Private plans: the buyer organisations it is offered to"
    )

    @field_validator("buyer_ids")
    @classmethod
    def _unique_buyers(cls, values: list[Any] | None) -> list[Any] | None:
        return _unique(values)


class PlanUpdate(BaseModel):
    """Changes to a plan: only the fields given are replaced (its type stays)."""

    model_config = ConfigDict(extra="forbid")

    name: PlanName | None = None
    name_zh: PlanName | None = None
    price: Money | None = None
    free_calls: int | None = Field(default=None, ge=0, le=10**12)
    per_call_price: Money | None = None
    monthly_cap: Money | None = None
    quota_calls: int | None = Field(default=None, ge=1, le=10**15)
    quota_rows: int | None = Field(default=None, ge=1, le=10**15)
    term_days: int | None = Field(default=None, ge=1, le=3660)
    grace_days: int | None = Field(default=None, ge=0, le=60)
    access: PlanAccess | None = None
    visibility: PlanVisibility | None = None
    buyer_ids: list[uuid.UUID] | None = Field(default=None, max_length=200)

    @field_validator("buyer_ids")
    @classmethod
    def _unique_buyers(cls, values: list[Any] | None) -> list[Any] | None:
        return _unique(values)


class PlanView(BaseModel):
    """A plan as the API shows it (``buyer_ids`` only to the product's operator and supervisors)."""

    id: uuid.UUID
    product_id: uuid.UUID
    name: str
    name_zh: str
    type: PlanType
    currency: str
    price: str
    free_calls: int
    per_call_price: str | None
    monthly_cap: str | None
    quota_calls: int | None
    quota_rows: int | None
    term_days: int
    grace_days: int
    access: PlanAccess
    visibility: PlanVisibility
    active: bool
    buyer_ids: list[uuid.UUID] | None = None
    created_at: datetime


# --- product views -----------------------------------------------------------------------------------------


class FieldTreatment(BaseModel):
    """A delivered field and how it is treated (keep, pseudonymise, generalise with method and size)."""

    name: str
    type: str
    description: str
    action: str
    method: str | None = None
    size: int | None = None


class ProductSummary(BaseModel):
    """A product in a list: the catalog's result cards and the operator's console."""

    id: uuid.UUID
    name: str
    name_zh: str
    summary: str
    summary_zh: str
    status: ProductStatus
    domain: Domain
    mode: DeliveryMode
    grade: Grade
    operator_id: uuid.UUID
    operator_name: str
    operator_name_zh: str | None
    department_id: uuid.UUID
    department_name: str
    department_name_zh: str
    price_from: str | None = Field(description="The lowest active public plan price, or null")
    plan_types: list[PlanType]
    listed_at: datetime | None
    updated_at: datetime


class ProductDetail(ProductSummary):
    """A product's page: description, documentation, delivered fields, sample preview and the plans the caller may see."""

    description: str
    description_zh: str
    documentation: str
    licence_id: uuid.UUID
    licence_number: str
    resource_id: uuid.UUID
    purposes: list[Purpose]
    fields: list[FieldTreatment]
    sample: list[dict[str, Any]] = Field(description="Masked preview rows of the delivered projection (up to 5)")
    plans: list[PlanView]
    review_id: uuid.UUID | None
    subscriber_count: int
    created_at: datetime


class OperatorProducts(BaseModel):
    """The operator's own products (every status), newest change first, with how many are in each status."""

    items: list[ProductSummary]
    total: int
    counts: dict[ProductStatus, int]


# --- search ------------------------------------------------------------------------------------------------


class CatalogSort(StrEnum):
    relevance = "relevance"  # best match first (newest when there are no words)
    newest = "newest"
    price = "price"  # lowest price first; products without a public plan last
    name = "name"


class CatalogQuery(BaseModel):
    """A catalog search: words (Chinese or English), facet filters, sort and page."""

    model_config = ConfigDict(extra="forbid")

    q: str = Field(default="", max_length=200)
    department: uuid.UUID | None = None
    domain: Domain | None = None
    mode: DeliveryMode | None = None
    plan_type: PlanType | None = None
    grade: Grade | None = None
    operator: uuid.UUID | None = None
    sort: CatalogSort = CatalogSort.relevance
    page: int = Field(default=1, ge=1, le=10_000)
    page_size: int = Field(default=20, ge=1, le=100)


class FacetValue(BaseModel):
    """One value of a facet and how many products of the current result have it."""

    value: str
    label: str
    label_zh: str
    count: int


class CatalogFacets(BaseModel):
    """Counts of each facet's values over the whole result (exact, not only the page)."""

    department: list[FacetValue]
    domain: list[FacetValue]
    mode: list[FacetValue]
    plan_type: list[FacetValue]
    grade: list[FacetValue]
    operator: list[FacetValue]


class CatalogPage(BaseModel):
    """A page of the catalog: ``items`` with paging fields and facets beside it."""

    items: list[ProductSummary]
    total: int
    page: int
    page_size: int
    facets: CatalogFacets
