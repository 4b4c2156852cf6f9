"""Pages: sign-in, buyer registration, each party's home with its navigation, members and API clients, language switch.

Controllers parse the form, call one identity service, and render or redirect.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import quote

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from litestar.enums import RequestEncodingType, ScopeType
from litestar.params import Body, FromPath, FromQuery
from litestar.response import Redirect, Template
from litestar.status_codes import HTTP_303_SEE_OTHER
from litestar.types import ASGIApp, Receive, Scope, Send
from pydantic import BaseModel, ValidationError
from sqlmodel.ext.asyncio.session import AsyncSession

from marketplace.core.errors import DomainError
from marketplace.core.http import SESSION_COOKIE, DbSession
from marketplace.core.identity import services
from marketplace.core.identity.api import REGISTRATION_POLICY, client_address, login_policy, session_cookie_response
from marketplace.core.identity.models import User
from marketplace.core.identity.schemas import CLIENT_SCOPES, ApiClientCreate, BuyerRegistration, UserCreate
from marketplace.core.principal import OrgKind, Principal, Role
from marketplace.core.types import utcnow
from marketplace.web import i18n
from marketplace.web.i18n import gettext_ as _


@dataclass(frozen=True)
class NavItem:
    """One entry of a party's navigation."""

    label: str
    href: str
    key: str


def _n(message: str) -> str:
    """Mark a string for extraction; it is translated where it is shown."""
    return message


PARTY_TITLES = {
    OrgKind.owner: _n("Data authority"),
    OrgKind.operator: _n("Operator"),
    OrgKind.buyer: _n("Enterprise buyer"),
    OrgKind.regulator: _n("Regulator"),
    OrgKind.auditor: _n("Third-party auditor"),
}

PARTY_MISSIONS = {
    OrgKind.owner: _n(
        "You own the governed public data: grade data resources, grant franchise licences, review listings and engage auditors."
    ),
    OrgKind.operator: _n(
        "You operate data products under your franchise licence: build products and plans, qualify buyers, support subscribers."
    ),
    OrgKind.buyer: _n(
        "You subscribe to data products for declared purposes and reach them from your programs through API clients."
    ),
    OrgKind.regulator: _n("You see every transaction, read-only, and can verify the ledger independently."),
    OrgKind.auditor: _n("You audit operators inside the engagements granted to you, read-only, with verifiable evidence."),
}


def navigation(principal: Principal) -> list[NavItem]:
    """The navigation of a party: only pages that exist and that the party may open."""
    items = [NavItem(_n("Home"), "/", "home"), NavItem(_n("Data product catalog"), "/catalog", "catalog")]
    if principal.org_kind is OrgKind.buyer:
        items.append(NavItem(_n("Buyer console"), "/buyer", "buyer"))
        items.append(NavItem(_n("Invoices"), "/buyer/invoices", "invoices"))
    if principal.org_kind is OrgKind.operator:
        items.append(NavItem(_n("Operator console"), "/operator", "operator"))
        items.append(NavItem(_n("Billing"), "/operator/billing", "billing"))
    items.append(NavItem(_n("Organisation"), "/account/members", "members"))
    if principal.org_kind is OrgKind.buyer:
        items.append(NavItem(_n("API clients"), "/account/clients", "clients"))
    if principal.org_kind in (OrgKind.owner, OrgKind.regulator, OrgKind.auditor):
        items.append(NavItem(_n("Data resources"), "/licensing/resources", "resources"))
    if principal.org_kind is not OrgKind.buyer:
        items.append(NavItem(_n("Licences"), "/licensing/licences", "licences"))
        items.append(NavItem(_n("Listing reviews"), "/licensing/reviews", "reviews"))
    if principal.org_kind is OrgKind.owner:
        items.append(NavItem(_n("Settlements"), "/owner/settlements", "settlements"))
    if principal.org_kind in (OrgKind.owner, OrgKind.regulator, OrgKind.auditor):
        items.append(NavItem(_n("Supervision"), "/supervision", "supervision"))
        items.append(NavItem(_n("Ledger"), "/supervision/ledger", "ledger"))
        items.append(NavItem(_n("Annual disclosure"), f"/disclosure/{utcnow().year - 1}", "disclosure"))
    if principal.org_kind is OrgKind.operator:
        items.append(NavItem(_n("Findings"), "/supervision/findings", "findings"))
    items.append(NavItem(_n("API reference"), "/schema", "api"))
    return items


def party_title(principal: Principal | None) -> str:
    """The translated name of the caller's party."""
    return _(PARTY_TITLES[principal.org_kind]) if principal else ""


def org_label(principal: Principal | None) -> str:
    """The caller's organisation name in the page's language (its Chinese name on zh-CN pages, when it has one)."""
    if principal is None:
        return ""
    if i18n.current_locale() == "zh-CN" and principal.org_name_zh:
        return principal.org_name_zh
    return principal.org_name


def install_page_globals(env: Any) -> None:
    """What every page (error pages included) can use without a controller passing it."""
    env.globals.update(
        navigation=navigation,
        party_title=party_title,
        org_label=org_label,
        locales=i18n.LOCALES,
        current_locale=i18n.current_locale,
    )


def _safe_next(target: str | None) -> str:
    """Only local paths are followed after sign-in (no open redirect)."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/"


#: Paths of the data plane (``marketplace.delivery``).
DATA_PLANE = "/data/"


class LocaleMiddleware:
    """Chooses the page language for each request (cookie, then Accept-Language)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The data plane answers programs in no language (rows, files, problem+json): nothing to choose there.
        if scope["type"] != ScopeType.HTTP or scope["path"].startswith(DATA_PLANE):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        cookie_header = headers.get(b"cookie", b"").decode("latin-1")
        cookie = None
        for part in cookie_header.split(";"):
            name, _sep, value = part.strip().partition("=")
            if name == i18n.LOCALE_COOKIE:
                cookie = value
        default = scope["litestar_app"].state.settings.default_locale
        token = i18n.set_locale(i18n.choose_locale(cookie, headers.get(b"accept-language", b"").decode("latin-1"), default))
        try:
            await self.app(scope, receive, send)
        finally:
            i18n._current.reset(token)


def prepare_error_page(request: Request[Any, Any, Any]) -> None:
    """Choose the language of an error page that no route middleware has prepared (e.g. a 404)."""
    default = request.app.state.settings.default_locale
    i18n.set_locale(i18n.choose_locale(request.cookies.get(i18n.LOCALE_COOKIE), request.headers.get("accept-language"), default))


def page(request: Request[Any, Any, Any], template: str, status_code: int = 200, **context: Any) -> Template:
    """Render a page; the caller, navigation and locales come from the template globals."""
    return Template(template_name=template, status_code=status_code, context={"me": request.scope.get("user"), **context})


async def _signed_in(db_session: AsyncSession, state: State, user: User, target: str) -> Response[Any]:
    """A new sign-in session for ``user``: its cookie, and on to ``target``."""
    token = await services.start_session(db_session, user, ttl_seconds=state.settings.session_ttl_seconds)
    response = session_cookie_response(None, token, state, status_code=HTTP_303_SEE_OTHER)
    response.headers["Location"] = target
    return response


def login_redirect(request: Request[Any, Any, Any]) -> Redirect:
    return Redirect(f"/login?next={quote(request.url.path)}", status_code=HTTP_303_SEE_OTHER)


NEW_SECRET_TTL_SECONDS = 300


def _new_secret_key(principal: Principal, client_uuid: uuid.UUID) -> str:
    return f"new-client-secret:{principal.user_id}:{client_uuid}"


def error_page(request: Request[Any, Any, Any], exc: DomainError) -> Template:
    """The error page of a refusal, with its status and code (a page handler's answer to a ``DomainError``)."""
    return page(
        request, "error.html", status_code=exc.status, status=exc.status, code=exc.code, title=exc.title, detail=exc.detail
    )


def forbidden_page(request: Request[Any, Any, Any], detail: str) -> Template:
    """The 403 page for a party that may not open this page, saying who may."""
    return page(request, "error.html", status_code=403, status=403, code="party_not_allowed", title="Forbidden", detail=detail)


def _not_a_buyer(request: Request[Any, Any, Any]) -> Template:
    return forbidden_page(request, _("API clients belong to buyer organisations."))


class LoginForm(BaseModel):
    email: str = ""
    password: str = ""
    next: FromQuery[str] = "/"


class RegisterForm(BaseModel):
    organisation_name: str = ""
    organisation_name_zh: str = ""
    display_name: str = ""
    email: str = ""
    password: str = ""


#: What the registration form says about a field that failed validation.
REGISTRATION_FIELD_ERRORS = {
    "organisation_name": _n("Give the organisation's name: 2 to 200 characters."),
    "organisation_name_zh": _n("The Chinese name can have at most 200 characters."),
    "display_name": _n("Give your name: at most 200 characters."),
    "email": _n("Give a valid e-mail address."),
    "password": _n("Choose a password of at least 12 characters."),
}

#: What the registration form says about a refusal, by its code.
REGISTRATION_REFUSALS = {
    "org_name_taken": _n("An organisation with this name is already registered."),
    "email_taken": _n("This e-mail address already has an account: sign in instead."),
    "already_signed_in": _n("You are already signed in; sign out to register another organisation."),
    "registration_throttled": _n("Too many registrations from your address. Try again in {seconds} seconds."),
}


#: The form field a refusal is about (the others are about the whole form).
REFUSED_FIELDS = {"org_name_taken": "organisation_name", "email_taken": "email"}


def _registration_errors(exc: ValidationError) -> dict[str, str]:
    """One translated message per field that failed, in the form's order."""
    failed = {str(err["loc"][0]) for err in exc.errors() if err["loc"]}
    return {name: _(message) for name, message in REGISTRATION_FIELD_ERRORS.items() if name in failed}


class MemberForm(BaseModel):
    email: str = ""
    display_name: str = ""
    role: str = Role.member.value
    password: str = ""


class ClientForm(BaseModel):
    name: str = ""
    scope: list[str] | str | None = None


def _errors_of(exc: ValidationError) -> list[str]:
    return [f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()]


class PageController(Controller):
    include_in_schema = False

    @get("/", name="home")
    async def home(self, request: Request[Any, Any, Any], db_session: DbSession) -> Template:
        principal: Principal | None = request.scope.get("user")  # type: ignore[assignment]
        if principal is None:
            return page(request, "landing.html", last_year=utcnow().year - 1)
        members = await services.list_users(db_session, principal)
        clients = await services.list_api_clients(db_session, principal) if principal.org_kind is OrgKind.buyer else []
        return page(
            request,
            "home.html",
            mission=_(PARTY_MISSIONS[principal.org_kind]),
            member_count=len(members),
            active_clients=sum(1 for c in clients if c.revoked_at is None),
        )

    @get("/login", name="login")
    async def login_page(self, request: Request[Any, Any, Any], next: FromQuery[str] = "/") -> Template | Redirect:
        if request.scope.get("user") is not None:
            return Redirect(_safe_next(next), status_code=HTTP_303_SEE_OTHER)
        return page(request, "login.html", next=_safe_next(next), error=None, email="")

    @post("/login", opt={"read_only_ok": True})
    async def login(
        self,
        request: Request[Any, Any, Any],
        data: Annotated[LoginForm, Body(media_type=RequestEncodingType.URL_ENCODED)],
        db_session: DbSession,
        state: State,
    ) -> Response[Any]:
        target = _safe_next(data.next)
        try:
            user = await services.authenticate(
                db_session,
                state.cache,
                login_policy(state),
                email=data.email,
                password=data.password,
                address=client_address(request),
            )
        except DomainError as exc:
            message = (
                _("The e-mail or password is not right.")
                if exc.status == 401
                else _("Too many failed sign-ins. Try again in {seconds} seconds.").format(
                    seconds=exc.extra.get("retry_after", 60)
                )
            )
            return page(request, "login.html", status_code=exc.status, next=target, error=message, email=data.email)
        return await _signed_in(db_session, state, user, target)

    @get("/register", name="register")
    async def register_page(self, request: Request[Any, Any, Any]) -> Template | Redirect:
        if request.scope.get("user") is not None:
            return Redirect("/", status_code=HTTP_303_SEE_OTHER)
        return page(request, "register.html", form=RegisterForm(), errors={})

    @post("/register", opt={"read_only_ok": True})
    async def register(
        self,
        request: Request[Any, Any, Any],
        data: Annotated[RegisterForm, Body(media_type=RequestEncodingType.URL_ENCODED)],
        db_session: DbSession,
        state: State,
    ) -> Response[Any]:
        """Register a buyer organisation and sign its first administrator in; then on to the qualification."""
        kept = data.model_copy(update={"password": ""})
        try:
            registration = BuyerRegistration.model_validate(data.model_dump())
            _org, user = await services.register_buyer(
                db_session,
                state.cache,
                REGISTRATION_POLICY,
                request.scope.get("user"),
                data=registration,
                address=client_address(request),
            )
        except ValidationError as exc:
            return page(request, "register.html", status_code=400, form=kept, errors=_registration_errors(exc))
        except DomainError as exc:
            if exc.code in REGISTRATION_REFUSALS:
                message = _(REGISTRATION_REFUSALS[exc.code]).format(seconds=exc.extra.get("retry_after", 60))
            else:
                message = exc.detail
            errors = {REFUSED_FIELDS.get(exc.code, "form"): message}
            refused = page(request, "register.html", status_code=exc.status, form=kept, errors=errors)
            if "retry_after" in exc.extra:
                refused.headers["Retry-After"] = str(exc.extra["retry_after"])
            return refused
        return await _signed_in(db_session, state, user, "/buyer")

    @post("/logout", opt={"read_only_ok": True})
    async def logout(self, request: Request[Any, Any, Any], db_session: DbSession, state: State) -> Response[Any]:
        token = request.cookies.get(SESSION_COOKIE)
        if token:
            await services.end_session(db_session, token)
        response = session_cookie_response(None, None, state, status_code=HTTP_303_SEE_OTHER)
        response.headers["Location"] = "/login"
        return response

    @get("/lang/{code:str}")
    async def switch_language(self, code: FromPath[str], next: FromQuery[str] = "/") -> Response[Any]:
        response: Response[Any] = Redirect(_safe_next(next), status_code=HTTP_303_SEE_OTHER)
        if code in i18n.LOCALES:
            response.set_cookie(i18n.LOCALE_COOKIE, code, max_age=365 * 24 * 3600, path="/", samesite="lax", httponly=True)
        return response

    @get("/account/members")
    async def members(self, request: Request[Any, Any, Any], db_session: DbSession) -> Template | Redirect:
        principal: Principal | None = request.scope.get("user")  # type: ignore[assignment]
        if principal is None:
            return login_redirect(request)
        org = await services.get_organisation(db_session, principal.org_id)
        users = [u for u in await services.list_users(db_session, principal) if u.org_id == principal.org_id]
        return page(request, "members.html", org=org, users=users, errors=[], form=MemberForm(), roles=list(Role))

    @post("/account/members")
    async def add_member(
        self,
        request: Request[Any, Any, Any],
        data: Annotated[MemberForm, Body(media_type=RequestEncodingType.URL_ENCODED)],
        db_session: DbSession,
    ) -> Template | Redirect:
        principal: Principal | None = request.scope.get("user")  # type: ignore[assignment]
        if principal is None:
            return login_redirect(request)
        errors: list[str] = []
        try:
            await services.create_member(
                db_session,
                principal,
                UserCreate(email=data.email, display_name=data.display_name, role=Role(data.role), password=data.password),
            )
        except ValidationError as exc:
            errors = _errors_of(exc)
        except ValueError:
            errors = [_("Choose a role.")]
        except DomainError as exc:
            errors = [exc.detail]
        if not errors:
            return Redirect("/account/members", status_code=HTTP_303_SEE_OTHER)
        org = await services.get_organisation(db_session, principal.org_id)
        users = [u for u in await services.list_users(db_session, principal) if u.org_id == principal.org_id]
        return page(request, "members.html", status_code=400, org=org, users=users, errors=errors, form=data, roles=list(Role))

    @get("/account/clients")
    async def clients(
        self, request: Request[Any, Any, Any], db_session: DbSession, state: State, created: FromQuery[uuid.UUID | None] = None
    ) -> Template | Redirect:
        principal: Principal | None = request.scope.get("user")  # type: ignore[assignment]
        if principal is None:
            return login_redirect(request)
        if principal.org_kind is not OrgKind.buyer:
            return _not_a_buyer(request)
        clients = await services.list_api_clients(db_session, principal)
        new_client, secret = None, None
        if created is not None:
            # The secret was parked for this person only, and is taken on first view: a reload shows it no more.
            secret = await state.cache.pop_text(_new_secret_key(principal, created))
            new_client = next((c for c in clients if c.id == created), None) if secret else None
        return page(request, "clients.html", clients=clients, scopes=CLIENT_SCOPES, created=new_client, secret=secret, errors=[])

    @post("/account/clients")
    async def create_client(
        self,
        request: Request[Any, Any, Any],
        data: Annotated[ClientForm, Body(media_type=RequestEncodingType.URL_ENCODED)],
        db_session: DbSession,
        state: State,
    ) -> Template | Redirect:
        principal: Principal | None = request.scope.get("user")  # type: ignore[assignment]
        if principal is None:
            return login_redirect(request)
        if principal.org_kind is not OrgKind.buyer:
            return _not_a_buyer(request)
        scope = [data.scope] if isinstance(data.scope, str) else data.scope
        errors: list[str] = []
        try:
            created, secret = await services.create_api_client(
                db_session, principal, ApiClientCreate(name=data.name, scope=scope or None)
            )
        except ValidationError as exc:
            errors = _errors_of(exc)
        except DomainError as exc:
            errors = [exc.detail]
        if not errors:
            # Post/redirect/get: a reload of the next page must not create a second client.
            await state.cache.put_text(_new_secret_key(principal, created.id), secret, NEW_SECRET_TTL_SECONDS)
            return Redirect(f"/account/clients?created={created.id}", status_code=HTTP_303_SEE_OTHER)
        clients = await services.list_api_clients(db_session, principal)
        return page(
            request,
            "clients.html",
            status_code=400,
            clients=clients,
            scopes=CLIENT_SCOPES,
            created=None,
            secret=None,
            errors=errors,
        )

    @post("/account/clients/{client_uuid:uuid}/revoke")
    async def revoke_client(
        self, request: Request[Any, Any, Any], client_uuid: FromPath[uuid.UUID], db_session: DbSession
    ) -> Redirect:
        principal: Principal | None = request.scope.get("user")  # type: ignore[assignment]
        if principal is None:
            return login_redirect(request)
        await services.revoke_api_client(db_session, principal, client_uuid)
        return Redirect("/account/clients", status_code=HTTP_303_SEE_OTHER)
