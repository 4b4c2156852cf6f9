"""Each bad subscription request of the issue is a 4xx with its stable code and changes nothing; another buyer's
subscription is not found."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient
from sqlalchemy import Engine
from sqlmodel import Session

from licensing.models import Licence, LicenceStatus, PlanType, Purpose
from marketplace.app import create_app
from marketplace.catalog.models import Plan, PlanAccess, Product, ProductStatus
from marketplace.core.principal import OrgKind
from marketplace.core.settings import Settings
from marketplace.subscriptions.models import QualificationStatus, SubscriptionStatus
from marketplace.subscriptions.services.proofs import proof_kind
from tests.conftest import TEST_ORIGIN, make_settings
from tests.factories import make_login_session, make_org, make_user
from tests.helpers import assert_problem, use_session
from tests.licensing.factories import row_counts
from tests.marketplace.factories import make_plan, make_qualification, make_subscription
from tests.marketplace.subscriptions.support import TABLES, Shop, act, make_shop, stored_subscription, subscribe

BASE = "/api/subscriptions"


def _set(engine: Engine, model: type[Any], record_id: Any, **values: Any) -> None:
    with Session(engine) as session:
        row = session.get(model, record_id)
        assert row is not None
        for key, value in values.items():
            setattr(row, key, value)
        session.add(row)
        session.commit()


def _paid(engine: Engine, shop: Shop) -> Plan:
    return make_plan(engine, shop.product, type=PlanType.monthly, price="800.00")


def _free(engine: Engine, shop: Shop) -> Plan:
    return make_plan(engine, shop.product, type=PlanType.free)


Arrange = Callable[[Engine, Shop], tuple[Plan, dict[str, Any]]]


def _purpose_not_offered(engine: Engine, shop: Shop) -> tuple[Plan, dict[str, Any]]:
    # The licence permits market analysis; the product is not offered for it.
    return _free(engine, shop), {"purpose": Purpose.market_analysis.value}


def _purpose_not_licensed(engine: Engine, shop: Shop) -> tuple[Plan, dict[str, Any]]:
    return _free(engine, shop), {"purpose": Purpose.urban_planning.value}


def _unknown_purpose(engine: Engine, shop: Shop) -> tuple[Plan, dict[str, Any]]:
    return _free(engine, shop), {"purpose": "espionage"}


def _unqualified_paid(engine: Engine, shop: Shop) -> tuple[Plan, dict[str, Any]]:
    return _paid(engine, shop), {}


def _qualification_only_submitted(engine: Engine, shop: Shop) -> tuple[Plan, dict[str, Any]]:
    make_qualification(engine, shop.buyer, shop.operator.id, status=QualificationStatus.submitted)
    return _paid(engine, shop), {}


def _qualified_with_another_operator(engine: Engine, shop: Shop) -> tuple[Plan, dict[str, Any]]:
    make_qualification(engine, shop.buyer, shop.owner.id)  # not this product's operator
    return _paid(engine, shop), {}


def _unqualified_metered(engine: Engine, shop: Shop) -> tuple[Plan, dict[str, Any]]:
    return make_plan(engine, shop.product, type=PlanType.metered, price="0.00", per_call_price="0.10"), {}


def _delisted(engine: Engine, shop: Shop) -> tuple[Plan, dict[str, Any]]:
    plan = _free(engine, shop)
    _set(engine, Product, shop.product.id, status=ProductStatus.delisted)
    return plan, {}


def _draft(engine: Engine, shop: Shop) -> tuple[Plan, dict[str, Any]]:
    plan = _free(engine, shop)
    _set(engine, Product, shop.product.id, status=ProductStatus.draft)
    return plan, {}


def _licence_suspended(engine: Engine, shop: Shop) -> tuple[Plan, dict[str, Any]]:
    plan = _free(engine, shop)
    _set(engine, Licence, shop.licence.id, status=LicenceStatus.suspended)
    return plan, {}


def _outdated_agreement(engine: Engine, shop: Shop) -> tuple[Plan, dict[str, Any]]:
    return _free(engine, shop), {"agreement_version": "2025-01"}


def _duplicate(engine: Engine, shop: Shop) -> tuple[Plan, dict[str, Any]]:
    plan = _free(engine, shop)
    make_subscription(engine, shop.buyer, shop.product, plan, status=SubscriptionStatus.pending_payment)
    return plan, {}


def _duplicate_under_another_plan(engine: Engine, shop: Shop) -> tuple[Plan, dict[str, Any]]:
    make_subscription(engine, shop.buyer, shop.product, _free(engine, shop), status=SubscriptionStatus.active)
    return make_plan(engine, shop.product, type=PlanType.free, access=PlanAccess.on_request), {}


def _inactive_plan(engine: Engine, shop: Shop) -> tuple[Plan, dict[str, Any]]:
    plan = _free(engine, shop)
    _set(engine, Plan, plan.id, active=False)
    return plan, {}


def _unknown_plan(engine: Engine, shop: Shop) -> tuple[Plan, dict[str, Any]]:
    return _free(engine, shop), {"plan_id": "00000000-0000-4000-8000-000000000000"}


def _missing_agreement(engine: Engine, shop: Shop) -> tuple[Plan, dict[str, Any]]:
    return _free(engine, shop), {"agreement_version": ""}


REFUSALS: list[tuple[str, Arrange, int, str]] = [
    ("purpose not offered by the product", _purpose_not_offered, 400, "purpose_not_permitted"),
    ("purpose not permitted by the licence", _purpose_not_licensed, 400, "purpose_not_permitted"),
    ("unknown purpose", _unknown_purpose, 400, "invalid_input"),
    ("paid plan, unqualified buyer", _unqualified_paid, 403, "qualification_required"),
    ("paid plan, qualification only submitted", _qualification_only_submitted, 403, "qualification_required"),
    ("paid plan, qualified with another operator", _qualified_with_another_operator, 403, "qualification_required"),
    ("metered plan, unqualified buyer", _unqualified_metered, 403, "qualification_required"),
    ("delisted product", _delisted, 409, "product_not_listed"),
    ("draft product", _draft, 409, "product_not_listed"),
    ("licence suspended", _licence_suspended, 409, "licence_not_in_force"),
    ("outdated agreement", _outdated_agreement, 409, "agreement_outdated"),
    ("no agreement", _missing_agreement, 400, "invalid_input"),
    ("duplicate", _duplicate, 409, "subscription_exists"),
    ("duplicate under another plan", _duplicate_under_another_plan, 409, "subscription_exists"),
    ("inactive plan", _inactive_plan, 404, "plan_not_found"),
    ("unknown plan", _unknown_plan, 404, "plan_not_found"),
]


@pytest.mark.parametrize(("arrange", "status", "code"), [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS])
def test_bad_subscription_is_refused_and_changes_nothing(
    client: TestClient[Any], engine: Engine, arrange: Arrange, status: int, code: str
) -> None:
    shop = make_shop(engine)
    plan, changes = arrange(engine, shop)
    headers = act(client, shop, "buyer")
    before = row_counts(engine, *TABLES)
    plan_id = changes.pop("plan_id", plan.id)
    assert_problem(subscribe(client, headers, plan_id, **changes), status, code)
    assert row_counts(engine, *TABLES) == before


def test_outdated_agreement_names_the_current_version(client: TestClient[Any], engine: Engine) -> None:
    shop = make_shop(engine)
    plan = _free(engine, shop)
    body = assert_problem(
        subscribe(client, act(client, shop, "buyer"), plan.id, agreement_version="2026-10"), 409, "agreement_outdated"
    )
    assert body["current_version"] == "2026-11"


def test_purpose_refusal_lists_the_permitted_purposes(client: TestClient[Any], engine: Engine) -> None:
    shop = make_shop(engine)
    plan = _free(engine, shop)
    body = assert_problem(
        subscribe(client, act(client, shop, "buyer"), plan.id, purpose="market_analysis"), 400, "purpose_not_permitted"
    )
    assert body["permitted"] == ["academic_research", "credit_assessment", "public_welfare"]


PDF = b"%PDF-1.4\n%%EOF\n"


@pytest.fixture
def awaiting(client: TestClient[Any], engine: Engine) -> tuple[Shop, str]:
    """A public-welfare subscription awaiting approval (its proof not uploaded yet)."""
    shop = make_shop(engine)
    plan = _free(engine, shop)
    response = subscribe(client, act(client, shop, "buyer"), plan.id, Purpose.public_welfare)
    assert response.json()["status"] == "awaiting_approval"
    return shop, str(response.json()["id"])


@pytest.mark.parametrize(
    ("content", "name"),
    [
        (b"MZ\x90\x00 this is a Windows executable", "proof.pdf"),
        (b"<html><script>alert(1)</script></html>", "proof.png"),
        (b"GIF89a\x01\x00\x01\x00", "proof.gif"),
        (b"PK\x03\x04 zip", "proof.docx"),
        (b" %PDF-1.4 not at the start", "proof.pdf"),
    ],
)
def test_proof_that_is_not_a_pdf_or_image_is_refused(
    client: TestClient[Any], engine: Engine, awaiting: tuple[Shop, str], content: bytes, name: str
) -> None:
    shop, sid = awaiting
    headers = act(client, shop, "buyer")
    before = row_counts(engine, *TABLES)
    response = client.post(f"{BASE}/{sid}/proof", files={"file": (name, content, "application/pdf")}, headers=headers)
    assert_problem(response, 400, "proof_type_not_accepted")
    assert row_counts(engine, *TABLES) == before
    assert stored_subscription(engine, sid).proof_location is None


def test_empty_proof_and_missing_field_are_refused(client: TestClient[Any], engine: Engine, awaiting: tuple[Shop, str]) -> None:
    shop, sid = awaiting
    headers = act(client, shop, "buyer")
    before = row_counts(engine, *TABLES)
    assert_problem(
        client.post(f"{BASE}/{sid}/proof", files={"file": ("p.pdf", b"", "application/pdf")}, headers=headers), 400, "proof_empty"
    )
    assert_problem(
        client.post(f"{BASE}/{sid}/proof", files={"other": ("p.pdf", PDF, "application/pdf")}, headers=headers),
        400,
        "proof_missing_file",
    )
    assert_problem(
        client.post(f"{BASE}/{sid}/proof", content=PDF, headers={**headers, "content-type": "application/pdf"}),
        415,
        "unsupported_media_type",
    )
    assert row_counts(engine, *TABLES) == before


@pytest.fixture
def small_proofs_client(database_url: str, var_dir: Path, engine: Engine) -> Iterator[tuple[TestClient[Any], Settings]]:
    """A client of an app accepting proofs of at most 1 KiB."""
    settings = make_settings(database_url, var_dir, max_proof_bytes=1024)
    with TestClient(app=create_app(settings), base_url=TEST_ORIGIN) as client:
        yield client, settings


@pytest.mark.parametrize("size", [1025, 64 * 1024, 2 * 1024 * 1024])
def test_proof_too_large_is_413_and_changes_nothing(
    small_proofs_client: tuple[TestClient[Any], Settings], engine: Engine, size: int
) -> None:
    client, settings = small_proofs_client
    shop = make_shop(engine)
    sid = subscribe(client, act(client, shop, "buyer"), _free(engine, shop).id, Purpose.public_welfare).json()["id"]
    headers = act(client, shop, "buyer")
    before = row_counts(engine, *TABLES)
    content = PDF + b"0" * (size - len(PDF))
    response = client.post(f"{BASE}/{sid}/proof", files={"file": ("big.pdf", content, "application/pdf")}, headers=headers)
    assert_problem(response, 413, "proof_too_large")
    assert row_counts(engine, *TABLES) == before
    assert not (settings.resolved_data_dir / "proofs" / sid).exists()
    # Exactly at the limit is accepted.
    exact = PDF + b"0" * (1024 - len(PDF))
    accepted = client.post(f"{BASE}/{sid}/proof", files={"file": ("ok.pdf", exact, "application/pdf")}, headers=headers)
    assert accepted.status_code == 200, accepted.text


def test_proof_is_refused_once_the_subscription_no_longer_awaits_approval(
    client: TestClient[Any], engine: Engine, awaiting: tuple[Shop, str]
) -> None:
    shop, sid = awaiting
    headers = act(client, shop, "buyer")
    client.post(f"{BASE}/{sid}/cancel", headers=headers)
    before = row_counts(engine, *TABLES)
    response = client.post(f"{BASE}/{sid}/proof", files={"file": ("p.pdf", PDF, "application/pdf")}, headers=headers)
    assert_problem(response, 409, "subscription_not_awaiting_approval")
    assert row_counts(engine, *TABLES) == before


def test_another_buyers_subscription_is_404_everywhere(
    client: TestClient[Any], engine: Engine, awaiting: tuple[Shop, str]
) -> None:
    shop, sid = awaiting
    headers = act(client, shop, "buyer")
    assert (
        client.post(f"{BASE}/{sid}/proof", files={"file": ("p.pdf", PDF, "application/pdf")}, headers=headers).status_code == 200
    )
    headers = act(client, shop, "buyer_b")
    before = row_counts(engine, *TABLES)
    assert_problem(client.get(f"{BASE}/{sid}"), 404, "subscription_not_found")
    assert_problem(client.get(f"{BASE}/{sid}/proof"), 404, "subscription_not_found")
    assert_problem(client.post(f"{BASE}/{sid}/cancel", headers=headers), 404, "subscription_not_found")
    assert_problem(
        client.post(f"{BASE}/{sid}/proof", files={"file": ("p.pdf", PDF, "application/pdf")}, headers=headers),
        404,
        "subscription_not_found",
    )
    assert client.get(BASE).json() == {"items": [], "total": 0}
    assert row_counts(engine, *TABLES) == before
    assert stored_subscription(engine, sid).status is SubscriptionStatus.awaiting_approval


def test_another_operator_cannot_decide_or_revoke(client: TestClient[Any], engine: Engine, awaiting: tuple[Shop, str]) -> None:
    _shop, sid = awaiting
    stranger = make_org(engine, OrgKind.operator)
    headers = use_session(client, make_login_session(engine, make_user(engine, stranger)))
    before = row_counts(engine, *TABLES)
    for action, body in (("approve", {}), ("reject", {"reason": "no"}), ("revoke", {"reason": "no"})):
        assert_problem(client.post(f"{BASE}/{sid}/{action}", json=body, headers=headers), 404, "subscription_not_found")
    assert_problem(client.get(f"{BASE}/{sid}/proof"), 404, "subscription_not_found")
    assert row_counts(engine, *TABLES) == before


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"%PDF-1.7\n", ("application/pdf", "pdf")),
        (b"\x89PNG\r\n\x1a\n\x00", ("image/png", "png")),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF", ("image/jpeg", "jpg")),
        (b"\xff\xd8", None),
        (b"%PDF", None),
        (b"", None),
    ],
)
def test_proof_kind_is_judged_by_leading_bytes(content: bytes, expected: tuple[str, str] | None) -> None:
    assert proof_kind(content) == expected
