"""File delivery end to end: an export is queued, built by its task with the subscription's fingerprint, metered,
and downloaded through a short-lived signed link; two buyers' copies trace back to their own subscriptions."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from licensing.models import DeliveryMode, Licence, LicenceStatus
from marketplace.core.fingerprint import metadata_token, trace_export
from marketplace.core.settings import Settings
from marketplace.delivery.services import fingerprint_key, signed_link
from marketplace.subscriptions.models import Entitlement
from tests.helpers import assert_problem
from tests.licensing.factories import ledger_events, row_counts
from tests.marketplace.delivery.support import (
    bearer,
    delivery_client,
    tasks_in_process,
    update,
    wait_for_export,
    wait_for_exports,
)
from tests.marketplace.factories import make_market, make_qualification, make_subscription

ID_COLUMNS = ["patient_name", "age", "district", "visit_date", "diagnosis"]


def _export(client: Any, headers: dict[str, str], product_id: Any, body: dict[str, Any]) -> dict[str, Any]:
    queued = client.post(f"/data/v1/products/{product_id}/exports", json=body, headers=headers)
    assert queued.status_code == 202, queued.text
    assert queued.json()["status"] == "queued"
    return wait_for_export(client, headers, queued.json()["id"])


def test_export_end_to_end_with_fingerprints_per_subscription(settings: Settings, engine: Engine, tmp_path: Path) -> None:
    market = make_market(engine, settings.resolved_data_dir, mode=DeliveryMode.file)
    make_qualification(engine, market.buyer_b, market.operator.id)
    subscription_b, _ = make_subscription(engine, market.buyer_b, market.product, market.plan)
    with delivery_client(settings) as client:
        headers_a = bearer(client, engine, market.buyer_a)
        headers_b = bearer(client, engine, market.buyer_b)
        ready_a = _export(client, headers_a, market.product.id, {"format": "csv"})
        ready_b = _export(client, headers_b, market.product.id, {"format": "csv"})
        parquet_a = _export(client, headers_a, market.product.id, {"format": "parquet", "filters": {"district": "Haidian"}})
        files = {}
        for name, ready in (("a.csv", ready_a), ("b.csv", ready_b), ("a.parquet", parquet_a)):
            assert ready["status"] == "ready", ready
            download = client.get(ready["download_url"])  # no token: the link is the credential
            assert download.status_code == 200, download.text
            files[name] = tmp_path / name
            files[name].write_bytes(download.content)
            assert hashlib.sha256(download.content).hexdigest() == ready["sha256"]
            assert len(download.content) == ready["bytes"]
        listed = client.get("/data/v1/exports", headers=headers_a).json()
        assert_problem(client.get(f"/data/v1/exports/{ready_a['id']}", headers=headers_b), 404, "export_not_found")
    key = fingerprint_key(settings)
    assert ready_a["rows"] == ready_b["rows"] == 60
    assert parquet_a["rows"] == 20
    assert ready_a["fingerprint"] == metadata_token(key, str(market.subscription.id))
    assert ready_b["fingerprint"] == metadata_token(key, str(subscription_b.id))
    assert ready_a["fingerprint"] != ready_b["fingerprint"]
    assert files["a.csv"].read_bytes() != files["b.csv"].read_bytes()
    candidates = [str(market.subscription.id), str(subscription_b.id)]
    trace = {"id_columns": ID_COLUMNS, "mark_columns": []}
    assert trace_export(files["a.csv"], "csv", candidates, key, **trace) == str(market.subscription.id)
    assert trace_export(files["b.csv"], "csv", candidates, key, **trace) == str(subscription_b.id)
    assert trace_export(files["a.parquet"], "parquet", candidates, key) == str(market.subscription.id)
    assert {e["id"] for e in listed["items"]} == {ready_a["id"], parquet_a["id"]}
    # Each export is one metered file delivery of its rows, in the ledger too (metadata only).
    assert row_counts(engine, "delivery", "export") == {"delivery": 3, "export": 3}
    recorded = ledger_events(engine, "delivery.recorded")
    assert sorted(e["payload"]["rows"] for e in recorded) == [20, 60, 60]
    assert all(e["payload"]["mode"] == "file" for e in recorded)
    assert "Patient" not in str(recorded)
    assert len(ledger_events(engine, "export.ready")) == 3


def test_signed_links_valid_expired_tampered(settings: Settings, engine: Engine) -> None:
    market = make_market(engine, settings.resolved_data_dir, mode=DeliveryMode.file)
    with delivery_client(settings) as client:
        headers = bearer(client, engine, market.buyer_a)
        ready = _export(client, headers, market.product.id, {"format": "csv"})
        url = ready["download_url"]
        assert client.get(url).status_code == 200
        export_id = ready["id"]
        expired, _ = signed_link(settings, export_id, now=time.time() - settings.export_link_ttl_seconds - 5)
        assert_problem(client.get(expired), 403, "link_expired")
        base, _, query = url.partition("?")
        params = dict(part.split("=") for part in query.split("&"))
        flipped = params["signature"][:-1] + ("0" if params["signature"][-1] != "0" else "1")
        assert_problem(client.get(f"{base}?expires={params['expires']}&signature={flipped}"), 403, "link_invalid")
        later = int(params["expires"]) + 3600
        assert_problem(client.get(f"{base}?expires={later}&signature={params['signature']}"), 403, "link_invalid")
        assert_problem(client.get(base), 403, "link_invalid")
        # The link of one export does not open another.
        other = _export(client, headers, market.product.id, {"format": "parquet"})
        assert_problem(client.get(f"/data/v1/exports/{other['id']}/download?{query}"), 403, "link_invalid")
        # A suspended licence stops downloads too.
        update(engine, Licence, market.licence.id, status=LicenceStatus.suspended)
        assert_problem(client.get(url), 403, "licence_suspended")


def test_export_refusals_and_bad_input_change_nothing(settings: Settings, engine: Engine) -> None:
    market = make_market(engine, settings.resolved_data_dir, mode=DeliveryMode.file)
    api_market = make_market(engine, settings.resolved_data_dir, buyer_a=market.buyer_a)
    path = f"/data/v1/products/{market.product.id}/exports"
    with delivery_client(settings) as client:
        headers = bearer(client, engine, market.buyer_a)
        assert_problem(
            client.post(path, json={"format": "csv", "filters": {"notes": "x"}}, headers=headers), 400, "field_not_permitted"
        )
        assert_problem(
            client.post(path, json={"format": "csv", "filters": {"cost": "cheap"}}, headers=headers), 400, "invalid_filter"
        )
        assert_problem(client.post(path, json={"format": "xlsx"}, headers=headers), 400, "invalid_input")
        assert_problem(
            client.post(path, json={"format": "csv"}, headers=bearer(client, engine, market.buyer_b)), 403, "not_entitled"
        )
        assert_problem(
            client.post(path, json={"format": "csv"}, headers=bearer(client, engine, market.buyer_a, ["data:read"])),
            403,
            "insufficient_scope",
        )
        assert_problem(
            client.post(f"/data/v1/products/{api_market.product.id}/exports", json={"format": "csv"}, headers=headers),
            403,
            "mode_not_entitled",
        )
    assert row_counts(engine, "export", "delivery") == {"export": 0, "delivery": 0}


def test_export_quota_counts_queued_exports(settings: Settings, engine: Engine) -> None:
    market = make_market(engine, settings.resolved_data_dir, mode=DeliveryMode.file)
    update(engine, Entitlement, market.entitlement.id, quota_calls=1)
    with delivery_client(settings) as client:
        headers = bearer(client, engine, market.buyer_a)
        first = client.post(f"/data/v1/products/{market.product.id}/exports", json={"format": "csv"}, headers=headers)
        assert first.status_code == 202
        assert_problem(
            client.post(f"/data/v1/products/{market.product.id}/exports", json={"format": "csv"}, headers=headers),
            429,
            "quota_exceeded",
        )
        wait_for_exports(engine)
    assert row_counts(engine, "export", "delivery") == {"export": 1, "delivery": 1}


def test_an_export_fails_when_the_licence_is_suspended_before_it_is_built(settings: Settings, engine: Engine) -> None:
    from marketplace.core.tasks import run_in_session
    from marketplace.delivery.models import Export, ExportFormat
    from marketplace.delivery.services import build_export

    market = make_market(engine, settings.resolved_data_dir, mode=DeliveryMode.file)
    from sqlmodel import Session

    with Session(engine) as session:
        export = Export(
            entitlement_id=market.entitlement.id,
            subscription_id=market.subscription.id,
            buyer_org_id=market.buyer_a.id,
            product_id=market.product.id,
            format=ExportFormat.csv,
        )
        session.add(export)
        session.commit()
        export_id = export.id
    update(engine, Licence, market.licence.id, status=LicenceStatus.suspended)
    tasks_in_process(settings)
    built = run_in_session(lambda session: build_export(session, settings, export_id))
    assert built is not None
    assert built.status.value == "failed"
    assert built.error is not None
    assert built.error.startswith("licence_suspended")
    assert row_counts(engine, "delivery") == {"delivery": 0}
    assert [e["payload"]["code"] for e in ledger_events(engine, "export.failed")] == ["licence_suspended"]
