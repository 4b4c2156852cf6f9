"""The published OpenAPI document matches the app: every machine route documented, valid OpenAPI 3.1.

The expected operations come from the app's own route table (``app.routes``), so a new route under
/api, /oauth, /.well-known, /health or /data that is hidden from the schema, or lacks a summary or
responses, fails here. Pages (HTML) and the documentation endpoints under /schema are left out.
"""

from __future__ import annotations

import re
from typing import Any

import jsonschema
import pytest
from litestar import Litestar
from litestar.routes import HTTPRoute
from litestar.testing import TestClient
from schemathesis.specs.openapi.definitions import OPENAPI_31

pytestmark = pytest.mark.integration

#: Path prefixes of machine interfaces; everything else is a page, a static file or the docs themselves.
API_PREFIXES = ("/api/", "/oauth/", "/.well-known/", "/data/")
API_PATHS = ("/health",)
#: Methods the framework answers on its own for every route (never documented).
IMPLICIT_METHODS = frozenset({"OPTIONS", "HEAD"})
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")

Operation = tuple[str, str]  # (METHOD, /path/{param})


def _is_api(path: str) -> bool:
    return path.startswith(API_PREFIXES) or path in API_PATHS or any(path.startswith(p + "/") for p in API_PATHS)


def _app_operations(app: Litestar) -> dict[Operation, Any]:
    """Every machine operation the app serves, with its handler (path parameters without their types)."""
    found: dict[Operation, Any] = {}
    for route in app.routes:
        if not isinstance(route, HTTPRoute) or not _is_api(route.path_format):
            continue
        for handler in route.route_handlers:
            for method in handler.http_methods:
                if method not in IMPLICIT_METHODS:
                    found[(method.upper(), route.path_format)] = handler
    return found


def _schema_operations(document: dict[str, Any]) -> dict[Operation, dict[str, Any]]:
    return {
        (method.upper(), path): operation
        for path, item in document.get("paths", {}).items()
        for method, operation in item.items()
        if method in HTTP_METHODS
    }


@pytest.fixture
def document(client: TestClient[Any]) -> dict[str, Any]:
    response = client.get("/schema/openapi.json")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.fixture
def app(client: TestClient[Any]) -> Litestar:
    application: Litestar = client.app  # type: ignore[assignment]
    return application


def test_the_route_table_is_read_correctly(app: Litestar) -> None:
    operations = _app_operations(app)
    for anchor in [
        ("POST", "/oauth/token"),
        ("GET", "/health"),
        ("GET", "/api/me"),
        ("POST", "/api/buyers/clients/{client_uuid}/revoke"),
    ]:
        assert anchor in operations, sorted(operations)
    assert not any(path.startswith(("/schema", "/static", "/account", "/login")) for _, path in operations)


def test_every_machine_route_is_documented_with_a_summary(app: Litestar, document: dict[str, Any]) -> None:
    served = _app_operations(app)
    documented = _schema_operations(document)
    hidden = sorted(f"{m} {p} ({h.handler_name})" for (m, p), h in served.items() if not h.resolve_include_in_schema())
    assert not hidden, f"Machine routes hidden from the OpenAPI document: {hidden}"
    missing = sorted(f"{m} {p}" for m, p in served.keys() - documented.keys())
    assert not missing, f"Served but not in /schema/openapi.json: {missing}"
    stale = sorted(f"{m} {p}" for m, p in documented.keys() - served.keys())
    assert not stale, f"Documented but not served (or not a machine route): {stale}"
    # Litestar makes up a summary from the function name; only one the handler states counts as documentation.
    unsummarised = sorted(
        f"{m} {p} ({h.handler_name})" for (m, p), h in served.items() if not str(getattr(h, "summary", None) or "").strip()
    )
    assert not unsummarised, f"Handlers without an explicit summary=...: {unsummarised}"
    mismatched = sorted(f"{m} {p}" for (m, p), op in documented.items() if op.get("summary") != served[(m, p)].summary)
    assert not mismatched, f"Documented summary differs from the handler's: {mismatched}"


def test_operations_have_unique_ids_and_tags(document: dict[str, Any]) -> None:
    operations = _schema_operations(document)
    ids = [op.get("operationId") for op in operations.values()]
    assert all(ids), "every operation needs an operationId"
    assert len(ids) == len(set(ids)), f"duplicate operationIds: {sorted(i for i in ids if ids.count(i) > 1)}"
    untagged = sorted(f"{m} {p}" for (m, p), op in operations.items() if not op.get("tags"))
    assert not untagged, f"Operations without a tag: {untagged}"


def test_every_operation_declares_its_responses(app: Litestar, document: dict[str, Any]) -> None:
    served = _app_operations(app)
    problems: list[str] = []
    for (method, path), operation in _schema_operations(document).items():
        where = f"{method} {path}"
        responses: dict[str, Any] = operation.get("responses") or {}
        if not responses:
            problems.append(f"{where}: no responses")
            continue
        if not any(code.startswith(("2", "3")) for code in responses):
            problems.append(f"{where}: no success response among {sorted(responses)}")
        for code, response in responses.items():
            if not re.fullmatch(r"[1-5](\d\d|XX)|default", code):
                problems.append(f"{where}: bad status key {code!r}")
            if not str(response.get("description") or "").strip():
                problems.append(f"{where} {code}: no description")
            if code.startswith("2") and code != "204":
                content = response.get("content") or {}
                if not content or not all("schema" in media for media in content.values()):
                    problems.append(f"{where} {code}: no body schema")
        handler = served.get((method, path))
        if handler is not None and str(handler.status_code) not in responses:
            problems.append(f"{where}: answers {handler.status_code} but documents {sorted(responses)}")
    assert not problems, "\n".join(problems)


def test_path_parameters_are_declared(document: dict[str, Any]) -> None:
    problems: list[str] = []
    for (method, path), operation in _schema_operations(document).items():
        templated = set(re.findall(r"{([^}]+)}", path))
        declared = {
            p["name"]
            for p in [*document["paths"][path].get("parameters", []), *operation.get("parameters", [])]
            if p.get("in") == "path"
        }
        if templated != declared:
            problems.append(f"{method} {path}: template has {sorted(templated)}, parameters declare {sorted(declared)}")
    assert not problems, "\n".join(problems)


def test_token_endpoint_documents_its_form_body(document: dict[str, Any]) -> None:
    for path, fields in [
        ("/oauth/token", {"grant_type", "scope", "client_id", "client_secret"}),
        ("/oauth/revoke", {"token", "token_type_hint", "client_id", "client_secret"}),
    ]:
        body = document["paths"][path]["post"].get("requestBody")
        assert body, f"{path} documents no request body"
        content = body.get("content", {})
        assert list(content) == ["application/x-www-form-urlencoded"], f"{path} body media types: {list(content)}"
        schema = _resolve(document, content["application/x-www-form-urlencoded"]["schema"])
        assert schema.get("type") == "object"
        assert fields <= set(schema.get("properties", {})), f"{path} form fields: {sorted(schema.get('properties', {}))}"
    token_ok = _resolve(
        document, document["paths"]["/oauth/token"]["post"]["responses"]["200"]["content"]["application/json"]["schema"]
    )
    assert {"access_token", "token_type", "expires_in"} <= set(token_ok.get("required", [])), token_ok


def _resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        ref: str = schema["$ref"]
        assert ref.startswith("#/"), f"external reference {ref}"
        target: Any = document
        for part in ref[2:].split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        schema = target
    return schema


def test_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    # The official OpenAPI 3.1 meta-schema (2022-10-07), as shipped with schemathesis; openapi-spec-validator is not installed.
    assert re.fullmatch(r"3\.1\.\d+", document.get("openapi", "")), document.get("openapi")
    validator = jsonschema.Draft202012Validator(OPENAPI_31)
    errors = sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors[:20])
    assert document["info"].get("title")
    assert document["info"].get("version")


def test_schemas_are_valid_json_schema_and_references_resolve(document: dict[str, Any]) -> None:
    for name, schema in document.get("components", {}).get("schemas", {}).items():
        try:
            jsonschema.Draft202012Validator.check_schema(schema)
        except jsonschema.SchemaError as exc:
            pytest.fail(f"components/schemas/{name}: {exc.message}")

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                try:
                    _resolve(document, node)
                except (KeyError, TypeError, AssertionError):
                    pytest.fail(f"{where}: unresolvable $ref {node['$ref']}")
            for key, value in node.items():
                walk(value, f"{where}/{key}")
        elif isinstance(node, list):
            for index, value in enumerate(node):
                walk(value, f"{where}/{index}")

    walk(document, "#")


def test_every_documented_error_is_a_problem(document: dict[str, Any]) -> None:
    """Clients can rely on the docs: each 4xx a route documents is RFC 9457 problem+json with a `code`."""
    wrong: list[str] = []
    for (method, path), operation in _schema_operations(document).items():
        errors = {code: r for code, r in (operation.get("responses") or {}).items() if code.startswith("4")}
        if "400" not in errors:
            wrong.append(f"{method} {path}: 400 not documented")
        for code, response in errors.items():
            content = response.get("content") or {}
            if set(content) != {"application/problem+json"}:
                wrong.append(f"{method} {path} {code}: {sorted(content)}")
                continue
            schema = _resolve(document, content["application/problem+json"]["schema"])
            if not {"type", "title", "status", "detail", "code"} <= set(schema.get("required", [])):
                wrong.append(f"{method} {path} {code}: problem schema lacks required fields")
    assert not wrong, "\n".join(wrong)
