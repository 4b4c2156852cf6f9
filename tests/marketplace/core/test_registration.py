"""Buyer self-registration: the API and the page, bad input, duplicates, the throttle, and what reaches the ledger."""

from __future__ import annotations

import itertools
import json
import uuid
from typing import Any

import pytest
from litestar.testing import TestClient
from sqlalchemy import Engine, text

from marketplace.core.http import CSRF_HEADER, SESSION_COOKIE
from marketplace.core.identity import services
from marketplace.core.identity.api import REGISTRATION_POLICY
from marketplace.core.principal import OrgKind
from tests.factories import make_api_client, make_login_session, make_org, make_user
from tests.helpers import assert_problem, csrf
from tests.licensing.factories import ledger_events, row_counts
from tests.marketplace.subscriptions.support import qualification_body

TABLES = ("organisation", "user_account", "login_session", "ledger_entry")
PASSWORD = "a long enough password"
_unique = itertools.count(1)


def registration(**changes: Any) -> dict[str, Any]:
    """A valid registration with a fresh organisation name and e-mail."""
    n = f"{next(_unique)}-{uuid.uuid4().hex[:6]}"
    return {
        "organisation_name": f"Riverside Analytics {n}",
        "organisation_name_zh": f"河畔分析 {n}",
        "email": f"admin{n}@riverside.test-market.cn",
        "display_name": "Wang Fang",
        "password": PASSWORD,
        **changes,
    }


def register(client: TestClient[Any], body: Any) -> Any:
    """POST /api/buyers/register with a CSRF token, as the login route expects."""
    return client.post("/api/buyers/register", json=body, headers={CSRF_HEADER: csrf(client)})


def register_page(client: TestClient[Any], form: dict[str, Any], **headers: str) -> Any:
    """POST the /register form with its CSRF field."""
    return client.post("/register", data={**form, "_csrf_token": csrf(client)}, headers=headers, follow_redirects=False)


def _stored_org(engine: Engine, org_id: str) -> dict[str, Any]:
    with engine.connect() as conn:
        row = conn.execute(
            text("SELECT name, name_zh, kind FROM organisation WHERE id = :id"),
            {"id": uuid.UUID(org_id).hex if engine.dialect.name == "sqlite" else uuid.UUID(org_id)},
        ).one()
    return {"name": row.name, "name_zh": row.name_zh, "kind": str(row.kind)}


# --- the API --------------------------------------------------------------------------------------------------------------


def test_a_buyer_registers_is_signed_in_and_recorded_without_personal_data(client: TestClient[Any], engine: Engine) -> None:
    body = registration(organisation_name="  Riverside Analytics Ltd  ", email="Wang.Fang@Riverside.test-market.cn")
    response = register(client, body)

    assert response.status_code == 201, response.text
    me = response.json()
    assert me["kind"] == "user"
    assert me["org"]["kind"] == "buyer"
    assert me["org"]["name"] == "Riverside Analytics Ltd"
    assert me["org"]["name_zh"] == body["organisation_name_zh"]
    assert me["user"]["email"] == "wang.fang@riverside.test-market.cn"
    assert me["user"]["role"] == "admin"
    assert me["csrf_token"]
    assert "password" not in response.text
    assert _stored_org(engine, me["org"]["id"]) == {
        "name": "Riverside Analytics Ltd",
        "name_zh": body["organisation_name_zh"],
        "kind": "buyer",
    }
    # The cookie signs the new administrator in.
    assert client.cookies.get(SESSION_COOKIE)
    now = client.get("/api/me")
    assert now.status_code == 200
    assert now.json()["user"]["id"] == me["user"]["id"]
    assert now.json()["org"]["kind"] == "buyer"

    events = ledger_events(engine, "identity.")
    assert [e["type"] for e in events] == ["identity.organisation_registered", "identity.user_added", "identity.signed_in"]
    registered = events[0]
    assert registered["subjects"] == {"organisation": me["org"]["id"]}
    assert registered["payload"] == {"kind": "buyer", "self_registered": True}
    assert registered["actor"] == {"kind": "user", "id": me["user"]["id"]}
    assert events[1]["payload"] == {"role": "admin"}
    recorded = json.dumps(events).lower()
    assert "riverside.test-market.cn" not in recorded
    assert "wang fang" not in recorded


def test_the_new_buyer_goes_on_to_submit_its_qualification(client: TestClient[Any], engine: Engine) -> None:
    operator = make_org(engine, OrgKind.operator)
    assert register(client, registration()).status_code == 201
    submitted = client.post(
        "/api/buyers/qualifications", json=qualification_body(operator.id), headers={CSRF_HEADER: csrf(client)}
    )
    assert submitted.status_code == 201, submitted.text
    assert submitted.json()["status"] == "submitted"


BAD_INPUT = {
    "name_too_short": {"organisation_name": "A"},
    "name_only_spaces": {"organisation_name": "    "},
    "name_short_once_trimmed": {"organisation_name": "  X  "},
    "name_too_long": {"organisation_name": "N" * 201},
    "name_zh_too_long": {"organisation_name_zh": "名" * 201},
    "email_without_at": {"email": "wang.fang.riverside.test-market.cn"},
    "email_without_domain": {"email": "wang@"},
    "email_empty": {"email": ""},
    "display_name_empty": {"display_name": "   "},
    "display_name_too_long": {"display_name": "W" * 201},
    "password_too_short": {"password": "short pass"},
    "password_empty": {"password": ""},
    "name_not_text": {"organisation_name": 42},
    "unknown_field": {"kind": "operator"},
}


@pytest.mark.parametrize("changes", BAD_INPUT.values(), ids=BAD_INPUT.keys())
def test_bad_input_is_refused_and_writes_nothing(client: TestClient[Any], engine: Engine, changes: dict[str, Any]) -> None:
    before = row_counts(engine, *TABLES)
    body = assert_problem(register(client, registration(**changes)), 400, "invalid_input")
    assert body["errors"]
    assert row_counts(engine, *TABLES) == before
    assert SESSION_COOKIE not in client.cookies


@pytest.mark.parametrize("missing", ["organisation_name", "email", "display_name", "password"])
def test_a_missing_field_is_refused(client: TestClient[Any], engine: Engine, missing: str) -> None:
    before = row_counts(engine, *TABLES)
    body = registration()
    del body[missing]
    assert_problem(register(client, body), 400, "invalid_input")
    assert row_counts(engine, *TABLES) == before


def test_a_body_that_is_not_an_object_is_refused(client: TestClient[Any], engine: Engine) -> None:
    before = row_counts(engine, *TABLES)
    assert_problem(register(client, ["not", "an", "object"]), 400, "invalid_input")
    response = client.post(
        "/api/buyers/register", content=b"{not json", headers={CSRF_HEADER: csrf(client), "content-type": "application/json"}
    )
    assert_problem(response, 400, "invalid_input")
    assert row_counts(engine, *TABLES) == before


def test_a_taken_email_is_refused_and_no_organisation_is_left_behind(client: TestClient[Any], engine: Engine) -> None:
    existing = make_user(engine, make_org(engine, OrgKind.operator))
    before = row_counts(engine, *TABLES)
    body = registration(email=existing.email.upper())
    assert_problem(register(client, body), 409, "email_taken")
    assert row_counts(engine, *TABLES) == before
    assert SESSION_COOKIE not in client.cookies


@pytest.mark.parametrize("spelling", ["same", "other case"])
def test_a_taken_organisation_name_is_refused(client: TestClient[Any], engine: Engine, spelling: str) -> None:
    existing = make_org(engine, OrgKind.buyer, name="Harbour Logistics Group")
    before = row_counts(engine, *TABLES)
    name = existing.name if spelling == "same" else " harbour LOGISTICS group "
    assert_problem(register(client, registration(organisation_name=name)), 409, "org_name_taken")
    assert row_counts(engine, *TABLES) == before


def test_a_duplicate_caught_only_by_the_database_still_leaves_nothing_half_written(
    client: TestClient[Any], engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two registrations racing with one e-mail: the second one's organisation must not survive its refusal."""
    existing = make_user(engine, make_org(engine, OrgKind.buyer))

    async def nobody(_session: Any, _email: str) -> None:
        return None

    monkeypatch.setattr(services, "find_user", nobody)  # as if the other registration committed after our check
    before = row_counts(engine, *TABLES)
    assert_problem(register(client, registration(email=existing.email)), 409, "email_taken")
    assert row_counts(engine, *TABLES) == before


def test_registrations_from_one_address_are_throttled(client: TestClient[Any], engine: Engine) -> None:
    taken = make_user(engine, make_org(engine, OrgKind.buyer))
    allowed = REGISTRATION_POLICY.max_per_address
    # Refused attempts count too (else the form could probe which e-mails are taken without limit).
    assert_problem(register(client, registration(email=taken.email)), 409, "email_taken")
    for _ in range(allowed - 1):
        client.cookies.clear()
        assert register(client, registration()).status_code == 201
    client.cookies.clear()
    before = row_counts(engine, *TABLES)
    throttled = register(client, registration())
    body = assert_problem(throttled, 429, "registration_throttled")
    assert 0 < int(throttled.headers["retry-after"]) <= REGISTRATION_POLICY.window_seconds
    assert body["retry_after"] == int(throttled.headers["retry-after"])
    assert row_counts(engine, *TABLES) == before
    # Bad input is refused before the throttle is even consulted.
    assert_problem(register(client, registration(password="short")), 400, "invalid_input")


def test_a_signed_in_person_cannot_register_another_organisation(client: TestClient[Any], engine: Engine) -> None:
    user = make_user(engine, make_org(engine, OrgKind.buyer))
    client.cookies.set(SESSION_COOKIE, make_login_session(engine, user))
    before = row_counts(engine, *TABLES)
    assert_problem(register(client, registration()), 409, "already_signed_in")
    assert row_counts(engine, *TABLES) == before


def test_a_program_token_cannot_register(client: TestClient[Any], engine: Engine) -> None:
    api_client = make_api_client(engine, make_org(engine, OrgKind.buyer))
    token = client.post("/oauth/token", data={"grant_type": "client_credentials"}, auth=(api_client.client_id, api_client.secret))
    before = row_counts(engine, *TABLES)
    response = client.post(
        "/api/buyers/register", json=registration(), headers={"Authorization": f"Bearer {token.json()['access_token']}"}
    )
    assert_problem(response, 403, "token_not_accepted")
    assert row_counts(engine, *TABLES) == before


def test_registration_needs_the_csrf_token_like_sign_in(client: TestClient[Any], engine: Engine) -> None:
    before = row_counts(engine, *TABLES)
    csrf(client)  # the cookie alone is not enough: the header must repeat it
    assert_problem(client.post("/api/buyers/register", json=registration()), 403, "csrf_failed")
    assert row_counts(engine, *TABLES) == before


def test_the_route_is_documented(client: TestClient[Any]) -> None:
    operation = client.get("/schema/openapi.json").json()["paths"]["/api/buyers/register"]["post"]
    assert operation["summary"] == "Register a buyer organisation"
    assert {"201", "400", "403", "409", "429"} <= set(operation["responses"])


# --- the page -------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("language", "title", "field", "link"),
    [
        ("en", "Register your organisation", "Organisation name", "Register your organisation as a buyer"),
        ("zh-CN", "注册本单位", "单位名称", "注册成为需求方企业"),
    ],
)
def test_the_page_speaks_both_languages_and_the_login_page_links_to_it(
    client: TestClient[Any], language: str, title: str, field: str, link: str
) -> None:
    page = client.get("/register", headers={"accept-language": language})
    assert page.status_code == 200
    assert f'<html lang="{language}">' in page.text
    assert title in page.text
    assert field in page.text
    assert 'action="/register"' in page.text
    assert 'name="_csrf_token"' in page.text
    login = client.get("/login", headers={"accept-language": language})
    assert 'href="/register"' in login.text
    assert link in login.text


def test_a_signed_in_person_is_sent_home_from_the_page(client: TestClient[Any], engine: Engine) -> None:
    client.cookies.set(SESSION_COOKIE, make_login_session(engine, make_user(engine, make_org(engine, OrgKind.buyer))))
    response = client.get("/register", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/"


def test_the_page_registers_signs_in_and_leads_to_the_qualification_form(client: TestClient[Any], engine: Engine) -> None:
    form = registration()
    response = register_page(client, form)
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/buyer"
    assert client.cookies.get(SESSION_COOKIE)
    console = client.get("/buyer", headers={"accept-language": "en"})
    assert console.status_code == 200
    assert 'data-form="qualification"' in console.text
    assert form["organisation_name"] in console.text
    me = client.get("/api/me").json()
    assert me["org"]["kind"] == "buyer"
    assert me["user"]["email"] == form["email"]


def test_page_errors_are_shown_in_the_form_with_the_values_kept(client: TestClient[Any], engine: Engine) -> None:
    before = row_counts(engine, *TABLES)
    form = registration(organisation_name="<b>X</b>" * 30, email="not-an-email", password="too short!")
    response = register_page(client, form, **{"accept-language": "en"})
    assert response.status_code == 400
    assert "Give the organisation&#39;s name: 2 to 200 characters." in response.text
    assert "Give a valid e-mail address." in response.text
    assert "Choose a password of at least 12 characters." in response.text
    assert 'value="not-an-email"' in response.text
    assert 'value="&lt;b&gt;X&lt;/b&gt;' in response.text
    assert "<b>X</b>" not in response.text
    assert form["organisation_name_zh"] in response.text
    assert "too short!" not in response.text
    assert 'aria-invalid="true"' in response.text
    assert row_counts(engine, *TABLES) == before
    assert SESSION_COOKIE not in client.cookies


def test_page_refusals_are_shown_in_the_visitors_language(client: TestClient[Any], engine: Engine) -> None:
    existing = make_user(engine, make_org(engine, OrgKind.buyer))
    before = row_counts(engine, *TABLES)
    english = register_page(client, registration(email=existing.email), **{"accept-language": "en"})
    assert english.status_code == 409
    assert "This e-mail address already has an account: sign in instead." in english.text
    assert f'value="{existing.email}"' in english.text
    chinese = register_page(client, registration(email=existing.email), **{"accept-language": "zh-CN"})
    assert chinese.status_code == 409
    assert "该邮箱已有账号" in chinese.text
    short = register_page(client, registration(password="short"), **{"accept-language": "zh-CN"})
    assert short.status_code == 400
    assert "请设置至少 12 个字符的密码。" in short.text
    assert row_counts(engine, *TABLES) == before


def test_the_page_is_throttled_with_the_api(client: TestClient[Any], engine: Engine) -> None:
    taken = make_user(engine, make_org(engine, OrgKind.buyer))
    for _ in range(REGISTRATION_POLICY.max_per_address):
        assert register_page(client, registration(email=taken.email)).status_code == 409
    throttled = register_page(client, registration(), **{"accept-language": "en"})
    assert throttled.status_code == 429
    assert int(throttled.headers["retry-after"]) > 0
    assert "Too many registrations from your address. Try again in" in throttled.text
    assert_problem(register(client, registration()), 429, "registration_throttled")
