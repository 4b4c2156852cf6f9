"""Findings under ``/api/supervision/findings``: raised by regulators and auditors, answered by operators, closed
by regulators."""

from __future__ import annotations

import uuid
from typing import Any

from litestar import Controller, Request, get, post
from litestar.params import FromPath, FromQuery, JSONBody
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED

from marketplace.core.http import DbSession, caller, problems, requires_all, requires_party, requires_person
from marketplace.core.principal import OrgKind
from supervision import findings
from supervision.findings import FindingCreate, FindingNote, FindingPublic, FindingStatus

requires_finding_reader = requires_party(OrgKind.owner, OrgKind.regulator, OrgKind.auditor, OrgKind.operator)
#: Raising and closing are what supervisors do; the central rule otherwise keeps them read-only.
SUPERVISOR_WRITE = {"read_only_ok": True}


class FindingController(Controller):
    """Findings against operators."""

    path = "/api/supervision/findings"
    tags = ["supervision"]

    @get(
        "",
        summary="Findings",
        description="Regulators and the owner see all, an auditor those its firm raised, an operator those against it.",
        guards=[requires_all(requires_finding_reader, requires_person)],
        responses=problems(401, 403),
    )
    async def list_findings(
        self, request: Request[Any, Any, Any], db_session: DbSession, status: FromQuery[FindingStatus | None] = None
    ) -> dict[str, Any]:
        rows = await findings.list_findings(db_session, caller(request), status)
        return {"items": [findings.public(f) for f in rows], "total": len(rows)}

    @post(
        "",
        summary="Raise a finding against an operator",
        description="A regulator's or an auditor's person, with evidence (ledger indices). Refused: 403 "
        "`outside_engagement` (an auditor, outside its engagements in force), 400 `not_an_operator`, "
        "`evidence_not_found`. Recorded as `finding.raised`.",
        guards=[requires_all(requires_party(OrgKind.regulator, OrgKind.auditor), requires_person)],
        status_code=HTTP_201_CREATED,
        responses=problems(401, 403),
        opt=SUPERVISOR_WRITE,
    )
    async def raise_finding(
        self, request: Request[Any, Any, Any], db_session: DbSession, data: JSONBody[FindingCreate]
    ) -> FindingPublic:
        return findings.public(await findings.raise_finding(db_session, caller(request), data))

    @post(
        "/{finding_id:uuid}/respond",
        summary="The operator responds",
        description="The operator concerned answers (again, while the finding is not closed: 409 `finding_closed`).",
        guards=[requires_all(requires_party(OrgKind.operator), requires_person)],
        status_code=HTTP_200_OK,
        responses=problems(401, 403, 404, 409),
    )
    async def respond(
        self, request: Request[Any, Any, Any], db_session: DbSession, finding_id: FromPath[uuid.UUID], data: JSONBody[FindingNote]
    ) -> FindingPublic:
        return findings.public(await findings.respond(db_session, caller(request), finding_id, data.text))

    @post(
        "/{finding_id:uuid}/close",
        summary="A regulator closes the finding",
        guards=[requires_all(requires_party(OrgKind.regulator), requires_person)],
        status_code=HTTP_200_OK,
        responses=problems(401, 403, 404, 409),
        opt=SUPERVISOR_WRITE,
    )
    async def close(
        self, request: Request[Any, Any, Any], db_session: DbSession, finding_id: FromPath[uuid.UUID], data: JSONBody[FindingNote]
    ) -> FindingPublic:
        return findings.public(await findings.close(db_session, caller(request), finding_id, data.text))
