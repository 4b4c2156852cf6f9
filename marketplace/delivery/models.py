"""Delivery tables: every metered delivery (API call, file export, sandbox query), the monthly usage counters
quota is enforced against, the daily usage the consoles chart, and file exports with their fingerprint.

A delivery row holds metadata only (rows, bytes, mode, what was asked in outline): never the data delivered.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from enum import StrEnum

from sqlalchemy import BigInteger, Column, Text
from sqlmodel import Field, SQLModel

from licensing.models import DeliveryMode
from marketplace.core.types import UTCDateTime, enum_column, utcnow


class ExportFormat(StrEnum):
    csv = "csv"
    parquet = "parquet"


class ExportStatus(StrEnum):
    """``queued -> running -> ready | failed``; a ready export's link works until it expires."""

    queued = "queued"
    running = "running"
    ready = "ready"
    failed = "failed"


class Delivery(SQLModel, table=True):
    """One metered delivery: rows and bytes delivered under an entitlement, and the ledger entry recording it."""

    __tablename__ = "delivery"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    entitlement_id: uuid.UUID = Field(foreign_key="entitlement.id")
    subscription_id: uuid.UUID = Field(foreign_key="subscription.id", index=True)
    buyer_org_id: uuid.UUID = Field(foreign_key="organisation.id")
    operator_id: uuid.UUID = Field(foreign_key="organisation.id")
    product_id: uuid.UUID = Field(foreign_key="product.id")
    client_id: str | None = Field(default=None, max_length=64)
    mode: DeliveryMode = Field(sa_column=enum_column(DeliveryMode))
    rows: int = Field(sa_column=Column(BigInteger, nullable=False))
    bytes: int = Field(sa_column=Column(BigInteger, nullable=False))
    #: billed by usage billing (issue 6) once; None until then.
    billed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    ledger_index: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    occurred_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class UsageCounter(SQLModel, table=True):
    """Calls and rows used under an entitlement in one calendar month (UTC), for quota."""

    __tablename__ = "usage_counter"

    entitlement_id: uuid.UUID = Field(foreign_key="entitlement.id", primary_key=True)
    month: str = Field(max_length=7, primary_key=True)  # "2026-12"
    calls: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, default=0))
    rows: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, default=0))
    bytes: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, default=0))


class UsageDay(SQLModel, table=True):
    """Calls, rows and bytes delivered on one day (UTC) of one product to one buyer in one mode: what the consoles'
    usage charts read, kept by the meter in the transaction of the deliveries it adds up (so the delivery table,
    written at every call, carries no index for the charts)."""

    __tablename__ = "usage_day"

    day: date = Field(primary_key=True)
    product_id: uuid.UUID = Field(foreign_key="product.id", primary_key=True)
    buyer_org_id: uuid.UUID = Field(foreign_key="organisation.id", primary_key=True)
    operator_id: uuid.UUID = Field(foreign_key="organisation.id", primary_key=True)
    mode: DeliveryMode = Field(sa_column=enum_column(DeliveryMode, primary_key=True))
    calls: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, default=0))
    rows: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, default=0))
    bytes: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, default=0))


class DeliveryProcess(SQLModel, table=True):
    """A running delivery process that keeps access answers between two reads (PostgreSQL; see
    ``marketplace.delivery.services.access_lease``): it may answer from what it keeps only while its lease runs, and
    ``cleared_before`` says that it no longer uses anything it read before that moment (the database's clock). A
    change to what grants access is reported done once every process with a running lease has cleared past it."""

    __tablename__ = "delivery_process"

    id: uuid.UUID = Field(primary_key=True)
    label: str = Field(max_length=200)
    cleared_before: datetime = Field(sa_type=UTCDateTime)
    lease_until: datetime = Field(sa_type=UTCDateTime, index=True)


class Export(SQLModel, table=True):
    """A file export built by a task for one subscription, fingerprinted for it, downloaded by a signed link."""

    __tablename__ = "export"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    entitlement_id: uuid.UUID = Field(foreign_key="entitlement.id", index=True)
    subscription_id: uuid.UUID = Field(foreign_key="subscription.id", index=True)
    buyer_org_id: uuid.UUID = Field(foreign_key="organisation.id", index=True)
    product_id: uuid.UUID = Field(foreign_key="product.id", index=True)
    format: ExportFormat = Field(sa_column=enum_column(ExportFormat))
    #: the filters asked for (JSON object of field -> value), validated against the projection.
    filters_json: str = Field(default="{}", sa_column=Column(Text, nullable=False, default="{}"))
    status: ExportStatus = Field(default=ExportStatus.queued, sa_column=enum_column(ExportStatus, index=True))
    rows: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    bytes: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    sha256: str | None = Field(default=None, max_length=64)
    #: the fingerprint token written into the file (keyed from the subscription; reveals nothing by itself).
    fingerprint: str | None = Field(default=None, max_length=64)
    location: str | None = Field(default=None, max_length=500)
    error: str | None = Field(default=None, max_length=500)
    requested_by: str | None = Field(default=None, max_length=64)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    finished_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    expires_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
