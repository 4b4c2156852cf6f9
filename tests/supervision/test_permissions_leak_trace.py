"""Permission matrix of leak tracing: supervisors (owner, regulator, auditor) trace, nobody else; a trace writes
nothing but its own ``leak.traced`` record (regulators and auditors may post it: it is a read)."""

from __future__ import annotations

import pytest
from litestar.testing import TestClient
from sqlalchemy import Engine

from marketplace.core.http import CSRF_HEADER
from marketplace.core.settings import Settings
from tests.conftest import TEST_ORIGIN
from tests.helpers import csrf, shared_app
from tests.licensing.factories import ledger_events
from tests.marketplace.core.test_permissions import PARTIES, Case, _by, build_world

CSV = b"district,visits\nHaidian,12\nChaoyang,7\n"

CASES: list[Case] = [
    Case("POST", "/api/supervision/leak-trace", _by(401, 200, 403, 403, 403, 200, 200)),
]


@pytest.mark.parametrize("party", PARTIES)
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_leak_trace_answers_each_party_exactly(settings: Settings, engine: Engine, case: Case, party: str) -> None:
    world = build_world(engine)
    before = len(ledger_events(engine))
    with TestClient(app=shared_app(settings), base_url=TEST_ORIGIN) as client:
        if party != "anonymous":
            client.cookies.set("market_session", world.sessions[party])
        response = client.post(case.path, content=CSV, headers={CSRF_HEADER: csrf(client), "Content-Type": "text/csv"})
    assert response.status_code == case.expected[party], f"{party}: {response.status_code} {response.text[:300]}"
    traced = [e for e in ledger_events(engine)[before:] if e["type"] == "leak.traced"]
    if response.status_code == 200:
        assert response.json()["found"] is False
        assert len(traced) == 1
    else:
        assert response.headers["content-type"].startswith("application/problem+json")
        assert traced == []
