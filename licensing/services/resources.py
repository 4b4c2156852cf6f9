"""Departments and data resources: registration, descriptions, and versions of their contents.

The only place that writes these records. Who sees what: the owner its own; an operator only the resources
its granted or suspended licences cover (read-only); regulators and auditors everything (read-only); buyers
nothing. Every change publishes a domain event (metadata only: ids, counts, content hashes) in its transaction.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import anyio.to_thread
from sqlalchemy import func
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession
from sqlmodel.sql.expression import SelectOfScalar

from licensing import auditing
from licensing.contents import SourceFormat, StoredContents, store_contents
from licensing.models import DataResource, Department, Licence, LicenceResource, LicenceStatus, ResourceVersion
from licensing.schemas import DepartmentCreate, FieldSpec, ResourceCreate, ResourceUpdate
from licensing.storage import ContentStore, version_location
from marketplace.core.errors import Conflict, DomainError, Forbidden, InvalidInput, NotFound
from marketplace.core.events import Actor, DomainEvent, publish
from marketplace.core.principal import OrgKind, Principal
from marketplace.core.types import utcnow

T = TypeVar("T")

#: Licence states in which an operator still sees the resources the licence covers.
OPERATOR_SEES = (LicenceStatus.granted, LicenceStatus.suspended)
#: Licence states that block reclassifying a resource (the licence's terms were decided on its grade).
LIVE_LICENCE = (LicenceStatus.draft, LicenceStatus.granted, LicenceStatus.suspended)
#: Receives the upload into the given file (the caller's transport: an HTTP body, a file on disk).
Receive = Callable[[Path], Awaitable[None]]


class UploadTooLarge(DomainError):
    """The upload is larger than the platform accepts (``max_upload_bytes``)."""

    status, code, title = 413, "payload_too_large", "Upload too large"


# --- tenancy --------------------------------------------------------------------------------------


def _refuse_buyers(principal: Principal) -> None:
    if principal.org_kind is OrgKind.buyer:
        raise Forbidden("Buyers see no licensing records.", code="party_not_allowed")


def _require_owner(principal: Principal) -> None:
    if principal.org_kind is not OrgKind.owner or principal.is_program:
        raise Forbidden("Only the owner's people manage departments and data resources.", code="party_not_allowed")


def licensed_resource_ids(operator_id: uuid.UUID) -> SelectOfScalar[uuid.UUID]:
    """Ids of the resources covered by the operator's granted or suspended licences."""
    return (
        select(LicenceResource.resource_id)
        .join(Licence, col(Licence.id) == col(LicenceResource.licence_id))
        .where(Licence.operator_id == operator_id, col(Licence.status).in_(OPERATOR_SEES))
    )


def scope_resources(stmt: SelectOfScalar[T], principal: Principal) -> SelectOfScalar[T]:
    """Limit a query over ``DataResource`` to what the caller may see (buyers: Forbidden)."""
    _refuse_buyers(principal)
    if principal.org_kind is OrgKind.owner:
        return stmt.where(DataResource.owner_org_id == principal.org_id)
    if principal.org_kind is OrgKind.operator:
        return stmt.where(col(DataResource.id).in_(licensed_resource_ids(principal.org_id)))
    if auditing.is_auditor(principal):  # the resources named by the licences its engagements in force cover
        return stmt.where(col(DataResource.id).in_(auditing.covered_resource_ids(principal)))
    return stmt  # regulators read everything


def scope_departments(stmt: SelectOfScalar[T], principal: Principal) -> SelectOfScalar[T]:
    """Limit a query over ``Department``: the owner's own; an operator's, those holding its licensed resources."""
    _refuse_buyers(principal)
    if principal.org_kind is OrgKind.owner:
        return stmt.where(Department.owner_org_id == principal.org_id)
    if principal.org_kind is OrgKind.operator:
        holding = select(DataResource.department_id).where(col(DataResource.id).in_(licensed_resource_ids(principal.org_id)))
        return stmt.where(col(Department.id).in_(holding))
    if auditing.is_auditor(principal):
        covered = select(DataResource.department_id).where(col(DataResource.id).in_(auditing.covered_resource_ids(principal)))
        return stmt.where(col(Department.id).in_(covered))
    return stmt


# --- departments ----------------------------------------------------------------------------------


async def create_department(session: AsyncSession, principal: Principal, data: DepartmentCreate) -> Department:
    """The owner adds a department (codes are unique per owner)."""
    _require_owner(principal)
    taken = await session.exec(
        select(Department.id).where(Department.owner_org_id == principal.org_id, Department.code == data.code)
    )
    if taken.first() is not None:
        raise Conflict(f"A department with code '{data.code}' exists already.", code="department_code_taken")
    department = Department(owner_org_id=principal.org_id, code=data.code, name=data.name, name_zh=data.name_zh)
    await _insert(
        session, department, Conflict(f"A department with code '{data.code}' exists already.", code="department_code_taken")
    )
    await publish(
        session,
        DomainEvent(
            "department.created",
            Actor.of(principal),
            orgs=(principal.org_id,),
            subjects={"department": str(department.id)},
            payload={"code": department.code},
        ),
    )
    await session.commit()
    return department


async def list_departments(session: AsyncSession, principal: Principal) -> list[Department]:
    """The departments the caller may see, by code."""
    await auditing.require_engagement(session, principal, "/api/licensing/departments")
    stmt = scope_departments(select(Department), principal)
    return list((await session.exec(stmt.order_by(col(Department.code)))).all())


# --- resources ------------------------------------------------------------------------------------


def fields_of(resource: DataResource) -> list[FieldSpec]:
    """A resource's fields (its schema), in order."""
    return [FieldSpec.model_validate(item) for item in json.loads(resource.fields_json)]


def _fields_json(fields: Sequence[FieldSpec]) -> str:
    names = [f.name for f in fields]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise InvalidInput(f"Field names must be unique; repeated: {', '.join(duplicates)}.", code="duplicate_field_names")
    return json.dumps([f.model_dump(mode="json") for f in fields])


def _schema_summary(fields: Sequence[FieldSpec]) -> list[dict[str, str]]:
    return [{"name": f.name, "type": f.type.value, "tag": f.tag.value} for f in fields]


async def _own_department(session: AsyncSession, principal: Principal, department_id: uuid.UUID) -> Department:
    department = await session.get(Department, department_id)
    if department is None or department.owner_org_id != principal.org_id:
        raise InvalidInput("The department is not one of yours.", code="unknown_department")
    return department


async def _insert(session: AsyncSession, record: Any, conflict: Conflict) -> None:
    session.add(record)
    try:
        await session.flush()
    except IntegrityError:
        await session.rollback()
        raise conflict from None


async def register_resource(session: AsyncSession, principal: Principal, data: ResourceCreate) -> DataResource:
    """The owner registers a data resource for one of its departments (no contents yet: version 0)."""
    _require_owner(principal)
    fields_json = _fields_json(data.fields)
    await _own_department(session, principal, data.department_id)
    conflict = Conflict(f"A resource with code '{data.code}' exists already.", code="resource_code_taken")
    taken = await session.exec(
        select(DataResource.id).where(DataResource.owner_org_id == principal.org_id, DataResource.code == data.code)
    )
    if taken.first() is not None:
        raise conflict
    resource = DataResource(
        owner_org_id=principal.org_id,
        department_id=data.department_id,
        code=data.code,
        title=data.title,
        title_zh=data.title_zh,
        description=data.description,
        description_zh=data.description_zh,
        grade=data.grade,
        update_frequency=data.update_frequency,
        fields_json=fields_json,
        created_by=principal.user_id,
    )
    await _insert(session, resource, conflict)
    await publish(
        session,
        DomainEvent(
            "resource.registered",
            Actor.of(principal),
            orgs=(principal.org_id,),
            subjects={"resource": str(resource.id), "department": str(resource.department_id)},
            payload={
                "code": resource.code,
                "grade": resource.grade.value,
                "update_frequency": resource.update_frequency.value,
                "fields": _schema_summary(data.fields),
            },
        ),
    )
    await session.commit()
    return resource


async def _visible_resource(session: AsyncSession, principal: Principal, resource_id: uuid.UUID) -> DataResource:
    stmt = scope_resources(select(DataResource).where(DataResource.id == resource_id), principal)
    resource = (await session.exec(stmt)).first()
    if resource is None:
        path = auditing.record_path("licensing/resources", resource_id)
        await auditing.refuse_record(session, principal, path, await session.get(DataResource, resource_id) is not None)
        raise NotFound("No such resource.", code="resource_not_found")
    return resource


async def _own_resource(
    session: AsyncSession, principal: Principal, resource_id: uuid.UUID, *, lock: bool = False
) -> DataResource:
    _require_owner(principal)
    stmt = scope_resources(select(DataResource).where(DataResource.id == resource_id), principal)
    if lock:
        stmt = stmt.with_for_update()
    resource = (await session.exec(stmt)).first()
    if resource is None:
        raise NotFound("No such resource.", code="resource_not_found")
    return resource


async def update_resource(
    session: AsyncSession, principal: Principal, resource_id: uuid.UUID, data: ResourceUpdate
) -> DataResource:
    """The owner changes a resource's description, department, grade or update frequency.

    Its fields may change only while no contents were uploaded; its grade only while no licence that is
    not revoked or expired covers it.
    """
    resource = await _own_resource(session, principal, resource_id, lock=True)
    changes = data.model_dump(exclude_unset=True)
    changed: list[str] = []
    payload: dict[str, Any] = {}
    if changes.get("department_id") is not None and changes["department_id"] != resource.department_id:
        await _own_department(session, principal, changes["department_id"])
        resource.department_id = changes["department_id"]
        changed.append("department_id")
    if data.fields is not None:
        fields_json = _fields_json(data.fields)
        if fields_json != resource.fields_json:
            if resource.current_version > 0:
                raise Conflict(
                    "The fields cannot change once contents were uploaded; register a new resource instead.",
                    code="resource_has_contents",
                )
            resource.fields_json = fields_json
            changed.append("fields")
            payload["fields"] = _schema_summary(data.fields)
    if data.grade is not None and data.grade != resource.grade:
        live = await session.exec(
            select(func.count())
            .select_from(LicenceResource)
            .join(Licence, col(Licence.id) == col(LicenceResource.licence_id))
            .where(LicenceResource.resource_id == resource.id, col(Licence.status).in_(LIVE_LICENCE))
        )
        if live.one():
            raise Conflict(
                "The grade cannot change while a licence covers the resource; revoke or let the licence expire first.",
                code="resource_under_licence",
            )
        payload["grade"] = {"from": resource.grade.value, "to": data.grade.value}
        resource.grade = data.grade
        changed.append("grade")
    for name in ("title", "title_zh", "description", "description_zh", "update_frequency"):
        value = changes.get(name)
        if value is not None and value != getattr(resource, name):
            setattr(resource, name, value)
            changed.append(name)
    if not changed:
        return resource
    resource.updated_at = utcnow()
    session.add(resource)
    await publish(
        session,
        DomainEvent(
            "resource.updated",
            Actor.of(principal),
            orgs=(resource.owner_org_id,),
            subjects={"resource": str(resource.id)},
            payload={"changed": changed, **payload},
        ),
    )
    await session.commit()
    return resource


async def upload_version(
    session: AsyncSession,
    principal: Principal,
    resource_id: uuid.UUID,
    *,
    source_format: SourceFormat,
    receive: Receive,
    store: ContentStore,
) -> ResourceVersion:
    """The owner uploads new contents: checked against the fields, stored as Parquet as the next version.

    ``receive(path)`` writes the upload to ``path`` (called only once the caller may upload to this
    resource). Earlier versions are kept. Contents that do not match the fields raise
    ``licensing.contents.ContentsRejected`` and leave nothing behind: no file, no version, no event.
    """
    resource = await _own_resource(session, principal, resource_id)
    fields = fields_of(resource)
    # Nothing is held open while the upload arrives and DuckDB converts it.
    await session.rollback()
    staging = store.staging_folder()
    token = uuid.uuid4().hex
    upload = staging / f"upload-{token}.part"
    converted = staging / f"contents-{token}.parquet"
    try:
        await receive(upload)
        stored: StoredContents = await anyio.to_thread.run_sync(store_contents, upload, source_format, fields, converted)
    except BaseException:
        converted.unlink(missing_ok=True)
        raise
    finally:
        upload.unlink(missing_ok=True)
    try:
        return await _record_version(session, principal, resource_id, fields, source_format, stored, converted, store)
    finally:
        converted.unlink(missing_ok=True)


async def _record_version(
    session: AsyncSession,
    principal: Principal,
    resource_id: uuid.UUID,
    fields: list[FieldSpec],
    source_format: SourceFormat,
    stored: StoredContents,
    converted: Path,
    store: ContentStore,
) -> ResourceVersion:
    # Lock the resource so that two uploads at once get consecutive versions (SQLite serialises writers).
    resource = await _own_resource(session, principal, resource_id, lock=True)
    if fields_of(resource) != fields:
        raise Conflict("The resource's fields changed while the contents were checked; upload again.", code="fields_changed")
    number = resource.current_version + 1
    location = version_location(resource.id, number)
    version = ResourceVersion(
        resource_id=resource.id,
        version=number,
        location=location,
        source_format=source_format,
        row_count=stored.row_count,
        byte_size=stored.byte_size,
        content_hash=stored.content_hash,
        uploaded_by=principal.user_id,
    )
    resource.current_version = number
    resource.updated_at = utcnow()
    session.add(resource)
    await _insert(session, version, Conflict("Another upload took this version; try again.", code="version_taken"))
    await publish(
        session,
        DomainEvent(
            "resource.version_uploaded",
            Actor.of(principal),
            orgs=(resource.owner_org_id,),
            subjects={"resource": str(resource.id), "resource_version": str(version.id)},
            payload={
                "version": number,
                "source_format": source_format,
                "row_count": stored.row_count,
                "byte_size": stored.byte_size,
                "content_hash": stored.content_hash,
            },
        ),
    )
    # The file goes in place before the commit; if the commit fails, it is taken away again.
    store.put(converted, location)
    try:
        await session.commit()
    except BaseException:
        store.delete(location)
        raise
    return version


async def list_resources(
    session: AsyncSession, principal: Principal, *, department_id: uuid.UUID | None = None
) -> list[DataResource]:
    """The resources the caller may see, by code (an auditor without an engagement in force: 403
    ``outside_engagement``, recorded)."""
    await auditing.require_engagement(session, principal, "/api/licensing/resources")
    stmt = scope_resources(select(DataResource), principal)
    if department_id is not None:
        stmt = stmt.where(DataResource.department_id == department_id)
    return list((await session.exec(stmt.order_by(col(DataResource.code), col(DataResource.id)))).all())


async def get_resource(session: AsyncSession, principal: Principal, resource_id: uuid.UUID) -> DataResource:
    """One resource the caller may see (404 otherwise, without saying whether it exists)."""
    return await _visible_resource(session, principal, resource_id)


async def list_versions(session: AsyncSession, principal: Principal, resource_id: uuid.UUID) -> list[ResourceVersion]:
    """Every version of a visible resource's contents, newest first."""
    resource = await _visible_resource(session, principal, resource_id)
    stmt = select(ResourceVersion).where(ResourceVersion.resource_id == resource.id)
    return list((await session.exec(stmt.order_by(col(ResourceVersion.version).desc()))).all())


async def current_version(session: AsyncSession, principal: Principal, resource_id: uuid.UUID) -> ResourceVersion | None:
    """The latest version of a visible resource's contents, or None before the first upload."""
    resource = await _visible_resource(session, principal, resource_id)
    stmt = select(ResourceVersion).where(
        ResourceVersion.resource_id == resource.id, ResourceVersion.version == resource.current_version
    )
    return (await session.exec(stmt)).first()
