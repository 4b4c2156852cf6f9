"""Request and response shapes of licensing, and the value types shared by its services.

``FieldSpec`` (a resource's field) and ``MaskingRule`` (how a product delivers a field) are the
vocabulary between resources, contents checks, privacy checks and listing review.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from licensing.models import FieldTag, FieldType

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
