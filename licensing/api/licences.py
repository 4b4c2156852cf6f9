"""Licensing API: franchise licences. The owner drafts, amends, grants, suspends, reinstates and revokes;
operators read their own; regulators and auditors read all; buyers see none.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from litestar import Controller, Request, get, patch, post
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED

from licensing.models import LicenceStatus
from licensing.schemas import LicenceAmend, LicenceCreate, LicenceDecision, LicenceDetail, LicenceVersionView, LicenceView
from licensing.services import licences as services
from marketplace.core.http import DbSession, caller, problems, requires_owner, requires_party, requires_person
from marketplace.core.principal import OrgKind
from marketplace.core.schemas import Page

requires_licence_reader = requires_party(OrgKind.owner, OrgKind.operator, OrgKind.regulator, OrgKind.auditor)

TRANSITION_NOTE = "Refused with 409 `licence_transition_refused` (naming the current status) from any other status."


class LicenceController(Controller):
    path = "/api/licensing"
    tags = ["licensing"]
    guards = [requires_person]

    @get(
        "/licences",
        summary="Franchise licences you may see",
        description="The owner sees its licences, an operator those granted to it, regulators and auditors all; "
        "buyers are refused. Newest first; filter by status and operator.",
        guards=[requires_licence_reader],
        responses=problems(401, 403),
    )
    async def list_licences(
        self,
        request: Request[Any, Any, Any],
        db_session: DbSession,
        status: FromQuery[LicenceStatus | None] = None,
        operator_id: FromQuery[uuid.UUID | None] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=500)] = 100,
        offset: Annotated[int, QueryParameter(ge=0, le=10**9)] = 0,
    ) -> Page[LicenceView]:
        items, total = await services.list_licences(
            db_session, caller(request), status=status, operator_id=operator_id, limit=limit, offset=offset
        )
        return Page(items=items, total=total)

    @post(
        "/licences",
        summary="Draft a franchise licence",
        description="Owner only. Refused with 400: `licensee_not_an_operator`, `l4_not_licensable`, `resource_not_found`, "
        "`term_invalid` (ends before it starts), `term_too_long` (beyond five years), `reduction_purpose_not_permitted`.",
        guards=[requires_owner],
        status_code=HTTP_201_CREATED,
        responses=problems(401, 403, 409),
    )
    async def create_licence(
        self, request: Request[Any, Any, Any], data: JSONBody[LicenceCreate], db_session: DbSession
    ) -> LicenceDetail:
        return await services.create_licence(db_session, caller(request), data)

    @get(
        "/licences/{licence_id:uuid}",
        summary="One franchise licence with its timeline",
        description="404 `licence_not_found` when it is not yours to see (another operator's licence included).",
        guards=[requires_licence_reader],
        responses=problems(401, 403, 404),
    )
    async def read_licence(
        self, request: Request[Any, Any, Any], licence_id: FromPath[uuid.UUID], db_session: DbSession
    ) -> LicenceDetail:
        return await services.read_licence(db_session, caller(request), licence_id)

    @patch(
        "/licences/{licence_id:uuid}",
        summary="Amend a draft licence",
        description="Owner only; only the fields given change, and the whole terms are checked again. "
        "409 `licence_not_draft` once granted.",
        guards=[requires_owner],
        responses=problems(401, 403, 404, 409),
    )
    async def amend_licence(
        self,
        request: Request[Any, Any, Any],
        licence_id: FromPath[uuid.UUID],
        data: JSONBody[LicenceAmend],
        db_session: DbSession,
    ) -> LicenceDetail:
        return await services.amend_licence(db_session, caller(request), licence_id, data)

    @post(
        "/licences/{licence_id:uuid}/grant",
        summary="Grant a draft licence",
        description="draft -> granted, with a written reason; 409 `licence_term_ended` when its term is over. " + TRANSITION_NOTE,
        guards=[requires_owner],
        status_code=HTTP_200_OK,
        responses=problems(401, 403, 404, 409),
    )
    async def grant(
        self,
        request: Request[Any, Any, Any],
        licence_id: FromPath[uuid.UUID],
        data: JSONBody[LicenceDecision],
        db_session: DbSession,
    ) -> LicenceDetail:
        return await services.grant_licence(db_session, caller(request), licence_id, data.reason)

    @post(
        "/licences/{licence_id:uuid}/suspend",
        summary="Suspend a granted licence",
        description="granted -> suspended, with a written reason; takes effect at once: its pending listing reviews "
        "are withdrawn and its listed products delisted. " + TRANSITION_NOTE,
        guards=[requires_owner],
        status_code=HTTP_200_OK,
        responses=problems(401, 403, 404, 409),
    )
    async def suspend(
        self,
        request: Request[Any, Any, Any],
        licence_id: FromPath[uuid.UUID],
        data: JSONBody[LicenceDecision],
        db_session: DbSession,
    ) -> LicenceDetail:
        return await services.suspend_licence(db_session, caller(request), licence_id, data.reason)

    @post(
        "/licences/{licence_id:uuid}/reinstate",
        summary="Reinstate a suspended licence",
        description="suspended -> granted, with a written reason (delisted products must be reviewed again). " + TRANSITION_NOTE,
        guards=[requires_owner],
        status_code=HTTP_200_OK,
        responses=problems(401, 403, 404, 409),
    )
    async def reinstate(
        self,
        request: Request[Any, Any, Any],
        licence_id: FromPath[uuid.UUID],
        data: JSONBody[LicenceDecision],
        db_session: DbSession,
    ) -> LicenceDetail:
        return await services.reinstate_licence(db_session, caller(request), licence_id, data.reason)

    @post(
        "/licences/{licence_id:uuid}/revoke",
        summary="Revoke a licence for good",
        description="granted or suspended -> revoked (final), with a written reason; takes effect at once like a "
        "suspension. " + TRANSITION_NOTE,
        guards=[requires_owner],
        status_code=HTTP_200_OK,
        responses=problems(401, 403, 404, 409),
    )
    async def revoke(
        self,
        request: Request[Any, Any, Any],
        licence_id: FromPath[uuid.UUID],
        data: JSONBody[LicenceDecision],
        db_session: DbSession,
    ) -> LicenceDetail:
        return await services.revoke_licence(db_session, caller(request), licence_id, data.reason)

    @get(
        "/licences/{licence_id:uuid}/versions",
        summary="The timeline of a licence",
        description="Every change, oldest first: what changed, the status after it, the written reason, who, and the "
        "whole terms after the change.",
        guards=[requires_licence_reader],
        responses=problems(401, 403, 404),
    )
    async def versions(
        self, request: Request[Any, Any, Any], licence_id: FromPath[uuid.UUID], db_session: DbSession
    ) -> Page[LicenceVersionView]:
        items = await services.licence_versions(db_session, caller(request), licence_id)
        return Page(items=items, total=len(items))
