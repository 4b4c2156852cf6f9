"""Identity rules: sign-in with throttling, sessions, buyer self-registration, members, API clients and token revocation.

The only place that writes identity records. Every read goes through a scoping helper.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from marketplace.core.cache import Cache
from marketplace.core.errors import Conflict, Forbidden, NotAuthenticated, NotFound, TooManyRequests
from marketplace.core.events import Actor, DomainEvent, publish
from marketplace.core.identity.models import ApiClient, LoginSession, Organisation, RevokedAccessToken, User
from marketplace.core.identity.passwords import digest, hash_password, new_token, verify_password
from marketplace.core.identity.schemas import CLIENT_SCOPES, ApiClientCreate, BuyerRegistration, UserCreate
from marketplace.core.principal import OrgKind, Principal, Role
from marketplace.core.scoping import scope_organisations, scope_own_organisation
from marketplace.core.types import utcnow


@dataclass(frozen=True)
class LoginPolicy:
    """How many failed sign-ins are tolerated, and for how long an account or address is locked."""

    max_failures: int = 5
    lockout_seconds: int = 900

    @property
    def max_failures_per_address(self) -> int:
        """An address may try several accounts, but not without limit."""
        return self.max_failures * 4


def normalise_email(email: str) -> str:
    """E-mail addresses are compared case-insensitively and without surrounding spaces."""
    return email.strip().lower()


async def _check_not_throttled(cache: Cache, keys: list[tuple[str, int]]) -> None:
    for key, limit in keys:
        if await cache.get_int(key) >= limit:
            retry_after = await cache.ttl(key) or 1
            raise TooManyRequests(
                f"Too many failed sign-ins. Try again in {retry_after} seconds.",
                retry_after=retry_after,
                code="login_throttled",
            )


async def authenticate(
    session: AsyncSession, cache: Cache, policy: LoginPolicy, *, email: str, password: str, address: str
) -> User:
    """Check a person's credentials; repeated failures lock the account and the address for a while."""
    email = normalise_email(email)
    keys = [(f"login-fail:user:{email}", policy.max_failures), (f"login-fail:addr:{address}", policy.max_failures_per_address)]
    await _check_not_throttled(cache, keys)
    user = (await session.exec(select(User).where(User.email == email))).first()
    org_ok = user is not None and user.is_active
    if not verify_password(user.password_hash if user else None, password) or not org_ok:
        for key, _limit in keys:
            await cache.incr(key, policy.lockout_seconds)
        raise NotAuthenticated("The e-mail or password is not right.", code="invalid_credentials")
    assert user is not None
    await cache.delete(keys[0][0])
    return user


async def start_session(session: AsyncSession, user: User, *, ttl_seconds: int) -> str:
    """Open a new sign-in session for ``user`` and return the cookie token (a fresh one every time)."""
    token = new_token("mss_")
    now = utcnow()
    session.add(LoginSession(token_hash=digest(token), user_id=user.id, expires_at=now + timedelta(seconds=ttl_seconds)))
    user.last_login_at = now
    session.add(user)
    await publish(
        session,
        DomainEvent("identity.signed_in", Actor("user", str(user.id)), orgs=(user.org_id,), subjects={"user": str(user.id)}),
    )
    await session.commit()
    return token


async def end_session(session: AsyncSession, token: str) -> None:
    """Close the session the token belongs to; unknown tokens are ignored."""
    login = await session.get(LoginSession, digest(token))
    if login is None:
        return
    user = await session.get(User, login.user_id)
    await session.delete(login)
    if user is not None:
        await publish(
            session,
            DomainEvent("identity.signed_out", Actor("user", str(user.id)), orgs=(user.org_id,), subjects={"user": str(user.id)}),
        )
    await session.commit()


def _principal(org: Organisation, **who: Any) -> Principal:
    return Principal(org_id=org.id, org_kind=OrgKind(org.kind), org_name=org.name, org_name_zh=org.name_zh, **who)


def _person(user: User, org: Organisation) -> Principal:
    return _principal(
        org,
        user_id=user.id,
        email=user.email,
        display_name=user.display_name,
        role=Role(user.role),
    )


async def principal_for_session(session: AsyncSession, token: str) -> Principal | None:
    """The signed-in person behind a session cookie, or None when the session is unknown or over."""
    row = (
        await session.exec(
            select(User, Organisation, LoginSession)
            .join(LoginSession, col(LoginSession.user_id) == col(User.id))
            .join(Organisation, col(Organisation.id) == col(User.org_id))
            .where(LoginSession.token_hash == digest(token))
        )
    ).first()
    if row is None:
        return None
    user, org, login = row
    if login.expires_at <= utcnow() or not user.is_active:
        return None
    return _person(user, org)


class ProgramCache:
    """Programs already resolved from a verified access token, for a few seconds (a program calls many times a
    second; resolving it costs a session and two queries). A revocation in this process forgets at once; one made
    in another process takes effect within ``ttl_seconds`` (the token itself is still verified on every call)."""

    def __init__(self, ttl_seconds: float = 2.0, max_entries: int = 10_000) -> None:
        self.ttl_seconds = ttl_seconds
        self.max_entries = max_entries
        self._entries: dict[tuple[str, str, frozenset[str]], tuple[float, Principal]] = {}

    def get(self, client_id: str, jti: str, scopes: frozenset[str]) -> Principal | None:
        """The cached program, when still fresh."""
        entry = self._entries.get((client_id, jti, scopes))
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1]

    def put(self, client_id: str, jti: str, scopes: frozenset[str], principal: Principal) -> None:
        """Remember a resolved program."""
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
        self._entries[(client_id, jti, scopes)] = (time.monotonic() + self.ttl_seconds, principal)

    def forget_client(self, client_id: str) -> None:
        """Forget every token of a client (its client or one of its tokens was revoked)."""
        for key in [k for k in self._entries if k[0] == client_id]:
            self._entries.pop(key, None)


#: The process's cache of resolved programs (see ProgramCache).
PROGRAMS = ProgramCache()


async def cached_principal_for_client(
    session_factory: Callable[[], AbstractAsyncContextManager[AsyncSession]], *, client_id: str, jti: str, scopes: frozenset[str]
) -> Principal | None:
    """``principal_for_client`` through the process's short-lived cache (opens a session only on a miss)."""
    cached = PROGRAMS.get(client_id, jti, scopes)
    if cached is not None:
        return cached
    async with session_factory() as session:
        principal = await principal_for_client(session, client_id=client_id, jti=jti, scopes=scopes)
    if principal is not None:
        PROGRAMS.put(client_id, jti, scopes, principal)
    return principal


async def principal_for_client(session: AsyncSession, *, client_id: str, jti: str, scopes: frozenset[str]) -> Principal | None:
    """The program behind a verified access token, or None when its client or the token was revoked."""
    row = (
        await session.exec(
            select(ApiClient, Organisation)
            .join(Organisation, col(Organisation.id) == col(ApiClient.org_id))
            .where(ApiClient.client_id == client_id)
        )
    ).first()
    if row is None or row[0].revoked_at is not None:
        return None
    if await session.get(RevokedAccessToken, jti) is not None:
        return None
    client, org = row
    return _principal(org, client_id=client.client_id, scopes=scopes)


async def _insert_unique(session: AsyncSession, record: Any, conflict: Conflict) -> None:
    """Insert ``record`` now, so a duplicate is refused with ``conflict`` before anything else is written."""
    session.add(record)
    try:
        await session.flush()
    except IntegrityError:
        await session.rollback()
        raise conflict from None


async def _insert_organisation(session: AsyncSession, *, name: str, kind: OrgKind, name_zh: str | None) -> Organisation:
    org = Organisation(name=name, kind=kind, name_zh=name_zh)
    await _insert_unique(session, org, Conflict("An organisation with this name already exists.", code="org_name_taken"))
    return org


def _organisation_registered(org: Organisation, actor: Actor, **payload: Any) -> DomainEvent:
    return DomainEvent(
        "identity.organisation_registered",
        actor,
        orgs=(org.id,),
        subjects={"organisation": str(org.id)},
        payload={"kind": OrgKind(org.kind).value, **payload},
    )


async def create_organisation(
    session: AsyncSession, *, name: str, kind: OrgKind, name_zh: str | None = None, actor: Actor | None = None
) -> Organisation:
    """Register an organisation as one of the five parties (CLI and demo; owners onboard others later)."""
    org = await _insert_organisation(session, name=name, kind=kind, name_zh=name_zh)
    await publish(session, _organisation_registered(org, actor or Actor.of(None)))
    await session.commit()
    return org


async def find_organisation(session: AsyncSession, name: str) -> Organisation | None:
    """An organisation by its exact name."""
    return (await session.exec(select(Organisation).where(Organisation.name == name))).first()


async def find_user(session: AsyncSession, email: str) -> User | None:
    """A user by e-mail."""
    return (await session.exec(select(User).where(User.email == normalise_email(email)))).first()


async def get_organisation(session: AsyncSession, org_id: uuid.UUID) -> Organisation:
    """An organisation by id."""
    org = await session.get(Organisation, org_id)
    if org is None:
        raise NotFound("No such organisation.")
    return org


async def list_organisations(session: AsyncSession, principal: Principal, *, kind: OrgKind | None = None) -> list[Organisation]:
    """Organisations the caller may see."""
    stmt = scope_organisations(select(Organisation), principal, id_column=Organisation.id, kind_column=Organisation.kind)
    if kind is not None:
        stmt = stmt.where(Organisation.kind == kind.value)
    return list((await session.exec(stmt.order_by(col(Organisation.kind), col(Organisation.name)))).all())


async def get_user(session: AsyncSession, user_id: uuid.UUID) -> User:
    """A user by id."""
    user = await session.get(User, user_id)
    if user is None:
        raise NotFound("No such user.")
    return user


async def list_users(session: AsyncSession, principal: Principal) -> list[User]:
    """Members of the caller's organisation (all users, for a regulator)."""
    stmt = scope_own_organisation(select(User), principal, org_column=User.org_id)
    return list((await session.exec(stmt.order_by(col(User.email)))).all())


async def _insert_user(
    session: AsyncSession, *, org_id: uuid.UUID, email: str, display_name: str, role: Role, password_hash: str
) -> User:
    user = User(org_id=org_id, email=normalise_email(email), display_name=display_name, role=role, password_hash=password_hash)
    await _insert_unique(session, user, Conflict("A user with this e-mail already exists.", code="email_taken"))
    return user


def _user_added(user: User, actor: Actor) -> DomainEvent:
    return DomainEvent(
        "identity.user_added",
        actor,
        orgs=(user.org_id,),
        subjects={"user": str(user.id)},
        payload={"role": Role(user.role).value},
    )


async def add_user(session: AsyncSession, *, org_id: uuid.UUID, data: UserCreate, actor: Actor | None = None) -> User:
    """Create a user in ``org_id``. Used by org admins (through :func:`create_member`) and the CLI."""
    user = await _insert_user(
        session,
        org_id=org_id,
        email=data.email,
        display_name=data.display_name,
        role=data.role,
        password_hash=hash_password(data.password),
    )
    await publish(session, _user_added(user, actor or Actor.of(None)))
    await session.commit()
    return user


async def create_member(session: AsyncSession, principal: Principal, data: UserCreate) -> User:
    """An org admin adds a member to their own organisation."""
    if not principal.is_org_admin:
        raise Forbidden("Only an administrator of your organisation can add members.", code="org_admin_required")
    return await add_user(session, org_id=principal.org_id, data=data, actor=Actor.of(principal))


@dataclass(frozen=True)
class RegistrationPolicy:
    """How many buyer organisations one client address may register (or try to) in a window."""

    max_per_address: int = 5
    window_seconds: int = 3600


async def register_buyer(
    session: AsyncSession,
    cache: Cache,
    policy: RegistrationPolicy,
    principal: Principal | None,
    *,
    data: BuyerRegistration,
    address: str,
) -> tuple[Organisation, User]:
    """A buyer organisation registers itself with its first administrator, in one transaction.

    Only anonymous visitors register (a signed-in person already belongs to an organisation). Each address may
    try ``policy.max_per_address`` times per window, refused or not, so the form cannot be used to create
    organisations in bulk or to probe which e-mail addresses are taken.
    """
    if principal is not None:
        raise Conflict("You are already signed in; sign out to register another organisation.", code="already_signed_in")
    key = f"register:addr:{address}"
    # Counted first (one atomic increment), so simultaneous attempts cannot all slip under the limit.
    if await cache.incr(key, policy.window_seconds) > policy.max_per_address:
        retry_after = await cache.ttl(key) or 1
        raise TooManyRequests(
            f"Too many registrations from your address. Try again in {retry_after} seconds.",
            retry_after=retry_after,
            code="registration_throttled",
        )
    name_taken = (
        await session.exec(select(Organisation.id).where(func.lower(col(Organisation.name)) == data.organisation_name.lower()))
    ).first()
    if name_taken is not None:
        raise Conflict("An organisation with this name already exists.", code="org_name_taken")
    if await find_user(session, data.email) is not None:
        raise Conflict("A user with this e-mail already exists.", code="email_taken")
    # Hashed before the first write: argon2 takes a while, and the ledger head is locked from the first event on.
    password_hash = hash_password(data.password)
    org = await _insert_organisation(session, name=data.organisation_name, kind=OrgKind.buyer, name_zh=data.organisation_name_zh)
    user = await _insert_user(
        session, org_id=org.id, email=data.email, display_name=data.display_name, role=Role.admin, password_hash=password_hash
    )
    actor = Actor("user", str(user.id))
    await publish(session, _organisation_registered(org, actor, self_registered=True))
    await publish(session, _user_added(user, actor))
    await session.commit()
    return org, user


async def list_api_clients(session: AsyncSession, principal: Principal) -> list[ApiClient]:
    """The caller's organisation's API clients."""
    stmt = scope_own_organisation(select(ApiClient), principal, org_column=ApiClient.org_id)
    return list((await session.exec(stmt.order_by(col(ApiClient.created_at)))).all())


async def create_api_client(session: AsyncSession, principal: Principal, data: ApiClientCreate) -> tuple[ApiClient, str]:
    """A buyer creates an API client; returns it with its secret, which is never shown again."""
    if principal.org_kind is not OrgKind.buyer or principal.is_program:
        raise Forbidden("Only people of a buyer organisation can create API clients.", code="buyer_required")
    active = (
        await session.exec(
            select(func.count())
            .select_from(ApiClient)
            .where(ApiClient.org_id == principal.org_id, col(ApiClient.revoked_at).is_(None))
        )
    ).one()
    if active >= 50:
        raise Conflict("Your organisation already has 50 active API clients; revoke one first.", code="too_many_clients")
    secret = new_token("mks_")
    client = await add_api_client(
        session,
        org_id=principal.org_id,
        name=data.name,
        scopes=data.scope or sorted(CLIENT_SCOPES),
        client_id=new_token("mkc_", 12),
        secret=secret,
        created_by=principal.user_id,
        actor=Actor.of(principal),
    )
    return client, secret


async def add_api_client(
    session: AsyncSession,
    *,
    org_id: uuid.UUID,
    name: str,
    scopes: list[str],
    client_id: str,
    secret: str,
    created_by: uuid.UUID | None,
    actor: Actor | None = None,
) -> ApiClient:
    """Store an API client with the digest of its secret (also used by the demo seed)."""
    client = ApiClient(
        name=name, scope=" ".join(scopes), client_id=client_id, secret_hash=digest(secret), org_id=org_id, created_by=created_by
    )
    session.add(client)
    await publish(
        session,
        DomainEvent(
            "identity.api_client_created",
            actor or (Actor("user", str(created_by)) if created_by else Actor.of(None)),
            orgs=(org_id,),
            subjects={"api_client": client_id},
            payload={"scope": sorted(scopes)},
        ),
    )
    await session.commit()
    return client


async def revoke_api_client(session: AsyncSession, principal: Principal, client_uuid: uuid.UUID) -> ApiClient:
    """Revoke one of the caller's organisation's clients: its tokens stop working at once. Idempotent."""
    if principal.org_kind is not OrgKind.buyer or principal.is_program:
        raise Forbidden("Only people of a buyer organisation can revoke API clients.", code="buyer_required")
    stmt = scope_own_organisation(select(ApiClient), principal, org_column=ApiClient.org_id).where(ApiClient.id == client_uuid)
    client = (await session.exec(stmt)).first()
    if client is None:
        raise NotFound("No such API client in your organisation.", code="client_not_found")
    if client.revoked_at is None:
        client.revoked_at = utcnow()
        session.add(client)
        await publish(
            session,
            DomainEvent(
                "identity.api_client_revoked",
                Actor.of(principal),
                orgs=(client.org_id,),
                subjects={"api_client": client.client_id},
            ),
        )
        await session.commit()
    PROGRAMS.forget_client(client.client_id)
    return client


async def find_client(session: AsyncSession, client_id: str) -> ApiClient | None:
    """The API client with this public id (for the token endpoint)."""
    return (await session.exec(select(ApiClient).where(ApiClient.client_id == client_id))).first()


async def note_client_used(session: AsyncSession, client: ApiClient) -> None:
    """Remember that a client obtained an access token (and put it in the ledger)."""
    client.last_used_at = utcnow()
    session.add(client)
    await publish(
        session,
        DomainEvent(
            "identity.access_token_issued",
            Actor("client", client.client_id),
            orgs=(client.org_id,),
            subjects={"api_client": client.client_id},
        ),
    )
    await session.commit()


async def revoke_access_token(session: AsyncSession, *, jti: str, client_id: str, expires_at: datetime) -> None:
    """Mark an access token revoked until it would have expired (RFC 7009). Idempotent."""
    if await session.get(RevokedAccessToken, jti) is None:
        session.add(RevokedAccessToken(jti=jti, client_id=client_id, expires_at=expires_at))
        await publish(
            session,
            DomainEvent(
                "identity.access_token_revoked", Actor("client", client_id), subjects={"api_client": client_id, "jti": jti}
            ),
        )
        try:
            await session.commit()
        except IntegrityError:  # revoked concurrently: the outcome is the same
            await session.rollback()
    PROGRAMS.forget_client(client_id)


async def purge_expired(session: AsyncSession) -> tuple[int, int]:
    """Delete sessions and revocation records that have expired; returns how many of each."""
    now = utcnow()
    sessions = await session.exec(delete(LoginSession).where(col(LoginSession.expires_at) <= now))  # type: ignore[call-overload]
    tokens = await session.exec(delete(RevokedAccessToken).where(col(RevokedAccessToken.expires_at) <= now))  # type: ignore[call-overload]
    await session.commit()
    return sessions.rowcount or 0, tokens.rowcount or 0
