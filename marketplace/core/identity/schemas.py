"""Request and response shapes of identity: what crosses the API boundary."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, EmailStr, Field, StringConstraints, field_validator

from marketplace.core.identity.models import ApiClientBase, OrganisationBase, UserBase
from marketplace.core.principal import OrgKind, Role

#: Scopes a buyer's program may hold. ``profile`` reads ``/api/me``; the data scopes gate ``/data/v1``.
CLIENT_SCOPES: dict[str, str] = {
    "profile": "Read the program's own identity (GET /api/me)",
    "data:read": "Read rows of subscribed data products",
    "data:export": "Request file exports of subscribed data products",
    "data:query": "Run aggregate sandbox queries on subscribed data products",
    "billing:read": "Read the organisation's invoices (GET /api/billing/invoices)",
}

Password = Annotated[str, StringConstraints(min_length=1, max_length=1024)]


class LoginRequest(BaseModel):
    """Credentials posted to ``/api/auth/login``."""

    model_config = ConfigDict(extra="forbid")

    email: Annotated[str, StringConstraints(min_length=3, max_length=254, strip_whitespace=True)]
    password: Password


class OrganisationPublic(OrganisationBase):
    id: uuid.UUID


class UserCreate(BaseModel):
    """A new member of the caller's own organisation (org admins only)."""

    model_config = ConfigDict(extra="forbid")

    email: EmailStr
    display_name: Annotated[str, StringConstraints(min_length=1, max_length=200, strip_whitespace=True)]
    role: Role = Role.member
    password: Annotated[str, StringConstraints(min_length=12, max_length=1024)]


class BuyerRegistration(BaseModel):
    """A buyer organisation registering itself, with the person who becomes its first administrator."""

    model_config = ConfigDict(extra="forbid")

    organisation_name: Annotated[str, StringConstraints(min_length=2, max_length=200, strip_whitespace=True)] = Field(
        description="The organisation's registered name (unique, compared case-insensitively)"
    )
    organisation_name_zh: Annotated[str, StringConstraints(max_length=200, strip_whitespace=True)] | None = Field(
        default=None, description="Its Chinese name, shown on Chinese pages (optional)"
    )
    email: EmailStr = Field(description="The administrator's e-mail, used to sign in")
    display_name: Annotated[str, StringConstraints(min_length=1, max_length=200, strip_whitespace=True)]
    password: Annotated[str, StringConstraints(min_length=12, max_length=1024)] = Field(description="At least 12 characters")

    @field_validator("organisation_name_zh")
    @classmethod
    def _blank_is_none(cls, value: str | None) -> str | None:
        return value or None


class UserPublic(UserBase):
    id: uuid.UUID
    org_id: uuid.UUID
    is_active: bool
    created_at: datetime
    last_login_at: datetime | None


class Me(BaseModel):
    """The caller as the platform sees it: a person (session) or a program (access token)."""

    kind: str = Field(description="'user' for a signed-in person, 'client' for a program with a token")
    org: OrganisationPublic
    user: UserPublic | None = None
    client_id: str | None = None
    scopes: list[str] = Field(default_factory=list)
    csrf_token: str | None = Field(default=None, description="Token to send as X-CSRF-Token on writes")


class ApiClientCreate(BaseModel):
    """A new API client; ``scope`` defaults to every client scope."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, StringConstraints(min_length=1, max_length=120, strip_whitespace=True)]
    scope: list[str] | None = None

    @field_validator("scope")
    @classmethod
    def _known_scopes(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return value
        unknown = sorted(set(value) - set(CLIENT_SCOPES))
        if unknown:
            raise ValueError(f"unknown scope(s): {', '.join(unknown)}; known: {', '.join(CLIENT_SCOPES)}")
        if not value:
            raise ValueError("give at least one scope, or leave scope out for all of them")
        return sorted(set(value))


class ApiClientPublic(ApiClientBase):
    id: uuid.UUID
    client_id: str
    org_id: uuid.UUID
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None


class ApiClientCreated(ApiClientPublic):
    """Returned once, at creation: the only time the secret is ever shown."""

    client_secret: str


class OrgKindFilter(BaseModel):
    kind: OrgKind | None = None
