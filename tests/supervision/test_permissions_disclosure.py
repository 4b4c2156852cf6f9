"""Permission matrix of the annual public disclosure: every party, anonymous visitors included, reads the JSON, the
page and the PDF; the routes only read (GET), and nothing is written but the record of a regulator's or an
auditor's read of the API (every supervisory read of ``/api/`` is recorded; the public page is not a record)."""

from __future__ import annotations

import pytest
from litestar.testing import TestClient
from sqlalchemy import Engine

from marketplace.app import create_app
from marketplace.core.settings import Settings
from tests.conftest import TEST_ORIGIN
from tests.helpers import shared_app
from tests.licensing.factories import ledger_events
from tests.marketplace.core.test_permissions import PARTIES, Case, _by, build_world

YEAR = "{year:int}"
ADDRESS = "{address:str}"
EVERYONE = _by(200, 200, 200, 200, 200, 200, 200)

CASES: list[Case] = [
    Case("GET", f"/api/supervision/disclosure/{YEAR}", EVERYONE),
    Case("GET", f"/disclosure/{ADDRESS}", EVERYONE),
]


@pytest.mark.parametrize("party", PARTIES)
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_route_answers_each_party_exactly(settings: Settings, engine: Engine, case: Case, party: str) -> None:
    world = build_world(engine)
    before = len(ledger_events(engine))
    paths = (
        [case.path.replace(YEAR, "2025")] if YEAR in case.path else [case.path.replace(ADDRESS, a) for a in ("2025", "2025.pdf")]
    )
    with TestClient(app=shared_app(settings), base_url=TEST_ORIGIN) as client:
        if party != "anonymous":
            client.cookies.set("market_session", world.sessions[party])
        answers = [client.get(path) for path in paths]
    for path, response in zip(paths, answers, strict=True):
        assert response.status_code == case.expected[party], f"{path} as {party}: {response.status_code} {response.text[:300]}"
        if path.endswith(".pdf"):
            assert response.content.startswith(b"%PDF")
        elif path.startswith("/api/"):
            assert response.json()["year"] == 2025
        else:
            assert 'data-disclosure="2025"' in response.text
    added = [e["type"] for e in ledger_events(engine)[before:]]
    recorded = party in ("regulator", "auditor") and case.path.startswith("/api/")
    assert added == (["records.read"] if recorded else [])


def test_the_disclosure_routes_only_read(settings: Settings) -> None:
    app = create_app(settings)
    methods = {
        method
        for route in app.routes
        if route.path in (f"/api/supervision/disclosure/{YEAR}", f"/disclosure/{ADDRESS}")
        for method in getattr(route, "methods", set())
    }
    assert methods == {"GET", "OPTIONS"}
