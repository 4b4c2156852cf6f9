"""Small helpers shared by tests: signing in through the real endpoints, reading problems."""

from __future__ import annotations

from typing import Any

from litestar import Litestar
from litestar.testing import TestClient

from marketplace.app import create_app
from marketplace.core.http import CSRF_HEADER, SESSION_COOKIE
from marketplace.core.settings import Settings


def csrf(client: TestClient[Any]) -> str:
    """Fetch a CSRF token (the cookie is kept by the client)."""
    response = client.get("/api/auth/csrf")
    assert response.status_code == 200
    return str(response.json()["csrf_token"])


def login(client: TestClient[Any], email: str, password: str) -> Any:
    """Sign in through POST /api/auth/login with a CSRF token."""
    return client.post("/api/auth/login", json={"email": email, "password": password}, headers={CSRF_HEADER: csrf(client)})


def use_session(client: TestClient[Any], token: str) -> dict[str, str]:
    """Act as the session's user; returns headers carrying the CSRF token for writes."""
    client.cookies.set(SESSION_COOKIE, token)
    return {CSRF_HEADER: csrf(client)}


def assert_problem(response: Any, status: int, code: str) -> dict[str, Any]:
    """The answer is an RFC 9457 problem with this status and code."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json"), response.headers["content-type"]
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["code"] == code, body
    assert body["title"]
    assert body["detail"]
    return body


_apps: dict[str, Any] = {}


def shared_app(settings: Settings) -> Litestar:
    """One app per distinct settings, reused by tests that only send requests (the permission matrices).

    Its lifespan (database engine, cache) still runs anew in each TestClient, so no state is shared:
    only the ~80 ms of building routes, schemas and templates is saved.
    """
    key = settings.model_dump_json()
    if key not in _apps:
        _apps[key] = create_app(settings)
    return _apps[key]  # type: ignore[no-any-return]
