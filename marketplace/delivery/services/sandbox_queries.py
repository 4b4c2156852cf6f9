"""Sandbox delivery: a buyer's aggregate SQL over the product's masked projection, table ``data``.

The query is checked by ``marketplace.delivery.sandbox.check_sandbox_query`` (only one aggregating SELECT over
``data``, over the columns the entitlement names), then run like ``run_sandbox_query`` runs it, but over the
materialised projection (:mod:`.projections`) instead of a fresh copy: the file is opened read-only with external
access off, one thread, the sandbox's memory limit and the configuration locked; each query gets a cursor of its
own, interrupted at the deadline. Groups smaller than the licence's k never leave (a hidden
``count(*) >= k`` in HAVING) and a second query counts them.

Answers: refused by the guard -> 400 ``sandbox_query_refused`` with the guard's ``reason``; too long -> 400
``query_timeout``; over the memory limit -> 400 ``query_too_large``; another DuckDB error (a type mismatch...) ->
400 ``query_failed``.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import uuid
from dataclasses import dataclass
from typing import Any

import duckdb
import msgspec
from sqlglot import exp

from licensing.models import DeliveryMode
from marketplace.core.errors import DomainError, InvalidInput
from marketplace.core.principal import Principal
from marketplace.delivery.sandbox import GuardedQuery, check_sandbox_query
from marketplace.delivery.services.access import check_access, record_refusal
from marketplace.delivery.services.metering import MeteredDelivery
from marketplace.delivery.services.projections import Projection
from marketplace.delivery.services.runtime import DeliveryRuntime

TIMEOUT = "query_timeout"
TOO_LARGE = "query_too_large"
FAILED = "query_failed"
MAX_ROWS = 10_000
_GROUP_ROWS = "__sandbox_group_rows__"
_json = msgspec.json.Encoder(decimal_format="string")


@dataclass(frozen=True)
class SandboxAnswer:
    """What a sandbox query returns: only groups of at least k rows."""

    columns: tuple[str, ...]
    rows: list[tuple[Any, ...]]
    suppressed_groups: int
    truncated: bool
    min_k: int


def guard(sql: str, columns: tuple[str, ...], numeric: tuple[str, ...]) -> GuardedQuery:
    """Check the buyer's SQL against the entitled columns (raises ``SandboxQueryRefused``)."""
    allowed = set(columns)
    return check_sandbox_query(sql, columns, numeric=[c for c in numeric if c in allowed])


def _answer_sql(guarded: GuardedQuery, min_k: int) -> tuple[str, str]:
    answer = guarded.tree.copy()
    enough = exp.GTE(this=exp.Count(this=exp.Star(), big_int=True), expression=exp.Literal.number(min_k))
    having = answer.args.get("having")
    answer.set("having", exp.Having(this=exp.and_(having.this, enough) if having is not None else enough))
    counting = guarded.tree.copy()
    for clause in ("order", "limit", "offset", "distinct"):
        counting.set(clause, None)
    counting.append("expressions", exp.alias_(exp.Count(this=exp.Star(), big_int=True), _GROUP_ROWS))
    small = f"SELECT count(*) FROM ({counting.sql(dialect='duckdb')}) AS groups__ WHERE {_GROUP_ROWS} < {int(min_k)}"  # noqa: S608 - vetted tree
    return answer.sql(dialect="duckdb"), small


def run_query(
    projection: Projection, guarded: GuardedQuery, min_k: int, *, timeout_s: float, max_rows: int = MAX_ROWS
) -> SandboxAnswer:
    """Run a checked query over the projection under the deadline (blocking: run it off the event loop)."""
    answer_sql, small_sql = _answer_sql(guarded, min_k)
    cursor = projection.cursor()
    expired = threading.Event()

    def interrupt() -> None:
        expired.set()
        cursor.interrupt()

    timer = threading.Timer(timeout_s, interrupt)
    timer.daemon = True
    timer.start()
    try:
        result = cursor.execute(answer_sql)
        names = tuple(d[0] for d in result.description or ())
        rows = result.fetchmany(max_rows + 1)
        suppressed = cursor.execute(small_sql).fetchone()
    except duckdb.InterruptException:
        raise InvalidInput(f"The query ran longer than {timeout_s:g} s.", code=TIMEOUT) from None
    except duckdb.OutOfMemoryException:
        raise InvalidInput("The query needs more memory than the sandbox allows.", code=TOO_LARGE) from None
    except duckdb.Error as error:
        if expired.is_set():
            raise InvalidInput(f"The query ran longer than {timeout_s:g} s.", code=TIMEOUT) from None
        raise InvalidInput(f"The query failed: {error}", code=FAILED) from None
    finally:
        timer.cancel()
        cursor.close()
    if expired.is_set():
        raise InvalidInput(f"The query ran longer than {timeout_s:g} s.", code=TIMEOUT)
    return SandboxAnswer(
        columns=names,
        rows=[tuple(r) for r in rows[:max_rows]],
        suppressed_groups=int(suppressed[0]) if suppressed else 0,
        truncated=len(rows) > max_rows,
        min_k=min_k,
    )


async def run_sandbox(
    runtime: DeliveryRuntime, principal: Principal, product_id: uuid.UUID, sql: str
) -> tuple[SandboxAnswer, int]:
    """Check access (sandbox mode), check and run the buyer's query; returns the answer and its encoded size.

    A query the guard refuses, or that runs too long, is counted by the meter as a refusal (with its code); an
    answered one is metered as a delivery of its result rows, with the query's SHA-256 in the ledger event.
    """
    grant = await check_access(runtime, principal, product_id, DeliveryMode.sandbox)
    settings = runtime.settings
    try:
        guarded = guard(sql, grant.fields, grant.spec.masking.numeric)
        projection = await asyncio.to_thread(runtime.projections.open, grant.spec)
        answer = await asyncio.to_thread(run_query, projection, guarded, grant.min_k, timeout_s=settings.sandbox_timeout_seconds)
    except DomainError as error:
        runtime.meter.release(grant.entitlement_id, grant.month)
        record_refusal(runtime, principal, grant, error)
        raise
    except BaseException:
        runtime.meter.release(grant.entitlement_id, grant.month)
        raise
    size = len(_json.encode({"columns": answer.columns, "rows": answer.rows, "suppressed_groups": answer.suppressed_groups}))
    runtime.meter.record(
        MeteredDelivery(
            entitlement_id=grant.entitlement_id,
            subscription_id=grant.subscription_id,
            buyer_org_id=grant.buyer_org_id,
            operator_id=grant.operator_id,
            owner_org_id=grant.owner_org_id,
            product_id=grant.product_id,
            licence_id=grant.licence_id,
            mode=DeliveryMode.sandbox,
            rows=len(answer.rows),
            bytes=size,
            actor=grant.actor,
            client_id=grant.client_id,
            details={
                "query_sha256": hashlib.sha256(sql.encode()).hexdigest(),
                "suppressed_groups": answer.suppressed_groups,
            },
        ),
        reserved_month=grant.month,
        reserved_rows=0,
    )
    return answer, size
