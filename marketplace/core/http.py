"""Web glue of the core: problem+json errors, who-is-calling middleware, CSRF, guards, dependencies.

Every error answer is RFC 9457 problem+json with a stable ``code``; pages get an HTML error page.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from http import HTTPStatus
from typing import Any, TypeAlias

from litestar import Request, Response
from litestar.config.csrf import CSRFConfig
from litestar.connection import ASGIConnection
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.enums import HttpMethod, ScopeType
from litestar.exceptions import HTTPException, PermissionDeniedException, ValidationException
from litestar.handlers.base import BaseRouteHandler
from litestar.handlers.http_handlers import HTTPRouteHandler
from litestar.middleware.csrf import CSRFMiddleware
from litestar.openapi.datastructures import ResponseSpec
from litestar.response import Template
from litestar.types import ASGIApp, Receive, Scope, Send
from pydantic import BaseModel, ConfigDict, Field
from sqlmodel.ext.asyncio.session import AsyncSession

from marketplace.core.errors import DomainError, Forbidden, NotAuthenticated
from marketplace.core.events import Actor, DomainEvent, publish
from marketplace.core.identity import services as identity
from marketplace.core.principal import OrgKind, Principal

log = logging.getLogger(__name__)

#: The request's database session, provided as the ``db_session`` dependency.
DbSession: TypeAlias = NamedDependency[AsyncSession]

PROBLEM_JSON = "application/problem+json"
SESSION_COOKIE = "market_session"
CSRF_COOKIE = "csrftoken"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
#: Paths that are machine interfaces, answered with problem+json; the rest are pages.
API_PREFIXES = ("/api/", "/oauth/", "/data/", "/.well-known/", "/health", "/schema")
#: Endpoints authenticated by their own means (client credentials, webhook signatures), not cookies.
CSRF_EXEMPT = ["^/oauth/", "^/api/billing/webhooks/"]

_STATUS_CODES = {
    400: "invalid_input",
    401: "not_authenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "too_many_requests",
    500: "internal_error",
    503: "unavailable",
}


class Problem(BaseModel):
    """An error answer (RFC 9457 problem details) with the platform's stable machine-readable ``code``."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(description="URI naming the problem type: urn:market:problem:<code>")
    title: str
    status: int
    detail: str = Field(description="What went wrong, for people")
    code: str = Field(description="Stable machine-readable error code, e.g. invalid_input, read_only_party")


def problems(*statuses: int) -> dict[int, ResponseSpec]:
    """OpenAPI documentation of the problem+json answers a route gives (400 for bad input, always)."""
    return {
        status: ResponseSpec(
            data_container=Problem,
            media_type=PROBLEM_JSON,
            description=f"{HTTPStatus(status).phrase}: an RFC 9457 problem with a stable `code`",
            generate_examples=False,
        )
        for status in sorted({400, *statuses})
    }


def is_api_path(path: str) -> bool:
    """Whether a path is a machine interface (problem+json) rather than a page."""
    return path.startswith(API_PREFIXES) or path == "/health"


def problem(status: int, code: str, detail: str, *, headers: dict[str, str] | None = None, **extra: Any) -> Response[Any]:
    """An RFC 9457 problem+json response."""
    body = {
        "type": f"urn:market:problem:{code}",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "code": code,
        **extra,
    }
    return Response(content=body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _error_page(
    request: Request[Any, Any, Any], status: int, code: str, detail: str, headers: dict[str, str] | None
) -> Response[Any]:
    # Unknown paths and early refusals never reach the page middleware: let the web layer set the language.
    prepare = request.app.state.get("prepare_error_page")
    if prepare is not None:
        prepare(request)
    return Template(
        template_name="error.html",
        context={"status": status, "code": code, "detail": detail, "title": HTTPStatus(status).phrase},
        status_code=status,
        headers=headers,
    )  # type: ignore[return-value]


def _answer(
    request: Request[Any, Any, Any], status: int, code: str, detail: str, headers: dict[str, str] | None = None, **extra: Any
) -> Response[Any]:
    if is_api_path(request.url.path) or "text/html" not in request.headers.get("accept", ""):
        return problem(status, code, detail, headers=headers, **extra)
    return _error_page(request, status, code, detail, headers)


def handle_domain_error(request: Request[Any, Any, Any], exc: DomainError) -> Response[Any]:
    """Domain refusals keep their code and status."""
    headers = {"Retry-After": str(exc.extra["retry_after"])} if "retry_after" in exc.extra else None
    if exc.status == 401 and request.headers.get("authorization", "").lower().startswith("bearer "):
        headers = {**(headers or {}), "WWW-Authenticate": f'Bearer error="{exc.code}"'}
    return _answer(request, exc.status, exc.code, exc.detail, headers, **exc.extra)


def handle_validation_error(request: Request[Any, Any, Any], exc: ValidationException) -> Response[Any]:
    """Malformed input: 400 with the list of problems."""
    errors = exc.extra if isinstance(exc.extra, list) else []
    return _answer(request, 400, "invalid_input", str(exc.detail or "The request is not valid."), errors=errors)


def handle_http_exception(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    """Framework errors (404, 405, ...) as problems with a code derived from the status."""
    status = exc.status_code
    code = _STATUS_CODES.get(status, "http_error")
    detail = str(exc.detail) if exc.detail else HTTPStatus(status).phrase
    if isinstance(exc, PermissionDeniedException) and "CSRF" in detail:
        code, detail = "csrf_failed", "The form or request lacked a valid CSRF token; reload the page and try again."
    headers = dict(exc.headers) if exc.headers else None
    return _answer(request, status, code, detail, headers)


def _raised_while_decoding_the_body(exc: Exception) -> bool:
    """Whether the framework's body decoder raised ``exc`` (bad UTF-8, nesting too deep)."""
    if not isinstance(exc, UnicodeDecodeError | RecursionError):
        return False
    frames = traceback.extract_tb(exc.__traceback__)
    return any("litestar/serialization" in frame.filename or "litestar/connection" in frame.filename for frame in frames)


def handle_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """Anything unforeseen: logged with its traceback, answered without internals."""
    if _raised_while_decoding_the_body(exc):
        return _answer(request, 400, "invalid_input", "The request body is not valid UTF-8 JSON, or is nested too deeply.")
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return _answer(request, 500, "internal_error", "Something went wrong on our side; it has been logged.")


EXCEPTION_HANDLERS: dict[type[Exception] | int, Callable[..., Response[Any]]] = {
    DomainError: handle_domain_error,
    ValidationException: handle_validation_error,
    HTTPException: handle_http_exception,
    Exception: handle_unexpected,
}


class CsrfProtection:
    """CSRF double-submit check for cookie-authenticated writes; bearer-token calls carry no cookie risk."""

    def __init__(self, app: ASGIApp, config: CSRFConfig) -> None:
        self.app = app
        self.csrf = CSRFMiddleware(app, config)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == ScopeType.HTTP and any(
            name == b"authorization" and value[:7].lower() == b"bearer " for name, value in scope["headers"]
        ):
            await self.app(scope, receive, send)
            return
        await self.csrf(scope, receive, send)


def csrf_config(secret: str, *, secure: bool) -> CSRFConfig:
    """The CSRF settings: cookie readable by our own scripts, header or form field on writes."""
    return CSRFConfig(
        secret=secret,
        cookie_name=CSRF_COOKIE,
        header_name=CSRF_HEADER,
        cookie_secure=secure,
        cookie_samesite="lax",
        cookie_httponly=False,
        exclude=CSRF_EXEMPT,
    )


class AuthenticationMiddleware:
    """Resolves the caller (session cookie or bearer token) into ``scope['user']``; anonymous is None."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in (ScopeType.HTTP, ScopeType.WEBSOCKET):
            await self.app(scope, receive, send)
            return
        state: State = scope["litestar_app"].state
        connection: ASGIConnection[Any, Any, Any, Any] = ASGIConnection(scope)
        principal: Principal | None = None
        authorization = connection.headers.get("authorization", "")
        if authorization[:7].lower() == "bearer ":
            claims = state.token_server.verifier.verify(authorization[7:].strip())
            principal = await identity.cached_principal_for_client(
                state.db.session,
                client_id=str(claims["client_id"]),
                jti=str(claims["jti"]),
                scopes=frozenset(str(claims.get("scope") or "").split()),
            )
            if principal is None:
                raise NotAuthenticated("The access token or its client was revoked.", code="invalid_token")
            scope["auth"] = "bearer"
        elif token := connection.cookies.get(SESSION_COOKIE):
            async with state.db.session() as session:
                principal = await identity.principal_for_session(session, token)
            scope["auth"] = "session" if principal else None
        else:
            scope["auth"] = None
        scope["user"] = principal
        await self.app(scope, receive, send)


async def provide_db_session(state: State) -> AsyncIterator[AsyncSession]:
    """One database session per request; anything not committed is rolled back."""
    async with state.db.session() as session:
        yield session


def provide_principal(request: Request[Any, Any, Any]) -> Principal | None:
    """The caller, or None when anonymous."""
    principal: Principal | None = request.scope.get("user")
    return principal


def caller(connection: ASGIConnection[Any, Any, Any, Any]) -> Principal:
    """The authenticated caller, or 401."""
    principal = connection.scope.get("user")
    if principal is None:
        raise NotAuthenticated("Sign in first.")
    return principal  # type: ignore[no-any-return]


# --- guards -------------------------------------------------------------------------------------
# Guards are coroutines: Litestar runs a plain function guard in a worker thread, a hop on every request.
# Litestar also copies the route handler for each guard it calls: hot routes hold one guard (``requires_all``).

Guard = Callable[[ASGIConnection[Any, Any, Any, Any], BaseRouteHandler], Awaitable[None]]


def requires_all(*guards: Guard) -> Guard:
    """One guard running ``guards`` in order (the first refusal wins): the same checks as listing them, for
    routes called many times a second (Litestar copies the handler object once per guard per request)."""

    async def requires_every_guard(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
        for guard in guards:
            await guard(connection, handler)

    return requires_every_guard


async def refuse_writes_by_read_only_parties(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
    """Central rule: regulators and auditors never write (a handler may opt in with ``read_only_ok``)."""
    principal: Principal | None = connection.scope.get("user")
    if principal is None or connection.scope.get("method", "GET") in SAFE_METHODS:
        return
    if principal.is_read_only and not handler.opt.get("read_only_ok"):
        raise Forbidden("Regulators and auditors have read-only access.", code="read_only_party")


async def refuse_tokens_where_not_accepted(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
    """Central rule: a program's token opens only the routes that say ``accepts_token``."""
    principal: Principal | None = connection.scope.get("user")
    if principal is not None and principal.is_program and not handler.opt.get("accepts_token"):
        raise Forbidden("This route is for people, not for API clients.", code="token_not_accepted")


class HotRouteHandler(HTTPRouteHandler):
    """A route handler that runs its guards on itself. Litestar hands each guard a shallow copy of the handler (so
    that a guard cannot change it); ours only read ``opt``, and on a route called many times a second the copies
    cost more than the rest of its guards. Made by :func:`hot_get` and :func:`hot_post`."""

    async def authorize_connection(self, connection: ASGIConnection[Any, Any, Any, Any]) -> None:
        """Run every guard in scope, in order, on this handler."""
        for guard in self.resolve_guards():
            await guard(connection, self)  # type: ignore[misc]


def hot_get(path: str, **options: Any) -> HotRouteHandler:
    """``@get`` for routes called many times a second by programs (the data plane); see :class:`HotRouteHandler`."""
    return HotRouteHandler(path, http_method=HttpMethod.GET, **options)


def hot_post(path: str, **options: Any) -> HotRouteHandler:
    """``@post`` for routes called many times a second by programs (the data plane); see :class:`HotRouteHandler`."""
    return HotRouteHandler(path, http_method=HttpMethod.POST, **options)


#: The central rules every route is under (the app's one guard).
enforce_central_rules = requires_all(refuse_writes_by_read_only_parties, refuse_tokens_where_not_accepted)


async def requires_authenticated(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Any signed-in person or program."""
    caller(connection)


async def requires_person(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """A signed-in person (not a program)."""
    if caller(connection).is_program:
        raise Forbidden("Only a signed-in person may do this.", code="person_required")


def requires_scope(scope_name: str) -> Callable[[ASGIConnection[Any, Any, Any, Any], BaseRouteHandler], Awaitable[None]]:
    """Programs must hold ``scope_name`` in their token; people pass."""

    async def requires_token_scope(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        principal = caller(connection)
        if principal.is_program and scope_name not in principal.scopes:
            raise Forbidden(f"The access token lacks the '{scope_name}' scope.", code="insufficient_scope")

    return requires_token_scope


def requires_party(*kinds: OrgKind) -> Callable[[ASGIConnection[Any, Any, Any, Any], BaseRouteHandler], Awaitable[None]]:
    allowed = frozenset(kinds)
    names = " or ".join(k.value for k in kinds)

    async def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        if caller(connection).org_kind not in allowed:
            raise Forbidden(f"Only the {names} may do this.", code="party_not_allowed")

    return guard


requires_owner = requires_party(OrgKind.owner)
requires_operator = requires_party(OrgKind.operator)
requires_buyer = requires_party(OrgKind.buyer)
requires_supervisor = requires_party(OrgKind.owner, OrgKind.regulator, OrgKind.auditor)


async def requires_org_admin(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """An administrator of their own organisation."""
    if not caller(connection).is_org_admin:
        raise Forbidden("Only an administrator of your organisation may do this.", code="org_admin_required")


#: Reads that record themselves (with what was read) or that reveal nothing of anyone's business.
SELF_RECORDING_READS = ("/api/supervision/ledger/", "/api/me", "/api/auth/")
#: Where supervisors read business records: the API and the record pages.
SUPERVISED_PREFIXES = ("/api/", "/licensing/", "/supervision/", "/billing/")


async def record_supervisory_reads(message: Any, scope: Scope) -> None:
    """Every successful read by a regulator or an auditor is itself recorded (DESIGN.md §2), once its answer
    is known to be a success, in a transaction of its own (the read itself wrote nothing)."""
    if message.get("type") != "http.response.start" or scope.get("type") != ScopeType.HTTP or scope.get("method") != "GET":
        return
    principal: Principal | None = scope.get("user")
    path: str = scope.get("path", "")
    if principal is None or not principal.is_read_only or message.get("status", 500) >= 400:
        return
    if not path.startswith(SUPERVISED_PREFIXES) or path.startswith(SELF_RECORDING_READS):
        return
    query = scope.get("query_string", b"").decode("latin-1")[:500]
    event = DomainEvent(
        "records.read",
        Actor.of(principal),
        orgs=(principal.org_id,),
        payload={"path": path[:300], "query": query, "party": principal.org_kind.value},
    )
    state = scope["app"].state
    async with state.db.session() as session:
        await publish(session, event)
        await session.commit()
