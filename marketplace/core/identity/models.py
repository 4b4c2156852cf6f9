"""Identity tables. Each record follows the family XBase -> X(table=True); shapes live in schemas.py."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlmodel import Field, SQLModel

from marketplace.core.principal import OrgKind, Role
from marketplace.core.types import UTCDateTime, enum_column, utcnow


class OrganisationBase(SQLModel):
    """An organisation taking part in the marketplace as one of the five parties."""

    name: str = Field(min_length=2, max_length=200)
    name_zh: str | None = Field(default=None, max_length=200)
    kind: OrgKind = Field(sa_column=enum_column(OrgKind, index=True))


class Organisation(OrganisationBase, table=True):
    __tablename__ = "organisation"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    name: str = Field(max_length=200, unique=True)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class UserBase(SQLModel):
    """A person who signs in, with a role inside their organisation."""

    email: str = Field(max_length=254)
    display_name: str = Field(min_length=1, max_length=200)
    role: Role = Field(default=Role.member, sa_column=enum_column(Role))


class User(UserBase, table=True):
    __tablename__ = "user_account"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    org_id: uuid.UUID = Field(foreign_key="organisation.id", index=True)
    email: str = Field(max_length=254, unique=True)
    password_hash: str = Field(max_length=255)
    is_active: bool = True
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    last_login_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class LoginSession(SQLModel, table=True):
    """A signed-in browser session. Only the SHA-256 of the cookie's token is stored."""

    __tablename__ = "login_session"

    token_hash: str = Field(primary_key=True, max_length=64)
    user_id: uuid.UUID = Field(foreign_key="user_account.id", index=True)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    expires_at: datetime = Field(sa_type=UTCDateTime, index=True)


class ApiClientBase(SQLModel):
    """A buyer's program that obtains access tokens with the client credentials grant."""

    name: str = Field(min_length=1, max_length=120)
    scope: str = Field(max_length=500)


class ApiClient(ApiClientBase, table=True):
    __tablename__ = "api_client"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    client_id: str = Field(max_length=64, unique=True)
    secret_hash: str = Field(max_length=255)
    org_id: uuid.UUID = Field(foreign_key="organisation.id", index=True)
    created_by: uuid.UUID | None = Field(default=None, foreign_key="user_account.id")
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    revoked_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    last_used_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class RevokedAccessToken(SQLModel, table=True):
    """An access token revoked before its expiry (RFC 7009), kept until it would have expired."""

    __tablename__ = "revoked_access_token"

    jti: str = Field(primary_key=True, max_length=64)
    client_id: str = Field(max_length=64, index=True)
    expires_at: datetime = Field(sa_type=UTCDateTime, index=True)
    revoked_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
