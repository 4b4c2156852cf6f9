"""Sign-in: right and wrong credentials, throttling, logout, cookie flags and CSRF."""

from __future__ import annotations

from http.cookies import SimpleCookie

from litestar.testing import TestClient
from sqlalchemy import Engine, func, select

from marketplace.app import create_app
from marketplace.core.http import CSRF_HEADER, SESSION_COOKIE
from marketplace.core.identity.models import LoginSession
from marketplace.core.principal import OrgKind
from marketplace.core.settings import Environment, Settings
from tests.conftest import TEST_ORIGIN
from tests.factories import PASSWORD, make_org, make_user
from tests.helpers import assert_problem, csrf, login


def _sessions(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(LoginSession)).scalar_one())


def test_right_password_signs_in_and_me_answers(client: TestClient, engine: Engine) -> None:
    org = make_org(engine, OrgKind.operator)
    user = make_user(engine, org)
    response = login(client, user.email.upper(), PASSWORD)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["kind"] == "user"
    assert body["user"]["email"] == user.email
    assert body["org"]["kind"] == "operator"
    assert "password_hash" not in response.text
    me = client.get("/api/me")
    assert me.status_code == 200
    assert me.json()["user"]["id"] == str(user.id)
    assert _sessions(engine) == 1


def test_wrong_password_and_unknown_email_are_refused_alike(client: TestClient, engine: Engine) -> None:
    user = make_user(engine, make_org(engine, OrgKind.buyer))
    wrong = assert_problem(login(client, user.email, "not the password"), 401, "invalid_credentials")
    unknown = assert_problem(login(client, "nobody@nowhere.test-market.cn", PASSWORD), 401, "invalid_credentials")
    assert wrong["detail"] == unknown["detail"]
    assert SESSION_COOKIE not in client.cookies
    assert_problem(client.get("/api/me"), 401, "not_authenticated")
    assert _sessions(engine) == 0


def test_inactive_user_cannot_sign_in(client: TestClient, engine: Engine) -> None:
    user = make_user(engine, make_org(engine, OrgKind.buyer), active=False)
    assert_problem(login(client, user.email, PASSWORD), 401, "invalid_credentials")


def test_repeated_failures_throttle_even_the_right_password(client: TestClient, engine: Engine, settings: Settings) -> None:
    user = make_user(engine, make_org(engine, OrgKind.buyer))
    for _ in range(settings.login_max_failures):
        assert_problem(login(client, user.email, "wrong"), 401, "invalid_credentials")
    throttled = login(client, user.email, PASSWORD)
    body = assert_problem(throttled, 429, "login_throttled")
    assert int(throttled.headers["retry-after"]) > 0
    assert body["retry_after"] > 0
    assert _sessions(engine) == 0
    # Another account from the same address is not locked by this one.
    other = make_user(engine, make_org(engine, OrgKind.buyer))
    assert login(client, other.email, PASSWORD).status_code == 200


def test_a_success_resets_the_failure_count(client: TestClient, engine: Engine, settings: Settings) -> None:
    user = make_user(engine, make_org(engine, OrgKind.buyer))
    for _ in range(settings.login_max_failures - 1):
        login(client, user.email, "wrong")
    assert login(client, user.email, PASSWORD).status_code == 200
    for _ in range(settings.login_max_failures - 1):
        assert_problem(login(client, user.email, "wrong"), 401, "invalid_credentials")


def test_logout_ends_the_session_on_the_server(client: TestClient, engine: Engine) -> None:
    user = make_user(engine, make_org(engine, OrgKind.owner))
    assert login(client, user.email, PASSWORD).status_code == 200
    token = client.cookies[SESSION_COOKIE]
    response = client.post("/api/auth/logout", headers={CSRF_HEADER: csrf(client)})
    assert response.status_code == 204
    assert _sessions(engine) == 0
    assert_problem(client.get("/api/me"), 401, "not_authenticated")
    # Replaying the old cookie does not bring the session back.
    client.cookies.set(SESSION_COOKIE, token)
    assert_problem(client.get("/api/me"), 401, "not_authenticated")


def test_every_login_gets_a_new_session_token(client: TestClient, engine: Engine) -> None:
    user = make_user(engine, make_org(engine, OrgKind.owner))
    login(client, user.email, PASSWORD)
    first = client.cookies[SESSION_COOKIE]
    login(client, user.email, PASSWORD)
    assert client.cookies[SESSION_COOKIE] != first


def _set_cookie(response: object, name: str) -> SimpleCookie:
    headers = response.headers.get_list("set-cookie")  # type: ignore[attr-defined]
    raw = next(h for h in headers if h.startswith(f"{name}="))
    cookie: SimpleCookie = SimpleCookie()
    cookie.load(raw)
    cookie["__raw__"] = raw
    return cookie


def test_session_cookie_flags_in_development(client: TestClient, engine: Engine) -> None:
    user = make_user(engine, make_org(engine, OrgKind.operator))
    response = login(client, user.email, PASSWORD)
    raw = _set_cookie(response, SESSION_COOKIE)["__raw__"].value.lower()
    assert "httponly" in raw
    assert "samesite=lax" in raw
    assert "path=/" in raw
    assert "max-age=" in raw
    assert "secure" not in raw.replace("samesite", "")


def test_session_cookie_is_secure_when_configured(settings: Settings, engine: Engine) -> None:
    user = make_user(engine, make_org(engine, OrgKind.operator))
    secure_settings = settings.model_copy(update={"cookie_secure": True})
    with TestClient(app=create_app(secure_settings), base_url=TEST_ORIGIN.replace("http:", "https:")) as client:
        response = login(client, user.email, PASSWORD)
        assert response.status_code == 200
        raw = _set_cookie(response, SESSION_COOKIE)["__raw__"].value.lower()
        assert "; secure" in raw
        assert "httponly" in raw


def test_production_turns_secure_cookies_on_by_default(settings: Settings) -> None:
    production = Settings(
        env=Environment.production,
        secret_key="x" * 40,
        jwt_private_key="-----BEGIN PRIVATE KEY-----",
        ledger_private_key="-----BEGIN PRIVATE KEY-----",
        pseudonym_key="k" * 40,
        public_url="https://market.example.cn",
        database_url="postgresql://db/market",
    )
    assert production.secure_cookies is True
    assert settings.secure_cookies is False


def test_login_without_csrf_token_is_refused(client: TestClient, engine: Engine) -> None:
    user = make_user(engine, make_org(engine, OrgKind.buyer))
    response = client.post("/api/auth/login", json={"email": user.email, "password": PASSWORD})
    assert_problem(response, 403, "csrf_failed")
    assert _sessions(engine) == 0


def test_write_with_session_but_wrong_csrf_token_is_refused(client: TestClient, engine: Engine) -> None:
    org = make_org(engine, OrgKind.buyer)
    user = make_user(engine, org)
    assert login(client, user.email, PASSWORD).status_code == 200
    response = client.post("/api/buyers/clients", json={"name": "x"}, headers={CSRF_HEADER: "forged"})
    assert_problem(response, 403, "csrf_failed")
    response = client.post("/api/buyers/clients", json={"name": "x"})
    assert_problem(response, 403, "csrf_failed")
    ok = client.post("/api/buyers/clients", json={"name": "x"}, headers={CSRF_HEADER: csrf(client)})
    assert ok.status_code == 201


def test_form_post_without_csrf_field_is_refused(client: TestClient, engine: Engine) -> None:
    user = make_user(engine, make_org(engine, OrgKind.buyer))
    csrf(client)
    response = client.post("/login", data={"email": user.email, "password": PASSWORD}, headers={"accept": "text/html"})
    assert response.status_code == 403
    assert "csrf_failed" in response.text
    assert _sessions(engine) == 0


def test_form_login_with_csrf_field_redirects_home(client: TestClient, engine: Engine) -> None:
    user = make_user(engine, make_org(engine, OrgKind.regulator))
    token = csrf(client)
    response = client.post(
        "/login",
        data={"email": user.email, "password": PASSWORD, "_csrf_token": token, "next": "/account/members"},
        follow_redirects=False,
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/account/members"
    assert client.get("/api/me").json()["org"]["kind"] == "regulator"


def test_form_login_never_redirects_off_site(client: TestClient, engine: Engine) -> None:
    user = make_user(engine, make_org(engine, OrgKind.buyer))
    token = csrf(client)
    response = client.post(
        "/login",
        data={"email": user.email, "password": PASSWORD, "_csrf_token": token, "next": "//evil.example.com/"},
        follow_redirects=False,
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/"


def test_malformed_login_body_is_a_400_problem(client: TestClient) -> None:
    headers = {CSRF_HEADER: csrf(client)}
    assert_problem(client.post("/api/auth/login", json={"email": "a@b.cn"}, headers=headers), 400, "invalid_input")
    assert_problem(
        client.post("/api/auth/login", content=b"{not json", headers={**headers, "content-type": "application/json"}),
        400,
        "invalid_input",
    )
    assert_problem(client.post("/api/auth/login", json=[1, 2], headers=headers), 400, "invalid_input")


def test_nul_characters_are_refused_before_reaching_the_database(client: TestClient, engine: Engine) -> None:
    headers = {CSRF_HEADER: csrf(client)}
    response = client.post("/api/auth/login", json={"email": "nul\u0000probe@x.cn", "password": "x"}, headers=headers)
    assert_problem(response, 400, "invalid_input")
    assert _sessions(engine) == 0


def test_undecodable_and_deeply_nested_bodies_are_400(client: TestClient) -> None:
    headers = {CSRF_HEADER: csrf(client), "content-type": "application/json"}
    assert_problem(
        client.post("/api/auth/login", content=b'{"email":"\xff@x.cn","password":"x"}', headers=headers), 400, "invalid_input"
    )
    assert_problem(client.post("/api/auth/login", content=b"[" * 5000 + b"]" * 5000, headers=headers), 400, "invalid_input")
