"""Response shapes shared by every domain."""

from __future__ import annotations

from typing import Generic, TypeVar

from pydantic import BaseModel, Field

T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    """A list answer: ``items`` with the paging fields beside it (DESIGN.md §8)."""

    items: list[T]
    total: int = Field(description="How many items match in all")
