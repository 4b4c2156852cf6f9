"""File delivery: exports built by a task, fingerprinted per subscription, downloaded through a signed link.

``request_export`` checks access (file mode) and the filters, writes an ``Export`` in ``queued`` and publishes
``export.requested``; the route queues ``build_export_task`` once that has committed. ``build_export`` re-checks the
entitlement's current state, writes the masked projection (the entitled fields, filtered) with
``fingerprint.write_fingerprinted_export`` for the subscription, stores rows, bytes, SHA-256 and the fingerprint
token, and meters it (one call, its rows) in the same transaction as ``export.ready``.

A download link is ``/data/v1/exports/{id}/download?expires=<unix time>&signature=<hex>``, the signature an HMAC
over the export id and the expiry with a key derived from the secret key; it works for
``settings.export_link_ttl_seconds``. The link is the credential (no token), but the download still re-checks the
entitlement's state: a suspended licence stops downloads too.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from licensing.models import DeliveryMode, Licence
from licensing.privacy import projection_query, pseudonym_key, quote_identifier
from marketplace.catalog.models import Product
from marketplace.core.errors import DomainError, Forbidden, NotFound
from marketplace.core.events import Actor, DomainEvent, publish
from marketplace.core.fingerprint import metadata_token, write_fingerprinted_export
from marketplace.core.keys import derived_key, fingerprint_key
from marketplace.core.principal import OrgKind, Principal
from marketplace.core.settings import Settings
from marketplace.core.types import utcnow
from marketplace.delivery.models import Export, ExportFormat, ExportStatus
from marketplace.delivery.schemas import ExportCreate, ExportView
from marketplace.delivery.services.access import (
    check_access,
    projection_spec,
    read_entitlement_state,
    state_refusal,
)
from marketplace.delivery.services.metering import MeteredDelivery, month_of, record_deliveries_now
from marketplace.delivery.services.projections import ProjectionSpec, entitled_columns, key_digest, parse_masking
from marketplace.delivery.services.rows import parse_filters
from marketplace.delivery.services.runtime import DeliveryRuntime

log = logging.getLogger(__name__)

#: How long a built export file is kept (its links are much shorter-lived).
RETENTION = timedelta(days=7)
MEDIA_TYPES = {ExportFormat.csv: "text/csv; charset=utf-8", ExportFormat.parquet: "application/vnd.apache.parquet"}
DOWNLOAD_PATH = "/data/v1/exports/{export_id}/download"


# --- signed links ----------------------------------------------------------------------------------------------------------


def link_key(settings: Settings) -> bytes:
    """The key signing download links."""
    return derived_key(settings, "export-link")


def _signature(key: bytes, export_id: uuid.UUID, expires: int) -> str:
    return hmac.new(key, f"{export_id}.{expires}".encode(), hashlib.sha256).hexdigest()


def signed_link(settings: Settings, export_id: uuid.UUID, *, now: float | None = None) -> tuple[str, datetime]:
    """A download link of the export and when it stops working."""
    expires = int(now if now is not None else time.time()) + settings.export_link_ttl_seconds
    signature = _signature(link_key(settings), export_id, expires)
    url = DOWNLOAD_PATH.format(export_id=export_id) + f"?expires={expires}&signature={signature}"
    return url, datetime.fromtimestamp(expires, UTC)


def verify_link(settings: Settings, export_id: uuid.UUID, expires: str | None, signature: str | None) -> None:
    """403 ``link_invalid`` when the link was altered, 403 ``link_expired`` when it is past its time."""
    try:
        moment = int(expires or "")
    except ValueError:
        raise Forbidden("The download link is not valid.", code="link_invalid") from None
    expected = _signature(link_key(settings), export_id, moment)
    if not signature or not hmac.compare_digest(expected, signature):
        raise Forbidden("The download link is not valid.", code="link_invalid")
    if moment < time.time():
        raise Forbidden("The download link has expired: ask for the export again to get a new one.", code="link_expired")


# --- views and reads ---------------------------------------------------------------------------------------------------------


def export_view(settings: Settings, export: Export) -> ExportView:
    """The export as answered, with a fresh signed link when it is ready."""
    url, until = (None, None)
    if export.status is ExportStatus.ready:
        url, until = signed_link(settings, export.id)
    return ExportView(
        id=export.id,
        product_id=export.product_id,
        subscription_id=export.subscription_id,
        format=export.format,
        status=export.status,
        filters=json.loads(export.filters_json),
        rows=export.rows,
        bytes=export.bytes,
        sha256=export.sha256,
        fingerprint=export.fingerprint,
        error=export.error,
        created_at=export.created_at,
        finished_at=export.finished_at,
        download_url=url,
        link_expires_at=until,
    )


def _scoped(principal: Principal) -> Any:
    statement = select(Export)
    if principal.org_kind is OrgKind.buyer:
        return statement.where(col(Export.buyer_org_id) == principal.org_id)
    if principal.org_kind is OrgKind.operator:
        return statement.join(Product, col(Product.id) == col(Export.product_id)).where(
            col(Product.operator_id) == principal.org_id
        )
    if principal.org_kind is OrgKind.owner:
        return (
            statement.join(Product, col(Product.id) == col(Export.product_id))
            .join(Licence, col(Licence.id) == col(Product.licence_id))
            .where(col(Licence.owner_org_id) == principal.org_id)
        )
    return statement  # regulator, auditor: everything (read-only)


async def list_exports(session: AsyncSession, principal: Principal, *, limit: int = 100) -> list[Export]:
    """Exports the caller may see, newest first: a buyer its own, an operator those of its products, the owner those
    under its licences, regulators and auditors all."""
    statement = _scoped(principal).order_by(col(Export.created_at).desc()).limit(limit)
    return list((await session.exec(statement)).all())


async def get_export(session: AsyncSession, principal: Principal, export_id: uuid.UUID) -> Export:
    """One export the caller may see (404 ``export_not_found`` otherwise: another buyer's is not revealed)."""
    found = (await session.exec(_scoped(principal).where(col(Export.id) == export_id))).first()
    if found is None:
        raise NotFound("No such export.", code="export_not_found")
    return found  # type: ignore[no-any-return]


# --- requesting ---------------------------------------------------------------------------------------------------------------


def _requested_by(principal: Principal) -> str:
    return f"client:{principal.client_id}" if principal.client_id else f"user:{principal.user_id}"


def _actor_of(requested_by: str | None) -> Actor:
    kind, _, ident = (requested_by or "").partition(":")
    return Actor(kind, ident) if kind in ("client", "user") and ident else Actor("system", "platform")


async def request_export(
    session: AsyncSession, runtime: DeliveryRuntime, principal: Principal, product_id: uuid.UUID, data: ExportCreate
) -> Export:
    """Queue an export of the product (file mode) for the caller; the caller queues ``build_export_task`` after commit."""
    grant = await check_access(runtime, principal, product_id, DeliveryMode.file)
    try:
        filters = parse_filters(grant.fields, grant.spec.masking, dict(data.filters))
        export = Export(
            entitlement_id=grant.entitlement_id,
            subscription_id=grant.subscription_id,
            buyer_org_id=grant.buyer_org_id,
            product_id=grant.product_id,
            format=data.format,
            filters_json=json.dumps({name: _plain(value) for name, value in filters}),
            requested_by=_requested_by(principal),
        )
        session.add(export)
        await session.flush()
        await publish(
            session,
            DomainEvent(
                "export.requested",
                grant.actor,
                orgs=(grant.buyer_org_id, grant.operator_id, grant.owner_org_id),
                subjects={
                    "export": str(export.id),
                    "entitlement": str(grant.entitlement_id),
                    "subscription": str(grant.subscription_id),
                    "product": str(grant.product_id),
                },
                payload={"format": data.format.value, "filter_fields": sorted(name for name, _ in filters)},
            ),
        )
        await session.commit()
    finally:
        # From now on the queued export counts as a call (the access check counts open exports).
        runtime.meter.release(grant.entitlement_id, grant.month)
    return export


def _plain(value: Any) -> Any:
    return value if isinstance(value, str | int | float | bool) else str(value)


# --- building (the task) --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BuiltFile:
    """What was written: rows, bytes and SHA-256 of the file."""

    rows: int
    bytes: int
    sha256: str


def write_export_file(
    spec: ProjectionSpec,
    key: bytes,
    fields: tuple[str, ...],
    filters: tuple[tuple[str, Any], ...],
    fmt: ExportFormat,
    out_path: Path,
    subscription_id: uuid.UUID,
    fingerprinting_key: bytes,
) -> BuiltFile:
    """Write the masked projection's ``fields`` (filtered) to ``out_path``, fingerprinted for the subscription."""
    query = projection_query(spec.parquet_path, spec.masking.fields, spec.masking.rules, key)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    columns = ", ".join(quote_identifier(f) for f in fields)
    where = " AND ".join(f"{quote_identifier(name)} = ?" for name, _ in filters) or "TRUE"
    with duckdb.connect() as con:
        con.execute(f"CREATE TEMP TABLE projection AS {query.sql}", query.parameters)
        con.execute(
            f"CREATE TEMP TABLE selection AS SELECT {columns} FROM projection WHERE {where}",  # noqa: S608 - quoted identifiers
            [value for _, value in filters],
        )
        (rows,) = con.execute("SELECT count(*) FROM selection").fetchone() or (0,)
        write_fingerprinted_export(
            "SELECT * FROM selection", out_path, fmt.value, str(subscription_id), fingerprinting_key, con=con
        )  # type: ignore[arg-type]
    payload = out_path.read_bytes()
    return BuiltFile(rows=int(rows), bytes=len(payload), sha256=hashlib.sha256(payload).hexdigest())


async def _fail(session: AsyncSession, export: Export, code: str, detail: str, orgs: tuple[uuid.UUID, ...]) -> Export:
    export_id = export.id
    await session.rollback()
    fresh = await session.get(Export, export_id)
    assert fresh is not None
    fresh.status = ExportStatus.failed
    fresh.error = f"{code}: {detail}"[:500]
    fresh.finished_at = utcnow()
    session.add(fresh)
    await publish(
        session,
        DomainEvent(
            "export.failed",
            _actor_of(fresh.requested_by),
            orgs=orgs,
            subjects={"export": str(fresh.id), "entitlement": str(fresh.entitlement_id), "product": str(fresh.product_id)},
            payload={"code": code},
        ),
    )
    await session.commit()
    return fresh


async def build_export(session: AsyncSession, settings: Settings, export_id: uuid.UUID) -> Export | None:
    """Build a queued export (idempotent: an export already running, ready or failed is left as it is)."""
    export = await session.get(Export, export_id)
    if export is None or export.status is not ExportStatus.queued:
        return export
    export.status = ExportStatus.running
    session.add(export)
    await session.commit()
    now = utcnow()
    row = await read_entitlement_state(session, export.entitlement_id, month_of(now))
    if row is None:
        return await _fail(session, export, "not_entitled", "The entitlement is gone.", (export.buyer_org_id,))
    orgs = (export.buyer_org_id, row.operator_id, row.owner_org_id)
    refusal: DomainError | None = state_refusal(row, DeliveryMode.file, now)
    if refusal is not None:
        return await _fail(session, export, refusal.code, refusal.detail, orgs)
    key = pseudonym_key(settings)
    try:
        spec = projection_spec(settings.resolved_data_dir, row, key_digest(key))
        masking = parse_masking(row.fields_json, row.rules_json)
        fields = entitled_columns(masking, json.loads(row.entitled_json))
        filters = parse_filters(fields, masking, json.loads(export.filters_json))
        location = f"exports/{export.id}.{export.format.value}"
        target = settings.resolved_data_dir / location
        built = await asyncio.to_thread(
            write_export_file,
            spec,
            key,
            fields,
            filters,
            export.format,
            target,
            export.subscription_id,
            fingerprint_key(settings),
        )
    except DomainError as error:
        return await _fail(session, export, error.code, error.detail, orgs)
    except Exception:
        log.exception("export %s failed", export.id)
        return await _fail(session, export, "export_failed", "The export could not be built.", orgs)
    used_rows = int(row.used_rows or 0)
    if row.quota_rows is not None and used_rows + built.rows > row.quota_rows:
        target.unlink(missing_ok=True)
        return await _fail(
            session,
            export,
            "quota_exceeded",
            f"The export holds {built.rows} rows; {row.quota_rows - used_rows} are left this month.",
            orgs,
        )
    finished = utcnow()
    export.status = ExportStatus.ready
    export.rows = built.rows
    export.bytes = built.bytes
    export.sha256 = built.sha256
    export.fingerprint = metadata_token(fingerprint_key(settings), str(export.subscription_id))
    export.location = location
    export.finished_at = finished
    export.expires_at = finished + RETENTION
    session.add(export)
    actor = _actor_of(export.requested_by)
    await publish(
        session,
        DomainEvent(
            "export.ready",
            actor,
            orgs=orgs,
            subjects={
                "export": str(export.id),
                "entitlement": str(export.entitlement_id),
                "subscription": str(export.subscription_id),
                "product": str(export.product_id),
            },
            payload={"format": export.format.value, "rows": built.rows, "bytes": built.bytes, "sha256": built.sha256},
        ),
    )
    await record_deliveries_now(
        session,
        [
            MeteredDelivery(
                entitlement_id=export.entitlement_id,
                subscription_id=export.subscription_id,
                buyer_org_id=export.buyer_org_id,
                operator_id=row.operator_id,
                owner_org_id=row.owner_org_id,
                product_id=export.product_id,
                licence_id=row.licence_id,
                mode=DeliveryMode.file,
                rows=built.rows,
                bytes=built.bytes,
                actor=actor,
                client_id=actor.id if actor.kind == "client" else None,
                occurred_at=finished,
                details={"export": str(export.id), "format": export.format.value},
            )
        ],
    )
    await session.commit()
    return export


# --- downloading ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Download:
    """The file behind a valid link."""

    path: Path
    filename: str
    media_type: str


async def open_download(
    session: AsyncSession, settings: Settings, export_id: uuid.UUID, expires: str | None, signature: str | None
) -> Download:
    """The file of a ready export for a valid signed link, if the entitlement still allows file delivery."""
    verify_link(settings, export_id, expires, signature)
    export = await session.get(Export, export_id)
    if export is None or export.status is not ExportStatus.ready or export.location is None:
        raise NotFound("No such export, or it is not ready.", code="export_not_found")
    now = utcnow()
    if export.expires_at is not None and export.expires_at <= now:
        raise NotFound("The export was removed: ask for it again.", code="export_not_found")
    row = await read_entitlement_state(session, export.entitlement_id, month_of(now))
    refusal = state_refusal(row, DeliveryMode.file, now) if row is not None else Forbidden("Not entitled.", code="not_entitled")
    if refusal is not None:
        raise refusal
    path = settings.resolved_data_dir / export.location
    if not path.is_file():
        raise NotFound("The export file is gone: ask for it again.", code="export_not_found")
    return Download(path=path, filename=f"export-{export.id}.{export.format.value}", media_type=MEDIA_TYPES[export.format])


__all__ = [
    "build_export",
    "export_view",
    "get_export",
    "list_exports",
    "open_download",
    "request_export",
    "signed_link",
    "verify_link",
]
