"""Request and response shapes of the data plane (``/data/v1``)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from licensing.models import DeliveryMode
from marketplace.delivery.models import ExportFormat, ExportStatus
from marketplace.subscriptions.models import SubscriptionStatus

MAX_SQL_CHARS = 10_000


class Quota(BaseModel):
    """A monthly quota of an entitlement (None: no cap)."""

    calls: int | None = Field(description="Calls (api, sandbox) or exports (file) per month")
    rows: int | None = Field(description="Rows per month")


class Usage(BaseModel):
    """What was used this month (UTC), deliveries still being metered included."""

    month: str = Field(description="YYYY-MM")
    calls: int
    rows: int
    bytes: int


class EntitlementView(BaseModel):
    """What the calling organisation may use of one product."""

    entitlement_id: uuid.UUID
    product_id: uuid.UUID
    product_name: str
    product_name_zh: str
    mode: DeliveryMode
    fields: list[str]
    quota: Quota
    used: Usage
    valid_until: datetime
    subscription_id: uuid.UUID
    subscription_status: SubscriptionStatus


class EntitlementList(BaseModel):
    """The caller's running entitlements."""

    items: list[EntitlementView]
    total: int


class ExportCreate(BaseModel):
    """Ask for a file export of a product (file mode)."""

    model_config = ConfigDict(extra="forbid")

    format: ExportFormat
    filters: dict[str, str | int | float | bool] = Field(
        default_factory=dict, max_length=10, description="Equality filters on permitted fields: field -> value"
    )


class ExportView(BaseModel):
    """A file export: its state and, when ready, a short-lived signed download link."""

    id: uuid.UUID
    product_id: uuid.UUID
    subscription_id: uuid.UUID
    format: ExportFormat
    status: ExportStatus
    filters: dict[str, Any]
    rows: int | None
    bytes: int | None
    sha256: str | None
    fingerprint: str | None = Field(description="The fingerprint token written into the file (Parquet metadata)")
    error: str | None
    created_at: datetime
    finished_at: datetime | None
    download_url: str | None = Field(default=None, description="Signed link (no token needed); works until link_expires_at")
    link_expires_at: datetime | None = None


class ExportList(BaseModel):
    """The buyer's exports, newest first."""

    items: list[ExportView]
    total: int


class RowsPage(BaseModel):
    """A page of a product's rows (JSON; with ``Accept: text/csv`` or ``format=csv`` the same rows as CSV)."""

    items: list[dict[str, Any]] = Field(description="The rows: entitled fields only, masking applied")
    next_cursor: str | None = Field(description="Pass back as `cursor` for the next page; null on the last page")


class SandboxQuery(BaseModel):
    """A sandbox query: one aggregating SELECT over the table ``data``."""

    model_config = ConfigDict(extra="forbid")

    sql: str = Field(min_length=1, max_length=MAX_SQL_CHARS)


class SandboxResult(BaseModel):
    """A sandbox answer: only groups of at least ``min_k`` rows."""

    columns: list[str]
    rows: list[list[Any]]
    suppressed_groups: int = Field(description="Groups left out because they hold fewer than min_k rows")
    truncated: bool
    min_k: int
