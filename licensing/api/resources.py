"""Licensing API: departments, data resources and the versions of their contents."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import anyio
from litestar import Controller, Request, get, patch, post
from litestar.datastructures import State
from litestar.openapi.spec import OpenAPIFormat, OpenAPIMediaType, OpenAPIType, Operation, RequestBody, Schema
from litestar.params import FromPath, FromQuery, JSONBody
from litestar.status_codes import HTTP_201_CREATED

from licensing.contents import SourceFormat
from licensing.models import DataResource, Department, ResourceVersion
from licensing.schemas import (
    DepartmentCreate,
    DepartmentView,
    ResourceCreate,
    ResourceDetail,
    ResourceUpdate,
    ResourceVersionView,
    ResourceView,
)
from licensing.services import resources as services
from licensing.storage import local_store
from marketplace.core.errors import DomainError, InvalidInput
from marketplace.core.http import DbSession, caller, problems, requires_owner, requires_party, requires_person
from marketplace.core.principal import OrgKind
from marketplace.core.schemas import Page

#: Parties that may read resources (each sees its own share; buyers see none).
requires_reader = requires_party(OrgKind.owner, OrgKind.operator, OrgKind.regulator, OrgKind.auditor)
#: Media types an upload may carry, and the format each implies.
UPLOAD_TYPES: dict[str, SourceFormat | None] = {
    "text/csv": "csv",
    "application/csv": "csv",
    "application/vnd.apache.parquet": "parquet",
    "application/x-parquet": "parquet",
    "application/octet-stream": None,
}
WRITE_BUFFER = 1024 * 1024


@dataclass
class UploadOperation(Operation):
    """OpenAPI of the upload route: its body is the raw file (the handler streams it; no body parameter)."""

    def __post_init__(self) -> None:
        binary = OpenAPIMediaType(schema=Schema(type=OpenAPIType.STRING, format=OpenAPIFormat.BINARY))
        self.request_body = RequestBody(
            content=dict.fromkeys(UPLOAD_TYPES, binary),
            description="The CSV or Parquet file itself.",
            required=True,
        )


class UnsupportedUpload(DomainError):
    status, code, title = 415, "unsupported_media_type", "Unsupported media type"


def department_view(department: Department) -> DepartmentView:
    """The API shape of a department."""
    return DepartmentView.model_validate(department, from_attributes=True)


def resource_view(resource: DataResource) -> ResourceView:
    """The API shape of a resource."""
    return ResourceView(**_resource_fields(resource))


def version_view(version: ResourceVersion) -> ResourceVersionView:
    """The API shape of a content version (never its location or rows)."""
    return ResourceVersionView.model_validate(version, from_attributes=True)


def _resource_fields(resource: DataResource) -> dict[str, Any]:
    values = resource.model_dump(exclude={"fields_json", "created_by"})
    return {**values, "fields": services.fields_of(resource)}


def _upload_format(request: Request[Any, Any, Any], requested: SourceFormat | None) -> SourceFormat:
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type not in UPLOAD_TYPES:
        raise UnsupportedUpload(
            "Send the file itself as the body, as text/csv, application/vnd.apache.parquet or application/octet-stream.",
        )
    chosen = requested or UPLOAD_TYPES[media_type]
    if chosen is None:
        raise InvalidInput("Say which format the file is in: ?format=csv or ?format=parquet.", code="format_required")
    return chosen


def _body_receiver(request: Request[Any, Any, Any], limit: int) -> services.Receive:
    """Streams the request body to a file chunk by chunk, refusing more than ``limit`` bytes."""

    def too_large() -> services.UploadTooLarge:
        return services.UploadTooLarge(f"The upload is larger than the limit of {limit} bytes.", limit=limit)

    async def receive(path: Path) -> None:
        announced = request.headers.get("content-length")
        if announced is not None and announced.isdigit() and int(announced) > limit:
            raise too_large()
        received = 0
        buffer = bytearray()
        async with await anyio.open_file(path, "wb") as target:
            async for chunk in request.stream():
                received += len(chunk)
                if received > limit:
                    raise too_large()
                buffer += chunk
                if len(buffer) >= WRITE_BUFFER:
                    await target.write(bytes(buffer))
                    buffer.clear()
            await target.write(bytes(buffer))

    return receive


class ResourceController(Controller):
    path = "/api/licensing"
    tags = ["licensing"]
    guards = [requires_person]

    @get(
        "/departments",
        summary="Departments",
        description="The owner's departments; an operator sees those holding resources its licences cover. "
        "Regulators and auditors read all; buyers none.",
        guards=[requires_reader],
        responses=problems(401, 403),
    )
    async def list_departments(self, request: Request[Any, Any, Any], db_session: DbSession) -> Page[DepartmentView]:
        departments = await services.list_departments(db_session, caller(request))
        return Page(items=[department_view(d) for d in departments], total=len(departments))

    @post(
        "/departments",
        summary="Add a department",
        description="Owner only. Codes are unique among the owner's departments.",
        guards=[requires_owner],
        status_code=HTTP_201_CREATED,
        responses=problems(401, 403, 409),
    )
    async def create_department(
        self, request: Request[Any, Any, Any], data: JSONBody[DepartmentCreate], db_session: DbSession
    ) -> DepartmentView:
        return department_view(await services.create_department(db_session, caller(request), data))

    @get(
        "/resources",
        summary="Data resources",
        description="The owner sees its resources; an operator those covered by its granted or suspended licences; "
        "regulators and auditors all. Buyers see none (403).",
        guards=[requires_reader],
        responses=problems(401, 403),
    )
    async def list_resources(
        self, request: Request[Any, Any, Any], db_session: DbSession, department_id: FromQuery[uuid.UUID | None] = None
    ) -> Page[ResourceView]:
        resources = await services.list_resources(db_session, caller(request), department_id=department_id)
        return Page(items=[resource_view(r) for r in resources], total=len(resources))

    @post(
        "/resources",
        summary="Register a data resource",
        description="Owner only: department, code (unique), titles and descriptions in both languages, grade, "
        "update frequency and fields (unique names, each with a type and a tag). Contents are uploaded afterwards "
        "as versions.",
        guards=[requires_owner],
        status_code=HTTP_201_CREATED,
        responses=problems(401, 403, 409),
    )
    async def register_resource(
        self, request: Request[Any, Any, Any], data: JSONBody[ResourceCreate], db_session: DbSession
    ) -> ResourceView:
        return resource_view(await services.register_resource(db_session, caller(request), data))

    @get(
        "/resources/{resource_id:uuid}",
        summary="One data resource, with its versions",
        guards=[requires_reader],
        responses=problems(401, 403, 404),
    )
    async def get_resource(
        self, request: Request[Any, Any, Any], db_session: DbSession, resource_id: FromPath[uuid.UUID]
    ) -> ResourceDetail:
        principal = caller(request)
        resource = await services.get_resource(db_session, principal, resource_id)
        versions = await services.list_versions(db_session, principal, resource_id)
        return ResourceDetail(**_resource_fields(resource), versions=[version_view(v) for v in versions])

    @patch(
        "/resources/{resource_id:uuid}",
        summary="Change a data resource's description",
        description="Owner only. Titles, descriptions, department, update frequency; the grade while no live licence "
        "covers it (409 otherwise); the fields while no contents were uploaded (409 otherwise).",
        guards=[requires_owner],
        responses=problems(401, 403, 404, 409),
    )
    async def update_resource(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[ResourceUpdate],
        db_session: DbSession,
        resource_id: FromPath[uuid.UUID],
    ) -> ResourceView:
        return resource_view(await services.update_resource(db_session, caller(request), resource_id, data))

    @get(
        "/resources/{resource_id:uuid}/versions",
        summary="Versions of a resource's contents",
        description="Newest first: row count, size and SHA-256 of each stored Parquet file.",
        guards=[requires_reader],
        responses=problems(401, 403, 404),
    )
    async def list_versions(
        self, request: Request[Any, Any, Any], db_session: DbSession, resource_id: FromPath[uuid.UUID]
    ) -> Page[ResourceVersionView]:
        versions = await services.list_versions(db_session, caller(request), resource_id)
        return Page(items=[version_view(v) for v in versions], total=len(versions))

    @post(
        "/resources/{resource_id:uuid}/versions",
        summary="Upload new contents (the next version)",
        description="Owner only. The body is the file itself: CSV (header row, UTF-8, comma separated) as text/csv, "
        "or Parquet as application/vnd.apache.parquet; with application/octet-stream say ?format=csv|parquet. "
        "The contents are checked against the resource's fields: a mismatch answers 400 "
        "`contents_do_not_match_schema` listing every problem in `problems`, and nothing is stored. "
        "Larger than the platform's upload limit: 413. Earlier versions are kept.",
        guards=[requires_owner],
        status_code=HTTP_201_CREATED,
        # The limit comes from the settings (max_upload_bytes), enforced while the body streams in.
        request_max_body_size=None,
        operation_class=UploadOperation,
        responses=problems(401, 403, 404, 413, 415),
    )
    async def upload_version(
        self,
        request: Request[Any, Any, Any],
        db_session: DbSession,
        state: State,
        resource_id: FromPath[uuid.UUID],
        format: FromQuery[Literal["csv", "parquet"] | None] = None,
    ) -> ResourceVersionView:
        source_format = _upload_format(request, format)
        version = await services.upload_version(
            db_session,
            caller(request),
            resource_id,
            source_format=source_format,
            receive=_body_receiver(request, state.settings.max_upload_bytes),
            store=local_store(state.settings.resolved_data_dir),
        )
        return version_view(version)
