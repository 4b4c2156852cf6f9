"""Reads by audit firms outside supervision's own rooms: the pieces every domain's scoping shares (DESIGN.md §2: an
auditor reads only inside its firm's engagements in force). Each domain says which of its records an engagement
covers (``licensing.auditing``, ``marketplace.subscriptions.auditing``); these say who is narrowed, refuse and record
(``records.read_refused``, through :mod:`supervision.engagements`), and compare timestamps and months with the
engagements' dates in SQL the same way on SQLite and PostgreSQL.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import Date, String
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement
from sqlmodel.ext.asyncio.session import AsyncSession

from marketplace.core.principal import OrgKind, Principal
from supervision.engagements import read_scope, refuse_outside


class utc_day(FunctionElement[Any]):
    """The UTC day of a timestamp column, as a date comparable with a Date column on SQLite and PostgreSQL."""

    type = Date()
    inherit_cache = True


@compiles(utc_day)
def _utc_day_default(element: utc_day, compiler: SQLCompiler, **kw: Any) -> str:
    # SQLite keeps UTC timestamps as text: date() gives 'YYYY-MM-DD', as a Date column is stored.
    return f"date({compiler.process(element.clauses, **kw)})"


@compiles(utc_day, "postgresql")
def _utc_day_postgresql(element: utc_day, compiler: SQLCompiler, **kw: Any) -> str:
    # Whatever the session's time zone.
    return f"date(timezone('UTC', {compiler.process(element.clauses, **kw)}))"


class year_month(FunctionElement[Any]):
    """The ``YYYY-MM`` text of a Date column, on SQLite and PostgreSQL."""

    type = String()
    inherit_cache = True


@compiles(year_month)
def _year_month_default(element: year_month, compiler: SQLCompiler, **kw: Any) -> str:
    return f"strftime('%Y-%m', {compiler.process(element.clauses, **kw)})"


@compiles(year_month, "postgresql")
def _year_month_postgresql(element: year_month, compiler: SQLCompiler, **kw: Any) -> str:
    return f"to_char({compiler.process(element.clauses, **kw)}, 'YYYY-MM')"


def is_auditor(principal: Principal) -> bool:
    """Whether ``principal``'s reads are narrowed to engagements."""
    return principal.org_kind is OrgKind.auditor


async def require_engagement(session: AsyncSession, principal: Principal, path: str) -> None:
    """For an auditor: refuse (and record) a read when no engagement of its firm is in force."""
    if is_auditor(principal):
        await read_scope(session, principal, path=path)


async def refuse_record(session: AsyncSession, principal: Principal, path: str, exists: bool) -> None:
    """An auditor asked for one record it may not see: when no engagement is in force, or when the record exists,
    the refusal is 403 ``outside_engagement``, recorded; otherwise the caller answers 404 as for anyone."""
    if not is_auditor(principal):
        return
    await read_scope(session, principal, path=path)
    if exists:
        await refuse_outside(session, principal, path=path, detail="Your firm's engagements in force do not cover this record.")


def record_path(kind: str, record_id: uuid.UUID) -> str:
    """How a refused read of one record is named in the ledger (``kind``: e.g. ``subscriptions``)."""
    return f"/api/{kind}/{record_id}"
