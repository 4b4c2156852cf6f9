"""``GET /api/supervision/disclosure/{year}``: the annual public disclosure as JSON (anyone may read it)."""

from __future__ import annotations

from typing import Any

from litestar import Controller, get
from litestar.params import FromPath

from marketplace.core.http import DbSession, problems
from supervision.disclosure import disclose


class DisclosureController(Controller):
    """The authority's public report of a year."""

    path = "/api/supervision/disclosure"
    tags = ["supervision"]

    @get(
        "/{year:int}",
        summary="The annual public disclosure of a year",
        description="Licences in force during the year (operator, resources and grades, term, status changes), "
        "products listed and their public plans and price ranges, franchise fees per operator and month (from "
        "settlement statements), the gross transaction value, each operator's performance (revenue, buyers counted "
        "not named, deliveries by mode, public-welfare share, findings, alerts) and the signed checkpoint every "
        "figure is consistent with (only events below its size count). Public: no sign-in needed. Money as decimal "
        "strings. A year with no events answers with `has_data` false. Refused: 400 `year_out_of_range` (before "
        "2000), 404 `disclosure_not_available` (a year not begun).",
        responses=problems(400, 404),
    )
    async def disclosure(self, db_session: DbSession, year: FromPath[int]) -> dict[str, Any]:
        return (await disclose(db_session, year, cached=True)).as_json()
