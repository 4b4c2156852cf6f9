"""Factories: each call writes fresh records straight to the test database (sync engine).

No shared state between tests: every test builds the world it needs.
"""

from __future__ import annotations

import functools
import itertools
import uuid
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import Engine
from sqlmodel import Session

from marketplace.core.identity.models import ApiClient, LoginSession, Organisation, User
from marketplace.core.identity.passwords import digest, hash_password, new_token
from marketplace.core.identity.schemas import CLIENT_SCOPES
from marketplace.core.principal import OrgKind, Role
from marketplace.core.types import utcnow

PASSWORD = "correct horse battery staple"
_counter = itertools.count(1)


@functools.cache
def _password_hash(password: str) -> str:
    # argon2 is deliberately slow; hash each distinct test password once per run.
    return hash_password(password)


def make_org(engine: Engine, kind: OrgKind, name: str | None = None, name_zh: str | None = None) -> Organisation:
    """A new organisation of ``kind``."""
    org = Organisation(name=name or f"{kind.value.title()} {next(_counter)} {uuid.uuid4().hex[:6]}", kind=kind, name_zh=name_zh)
    with Session(engine) as session:
        session.add(org)
        session.commit()
        session.refresh(org)
    return org


def make_user(
    engine: Engine, org: Organisation, role: Role = Role.admin, *, password: str = PASSWORD, active: bool = True
) -> User:
    """A new user of ``org`` who signs in with ``password``."""
    n = next(_counter)
    user = User(
        org_id=org.id,
        email=f"user{n}-{uuid.uuid4().hex[:6]}@{org.kind.value}.test-market.cn",
        display_name=f"Test User {n}",
        role=role,
        password_hash=_password_hash(password),
        is_active=active,
    )
    with Session(engine) as session:
        session.add(user)
        session.commit()
        session.refresh(user)
    return user


def make_login_session(engine: Engine, user: User, *, ttl_seconds: int = 3600) -> str:
    """A session cookie token for ``user`` (skips the password check)."""
    token = new_token("mss_")
    with Session(engine) as session:
        session.add(LoginSession(token_hash=digest(token), user_id=user.id, expires_at=utcnow() + timedelta(seconds=ttl_seconds)))
        session.commit()
    return token


@dataclass
class MadeClient:
    record: ApiClient
    secret: str

    @property
    def client_id(self) -> str:
        return self.record.client_id


def make_api_client(engine: Engine, org: Organisation, *, scopes: list[str] | None = None, revoked: bool = False) -> MadeClient:
    """An API client of ``org`` with a known secret."""
    secret = new_token("mks_")
    record = ApiClient(
        name=f"pipeline {next(_counter)}",
        scope=" ".join(scopes or sorted(CLIENT_SCOPES)),
        client_id=new_token("mkc_", 12),
        secret_hash=digest(secret),
        org_id=org.id,
        revoked_at=utcnow() if revoked else None,
    )
    with Session(engine) as session:
        session.add(record)
        session.commit()
        session.refresh(record)
    return MadeClient(record=record, secret=secret)
