"""The access check every delivery call makes, against the current state of entitlement, subscription, product
and licence, read in one query. An answer is reused only while it is exact: on SQLite while the database is
unchanged; on PostgreSQL under the process's access lease (``access_lease``), which every change to what grants
access waits for before it is reported done. Either way a suspension reported done is seen by the next call.

Order of the checks, and the codes a refused call gets (each refusal says why, and is counted by the meter):

1. ``rate_limited`` (429, ``Retry-After``): the caller's token bucket is empty (before any database work);
2. ``not_entitled`` (403): no entitlement of the caller's organisation for this product (also the answer for
   another buyer's product or an unknown one: nothing is revealed);
3. the licence: ``licence_suspended``, ``licence_revoked``, ``licence_expired`` (status expired or past its term),
   ``licence_not_in_force`` (not yet granted or not yet started) (403);
4. ``product_delisted`` (403): the product is not listed any more;
5. the entitlement: ``entitlement_ended`` (cancelled or revoked; ``reason`` and ``ended_reason`` say why),
   ``entitlement_expired`` (past its ``valid_until``, or ended by expiry), ``subscription_past_due`` (a renewal
   unpaid and the plan's grace period over; within it, deliveries go on) (403);
6. ``mode_not_entitled`` (403): the call's mode is not the entitlement's (rows of a sandbox-only product), or the
   licence no longer permits it;
7. ``quota_exceeded`` (429, ``Retry-After`` until the next month): the entitlement's calls or rows for the month
   are used up, counting deliveries still in the meter's buffer.

``insufficient_scope`` (403) is the routes' guard (``requires_scope``), before all of these.
"""

from __future__ import annotations

import functools
import json
import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from sqlalchemy import String, and_, bindparam, func, literal_column, or_, select
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from licensing.models import DataResource, DeliveryMode, Licence, LicenceStatus, ResourceVersion
from marketplace.catalog.models import Product, ProductStatus
from marketplace.core.errors import Conflict, DomainError, Forbidden, TooManyRequests
from marketplace.core.events import Actor
from marketplace.core.principal import Principal
from marketplace.core.types import utcnow
from marketplace.delivery.models import Export, ExportStatus, UsageCounter
from marketplace.delivery.services.metering import Meter, RefusalKey, month_of
from marketplace.delivery.services.projections import ProjectionSpec, entitled_columns, parse_masking
from marketplace.delivery.services.runtime import DeliveryRuntime, StateReader
from marketplace.subscriptions.models import Entitlement, Subscription, SubscriptionStatus

#: Codes of refusals by the state of the records (not rate or quota).
STATE_CODES = (
    "not_entitled",
    "licence_suspended",
    "licence_revoked",
    "licence_expired",
    "licence_not_in_force",
    "product_delisted",
    "entitlement_ended",
    "entitlement_expired",
    "subscription_past_due",
    "mode_not_entitled",
)


@dataclass(slots=True)
class Grant:
    """An allowed delivery call: who, under which entitlement, what may be delivered, and the quota left.

    Not frozen: one is made for every delivery call, and a frozen dataclass's ``__init__`` costs several times as
    much (it sets each of the twenty fields through ``object.__setattr__``). Treat it as read-only."""

    entitlement_id: uuid.UUID
    subscription_id: uuid.UUID
    buyer_org_id: uuid.UUID
    operator_id: uuid.UUID
    owner_org_id: uuid.UUID
    product_id: uuid.UUID
    licence_id: uuid.UUID
    product_name: str
    mode: DeliveryMode
    #: The columns the buyer may receive (entitled and delivered by the projection), in projection order.
    fields: tuple[str, ...]
    spec: ProjectionSpec
    min_k: int
    quota_calls: int | None
    quota_rows: int | None
    #: Used this month when checked (committed and still buffered).
    used_calls: int
    used_rows: int
    month: str
    actor: Actor
    client_id: str | None

    @property
    def rows_left(self) -> int | None:
        """Rows still allowed this month (None: no cap)."""
        return None if self.quota_rows is None else max(self.quota_rows - self.used_rows, 0)


# --- the one query -------------------------------------------------------------------------------------------------------


def _open_exports() -> Any:
    return (
        select(func.count())
        .select_from(Export)
        .where(
            col(Export.entitlement_id) == col(Entitlement.id),
            or_(
                col(Export.status) == literal_column(f"'{ExportStatus.queued.value}'"),
                col(Export.status) == literal_column(f"'{ExportStatus.running.value}'"),
            ),
        )
        .correlate(Entitlement)
        .scalar_subquery()
    )


_UUID_TYPE = Entitlement.__table__.c.id.type  # type: ignore[attr-defined]


def _state_query() -> Any:
    return (
        select(
            col(Entitlement.id).label("entitlement_id"),
            col(Entitlement.subscription_id),
            col(Entitlement.buyer_org_id),
            col(Entitlement.product_id),
            col(Entitlement.mode).label("entitlement_mode"),
            col(Entitlement.fields_json).label("entitled_json"),
            col(Entitlement.quota_calls),
            col(Entitlement.quota_rows),
            col(Entitlement.valid_from),
            col(Entitlement.valid_until),
            col(Entitlement.ended_at),
            col(Entitlement.ended_reason),
            col(Subscription.status).label("subscription_status"),
            col(Subscription.status_reason),
            col(Subscription.operator_id),
            col(Product.status).label("product_status"),
            col(Product.name).label("product_name"),
            col(Product.rules_json),
            col(Licence.id).label("licence_id"),
            col(Licence.number).label("licence_number"),
            col(Licence.status).label("licence_status"),
            col(Licence.starts_on),
            col(Licence.ends_on),
            col(Licence.min_k),
            col(Licence.modes_json),
            col(Licence.owner_org_id),
            col(DataResource.fields_json),
            col(ResourceVersion.location),
            col(ResourceVersion.content_hash),
            col(UsageCounter.calls).label("used_calls"),
            col(UsageCounter.rows).label("used_rows"),
            _open_exports().label("open_exports"),
        )
        .select_from(Entitlement)
        .join(Subscription, col(Subscription.id) == col(Entitlement.subscription_id))
        .join(Product, col(Product.id) == col(Entitlement.product_id))
        .join(Licence, col(Licence.id) == col(Product.licence_id))
        .join(DataResource, col(DataResource.id) == col(Product.resource_id))
        .outerjoin(
            ResourceVersion,
            and_(
                col(ResourceVersion.resource_id) == col(DataResource.id),
                col(ResourceVersion.version) == col(DataResource.current_version),
            ),
        )
        .outerjoin(
            UsageCounter,
            and_(
                col(UsageCounter.entitlement_id) == col(Entitlement.id),
                col(UsageCounter.month) == bindparam("month", type_=String),
            ),
        )
    )


def _by_buyer_and_product() -> Any:
    # The entitlement that is still running first, then the latest: what the buyer would expect to be told about.
    return (
        _state_query()
        .where(
            col(Entitlement.buyer_org_id) == bindparam("org", type_=_UUID_TYPE),
            col(Entitlement.product_id) == bindparam("product", type_=_UUID_TYPE),
        )
        .order_by(col(Entitlement.ended_at).is_(None).desc(), col(Entitlement.valid_until).desc())
        .limit(1)
    )


_BY_BUYER = _by_buyer_and_product()
#: On PostgreSQL the row also says when it was read (the database's clock), so that it may be kept under the
#: process's access lease (``access_lease``).
_BY_BUYER_READ_AT = _by_buyer_and_product().add_columns(func.statement_timestamp().label("read_at"))
_BY_ENTITLEMENT = _state_query().where(col(Entitlement.id) == bindparam("entitlement", type_=_UUID_TYPE))


# --- evaluation ------------------------------------------------------------------------------------------------------------


def _as_utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _forbidden(code: str, detail: str, **extra: Any) -> Forbidden:
    return Forbidden(detail, code=code, **extra)


def state_refusal(row: Any, mode: DeliveryMode, now: datetime) -> DomainError | None:
    """Why the state in ``row`` refuses a call of ``mode`` at ``now`` (None: it allows it)."""
    # Statuses are compared as the text they are stored as (the enums are StrEnums): this runs on every delivery
    # call, and an unknown value refuses instead of failing.
    today: date = now.date()
    status = row.licence_status
    if status == LicenceStatus.suspended:
        return _forbidden("licence_suspended", f"Licence {row.licence_number} is suspended: no data is delivered under it.")
    if status == LicenceStatus.revoked:
        return _forbidden("licence_revoked", f"Licence {row.licence_number} was revoked: no data is delivered under it.")
    if status == LicenceStatus.expired or (status == LicenceStatus.granted and today > row.ends_on):
        return _forbidden("licence_expired", f"Licence {row.licence_number} has expired (its term ended {row.ends_on}).")
    if status != LicenceStatus.granted or today < row.starts_on:
        return _forbidden("licence_not_in_force", f"Licence {row.licence_number} is not in force.")
    if row.product_status != ProductStatus.listed:
        return _forbidden("product_delisted", f"The product is {row.product_status}, not listed.")
    subscription_status = row.subscription_status
    if row.ended_at is not None or (
        subscription_status != SubscriptionStatus.active and subscription_status != SubscriptionStatus.past_due
    ):
        ended_reason = row.ended_reason or str(subscription_status)
        if ended_reason == SubscriptionStatus.expired:
            return _forbidden(
                "entitlement_expired", "The entitlement has expired.", valid_until=_as_utc(row.valid_until).isoformat()
            )
        reason = row.status_reason or ended_reason
        return _forbidden(
            "entitlement_ended",
            f"The entitlement ended ({ended_reason}): {reason}",
            ended_reason=ended_reason,
            reason=reason,
        )
    if _as_utc(row.valid_until) <= now:
        if subscription_status == SubscriptionStatus.past_due:  # its grace period is over
            return _forbidden("subscription_past_due", "The subscription is past due: pay the open invoice to resume deliveries.")
        return _forbidden("entitlement_expired", "The entitlement has expired.", valid_until=_as_utc(row.valid_until).isoformat())
    if _as_utc(row.valid_from) > now:
        return _forbidden("not_entitled", "The entitlement has not started yet.")
    if row.entitlement_mode != mode:
        return _forbidden(
            "mode_not_entitled",
            f"The entitlement is for {row.entitlement_mode} delivery, not {mode.value}.",
            entitled_mode=str(row.entitlement_mode),
        )
    if mode.value not in _licensed_modes(row.modes_json):
        return _forbidden("mode_not_entitled", f"The licence no longer permits {mode.value} delivery.")
    return None


@functools.lru_cache(maxsize=4096)
def _licensed_modes(modes_json: str) -> frozenset[str]:
    return frozenset(json.loads(modes_json))


@functools.lru_cache(maxsize=4096)
def _contents_path(data_dir: Path, location: str) -> Path | None:
    """A stored content location resolved under the data folder, or None when it points outside (a version's
    location never changes, so resolving it once per process is enough: resolving costs file-system calls)."""
    root = data_dir.resolve()
    path = (root / location).resolve()
    return path if path.is_relative_to(root) else None


def projection_spec(data_dir: Path, row: Any, key_digest: str) -> ProjectionSpec:
    """The projection a state row delivers from the contents under ``data_dir`` (``Settings.resolved_data_dir``;
    pass the same object every time: it is part of a cache key), 409 ``contents_unavailable`` when the resource has
    no contents."""
    if row.location is None:
        raise Conflict("The product's resource has no contents yet.", code="contents_unavailable")
    spec = _projection_spec(
        data_dir,
        _as_uuid(row.product_id),
        row.location,
        row.content_hash,
        row.fields_json,
        row.rules_json,
        key_digest,
    )
    if spec is None:
        raise Conflict("The product's contents are not available.", code="contents_unavailable")
    return spec


@functools.lru_cache(maxsize=4096)
def _projection_spec(
    data_dir: Path, product_id: uuid.UUID, location: str, content_hash: str, fields_json: str, rules_json: str, key_digest: str
) -> ProjectionSpec | None:
    # The same inputs always make the same spec (and its cache key, a hash, is worked out once).
    path = _contents_path(data_dir, location)
    if path is None:
        return None
    return ProjectionSpec(
        product_id=product_id,
        parquet_path=path,
        content_hash=content_hash,
        masking=parse_masking(fields_json, rules_json),
        key_digest=key_digest,
    )


@functools.lru_cache(maxsize=4096)
def _entitled_fields(fields_json: str, rules_json: str, entitled_json: str) -> tuple[str, ...]:
    return entitled_columns(parse_masking(fields_json, rules_json), json.loads(entitled_json))


def seconds_to_next_month(now: datetime) -> int:
    """Seconds until the first moment of the next month (UTC): when a monthly quota starts again."""
    first = (now.replace(day=1, hour=0, minute=0, second=0, microsecond=0) + timedelta(days=32)).replace(day=1)
    return max(1, math.ceil((first - now).total_seconds()))


def rate_key(principal: Principal) -> str:
    """The rate-limit bucket of a caller: its API client, or the person."""
    return f"delivery:client:{principal.client_id}" if principal.client_id else f"delivery:user:{principal.user_id}"


# --- the check ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Compiled:
    sql: str
    parameters: tuple[str, ...]
    columns: tuple[str, ...]
    #: values of the statement's own parameters (its LIMIT)
    defaults: dict[str, Any]

    def first_row(self, rows: list[Any]) -> Any:
        """The first row as a namespace of the statement's column names, values typed (None: no row)."""
        if not rows:
            return None
        return SimpleNamespace(**{name: _value(name, value) for name, value in zip(self.columns, tuple(rows[0]), strict=True)})

    def first_native_row(self, rows: list[Any]) -> Any:
        """``first_row`` for a driver that types values itself (asyncpg: UUIDs, dates and moments as such)."""
        if not rows:
            return None
        return SimpleNamespace(**dict(zip(self.columns, tuple(rows[0]), strict=True)))


_COMPILED: dict[tuple[int, str, str], _Compiled] = {}
_UUIDS = frozenset(
    {"entitlement_id", "subscription_id", "buyer_org_id", "product_id", "operator_id", "licence_id", "owner_org_id"}
)
_MOMENTS = frozenset({"valid_from", "valid_until", "ended_at"})
_DAYS = frozenset({"starts_on", "ends_on"})


def _compiled(statement: Any, dialect: Any) -> _Compiled:
    key = (id(statement), dialect.name, dialect.paramstyle)
    found = _COMPILED.get(key)
    if found is None:
        compiled = statement.compile(dialect=dialect)
        found = _COMPILED[key] = _Compiled(
            sql=str(compiled),
            parameters=tuple(compiled.positiontup or ()),
            columns=tuple(statement.selected_columns.keys()),
            defaults={k: v for k, v in compiled.params.items() if v is not None},
        )
    return found


def _value(name: str, value: Any) -> Any:
    if value is None or not isinstance(value, str):
        return value
    if name in _UUIDS:
        return uuid.UUID(value)
    if name in _MOMENTS:
        return _as_utc(datetime.fromisoformat(value))
    if name in _DAYS:
        return date.fromisoformat(value)
    return value


async def _read_one(session: AsyncSession, statement: Any, params: dict[str, Any]) -> Any:
    """One state row, straight through the driver: one hop to aiosqlite's thread or one asyncpg prepared statement
    (this read is on every delivery call), as a namespace of the statement's column names."""
    connection = await session.connection()
    compiled = _compiled(statement, connection.dialect)
    raw = await connection.get_raw_connection()
    driver: Any = raw.driver_connection
    bound = {**compiled.defaults, **params}
    if connection.dialect.name == "sqlite":
        values = [v.hex if isinstance(v, uuid.UUID) else v for v in (bound[n] for n in compiled.parameters)]
        rows = list(await driver.execute_fetchall(compiled.sql, values))
    elif connection.dialect.driver == "asyncpg":
        rows = list(await driver.fetch(compiled.sql, *(bound[n] for n in compiled.parameters)))
    else:  # pragma: no cover - the two supported drivers are above
        rows = list((await connection.execute(statement, params)).all())
    return compiled.first_row(rows)


async def read_state(reader: StateReader, org_id: uuid.UUID, product_id: uuid.UUID, month: str) -> Any:
    """The current state row of the org's entitlement to the product (None when it has none), read on delivery's
    own connection (committed state, no transaction held)."""
    if reader.dialect_name == "sqlite":
        compiled = _compiled(_BY_BUYER, reader.dialect)
        shape = compiled.first_row
    else:
        compiled = _compiled(_BY_BUYER_READ_AT, reader.dialect)
        shape = compiled.first_native_row
    bound = {**compiled.defaults, "org": org_id, "product": product_id, "month": month}
    return await reader.fetch(compiled.sql, [bound[n] for n in compiled.parameters], shape, keep=_keepable)


def _keepable(row: Any) -> bool:
    # An entitlement with a quota is checked against counters that change at every call: never kept.
    return row is not None and row.quota_calls is None and row.quota_rows is None


async def read_entitlement_state(session: AsyncSession, entitlement_id: uuid.UUID, month: str) -> Any:
    """The current state row of one entitlement (None when unknown)."""
    return await _read_one(session, _BY_ENTITLEMENT, {"entitlement": entitlement_id, "month": month})


def _refuse(
    meter: Meter,
    principal: Principal,
    product_id: uuid.UUID,
    mode: DeliveryMode,
    error: DomainError,
    row: Any = None,
) -> DomainError:
    entitlement_id = _as_uuid(row.entitlement_id) if row is not None else None
    orgs: tuple[uuid.UUID, ...] = (principal.org_id,)
    subjects = {"product": str(product_id)}
    if row is not None:
        orgs = (principal.org_id, _as_uuid(row.operator_id), _as_uuid(row.owner_org_id))
        subjects.update(
            entitlement=str(entitlement_id),
            subscription=str(_as_uuid(row.subscription_id)),
            licence=str(_as_uuid(row.licence_id)),
        )
    meter.refuse(
        RefusalKey(principal.org_id, product_id, entitlement_id, error.code, mode),
        Actor.of(principal),
        orgs=orgs,
        subjects=subjects,
    )
    return error


def _as_uuid(value: Any) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))


async def check_access(
    runtime: DeliveryRuntime,
    principal: Principal,
    product_id: uuid.UUID,
    mode: DeliveryMode,
    *,
    rows_wanted: int = 0,
) -> Grant:
    """Check a delivery call of ``mode`` on ``product_id`` by ``principal`` and reserve it in the quota.

    Raises the refusal (see the module docstring), counted by the meter. On success the call (one call, and up
    to ``rows_wanted`` rows, clamped to the rows left) is reserved in the meter: the caller must then
    ``meter.record`` the delivery or ``meter.release`` the reservation.
    """
    settings = runtime.settings
    meter = runtime.meter
    decision = await runtime.limiter.take(
        rate_key(principal), rate_per_s=settings.delivery_rate_per_second, burst=settings.delivery_burst
    )
    if not decision.allowed:
        raise _refuse(
            meter,
            principal,
            product_id,
            mode,
            TooManyRequests(
                f"Too many delivery calls: at most {settings.delivery_rate_per_second:g} a second "
                f"(bursts of {settings.delivery_burst}).",
                code="rate_limited",
                retry_after=max(1, math.ceil(decision.retry_after_s)),
            ),
        )
    now = utcnow()
    month = month_of(now)
    while True:
        epoch = meter.epoch
        row = await read_state(runtime.state_reader, principal.org_id, product_id, month)
        if meter.stable(epoch) or row is None or (row.quota_calls is None and row.quota_rows is None):
            break
        await meter.settled()
    if row is None:
        raise _refuse(
            meter,
            principal,
            product_id,
            mode,
            _forbidden("not_entitled", "Your organisation has no entitlement to this product."),
        )
    refusal = state_refusal(row, mode, now)
    if refusal is not None:
        raise _refuse(meter, principal, product_id, mode, refusal, row)
    entitlement_id = _as_uuid(row.entitlement_id)
    pending = meter.pending(entitlement_id, month)
    used_calls = int(row.used_calls or 0) + pending.calls + int(row.open_exports or 0)
    used_rows = int(row.used_rows or 0) + pending.rows
    quota = _quota_refusal(row.quota_calls, row.quota_rows, used_calls, used_rows, now)
    if quota is not None:
        raise _refuse(meter, principal, product_id, mode, quota, row)
    grant = Grant(
        entitlement_id=entitlement_id,
        subscription_id=_as_uuid(row.subscription_id),
        buyer_org_id=principal.org_id,
        operator_id=_as_uuid(row.operator_id),
        owner_org_id=_as_uuid(row.owner_org_id),
        product_id=product_id,
        licence_id=_as_uuid(row.licence_id),
        product_name=row.product_name,
        mode=mode,
        fields=_entitled_fields(row.fields_json, row.rules_json, row.entitled_json),
        spec=projection_spec(runtime.data_dir, row, runtime.pseudonym_key_digest),
        min_k=int(row.min_k),
        quota_calls=row.quota_calls,
        quota_rows=row.quota_rows,
        used_calls=used_calls,
        used_rows=used_rows,
        month=month,
        actor=Actor.of(principal),
        client_id=principal.client_id,
    )
    meter.reserve(
        entitlement_id, month, calls=1, rows=min(rows_wanted, grant.rows_left if grant.rows_left is not None else rows_wanted)
    )
    return grant


def _quota_refusal(
    quota_calls: int | None, quota_rows: int | None, used_calls: int, used_rows: int, now: datetime
) -> DomainError | None:
    if quota_calls is not None and used_calls >= quota_calls:
        return TooManyRequests(
            f"The entitlement's {quota_calls} calls for this month are used up.",
            code="quota_exceeded",
            retry_after=seconds_to_next_month(now),
        )
    if quota_rows is not None and used_rows >= quota_rows:
        return TooManyRequests(
            f"The entitlement's {quota_rows} rows for this month are used up.",
            code="quota_exceeded",
            retry_after=seconds_to_next_month(now),
        )
    return None


def record_refusal(runtime: DeliveryRuntime, principal: Principal, grant: Grant, error: DomainError) -> None:
    """Count a refusal after the access check passed (e.g. a sandbox query the guard refused)."""
    runtime.meter.refuse(
        RefusalKey(principal.org_id, grant.product_id, grant.entitlement_id, error.code, grant.mode),
        Actor.of(principal),
        orgs=(grant.buyer_org_id, grant.operator_id, grant.owner_org_id),
        subjects={
            "product": str(grant.product_id),
            "entitlement": str(grant.entitlement_id),
            "subscription": str(grant.subscription_id),
            "licence": str(grant.licence_id),
        },
    )


def usage_left(grant: Grant) -> dict[str, int | None]:
    """What is left of the month's quota after this call."""
    return {
        "calls": None if grant.quota_calls is None else max(grant.quota_calls - grant.used_calls - 1, 0),
        "rows": grant.rows_left,
    }


__all__: Sequence[str] = (
    "STATE_CODES",
    "Grant",
    "check_access",
    "projection_spec",
    "read_entitlement_state",
    "read_state",
    "record_refusal",
    "seconds_to_next_month",
    "state_refusal",
)
