"""Supervision interface shapes (DESIGN.md §8): ledger entries, inclusion and consistency proofs, self-check results,
engagements."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, Field


class LedgerEntryView(BaseModel):
    index: int
    leaf_input: str = Field(description="base64 of the exact canonical JSON bytes that were hashed")
    event: dict[str, Any] = Field(description="the same bytes decoded")


class LedgerEntries(BaseModel):
    items: list[LedgerEntryView]
    start: int
    end: int = Field(description="one past the last entry returned (reads return at most 1000)")
    tree_size: int


class InclusionProof(BaseModel):
    leaf_index: int
    tree_size: int
    audit_path: list[str] = Field(description="base64 hashes, RFC 9162 §2.1.3")


class ConsistencyProof(BaseModel):
    first: int
    second: int
    proof: list[str] = Field(description="base64 hashes, RFC 9162 §2.1.4")


class SelfCheckResult(BaseModel):
    ok: bool
    checked_entries: int
    checkpoints: int
    problems: list[str]


class EngagementCreate(BaseModel):
    """The owner grants an audit firm an engagement: which operators, which period of transactions, until when."""

    auditor_id: uuid.UUID = Field(description="The audit firm (an organisation of kind auditor)")
    operator_ids: list[uuid.UUID] = Field(max_length=100, description="The operators whose transactions it covers")
    period_start: date = Field(description="First day (UTC) of the transactions covered")
    period_end: date = Field(description="Last day (UTC) of the transactions covered, inclusive")
    expires_at: AwareDatetime = Field(description="Until when the firm may look (a time with its zone)")


class EngagementRevoke(BaseModel):
    reason: str = Field(max_length=2000, description="Why the engagement ends early (required, written to the ledger)")


class EngagementPublic(BaseModel):
    id: uuid.UUID
    owner_org_id: uuid.UUID
    auditor_id: uuid.UUID
    operator_ids: list[uuid.UUID]
    period_start: date
    period_end: date
    expires_at: datetime
    status: Literal["in_force", "expired", "revoked"]
    granted_by: uuid.UUID | None
    granted_at: datetime
    revoked_at: datetime | None = None
    revoked_by: uuid.UUID | None = None
    revoked_reason: str | None = None
