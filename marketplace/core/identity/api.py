"""Identity HTTP interface: sign-in, buyer registration, the caller, organisations, members, API clients, OAuth endpoints."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from litestar.enums import RequestEncodingType
from litestar.params import Body, FromPath, FromQuery, JSONBody
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED, HTTP_204_NO_CONTENT
from litestar.utils.scope.state import ScopeState
from pydantic import BaseModel
from sqlmodel.ext.asyncio.session import AsyncSession

from marketplace.core.errors import InvalidInput
from marketplace.core.http import (
    PROBLEM_JSON,
    SESSION_COOKIE,
    DbSession,
    caller,
    problems,
    requires_authenticated,
    requires_buyer,
    requires_org_admin,
    requires_party,
    requires_person,
    requires_scope,
)
from marketplace.core.identity import oauth, services
from marketplace.core.identity.schemas import (
    ApiClientCreate,
    ApiClientCreated,
    ApiClientPublic,
    BuyerRegistration,
    LoginRequest,
    Me,
    OrganisationPublic,
    UserCreate,
    UserPublic,
)
from marketplace.core.principal import OrgKind, Principal
from marketplace.core.schemas import Page


class CsrfToken(BaseModel):
    csrf_token: str


def _csrf(request: Request[Any, Any, Any]) -> str | None:
    token = ScopeState.from_scope(request.scope).csrf_token
    return token if isinstance(token, str) and token else None


def login_policy(state: State) -> services.LoginPolicy:
    """The sign-in throttle from settings."""
    return services.LoginPolicy(
        max_failures=state.settings.login_max_failures, lockout_seconds=state.settings.login_lockout_seconds
    )


#: How many buyer registrations one address may attempt per hour (not a setting yet: the default suits every profile).
REGISTRATION_POLICY = services.RegistrationPolicy()


def client_address(request: Request[Any, Any, Any]) -> str:
    """The address a request came from (what sign-in and registration throttle on)."""
    return request.client.host if request.client else "unknown"


def session_cookie_response(content: Any, token: str | None, state: State, status_code: int = HTTP_200_OK) -> Response[Any]:
    """A response that sets (token given) or clears (None) the session cookie."""
    response: Response[Any] = Response(content=content, status_code=status_code)
    if token is None:
        response.delete_cookie(SESSION_COOKIE, path="/")
    else:
        response.set_cookie(
            SESSION_COOKIE,
            token,
            max_age=state.settings.session_ttl_seconds,
            path="/",
            httponly=True,
            secure=state.settings.secure_cookies,
            samesite="lax",
        )
    return response


async def describe(session: AsyncSession, principal: Principal, csrf_token: str | None = None) -> Me:
    """The ``/api/me`` view of a caller."""
    org = await services.get_organisation(session, principal.org_id)
    user = await services.get_user(session, principal.user_id) if principal.user_id else None
    return Me(
        kind="client" if principal.is_program else "user",
        org=OrganisationPublic.model_validate(org, from_attributes=True),
        user=UserPublic.model_validate(user, from_attributes=True) if user else None,
        client_id=principal.client_id,
        scopes=sorted(principal.scopes),
        csrf_token=csrf_token,
    )


class AuthController(Controller):
    path = "/api"
    tags = ["identity"]

    @get(
        "/auth/csrf",
        opt={"accepts_token": True},
        summary="Get a CSRF token",
        description="Send it back as X-CSRF-Token on cookie-authenticated writes.",
        responses=problems(),
    )
    async def csrf(self, request: Request[Any, Any, Any]) -> CsrfToken:
        return CsrfToken(csrf_token=_csrf(request) or "")

    @post(
        "/auth/login", summary="Sign in", opt={"read_only_ok": True}, status_code=HTTP_200_OK, responses=problems(401, 403, 429)
    )
    async def login(
        self, request: Request[Any, Any, Any], data: JSONBody[LoginRequest], db_session: DbSession, state: State
    ) -> Response[Me]:
        user = await services.authenticate(
            db_session,
            state.cache,
            login_policy(state),
            email=data.email,
            password=data.password,
            address=client_address(request),
        )
        token = await services.start_session(db_session, user, ttl_seconds=state.settings.session_ttl_seconds)
        principal = await services.principal_for_session(db_session, token)
        assert principal is not None
        me = await describe(db_session, principal, _csrf(request))
        return session_cookie_response(me, token, state)

    @post(
        "/buyers/register",
        summary="Register a buyer organisation",
        description=(
            "Anonymous: creates a buyer organisation and its first administrator in one transaction, and signs that "
            "person in (sets the session cookie, like sign-in). Next step: submit the qualification "
            "(POST /api/buyers/qualifications). Send the CSRF token as X-CSRF-Token. 409 `org_name_taken`, "
            "`email_taken`, `already_signed_in` (sign out first); 429 `registration_throttled` after "
            f"{REGISTRATION_POLICY.max_per_address} attempts per address and hour."
        ),
        tags=["buyers"],
        opt={"read_only_ok": True},
        status_code=HTTP_201_CREATED,
        responses=problems(403, 409, 429),
    )
    async def register_buyer(
        self, request: Request[Any, Any, Any], data: JSONBody[BuyerRegistration], db_session: DbSession, state: State
    ) -> Response[Me]:
        _org, user = await services.register_buyer(
            db_session,
            state.cache,
            REGISTRATION_POLICY,
            request.scope.get("user"),
            data=data,
            address=client_address(request),
        )
        token = await services.start_session(db_session, user, ttl_seconds=state.settings.session_ttl_seconds)
        principal = await services.principal_for_session(db_session, token)
        assert principal is not None
        me = await describe(db_session, principal, _csrf(request))
        return session_cookie_response(me, token, state, status_code=HTTP_201_CREATED)

    @post(
        "/auth/logout", summary="Sign out", opt={"read_only_ok": True}, status_code=HTTP_204_NO_CONTENT, responses=problems(403)
    )
    async def logout(self, request: Request[Any, Any, Any], db_session: DbSession, state: State) -> Response[None]:
        token = request.cookies.get(SESSION_COOKIE)
        if token:
            await services.end_session(db_session, token)
        return session_cookie_response(None, None, state, status_code=HTTP_204_NO_CONTENT)

    @get(
        "/me",
        summary="Who am I",
        description="The signed-in person, or the program behind a bearer token (scope 'profile').",
        guards=[requires_authenticated, requires_scope("profile")],
        opt={"accepts_token": True},
        responses=problems(401, 403),
    )
    async def me(self, request: Request[Any, Any, Any], db_session: DbSession) -> Me:
        return await describe(db_session, caller(request), _csrf(request))


class OrganisationController(Controller):
    path = "/api"
    tags = ["identity"]
    guards = [requires_person]

    @get("/orgs", summary="Organisations you may see", responses=problems(401, 403))
    async def list_orgs(
        self, request: Request[Any, Any, Any], db_session: DbSession, kind: FromQuery[OrgKind | None] = None
    ) -> Page[OrganisationPublic]:
        orgs = await services.list_organisations(db_session, caller(request), kind=kind)
        items = [OrganisationPublic.model_validate(o, from_attributes=True) for o in orgs]
        return Page(items=items, total=len(items))

    @get("/users", summary="Members of your organisation", responses=problems(401, 403))
    async def list_users(self, request: Request[Any, Any, Any], db_session: DbSession) -> Page[UserPublic]:
        users = await services.list_users(db_session, caller(request))
        items = [UserPublic.model_validate(u, from_attributes=True) for u in users]
        return Page(items=items, total=len(items))

    @post(
        "/users",
        summary="Add a member to your organisation",
        guards=[requires_org_admin],
        status_code=HTTP_201_CREATED,
        responses=problems(401, 403, 409),
    )
    async def add_member(self, request: Request[Any, Any, Any], data: JSONBody[UserCreate], db_session: DbSession) -> UserPublic:
        user = await services.create_member(db_session, caller(request), data)
        return UserPublic.model_validate(user, from_attributes=True)


class ApiClientController(Controller):
    path = "/api/buyers/clients"
    tags = ["buyers"]
    guards = [requires_person]

    @get(
        "/",
        summary="Your organisation's API clients",
        guards=[requires_party(OrgKind.buyer, OrgKind.regulator)],
        responses=problems(401, 403),
    )
    async def list_clients(self, request: Request[Any, Any, Any], db_session: DbSession) -> Page[ApiClientPublic]:
        clients = await services.list_api_clients(db_session, caller(request))
        items = [ApiClientPublic.model_validate(c, from_attributes=True) for c in clients]
        return Page(items=items, total=len(items))

    @post(
        "/",
        summary="Create an API client",
        responses=problems(401, 403, 409),
        description="The secret is shown in this answer only.",
        guards=[requires_buyer],
        status_code=HTTP_201_CREATED,
    )
    async def create_client(
        self, request: Request[Any, Any, Any], data: JSONBody[ApiClientCreate], db_session: DbSession
    ) -> ApiClientCreated:
        client, secret = await services.create_api_client(db_session, caller(request), data)
        return ApiClientCreated(**ApiClientPublic.model_validate(client, from_attributes=True).model_dump(), client_secret=secret)

    @post(
        "/{client_uuid:uuid}/revoke",
        summary="Revoke an API client",
        guards=[requires_buyer],
        status_code=HTTP_200_OK,
        responses=problems(401, 403, 404),
    )
    async def revoke_client(
        self, request: Request[Any, Any, Any], client_uuid: FromPath[uuid.UUID], db_session: DbSession
    ) -> ApiClientPublic:
        client = await services.revoke_api_client(db_session, caller(request), client_uuid)
        return ApiClientPublic.model_validate(client, from_attributes=True)


class OAuthTokenRequest(BaseModel):
    """Form fields of the token endpoint (RFC 6749 §4.4.2); client credentials by Basic header or form."""

    grant_type: str | None = None
    scope: str | None = None
    client_id: str | None = None
    client_secret: str | None = None


class OAuthRevokeRequest(BaseModel):
    """Form fields of the revocation endpoint (RFC 7009 §2.1)."""

    token: str | None = None
    token_type_hint: str | None = None
    client_id: str | None = None
    client_secret: str | None = None


class TokenResponse(BaseModel):
    access_token: str
    token_type: str
    expires_in: int
    scope: str


async def _form(request: Request[Any, Any, Any]) -> dict[str, str]:
    if request.content_type[0] != "application/x-www-form-urlencoded":
        raise InvalidInput(
            "Send the parameters as application/x-www-form-urlencoded.", code="invalid_request", error="invalid_request"
        )
    form = await request.form()
    return {key: value for key, value in form.items() if isinstance(value, str)}


def _oauth_response(status: int, body: dict[str, Any], headers: list[tuple[str, str]]) -> Response[Any]:
    merged = {key: value for key, value in headers if key.lower() != "content-type"}
    merged.update({"Cache-Control": "no-store", "Pragma": "no-cache"})
    if status >= 400:
        error = str(body.get("error", "invalid_request"))
        content = {
            "type": f"urn:market:problem:{error}",
            "title": "OAuth error",
            "status": status,
            "detail": body.get("error_description") or error,
            "code": error,
            **body,
        }
        return Response(content=content, status_code=status, headers=merged, media_type=PROBLEM_JSON)
    return Response(content=body, status_code=status, headers=merged)


class OAuthController(Controller):
    tags = ["oauth"]
    # Authenticated by client credentials, not by whoever's cookie the caller happens to carry.
    opt = {"read_only_ok": True, "accepts_token": True}

    @post(
        "/oauth/token",
        summary="Token endpoint (client credentials)",
        responses=problems(401),
        description="RFC 6749 §4.4 with client_secret_basic or client_secret_post; answers an RFC 9068 JWT access token.",
        status_code=HTTP_200_OK,
    )
    async def token(
        self,
        request: Request[Any, Any, Any],
        db_session: DbSession,
        state: State,
        data: Annotated[OAuthTokenRequest, Body(media_type=RequestEncodingType.URL_ENCODED)],
    ) -> Response[TokenResponse]:
        form = await _form(request)
        status, body, headers = await oauth.issue_token(
            db_session, state.token_server, uri=str(request.url), headers=request.headers, form=form
        )
        return _oauth_response(status, body, headers)

    @post("/oauth/revoke", summary="Revoke an access token (RFC 7009)", status_code=HTTP_200_OK, responses=problems(401))
    async def revoke(
        self,
        request: Request[Any, Any, Any],
        db_session: DbSession,
        state: State,
        data: Annotated[OAuthRevokeRequest, Body(media_type=RequestEncodingType.URL_ENCODED)],
    ) -> Response[dict[str, Any]]:
        form = await _form(request)
        status, body, headers = await oauth.revoke_token(
            db_session, state.token_server, uri=str(request.url), headers=request.headers, form=form
        )
        return _oauth_response(status, body, headers)

    @get("/.well-known/oauth-authorization-server", summary="Authorization server metadata (RFC 8414)", responses=problems())
    async def metadata(self, state: State) -> dict[str, Any]:
        return state.token_server.metadata()  # type: ignore[no-any-return]

    @get("/.well-known/jwks.json", summary="Keys that sign access tokens", responses=problems())
    async def jwks(self, state: State) -> dict[str, Any]:
        return state.signing_key.public_jwks()  # type: ignore[no-any-return]
