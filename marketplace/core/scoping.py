"""Tenancy: one helper per query path limits a query to what the caller's organisation may see.

Services call these on every read; pages and controllers never filter by themselves.
"""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy import or_
from sqlmodel.sql.expression import SelectOfScalar

from marketplace.core.principal import OrgKind, Principal

T = TypeVar("T")

#: Parties that see across every organisation (read-only for the regulator).
SEES_ALL_ORGANISATIONS = frozenset({OrgKind.owner, OrgKind.regulator})


def scope_organisations(stmt: SelectOfScalar[T], principal: Principal, *, id_column: Any, kind_column: Any) -> SelectOfScalar[T]:
    """Organisations directory: the owner and regulators see all; others see their own, the owner and the operators
    (operators are public: their products are in the catalog, and buyers submit qualifications to them)."""
    if principal.org_kind in SEES_ALL_ORGANISATIONS:
        return stmt
    return stmt.where(or_(id_column == principal.org_id, kind_column.in_([OrgKind.owner.value, OrgKind.operator.value])))


def scope_own_organisation(stmt: SelectOfScalar[T], principal: Principal, *, org_column: Any) -> SelectOfScalar[T]:
    """Records private to an organisation (members, API clients): its own, or all for a regulator."""
    if principal.org_kind is OrgKind.regulator:
        return stmt
    return stmt.where(org_column == principal.org_id)
