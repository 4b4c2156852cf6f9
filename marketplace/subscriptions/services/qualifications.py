"""Buyer qualification: a buyer organisation submits its business licence, industry and contact to an operator,
which approves or rejects it with a written reason. Only an approved qualification lets the buyer take a paid plan
of that operator's products.

A buyer may submit again after a rejection, never while a qualification with the same operator is submitted or
approved. Reads are scoped: a buyer sees its own, an operator those submitted to it, regulators all; an auditor
those submitted to an operator its firm's engagements in force cover (whatever the period: see
:mod:`marketplace.subscriptions.auditing`); without an engagement in force it is refused (403 ``outside_engagement``,
recorded), and one qualification outside is refused (403, recorded) when it exists, 404 otherwise. The owner does
not take part in buyer onboarding and is refused (403). Events carry neither the contact details nor
the licence number in clear (only its SHA-256 and the industry).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession
from sqlmodel.sql.expression import SelectOfScalar

from marketplace.core.errors import Conflict, Forbidden, InvalidInput, NotFound
from marketplace.core.events import Actor, DomainEvent, publish
from marketplace.core.identity.models import Organisation
from marketplace.core.principal import OrgKind, Principal
from marketplace.core.types import utcnow
from marketplace.subscriptions import auditing
from marketplace.subscriptions.models import BuyerQualification, QualificationStatus
from marketplace.subscriptions.schemas import QualificationSubmit

#: Parties that read every qualification (read-only); auditors read those their engagements cover.
READS_ALL = frozenset({OrgKind.regulator})
MAX_REASON = 2000

# --- the unified social credit code (GB 32100-2015) ----------------------------------------------------------------

#: The 31 characters a code may use (no I, O, S, V, Z), in the order of their values.
CREDIT_CODE_CHARSET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
#: Weights of the first 17 characters (3^i mod 31).
CREDIT_CODE_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)


def credit_code_check_character(first17: str) -> str:
    """The check character (18th) of a unified social credit code whose first 17 characters are given."""
    total = sum(CREDIT_CODE_CHARSET.index(ch) * weight for ch, weight in zip(first17, CREDIT_CODE_WEIGHTS, strict=True))
    return CREDIT_CODE_CHARSET[(31 - total % 31) % 31]


def normalise_credit_code(value: str) -> str:
    """A valid unified social credit code in upper case, or InvalidInput ``business_licence_number_invalid``.

    18 characters from the code's alphabet, the administrative division (characters 3-8) in digits, and the
    check character matching GB 32100-2015's weighted sum modulo 31.
    """
    code = value.strip().upper()

    def invalid(why: str) -> InvalidInput:
        return InvalidInput(
            f"The business licence number is not a valid unified social credit code: {why}.",
            code="business_licence_number_invalid",
        )

    if len(code) != 18:
        raise invalid(f"it has {len(code)} characters, not 18")
    if any(ch not in CREDIT_CODE_CHARSET for ch in code):
        raise invalid("it uses characters outside 0-9 and the letters A-Y without I, O, S, V, Z")
    if not code[2:8].isdigit():
        raise invalid("characters 3 to 8 (the administrative division) must be digits")
    if code[17] != credit_code_check_character(code[:17]):
        raise invalid("the check character (the last) does not match")
    return code


def _licence_number_hash(code: str) -> str:
    return hashlib.sha256(code.encode()).hexdigest()


# --- reads ---------------------------------------------------------------------------------------------------------------


def _scoped(stmt: SelectOfScalar[Any], principal: Principal) -> SelectOfScalar[Any]:
    """Qualifications the caller may see: a buyer its own, an operator those submitted to it, regulators all,
    auditors those of the operators their engagements in force cover."""
    if principal.org_kind is OrgKind.buyer:
        return stmt.where(BuyerQualification.buyer_org_id == principal.org_id)
    if principal.org_kind is OrgKind.operator:
        return stmt.where(BuyerQualification.operator_id == principal.org_id)
    if auditing.is_auditor(principal):
        return stmt.where(col(BuyerQualification.id).in_(auditing.covered_qualification_ids(principal)))
    if principal.org_kind in READS_ALL:
        return stmt
    raise Forbidden("The owner takes no part in buyer qualification.", code="party_not_allowed")


async def list_qualifications(
    session: AsyncSession,
    principal: Principal,
    *,
    status: QualificationStatus | None = None,
    buyer_org_id: uuid.UUID | None = None,
    operator_id: uuid.UUID | None = None,
    limit: int = 100,
    offset: int = 0,
) -> tuple[Sequence[BuyerQualification], int]:
    """The qualifications the caller may see, newest first, and how many match in all (an auditor without an
    engagement in force: 403 ``outside_engagement``, recorded)."""
    await auditing.require_engagement(session, principal, "/api/buyers/qualifications")
    stmt = _scoped(select(BuyerQualification), principal)
    if status is not None:
        stmt = stmt.where(BuyerQualification.status == status)
    if buyer_org_id is not None:
        stmt = stmt.where(BuyerQualification.buyer_org_id == buyer_org_id)
    if operator_id is not None:
        stmt = stmt.where(BuyerQualification.operator_id == operator_id)
    total = (await session.exec(select(func.count()).select_from(stmt.subquery()))).one()
    rows = (
        await session.exec(
            stmt.order_by(col(BuyerQualification.submitted_at).desc(), col(BuyerQualification.id)).offset(offset).limit(limit)
        )
    ).all()
    return rows, int(total)


async def get_qualification(session: AsyncSession, principal: Principal, qualification_id: uuid.UUID) -> BuyerQualification:
    """One qualification the caller may see (404 ``qualification_not_found`` otherwise, revealing nothing; an
    auditor asking for one outside its engagements, or without an engagement in force: 403 ``outside_engagement``,
    recorded)."""
    found: BuyerQualification | None = (
        await session.exec(_scoped(select(BuyerQualification), principal).where(BuyerQualification.id == qualification_id))
    ).first()
    if found is None:
        exists = auditing.is_auditor(principal) and await session.get(BuyerQualification, qualification_id) is not None
        path = auditing.record_path("buyers/qualifications", qualification_id)
        await auditing.refuse_record(session, principal, path, exists)
        raise NotFound("No such qualification.", code="qualification_not_found")
    return found


async def qualification_status(
    session: AsyncSession, buyer_org_id: uuid.UUID, operator_id: uuid.UUID
) -> QualificationStatus | None:
    """Where a buyer stands with an operator: approved if any qualification is, else submitted, else rejected;
    None when it never submitted one. No caller scoping (services call it for a buyer they already scoped)."""
    statuses = set(
        (
            await session.exec(
                select(BuyerQualification.status).where(
                    BuyerQualification.buyer_org_id == buyer_org_id, BuyerQualification.operator_id == operator_id
                )
            )
        ).all()
    )
    for status in (QualificationStatus.approved, QualificationStatus.submitted, QualificationStatus.rejected):
        if status in statuses:
            return status
    return None


# --- writes --------------------------------------------------------------------------------------------------------------


async def _lock_organisation(session: AsyncSession, org_id: uuid.UUID) -> None:
    """Serialise a buyer's concurrent submissions (PostgreSQL row lock; SQLite serialises writers anyway)."""
    await session.exec(select(Organisation.id).where(Organisation.id == org_id).with_for_update())


async def submit_qualification(session: AsyncSession, principal: Principal, data: QualificationSubmit) -> BuyerQualification:
    """A buyer person submits its organisation's qualification to an operator (``qualification.submitted``).

    Refused: not a buyer person (403), unknown operator (404 ``operator_not_found``), an invalid credit code
    (400 ``business_licence_number_invalid``), one already submitted or approved with that operator
    (409 ``qualification_exists``)."""
    if principal.org_kind is not OrgKind.buyer or principal.is_program:
        raise Forbidden("Only a person of a buyer organisation submits its qualification.", code="party_not_allowed")
    code = normalise_credit_code(data.business_licence_number)
    operator = await session.get(Organisation, data.operator_id)
    if operator is None or operator.kind is not OrgKind.operator:
        raise NotFound("No such operator.", code="operator_not_found")
    await _lock_organisation(session, principal.org_id)
    current = await qualification_status(session, principal.org_id, operator.id)
    if current in (QualificationStatus.submitted, QualificationStatus.approved):
        raise Conflict(
            f"Your qualification with {operator.name} is already {current.value}; submit again only after a rejection.",
            code="qualification_exists",
            qualification_status=current.value,
        )
    qualification = BuyerQualification(
        buyer_org_id=principal.org_id,
        operator_id=operator.id,
        business_licence_number=code,
        industry=data.industry,
        contact_name=data.contact_name,
        contact_email=data.contact_email,
        contact_phone=data.contact_phone,
        status=QualificationStatus.submitted,
        submitted_by=principal.user_id,
        submitted_at=utcnow(),
    )
    session.add(qualification)
    await session.flush()
    await publish(
        session,
        DomainEvent(
            "qualification.submitted",
            Actor.of(principal),
            orgs=(principal.org_id, operator.id),
            subjects={"qualification": str(qualification.id)},
            payload={
                "industry": qualification.industry,
                "licence_number_sha256": _licence_number_hash(code),
                "resubmission": current is QualificationStatus.rejected,
            },
        ),
    )
    await session.commit()
    await session.refresh(qualification)
    return qualification


async def decide_qualification(
    session: AsyncSession, principal: Principal, qualification_id: uuid.UUID, approve: bool, reason: str = ""
) -> BuyerQualification:
    """The operator a qualification was submitted to approves or rejects it (``qualification.approved|rejected``).

    A rejection needs a written reason (400 ``reason_required``); only a submitted qualification is decided
    (409 ``qualification_not_submitted``); another operator's is 404."""
    if principal.org_kind is not OrgKind.operator or principal.is_program:
        raise Forbidden("Only the operator a qualification was submitted to decides on it.", code="party_not_allowed")
    reason = reason.strip()
    if not approve and not reason:
        raise InvalidInput("Give the buyer a written reason for the rejection.", code="reason_required")
    if len(reason) > MAX_REASON:
        raise InvalidInput(f"A reason is at most {MAX_REASON} characters.", code="reason_too_long")
    stmt = _scoped(select(BuyerQualification), principal).where(BuyerQualification.id == qualification_id).with_for_update()
    qualification: BuyerQualification | None = (await session.exec(stmt)).first()
    if qualification is None:
        raise NotFound("No such qualification.", code="qualification_not_found")
    if qualification.status is not QualificationStatus.submitted:
        raise Conflict(
            f"The qualification is {qualification.status.value}; only a submitted one can be decided.",
            code="qualification_not_submitted",
        )
    status = QualificationStatus.approved if approve else QualificationStatus.rejected
    qualification.status = status
    qualification.decided_by = principal.user_id
    qualification.decided_at = utcnow()
    qualification.decision_reason = reason or None
    session.add(qualification)
    await publish(
        session,
        DomainEvent(
            f"qualification.{status.value}",
            Actor.of(principal),
            orgs=(qualification.buyer_org_id, qualification.operator_id),
            subjects={"qualification": str(qualification.id)},
            payload={"industry": qualification.industry, "reason": reason},
        ),
    )
    await session.commit()
    await session.refresh(qualification)
    return qualification
