"""Sandbox delivery through HTTP: leaking queries refused with the guard's reason, aggregates answered with small
groups suppressed, metered; and the time limit over a materialised projection."""

from __future__ import annotations

import uuid
from pathlib import Path

import duckdb
import pytest
from sqlalchemy import Engine

from licensing.models import DeliveryMode, FieldType
from licensing.schemas import FieldSpec, MaskingRule
from marketplace.core.errors import InvalidInput
from marketplace.core.settings import Settings
from marketplace.delivery.services.projections import ProjectionCache, ProjectionSpec, key_digest, parse_masking
from marketplace.delivery.services.sandbox_queries import guard, run_query
from tests.helpers import assert_problem
from tests.licensing.factories import ledger_events, row_counts
from tests.marketplace.delivery.support import bearer, delivery_client, refusal_events
from tests.marketplace.factories import make_market

LEAKS = {
    "SELECT patient_name, cost FROM data": "no_aggregate",
    "SELECT patient_name, count(*) FROM data": "raw_column",
    "SELECT * FROM data": "star",
    "SELECT count(*) FROM data JOIN data AS d2 ON data.district = d2.district": "join",
    "SELECT count(*) FROM (SELECT * FROM data) AS t": "subquery",
    "SELECT count(*) FROM read_csv('/etc/passwd')": "table",
    "SELECT string_agg(patient_name, ',') FROM data": "function",
    "SELECT district, count(*) FROM data GROUP BY district; DROP TABLE data": "multiple_statements",
}


def test_leaking_queries_are_refused_with_the_guards_reason(settings: Settings, engine: Engine) -> None:
    market = make_market(engine, settings.resolved_data_dir, mode=DeliveryMode.sandbox)
    path = f"/data/v1/products/{market.product.id}/sandbox/query"
    with delivery_client(settings) as client:
        headers = bearer(client, engine, market.buyer_a)
        for sql, reason in LEAKS.items():
            body = assert_problem(client.post(path, json={"sql": sql}, headers=headers), 400, "sandbox_query_refused")
            assert body["reason"] == reason, (sql, body)
        assert_problem(client.post(path, json={"sql": ""}, headers=headers), 400, "invalid_input")
    assert row_counts(engine, "delivery") == {"delivery": 0}
    refused = refusal_events(engine)
    # One event per flush (several calls may share one), each with its count.
    assert {e["payload"]["code"] for e in refused} == {"sandbox_query_refused"}
    assert sum(e["payload"]["count"] for e in refused) == len(LEAKS)


def test_an_aggregate_answers_with_small_groups_suppressed(settings: Settings, engine: Engine) -> None:
    market = make_market(engine, settings.resolved_data_dir, mode=DeliveryMode.sandbox)
    path = f"/data/v1/products/{market.product.id}/sandbox/query"
    with delivery_client(settings) as client:
        headers = bearer(client, engine, market.buyer_a)
        whole = client.post(
            path,
            json={"sql": "SELECT district, count(*) AS visits, avg(cost) AS mean FROM data GROUP BY district ORDER BY district"},
            headers=headers,
        )
        small = client.post(
            path,
            json={"sql": "SELECT district, count(*) AS visits FROM data WHERE cost < 113 GROUP BY district"},
            headers=headers,
        )
    assert whole.status_code == 200, whole.text
    body = whole.json()
    assert body["columns"] == ["district", "visits", "mean"]
    assert [r[:2] for r in body["rows"]] == [["Chaoyang", 20], ["Dongcheng", 20], ["Haidian", 20]]
    assert body["suppressed_groups"] == 0
    assert body["min_k"] == 5
    # Costs 100.5 .. 112.5: Haidian has 5 visits (k = 5: kept), Chaoyang and Dongcheng 4 each (suppressed).
    assert small.json()["rows"] == [["Haidian", 5]]
    assert small.json()["suppressed_groups"] == 2
    recorded = ledger_events(engine, "delivery.recorded")
    assert [e["payload"]["rows"] for e in recorded] == [3, 1]
    assert all(e["payload"]["mode"] == "sandbox" and len(e["payload"]["query_sha256"]) == 64 for e in recorded)


def test_rows_of_a_sandbox_product_and_queries_of_an_api_product_are_refused(settings: Settings, engine: Engine) -> None:
    sandbox = make_market(engine, settings.resolved_data_dir, mode=DeliveryMode.sandbox)
    api = make_market(engine, settings.resolved_data_dir, buyer_a=sandbox.buyer_a)
    with delivery_client(settings) as client:
        headers = bearer(client, engine, sandbox.buyer_a)
        assert_problem(client.get(f"/data/v1/products/{sandbox.product.id}/rows", headers=headers), 403, "mode_not_entitled")
        assert_problem(
            client.post(
                f"/data/v1/products/{api.product.id}/sandbox/query", json={"sql": "SELECT count(*) FROM data"}, headers=headers
            ),
            403,
            "mode_not_entitled",
        )
        assert_problem(
            client.post(
                f"/data/v1/products/{sandbox.product.id}/sandbox/query",
                json={"sql": "SELECT count(*) FROM data"},
                headers=bearer(client, engine, sandbox.buyer_a, ["data:read"]),
            ),
            403,
            "insufficient_scope",
        )


def test_a_query_over_its_time_limit_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "big.parquet"
    with duckdb.connect() as con:
        con.execute(
            f"COPY (SELECT 'name ' || i AS name, i % 7 AS grp FROM range(300000) t(i)) TO '{source.as_posix()}' (FORMAT parquet)"
        )
    fields = '[{"name": "name", "type": "string"}, {"name": "grp", "type": "integer"}]'
    rules = '[{"field": "name", "action": "pseudonymise"}, {"field": "grp", "action": "keep"}]'
    masking = parse_masking(fields, rules)
    assert masking.fields == (FieldSpec(name="name", type=FieldType.string), FieldSpec(name="grp", type=FieldType.integer))
    assert masking.rules[1] == MaskingRule(field="grp")
    key = b"k" * 32
    spec = ProjectionSpec(uuid.uuid4(), source, "hash", masking, key_digest(key))
    projection = ProjectionCache(tmp_path / "cache", key).open(spec)
    guarded = guard("SELECT name, count(*) FROM data GROUP BY name", masking.columns, masking.numeric)
    with pytest.raises(InvalidInput) as refused:
        run_query(projection, guarded, 5, timeout_s=0.000001)
    assert refused.value.code == "query_timeout"
    answer = run_query(
        projection,
        guard("SELECT grp, count(*) AS n FROM data GROUP BY grp ORDER BY grp", masking.columns, masking.numeric),
        5,
        timeout_s=30,
    )
    assert [r[1] for r in answer.rows] == [42858, 42857, 42857, 42857, 42857, 42857, 42857]
    # The projection file is read-only and cannot reach files.
    cursor = projection.cursor()
    with pytest.raises(duckdb.Error):
        cursor.execute(f"SELECT * FROM read_parquet('{source.as_posix()}')")
