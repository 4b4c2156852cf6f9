"""Ledger interface shapes (DESIGN.md §8): entries, inclusion and consistency proofs, self-check results."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


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
