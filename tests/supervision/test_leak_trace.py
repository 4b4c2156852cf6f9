"""Leak tracing: a real export of a buyer, leaked as CSV or Parquet, is traced back to its subscription (buyer,
product, exports) from the ledger's events alone; an unrelated file is not; anything but CSV or Parquet is refused;
each trace is recorded."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import duckdb
from sqlalchemy import Engine

from licensing.models import DeliveryMode
from marketplace.core.http import CSRF_HEADER
from marketplace.core.principal import OrgKind
from marketplace.core.settings import Settings
from tests.factories import make_login_session, make_org, make_user
from tests.helpers import assert_problem, csrf, use_session
from tests.licensing.factories import ledger_events, row_counts
from tests.marketplace.delivery.support import bearer, delivery_client, wait_for_export
from tests.marketplace.factories import make_market, make_qualification, make_subscription

TRACE = "/api/supervision/leak-trace"


def _export(client: Any, headers: dict[str, str], product_id: Any, fmt: str) -> bytes:
    queued = client.post(f"/data/v1/products/{product_id}/exports", json={"format": fmt}, headers=headers)
    assert queued.status_code == 202, queued.text
    ready = wait_for_export(client, headers, queued.json()["id"])
    assert ready["status"] == "ready", ready
    download = client.get(ready["download_url"])
    assert download.status_code == 200
    content: bytes = download.content
    return content


def _as(client: Any, engine: Engine, kind: OrgKind) -> dict[str, str]:
    client.headers.pop("Authorization", None)
    client.cookies.clear()
    return use_session(client, make_login_session(engine, make_user(engine, make_org(engine, kind))))


def test_a_leaked_export_names_its_subscription_and_an_unrelated_file_nothing(
    settings: Settings, engine: Engine, tmp_path: Path
) -> None:
    market = make_market(engine, settings.resolved_data_dir, mode=DeliveryMode.file, per_group=30)
    make_qualification(engine, market.buyer_b, market.operator.id)
    subscription_b, _ = make_subscription(engine, market.buyer_b, market.product, market.plan)
    with delivery_client(settings) as client:
        leaked_csv = _export(client, bearer(client, engine, market.buyer_a), market.product.id, "csv")
        leaked_parquet = _export(client, bearer(client, engine, market.buyer_b), market.product.id, "parquet")
        headers = _as(client, engine, OrgKind.regulator)
        found = client.post(TRACE, content=leaked_csv, headers={**headers, "Content-Type": "text/csv"})
        assert found.status_code == 200, found.text
        answer = found.json()
        assert answer["found"] is True
        assert answer["file_format"] == "csv"
        assert answer["candidates"] == 2
        assert answer["subscription_id"] == str(market.subscription.id)
        assert answer["buyer_org_id"] == str(market.buyer_a.id)
        assert answer["buyer_name"] == market.buyer_a.name
        assert answer["product_id"] == str(market.product.id)
        assert [e["format"] for e in answer["exports"]] == ["csv"]
        assert answer["evidence_z"] >= 6
        parquet = client.post(TRACE, content=leaked_parquet, headers=headers).json()
        assert (parquet["file_format"], parquet["subscription_id"]) == ("parquet", str(subscription_b.id))
        # A subset of the leaked rows (the first 150 lines) still names its source.
        subset = b"\n".join(leaked_csv.split(b"\n")[:151]) + b"\n"
        assert client.post(TRACE, content=subset, headers=headers).json()["subscription_id"] == str(market.subscription.id)
        # A file of the same shape that was never exported: nothing found.
        source = tmp_path / "unrelated.csv"
        duckdb.sql(
            "COPY (SELECT 'P' || i AS patient_name, 30 + i % 40 AS age, 'Haidian' AS district, DATE '2026-01-01' + CAST(i AS INTEGER) AS visit_date, "
            "'J45' AS diagnosis, CAST(10 + i * 0.37 AS DECIMAL(10,2)) AS cost FROM range(200) t(i)) TO '"
            + str(source)
            + "' (HEADER)"
        )
        unrelated = client.post(TRACE, content=source.read_bytes(), headers=headers).json()
        assert (unrelated["found"], unrelated["subscription_id"]) == (False, None)
    traced = ledger_events(engine, "leak.traced")
    assert [e["payload"]["found"] for e in traced] == [True, True, True, False]
    assert traced[0]["subjects"] == {"subscription": str(market.subscription.id)}
    assert "patient" not in str(traced).lower()


def test_files_that_are_not_csv_or_parquet_are_refused_and_nothing_is_written(settings: Settings, engine: Engine) -> None:
    market = make_market(engine, settings.resolved_data_dir, mode=DeliveryMode.file)
    with delivery_client(settings) as client:
        _export(client, bearer(client, engine, market.buyer_a), market.product.id, "csv")
        headers = _as(client, engine, OrgKind.regulator)
        before = row_counts(engine, "ledger_entry")
        for content in (b"", b"%PDF-1.7\n%%EOF\n", bytes(range(256)) * 4, b"PAR1 not really parquet PAR1", b"just one line"):
            assert_problem(client.post(TRACE, content=content, headers=headers), 400, "not_csv_or_parquet")
        assert row_counts(engine, "ledger_entry") == before


def test_only_supervisors_trace(settings: Settings, engine: Engine) -> None:
    market = make_market(engine, settings.resolved_data_dir, mode=DeliveryMode.file)
    csv_bytes = io.BytesIO(b"a,b\n1,2\n").getvalue()
    with delivery_client(settings) as client:
        # An auditor without an engagement is refused (its attempt recorded); see test_engagements for scoping.
        for kind, status in ((OrgKind.buyer, 403), (OrgKind.operator, 403), (OrgKind.owner, 200), (OrgKind.auditor, 403)):
            headers = _as(client, engine, kind)
            assert client.post(TRACE, content=csv_bytes, headers=headers).status_code == status, kind
        client.cookies.clear()
        assert client.post(TRACE, content=csv_bytes, headers={CSRF_HEADER: csrf(client)}).status_code == 401
    del market


def test_an_auditor_traces_only_within_its_engagement(settings: Settings, engine: Engine) -> None:
    from datetime import UTC, datetime, timedelta

    market = make_market(engine, settings.resolved_data_dir, mode=DeliveryMode.file, per_group=30)
    other_operator = make_org(engine, OrgKind.operator)
    auditor = make_org(engine, OrgKind.auditor)
    auditor_session = make_login_session(engine, make_user(engine, auditor))
    owner_session = make_login_session(engine, make_user(engine, market.owner))
    with delivery_client(settings) as client:
        leaked = _export(client, bearer(client, engine, market.buyer_a), market.product.id, "csv")
        today = datetime.now(UTC).date()

        def grant(operator_id: Any) -> None:
            client.headers.pop("Authorization", None)
            client.cookies.clear()
            headers = use_session(client, owner_session)
            body = {
                "auditor_id": str(auditor.id),
                "operator_ids": [str(operator_id)],
                "period_start": (today - timedelta(days=1)).isoformat(),
                "period_end": (today + timedelta(days=1)).isoformat(),
                "expires_at": (datetime.now(UTC) + timedelta(days=7)).isoformat(),
            }
            assert client.post("/api/supervision/engagements", json=body, headers=headers).status_code == 201

        def trace() -> dict[str, Any]:
            client.cookies.clear()
            headers = use_session(client, auditor_session)
            answer = client.post(TRACE, content=leaked, headers=headers)
            assert answer.status_code == 200, answer.text
            result: dict[str, Any] = answer.json()
            return result

        grant(other_operator.id)
        outside = trace()
        assert (outside["found"], outside["candidates"]) == (False, 0)
        grant(market.operator.id)
        inside = trace()
        assert (inside["found"], inside["subscription_id"]) == (True, str(market.subscription.id))
