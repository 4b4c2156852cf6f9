"""API delivery: fields, filters, cursor pagination, JSON and CSV, and the masking of what is delivered."""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
from typing import Any

from sqlalchemy import Engine

from licensing.privacy import pseudonym_key
from marketplace.core.principal import Role
from marketplace.core.settings import Settings
from marketplace.delivery.services.rows import PAGES
from tests.factories import make_login_session, make_user
from tests.helpers import assert_problem, use_session
from tests.licensing.factories import row_counts, visit_rows
from tests.marketplace.delivery.support import bearer, delivery_client, rows_path
from tests.marketplace.factories import make_market


def _walk(client: Any, headers: dict[str, str], product_id: Any, query: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    for _ in range(100):
        suffix = f"&cursor={cursor}" if cursor else ""
        page = client.get(rows_path(product_id, query + suffix), headers=headers)
        assert page.status_code == 200, page.text
        body = page.json()
        items += body["items"]
        cursor = body["next_cursor"]
        if cursor is None:
            return items
    raise AssertionError("pagination did not end")


def test_rows_are_masked_and_pages_cover_everything_once(settings: Settings, engine: Engine) -> None:
    market = make_market(engine, settings.resolved_data_dir)
    source = visit_rows()
    with delivery_client(settings) as client:
        headers = bearer(client, engine, market.buyer_a)
        items = _walk(client, headers, market.product.id, "limit=7")
    assert len(items) == len(source) == 60
    key = pseudonym_key(settings)
    # Same order as the contents; names pseudonymised (HMAC), ages in decades, years only, id numbers and notes absent.
    for item, row in zip(items, source, strict=True):
        assert item["patient_name"] == hmac.new(key, row[0].encode(), hashlib.sha256).hexdigest()
        low = row[2] - row[2] % 10
        assert item["age"] == f"{low}-{low + 9}"
        assert item["district"] == row[3]
        assert item["visit_date"] == str(row[4].year)
        assert "id_number" not in item
        assert "notes" not in item
    assert row_counts(engine, "delivery") == {"delivery": 9}


def test_fields_and_filters(settings: Settings, engine: Engine) -> None:
    market = make_market(engine, settings.resolved_data_dir)
    with delivery_client(settings) as client:
        headers = bearer(client, engine, market.buyer_a)
        answer = client.get(
            rows_path(market.product.id, "fields=district,cost&filter=district:Haidian&filter=diagnosis:J20&limit=1000"),
            headers=headers,
        )
    assert answer.status_code == 200, answer.text
    items = answer.json()["items"]
    expected = [r for r in visit_rows() if r[3] == "Haidian" and r[5] == "J20"]
    assert len(items) == len(expected) > 0
    assert all(set(i) == {"district", "cost"} and i["district"] == "Haidian" for i in items)
    assert answer.json()["next_cursor"] is None


def test_filtered_pages_read_ahead_cover_the_matches_once_in_order(settings: Settings, engine: Engine) -> None:
    """A page read also reads (and caches) the pages after it: paging a filter 3 rows at a time, with or without
    those read-ahead pages in the cache, gives every matching row once, in order, and metered page by page."""
    market = make_market(engine, settings.resolved_data_dir)
    expected = [r for r in visit_rows() if r[3] == "Haidian"]
    with delivery_client(settings) as client:
        headers = bearer(client, engine, market.buyer_a)
        misses = PAGES.misses
        first = _walk(client, headers, market.product.id, "fields=district,cost&filter=district:Haidian&limit=3")
        assert PAGES.misses - misses <= 1  # one read gave every page (none at all if an earlier test cached them)
        again = _walk(client, headers, market.product.id, "fields=district,cost&filter=district:Haidian&limit=3")
    assert len(expected) > 6
    assert first == again
    assert [(i["district"], float(i["cost"])) for i in first] == [(r[3], r[6]) for r in expected]
    pages = -(-len(expected) // 3)
    assert row_counts(engine, "delivery") == {"delivery": 2 * pages}


def test_filter_on_a_generalised_field_uses_its_delivered_form(settings: Settings, engine: Engine) -> None:
    market = make_market(engine, settings.resolved_data_dir)
    with delivery_client(settings) as client:
        headers = bearer(client, engine, market.buyer_a)
        items = client.get(rows_path(market.product.id, "filter=age:30-39&limit=1000"), headers=headers).json()["items"]
    assert len(items) == 30
    assert {i["age"] for i in items} == {"30-39"}


def test_bad_fields_filters_and_cursors_are_refused(settings: Settings, engine: Engine) -> None:
    market = make_market(engine, settings.resolved_data_dir)
    path = rows_path(market.product.id)
    with delivery_client(settings) as client:
        headers = bearer(client, engine, market.buyer_a)
        assert_problem(client.get(path + "?fields=district,notes", headers=headers), 400, "field_not_permitted")
        assert_problem(client.get(path + "?filter=id_number:110101", headers=headers), 400, "field_not_permitted")
        assert_problem(client.get(path + "?filter=notes:x", headers=headers), 400, "field_not_permitted")
        assert_problem(client.get(path + "?filter=cost:cheap", headers=headers), 400, "invalid_filter")
        assert_problem(client.get(path + "?filter=district", headers=headers), 400, "invalid_filter")
        assert_problem(client.get(path + "?limit=1001", headers=headers), 400, "invalid_input")
        assert_problem(client.get(path + "?limit=0", headers=headers), 400, "invalid_input")
        assert_problem(client.get(path + "?format=xml", headers=headers), 400, "invalid_input")
        cursor = client.get(path + "?limit=5", headers=headers).json()["next_cursor"]
        tampered = cursor[:-3] + ("AAA" if not cursor.endswith("AAA") else "BBB")
        assert_problem(client.get(path + f"?cursor={tampered}", headers=headers), 400, "invalid_cursor")
        assert_problem(client.get(path + "?cursor=not-a-cursor", headers=headers), 400, "invalid_cursor")
        # A cursor of another product is refused too.
        other = make_market(engine, settings.resolved_data_dir, buyer_a=market.buyer_a)
        assert_problem(client.get(rows_path(other.product.id, f"cursor={cursor}"), headers=headers), 400, "invalid_cursor")
    # Only the one good call was metered.
    assert row_counts(engine, "delivery") == {"delivery": 1}


def test_csv_by_accept_header_or_format(settings: Settings, engine: Engine) -> None:
    market = make_market(engine, settings.resolved_data_dir)
    with delivery_client(settings) as client:
        headers = bearer(client, engine, market.buyer_a)
        by_accept = client.get(rows_path(market.product.id, "limit=4"), headers={**headers, "Accept": "text/csv"})
        by_format = client.get(rows_path(market.product.id, "limit=4&format=csv"), headers=headers)
        json_answer = client.get(rows_path(market.product.id, "limit=4"), headers=headers)
        as_json = json_answer.json()
        next_page = client.get(
            rows_path(market.product.id, f"limit=4&format=csv&cursor={by_format.headers['x-next-cursor']}"), headers=headers
        )
    assert by_accept.status_code == by_format.status_code == 200
    assert by_accept.headers["content-type"] == by_format.headers["content-type"] == "text/csv; charset=utf-8"
    assert json_answer.headers["content-type"] == "application/json"
    assert by_accept.text == by_format.text
    table = list(csv.DictReader(io.StringIO(by_format.text)))
    assert [r["patient_name"] for r in table] == [i["patient_name"] for i in as_json["items"]]
    assert list(table[0]) == ["patient_name", "age", "district", "visit_date", "diagnosis", "cost"]
    assert csv.DictReader(io.StringIO(next_page.text)).__next__()["patient_name"] not in {r["patient_name"] for r in table}


def test_a_buyer_person_with_a_session_may_fetch_rows(settings: Settings, engine: Engine) -> None:
    market = make_market(engine, settings.resolved_data_dir)
    person = make_user(engine, market.buyer_a, Role.member)
    with delivery_client(settings) as client:
        use_session(client, make_login_session(engine, person))
        answer = client.get(rows_path(market.product.id, "limit=3"))
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["items"]) == 3
