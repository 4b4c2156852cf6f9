"""Supervision tables: the ledger (entries, perfect subtree hashes, the head that sequences appends, checkpoints),
alerts, and auditors' engagements (the family EngagementBase -> Engagement(table=True); request and response
shapes, EngagementCreate and EngagementPublic, live in schemas.py)."""

from __future__ import annotations

import uuid
from datetime import date, datetime

from sqlalchemy import BigInteger, Column, LargeBinary, Text
from sqlmodel import Field, SQLModel

from marketplace.core.types import UTCDateTime, utcnow


class LedgerEntry(SQLModel, table=True):
    """One event: its canonical JSON (the exact bytes hashed) and its leaf hash, at a gap-free index."""

    __tablename__ = "ledger_entry"

    leaf_index: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    event_type: str = Field(max_length=80, index=True)
    occurred_at: datetime = Field(sa_type=UTCDateTime, index=True)
    leaf_input: str = Field(sa_column=Column(Text, nullable=False))
    leaf_hash: bytes = Field(sa_column=Column(LargeBinary(32), nullable=False))


class LedgerNode(SQLModel, table=True):
    """The hash of a perfect subtree of 2**level leaves starting at leaf position * 2**level (level >= 1)."""

    __tablename__ = "ledger_node"

    level: int = Field(primary_key=True)
    position: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    hash: bytes = Field(sa_column=Column(LargeBinary(32), nullable=False))


class LedgerHead(SQLModel, table=True):
    """The single row every append locks: the tree size and its right edge of perfect subtrees."""

    __tablename__ = "ledger_head"

    id: int = Field(default=1, primary_key=True)
    size: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, default=0))
    frontier: str = Field(default="[]", sa_column=Column(Text, nullable=False, default="[]"))


class LedgerCheckpoint(SQLModel, table=True):
    """A signed tree head (C2SP signed note)."""

    __tablename__ = "ledger_checkpoint"

    id: int | None = Field(default=None, primary_key=True)
    size: int = Field(sa_column=Column(BigInteger, nullable=False, index=True))
    root_hash: bytes = Field(sa_column=Column(LargeBinary(32), nullable=False))
    note: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class SupervisionAlert(SQLModel, table=True):
    """A rule hit that supervisors must look at: what fired (rule, severity, a plain-language detail), what it concerns
    (the operator, licence, product or subscription), the ledger entries that show it (evidence), and where its
    handling stands (open -> acknowledged -> resolved with a note). ``key`` makes raising idempotent: one alert per
    rule and subject, however often the rule runs."""

    __tablename__ = "supervision_alert"

    id: int | None = Field(default=None, primary_key=True)
    rule: str = Field(max_length=80, index=True)
    severity: str = Field(max_length=16)
    detail: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, index=True)
    key: str | None = Field(default=None, max_length=200, unique=True)
    state: str = Field(default="open", max_length=16, index=True)
    #: The rule's figures (JSON), for pages that word the alert in the reader's language.
    params_json: str = Field(default="{}", sa_column=Column(Text, nullable=False, server_default="{}"))
    #: Ledger indexes of the events that show it (JSON list).
    evidence_json: str = Field(default="[]", sa_column=Column(Text, nullable=False, server_default="[]"))
    #: The operator the alert concerns (engagement scoping), and the subjects it names.
    operator_id: uuid.UUID | None = Field(default=None, foreign_key="organisation.id", index=True)
    licence_id: str | None = Field(default=None, max_length=36)
    product_id: str | None = Field(default=None, max_length=36)
    subscription_id: str | None = Field(default=None, max_length=36)
    #: When the latest evidence happened (engagement period scoping).
    occurred_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    acknowledged_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    acknowledged_by: uuid.UUID | None = Field(default=None, foreign_key="user_account.id")
    resolved_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    resolved_by: uuid.UUID | None = Field(default=None, foreign_key="user_account.id")
    resolution_note: str | None = Field(default=None, sa_column=Column(Text, nullable=True))


class SupervisionCursor(SQLModel, table=True):
    """How far a periodic run over the ledger got (e.g. the alert rules): the next index, and the leaf hash of the
    entry before it, so that a ledger replaced under it (a test database emptied between runs) is read again from
    the start."""

    __tablename__ = "supervision_cursor"

    name: str = Field(max_length=80, primary_key=True)
    next_index: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, default=0))
    leaf_hash: bytes | None = Field(default=None, sa_column=Column(LargeBinary(32), nullable=True))
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class EngagementBase(SQLModel):
    """What the owner lets an audit firm look at: which transactions (period, inclusive, UTC days) and until when."""

    auditor_id: uuid.UUID = Field(foreign_key="organisation.id", index=True)
    period_start: date = Field(description="First day (UTC) of the transactions covered")
    period_end: date = Field(description="Last day (UTC) of the transactions covered, inclusive")
    expires_at: datetime = Field(sa_type=UTCDateTime, description="Until when the firm may look")


class Engagement(EngagementBase, table=True):
    """An engagement granted by the owner; the operators it covers are rows of :class:`EngagementOperator`."""

    __tablename__ = "engagement"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    owner_org_id: uuid.UUID = Field(foreign_key="organisation.id", index=True)
    granted_by: uuid.UUID | None = Field(default=None, foreign_key="user_account.id")
    granted_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    revoked_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    revoked_by: uuid.UUID | None = Field(default=None, foreign_key="user_account.id")
    revoked_reason: str | None = Field(default=None, sa_column=Column(Text, nullable=True))


class EngagementOperator(SQLModel, table=True):
    """An operator covered by an engagement (a link table: "which engagements cover this operator" is one query)."""

    __tablename__ = "engagement_operator"

    engagement_id: uuid.UUID = Field(foreign_key="engagement.id", primary_key=True)
    operator_id: uuid.UUID = Field(foreign_key="organisation.id", primary_key=True, index=True)
