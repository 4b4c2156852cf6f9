"""A small shop for the subscription tests: an owner's licence to an operator, a listed product on it, buyers
with signed-in people, and helpers to read back what the API wrote."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from litestar.testing import TestClient
from sqlalchemy import Engine
from sqlmodel import Session, select

from licensing.models import DataResource, Grade, Licence, LicenceStatus, Purpose
from licensing.schemas import FieldSpec
from marketplace.catalog.models import Product
from marketplace.core.identity.models import Organisation
from marketplace.core.principal import OrgKind
from marketplace.subscriptions.models import Entitlement, Subscription
from marketplace.subscriptions.services.agreement import current_agreement
from marketplace.subscriptions.services.qualifications import credit_code_check_character
from tests.factories import make_login_session, make_org, make_user
from tests.helpers import use_session
from tests.licensing.factories import make_licence, make_resource
from tests.marketplace.factories import make_product

FIELDS = [
    FieldSpec.model_validate({"name": "district", "type": "string", "tag": "quasi_identifier"}),
    FieldSpec.model_validate({"name": "cost", "type": "decimal", "tag": "none"}),
    FieldSpec.model_validate({"name": "id_number", "type": "string", "tag": "direct_identifier"}),
]
RULES = [
    {"field": "district", "action": "keep"},
    {"field": "cost", "action": "keep"},
    {"field": "id_number", "action": "drop"},
]
#: Every table a subscription request may write (to check that a refused one wrote nothing).
TABLES = ("subscription", "entitlement", "buyer_qualification", "ledger_entry")
PURPOSES = (Purpose.credit_assessment, Purpose.public_welfare, Purpose.academic_research, Purpose.market_analysis)


def credit_code(first17: str = "91110108MA01ABCD3") -> str:
    """A valid unified social credit code from its first 17 characters."""
    return first17 + credit_code_check_character(first17)


@dataclass
class Shop:
    """An owner's licence to an operator with a listed product; buyer A and buyer B with a signed-in person each."""

    owner: Organisation
    operator: Organisation
    buyer: Organisation
    buyer_b: Organisation
    resource: DataResource
    licence: Licence
    product: Product
    sessions: dict[str, str]


def make_shop(
    engine: Engine,
    *,
    reductions: dict[str, int] | None = None,
    licence_purposes: tuple[Purpose, ...] = PURPOSES,
    product_purposes: tuple[Purpose, ...] = (Purpose.credit_assessment, Purpose.public_welfare, Purpose.academic_research),
    licence_status: LicenceStatus = LicenceStatus.granted,
) -> Shop:
    """A ``Shop``; the licence reduces public welfare to free and academic research by half unless told otherwise."""
    owner = make_org(engine, OrgKind.owner)
    operator = make_org(engine, OrgKind.operator)
    buyer = make_org(engine, OrgKind.buyer)
    buyer_b = make_org(engine, OrgKind.buyer)
    resource = make_resource(engine, owner, fields=FIELDS, grade=Grade.L2)
    licence = make_licence(engine, owner, operator, [resource], status=licence_status, purposes=licence_purposes)
    with Session(engine) as session:
        stored = session.get(Licence, licence.id)
        assert stored is not None
        stored.reductions_json = json.dumps(
            reductions if reductions is not None else {"public_welfare": 100, "academic_research": 50}
        )
        session.add(stored)
        session.commit()
        session.refresh(stored)
        licence = stored
    product = make_product(engine, licence, resource, rules=RULES, purposes=product_purposes)
    sessions = {
        name: make_login_session(engine, make_user(engine, org))
        for name, org in {"owner": owner, "operator": operator, "buyer": buyer, "buyer_b": buyer_b}.items()
    }
    return Shop(owner, operator, buyer, buyer_b, resource, licence, product, sessions)


def act(client: TestClient[Any], shop: Shop, party: str) -> dict[str, str]:
    """Act as ``party``'s person; returns the headers for writes."""
    return use_session(client, shop.sessions[party])


def subscribe(
    client: TestClient[Any],
    headers: dict[str, str],
    plan_id: uuid.UUID | str,
    purpose: Purpose | str = Purpose.credit_assessment,
    **changes: Any,
) -> Any:
    """POST /api/subscriptions with the current agreement."""
    body = {
        "plan_id": str(plan_id),
        "purpose": str(purpose),
        "purpose_note": "Scoring small business loans",
        "agreement_version": current_agreement().version,
        **changes,
    }
    return client.post("/api/subscriptions", json=body, headers=headers)


def stored_subscription(engine: Engine, subscription_id: str | uuid.UUID) -> Subscription:
    """The subscription as stored."""
    with Session(engine) as session:
        found = session.get(Subscription, uuid.UUID(str(subscription_id)))
        assert found is not None
        return found


def stored_entitlement(engine: Engine, subscription_id: str | uuid.UUID) -> Entitlement | None:
    """The entitlement of a subscription as stored."""
    with Session(engine) as session:
        return session.exec(select(Entitlement).where(Entitlement.subscription_id == uuid.UUID(str(subscription_id)))).first()


def qualification_body(operator_id: uuid.UUID, **changes: Any) -> dict[str, Any]:
    """A valid qualification submission to ``operator_id``."""
    return {
        "operator_id": str(operator_id),
        "business_licence_number": credit_code(),
        "industry": "finance",
        "contact_name": "Li Ming",
        "contact_email": "li.ming@buyer.test-market.cn",
        "contact_phone": "+86 10 5555 0100",
        **changes,
    }
