"""Alerts under ``/api/supervision/alerts``: what the alert rules raised, for supervisors.

Who: the owner and regulators see every alert; an auditor only the alerts of its engagements' operators and periods
(others are left out of lists, and 403 ``outside_engagement`` by id or operator filter, the attempt recorded);
operators and buyers are refused (least privilege: alerts are supervisors' triage; what an operator must answer
becomes a finding, which it sees). Only a regulator's person acknowledges and resolves (supervision's own workflow,
hence ``read_only_ok``); the owner is itself supervised (its licences' caps and suspensions are what some rules
check), so it reads but does not close alerts.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from litestar import Controller, Request, get, post
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter
from litestar.status_codes import HTTP_200_OK

from marketplace.core.http import (
    DbSession,
    caller,
    problems,
    requires_all,
    requires_party,
    requires_person,
    requires_supervisor,
)
from marketplace.core.principal import OrgKind
from supervision import alerts
from supervision.alerts import AlertFilter, AlertResolve, AlertSeverity, AlertState
from supervision.engagements import read_scope, refuse_outside

MAX_LIMIT = 200
#: Acknowledging and resolving are what supervisors do; the central rule otherwise keeps them read-only.
SUPERVISOR_WRITE = {"read_only_ok": True}
requires_regulator = requires_party(OrgKind.regulator)


class AlertController(Controller):
    """Alerts raised by the rules, and their handling."""

    path = "/api/supervision/alerts"
    tags = ["supervision"]

    @get(
        "",
        summary="Alerts",
        description="Newest first, filtered by `state` (open, acknowledged, resolved), `severity` (info, warning, "
        "critical), `rule` and `operator`. Keyset pagination: pass the answer's `next_before` as `before`. Each item "
        "has its evidence (ledger index, event type and time). The owner and regulators see all; an auditor the "
        "alerts of its engagements (403 `outside_engagement` without one, or for an operator it does not cover).",
        guards=[requires_all(requires_supervisor, requires_person)],
        responses=problems(401, 403),
    )
    async def list_alerts(
        self,
        request: Request[Any, Any, Any],
        db_session: DbSession,
        alert_state: Annotated[AlertState | None, QueryParameter(name="state")] = None,
        severity: FromQuery[AlertSeverity | None] = None,
        rule: Annotated[str | None, QueryParameter(max_length=80)] = None,
        operator: FromQuery[uuid.UUID | None] = None,
        before: Annotated[int | None, QueryParameter(ge=1)] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=MAX_LIMIT)] = 50,
    ) -> dict[str, Any]:
        principal = caller(request)
        query = request.scope.get("query_string", b"").decode("latin-1")
        scope = await read_scope(db_session, principal, path=request.url.path, query=query)
        if scope is not None and operator is not None and operator not in scope.operator_ids:
            await refuse_outside(
                db_session,
                principal,
                path=request.url.path,
                query=query,
                detail="Your firm's engagements do not cover this operator.",
            )
        wanted = AlertFilter(state=alert_state, severity=severity, rule=rule, operator=operator)
        rows, total, next_before = await alerts.list_alerts(db_session, principal, scope, wanted, before=before, limit=limit)
        return {"items": await alerts.public(db_session, rows), "total": total, "next_before": next_before}

    @get(
        "/{alert_id:int}",
        summary="One alert",
        description="404 `alert_not_found`; an auditor, outside its engagements: 403 `outside_engagement` (recorded).",
        guards=[requires_all(requires_supervisor, requires_person)],
        responses=problems(401, 403, 404),
    )
    async def get_alert(self, request: Request[Any, Any, Any], db_session: DbSession, alert_id: FromPath[int]) -> dict[str, Any]:
        principal = caller(request)
        scope = await read_scope(db_session, principal, path=request.url.path)
        alert = await alerts.get_alert(db_session, alert_id)
        if not alerts.alert_in_scope(alert, scope):
            await refuse_outside(
                db_session, principal, path=request.url.path, detail="This alert is outside your firm's engagements."
            )
        return (await alerts.public(db_session, [alert]))[0]

    @post(
        "/{alert_id:int}/acknowledge",
        summary="A regulator acknowledges an open alert",
        description="409 `alert_not_open` when it is not open. Recorded as `alert.acknowledged`.",
        guards=[requires_all(requires_regulator, requires_person)],
        status_code=HTTP_200_OK,
        responses=problems(401, 403, 404, 409),
        opt=SUPERVISOR_WRITE,
    )
    async def acknowledge(
        self, request: Request[Any, Any, Any], db_session: DbSession, alert_id: FromPath[int]
    ) -> dict[str, Any]:
        alert = await alerts.acknowledge(db_session, caller(request), alert_id)
        return (await alerts.public(db_session, [alert]))[0]

    @post(
        "/{alert_id:int}/resolve",
        summary="A regulator resolves an alert with a note",
        description="`note` is required (at most 2000 characters, trimmed). 409 `alert_already_resolved`. Recorded as "
        "`alert.resolved` with the note.",
        guards=[requires_all(requires_regulator, requires_person)],
        status_code=HTTP_200_OK,
        responses=problems(401, 403, 404, 409),
        opt=SUPERVISOR_WRITE,
    )
    async def resolve(
        self, request: Request[Any, Any, Any], db_session: DbSession, alert_id: FromPath[int], data: JSONBody[AlertResolve]
    ) -> dict[str, Any]:
        alert = await alerts.resolve(db_session, caller(request), alert_id, data.note)
        return (await alerts.public(db_session, [alert]))[0]
