"""Who is calling: a signed-in person or a buyer's program, with its organisation and party."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from enum import StrEnum


class OrgKind(StrEnum):
    """The five parties of the marketplace (DESIGN.md §2)."""

    owner = "owner"
    operator = "operator"
    buyer = "buyer"
    regulator = "regulator"
    auditor = "auditor"


class Role(StrEnum):
    """A user's role inside its own organisation."""

    admin = "admin"
    member = "member"


READ_ONLY_PARTIES = frozenset({OrgKind.regulator, OrgKind.auditor})


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller. ``client_id`` is set when a program calls with an access token."""

    org_id: uuid.UUID
    org_kind: OrgKind
    org_name: str
    org_name_zh: str | None = None
    user_id: uuid.UUID | None = None
    email: str | None = None
    display_name: str | None = None
    role: Role | None = None
    client_id: str | None = None
    scopes: frozenset[str] = field(default_factory=frozenset)

    @property
    def is_program(self) -> bool:
        """True when the caller is an API client with a bearer token, not a person."""
        return self.client_id is not None

    @property
    def is_read_only(self) -> bool:
        """Regulators and auditors may read but never change a business record."""
        return self.org_kind in READ_ONLY_PARTIES

    @property
    def is_org_admin(self) -> bool:
        """A person holding the admin role in their organisation."""
        return self.role is Role.admin and not self.is_program
