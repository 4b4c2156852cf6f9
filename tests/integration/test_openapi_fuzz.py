"""Schemathesis fuzzing of every operation in /schema/openapi.json, through ASGI, as three callers.

The app runs once per test with its lifespan (database, cache) inside a requests-compatible ASGI
client (``starlette_testclient``, the transport schemathesis 3.x itself uses for ASGI apps); every
generated case is sent through that client with ``case.call(session=...)``, so the lifespan runs
once per test rather than once per request (what ``schemathesis.from_asgi`` would do).

Callers: an anonymous visitor (CSRF cookie and header as a browser has them, no session), a
signed-in administrator of a buyer organisation (session cookie and CSRF header on every call) and
a buyer's program (bearer token from POST /oauth/token). Well-formed (positive) and malformed
(negative) input is sent; strings in bodies sometimes end in a NUL character, which JSON and the
schema allow but PostgreSQL text cannot hold.

Checks on every answer:
- never a 5xx;
- every error answer is RFC 9457 problem+json with a ``code`` string;
- a malformed body or path parameter is refused with a 4xx;
- successful answers conform to the schema (status code, content type, headers and body).
  Error answers are held to the problem+json rule only: the schema documents Litestar's generic
  400 shape (``status_code``/``detail``/``extra`` as application/json), not the problems sent.

A last test sends bodies no JSON generator produces (invalid UTF-8, truncated, wrong media type)
to every operation that takes one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from schemathesis import Case, DataGenerationMethod, HookContext
from schemathesis.checks import not_a_server_error
from schemathesis.internal.checks import CheckContext
from schemathesis.internal.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.specs.openapi.schemas import BaseOpenAPISchema
from schemathesis.types import NotSet
from sqlalchemy import Engine
from starlette_testclient import TestClient as AsgiClient

from marketplace.app import create_app
from marketplace.core.http import CSRF_COOKIE, CSRF_HEADER, PROBLEM_JSON, SESSION_COOKIE
from marketplace.core.principal import OrgKind, Role
from marketplace.core.settings import Settings
from tests.conftest import TEST_ORIGIN
from tests.factories import make_api_client, make_login_session, make_org, make_user

pytestmark = pytest.mark.integration

schema = schemathesis.from_pytest_fixture(
    "api_schema", data_generation_methods=[DataGenerationMethod.positive, DataGenerationMethod.negative]
)

#: Per operation and caller. Derandomized so that CI runs are repeatable; no example database.
#: Schemathesis 3.x negative generation also depends on PYTHONHASHSEED: fix it too for identical runs.
FUZZ = settings(
    max_examples=20,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate, Phase.shrink],
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
)


# --- generation -----------------------------------------------------------------------------------


def _maybe_nul(value: Any) -> st.SearchStrategy[Any]:
    """``value`` with any of its strings possibly ending in NUL."""
    if isinstance(value, str):
        return st.sampled_from([value, value + "\x00"])
    if isinstance(value, dict):
        return st.fixed_dictionaries({key: _maybe_nul(item) for key, item in value.items()})
    if isinstance(value, list):
        return st.tuples(*(_maybe_nul(item) for item in value)).map(list)
    return st.just(value)


@schema.hook
def before_generate_body(context: HookContext, strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Half of the bodies get NULs in some of their strings."""
    return strategy.flatmap(lambda body: st.one_of(st.just(body), _maybe_nul(body)))


# --- checks ---------------------------------------------------------------------------------------


def problem_json_errors(ctx: CheckContext, response: Any, case: Case) -> bool | None:
    """Every error answer is RFC 9457 problem+json with type, title, status, detail and a ``code`` string."""
    if response.status_code < 400:
        return None
    content_type = response.headers.get("content-type", "")
    assert content_type.startswith(PROBLEM_JSON), f"Error answer is not problem+json: content-type {content_type!r}"
    try:
        body = response.json()
    except ValueError:
        raise AssertionError("Error answer is not valid JSON") from None
    assert isinstance(body, dict), f"Problem body is not an object: {body!r}"
    assert isinstance(body.get("code"), str), f"Problem has no 'code' string: {body!r}"
    assert body["code"], f"Problem has an empty 'code': {body!r}"
    assert body.get("status") == response.status_code, f"Problem 'status' {body.get('status')!r} != {response.status_code}"
    for key in ("type", "title", "detail"):
        assert isinstance(body.get(key), str), f"Problem has no '{key}' string: {body!r}"
    return None


def malformed_input_refused(ctx: CheckContext, response: Any, case: Case) -> bool | None:
    """A malformed body or path parameter is refused with a 4xx.

    Malformed query values are left out: requests drops some of them on the way (``kind=[]`` is sent
    as no parameter at all), and unknown query parameters are ignored by design.
    """
    meta = case.meta
    if meta is None:
        return None
    malformed_body = meta.body is not None and meta.body.is_negative and not isinstance(case.body, NotSet)
    malformed_path = meta.path_parameters is not None and meta.path_parameters.is_negative and bool(case.path_parameters)
    if not (malformed_body or malformed_path):
        return None
    return negative_data_rejection(ctx, response, case)


def conforms_as_documented(ctx: CheckContext, response: Any, case: Case) -> bool | None:
    """Answers are as documented: success fully (status, headers, type, body); errors that a route
    documents by their problem+json type and schema."""
    if response.status_code >= 400:
        if str(response.status_code) in (case.operation.definition.raw.get("responses") or {}):
            content_type_conformance(ctx, response, case)
            response_schema_conformance(ctx, response, case)
        return None
    status_code_conformance(ctx, response, case)
    response_headers_conformance(ctx, response, case)
    if response.status_code != 204:  # No Content: nothing to have a type or match a schema
        content_type_conformance(ctx, response, case)
        response_schema_conformance(ctx, response, case)
    return None


CHECKS = (not_a_server_error, problem_json_errors, malformed_input_refused, conforms_as_documented)


# --- the running app and its callers --------------------------------------------------------------


@dataclass
class Caller:
    """How one kind of caller presents itself on every request."""

    name: str
    http: AsgiClient = field(repr=False)
    headers: dict[str, str] = field(default_factory=dict, repr=False)
    cookies: dict[str, str] = field(default_factory=dict, repr=False)
    #: Called after each answer, e.g. to sign in again after the fuzzer signed out.
    after: Callable[[Case, Any], None] = field(default=lambda _case, _response: None, repr=False)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(f"Caller({self.name!r})")  # how Hypothesis prints it in failure reports: no tokens

    def send(self, method: str, path: str, **kwargs: Any) -> Any:
        """A hand-made request as this caller."""
        self.http.cookies.clear()
        headers = {**self.headers, **kwargs.pop("headers", {})}
        return self.http.request(method, TEST_ORIGIN + path, headers=headers, cookies=dict(self.cookies), **kwargs)

    def exercise(self, case: Case) -> None:
        """Send the case as this caller and run every check on the answer."""
        self.http.cookies.clear()  # only what this caller sends explicitly, never cookies set by earlier answers
        response = case.call_and_validate(
            session=self.http, headers=dict(self.headers), cookies=dict(self.cookies), checks=CHECKS
        )
        self.after(case, response)


@pytest.fixture
def served(settings: Settings) -> Iterator[AsgiClient]:
    """The app, started with its lifespan for the whole test, behind a requests-compatible ASGI client."""
    with AsgiClient(create_app(settings), base_url=TEST_ORIGIN) as http:
        yield http


@pytest.fixture
def api_schema(served: AsgiClient) -> BaseOpenAPISchema:
    """The app's own OpenAPI document; cases are sent through ``served`` (``session=`` on each call)."""
    response = served.get("/schema/openapi.json")
    assert response.status_code == 200, response.text
    schemathesis.experimental.OPEN_API_3_1.enable()  # the app publishes OpenAPI 3.1 (null types, type lists)
    # JSON Schema generators do not know "uuid": without this, path ids would be arbitrary text and only ever 404.
    schemathesis.openapi.format("uuid", st.uuids().map(str))
    return schemathesis.from_dict(response.json(), base_url=TEST_ORIGIN)


def _csrf(http: AsgiClient) -> tuple[str, str]:
    """A CSRF token and the cookie it pairs with."""
    http.cookies.clear()
    response = http.get("/api/auth/csrf")
    assert response.status_code == 200, response.text
    return str(response.json()["csrf_token"]), str(response.cookies[CSRF_COOKIE])


@pytest.fixture
def anonymous(served: AsgiClient) -> Caller:
    """A visitor who loaded a page (so holds a CSRF token) but is not signed in."""
    token, cookie = _csrf(served)
    return Caller("anonymous", served, headers={CSRF_HEADER: token}, cookies={CSRF_COOKIE: cookie})


@pytest.fixture
def person(served: AsgiClient, engine: Engine) -> Caller:
    """An administrator of a buyer organisation, signed in with a session cookie, CSRF header on every call."""
    user = make_user(engine, make_org(engine, OrgKind.buyer), Role.admin)
    token, cookie = _csrf(served)
    caller = Caller("buyer person", served, headers={CSRF_HEADER: token})

    def sign_in() -> None:
        caller.cookies = {SESSION_COOKIE: make_login_session(engine, user), CSRF_COOKIE: cookie}

    def sign_in_again_after_logout(case: Case, response: Any) -> None:
        if case.path == "/api/auth/logout" and response.status_code < 400:
            sign_in()

    sign_in()
    caller.after = sign_in_again_after_logout
    return caller


@pytest.fixture
def program(served: AsgiClient, engine: Engine) -> Caller:
    """A buyer's program holding every client scope, calling with a bearer token from POST /oauth/token."""
    client = make_api_client(engine, make_org(engine, OrgKind.buyer))
    served.cookies.clear()
    response = served.post("/oauth/token", data={"grant_type": "client_credentials"}, auth=(client.client_id, client.secret))
    assert response.status_code == 200, response.text
    return Caller("buyer program", served, headers={"Authorization": f"Bearer {response.json()['access_token']}"})


# --- the fuzz runs --------------------------------------------------------------------------------


@schema.parametrize()
@FUZZ
def test_fuzz_as_anonymous(case: Case, anonymous: Caller) -> None:
    anonymous.exercise(case)


@schema.parametrize()
@FUZZ
def test_fuzz_as_buyer_person(case: Case, person: Caller) -> None:
    person.exercise(case)


@schema.parametrize()
@FUZZ
def test_fuzz_as_buyer_program(case: Case, program: Caller) -> None:
    program.exercise(case)


# --- bodies no generator sends --------------------------------------------------------------------

#: (name, raw body, media type to send it as; None: each media type the operation documents)
RAW_BODIES: list[tuple[str, bytes, str | None]] = [
    ("invalid UTF-8", b'{"name": "\xff\xfe", "email": "\xff@example.com"}', None),
    ("invalid UTF-8 in a form", b"grant_type=\xff&client_id=\xfe", None),
    ("truncated", b'{"name": "', None),
    ("empty", b"", None),
    ("JSON null", b"null", None),
    ("deeply nested", b"[" * 5000 + b"]" * 5000, None),
    ("undocumented media type", b"<xml/>", "application/xml"),
    ("multipart without boundary", b"--x\r\n", "multipart/form-data"),
]


def _resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        *_, name = schema["$ref"].split("/")
        schema = document["components"]["schemas"][name]
    return schema


def _with_nul(document: dict[str, Any], schema: dict[str, Any], *, optional: bool) -> Any:
    """A value valid for ``schema`` in which every free-text string carries a NUL (required fields only unless ``optional``)."""
    schema = _resolve(document, schema)
    if "enum" in schema:
        return schema["enum"][0]
    for key in ("oneOf", "anyOf"):
        if key in schema:
            options = [_resolve(document, option) for option in schema[key]]
            usable = [option for option in options if option.get("type") != "null"]
            return _with_nul(document, usable[0], optional=optional) if usable else None
    kind = schema.get("type")
    if kind == "object":
        required = set(schema.get("required", []))
        properties = schema.get("properties", {})
        return {
            name: _with_nul(document, sub, optional=optional) for name, sub in properties.items() if optional or name in required
        }
    if kind == "array":
        return [_with_nul(document, schema.get("items", {}), optional=optional)] if schema.get("minItems") else []
    if kind == "string":
        formats = {"email": "nul.probe@example.com", "uuid": "00000000-0000-4000-8000-000000000000"}
        if schema.get("format") in formats:
            return formats[schema["format"]]
        text = "nul\x00probe".ljust(schema.get("minLength", 0), "x")
        return text[: schema.get("maxLength", len(text))]
    if kind in ("integer", "number"):
        return schema.get("minimum", 1)
    if kind == "boolean":
        return True
    return None


def _check_answer(where: str, response: Any, failures: list[str]) -> None:
    content_type = response.headers.get("content-type", "")
    if response.status_code >= 500:
        failures.append(f"{where}: {response.status_code} {response.text[:160]}")
    elif response.status_code >= 400 and not content_type.startswith(PROBLEM_JSON):
        failures.append(f"{where}: {response.status_code} answered as {content_type!r}")
    elif response.status_code >= 400 and not isinstance(response.json().get("code"), str):
        failures.append(f"{where}: problem without a code: {response.text[:160]}")


def _body_operations(api_schema: BaseOpenAPISchema) -> Iterator[Any]:
    for result in api_schema.get_all_operations():
        assert isinstance(result, Ok), result.err()
        operation = result.ok()
        if operation.body.items:
            yield operation


@pytest.mark.parametrize("caller_name", ["anonymous", "person"])
def test_raw_malformed_bodies_are_refused_as_problems(api_schema: BaseOpenAPISchema, caller_name: str, request: Any) -> None:
    caller: Caller = request.getfixturevalue(caller_name)
    failures: list[str] = []
    for operation in _body_operations(api_schema):
        method = operation.method.upper()
        for name, body, forced_type in RAW_BODIES:
            for media_type in [forced_type] if forced_type else [item.media_type for item in operation.body.items]:
                response = caller.send(method, operation.path, data=body, headers={"content-type": media_type})
                _check_answer(f"{method} {operation.path} [{name} as {media_type}]", response, failures)
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("caller_name", ["anonymous", "person"])
def test_nul_in_text_fields_is_stored_or_refused(api_schema: BaseOpenAPISchema, caller_name: str, request: Any) -> None:
    """A schema-valid body whose text fields hold NUL (fine for JSON, not for PostgreSQL text) never fails the server."""
    caller: Caller = request.getfixturevalue(caller_name)
    document = api_schema.raw_schema
    failures: list[str] = []
    for operation in _body_operations(api_schema):
        method = operation.method.upper()
        for item in operation.body.items:
            for optional in (False, True):
                body = _with_nul(document, item.definition.get("schema", {}), optional=optional)
                if item.media_type == "application/json":
                    response = caller.send(method, operation.path, json=body)
                else:
                    response = caller.send(method, operation.path, data=body, headers={"content-type": item.media_type})
                _check_answer(f"{method} {operation.path} {item.media_type} {body!r}", response, failures)
    assert not failures, "\n".join(failures)
