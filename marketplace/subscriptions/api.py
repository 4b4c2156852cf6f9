"""Subscriptions HTTP interface: buyer qualifications under ``/api/buyers/qualifications``, the data use agreement
and subscriptions under ``/api/subscriptions``. Controllers parse, call one service and shape the answer.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from email.message import Message
from email.parser import BytesHeaderParser
from typing import Annotated, Any

from litestar import Controller, Request, get, post
from litestar.datastructures import State
from litestar.openapi.spec import OpenAPIFormat, OpenAPIMediaType, OpenAPIType, Operation, RequestBody, Schema
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter
from litestar.response import File
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED

from marketplace.core.errors import DomainError, InvalidInput
from marketplace.core.http import (
    DbSession,
    caller,
    problems,
    requires_buyer,
    requires_operator,
    requires_party,
    requires_person,
)
from marketplace.core.principal import OrgKind
from marketplace.core.schemas import Page
from marketplace.subscriptions import services
from marketplace.subscriptions.models import (
    BuyerQualification,
    Entitlement,
    QualificationStatus,
    Subscription,
    SubscriptionStatus,
)
from marketplace.subscriptions.schemas import (
    AgreementView,
    Decision,
    EntitlementView,
    QualificationSubmit,
    QualificationView,
    SubscriptionCreate,
    SubscriptionDetail,
    SubscriptionView,
)

#: Qualifications: the buyer its own, the operator those submitted to it, supervisors all (the owner is refused).
requires_qualification_reader = requires_party(OrgKind.buyer, OrgKind.operator, OrgKind.regulator, OrgKind.auditor)
#: Subscriptions: every party reads its share.
requires_subscription_reader = requires_party(OrgKind.buyer, OrgKind.operator, OrgKind.owner, OrgKind.regulator, OrgKind.auditor)
#: Proofs: the subscribing buyer and the product's operator only.
requires_proof_reader = requires_party(OrgKind.buyer, OrgKind.operator)
#: What a multipart upload may add around the file itself (boundaries, part headers, the file name).
MULTIPART_OVERHEAD = 16 * 1024


def qualification_view(qualification: BuyerQualification) -> QualificationView:
    """The API shape of a qualification."""
    return QualificationView.model_validate(qualification, from_attributes=True)


def entitlement_view(entitlement: Entitlement) -> EntitlementView:
    """The API shape of an entitlement."""
    return EntitlementView(
        **entitlement.model_dump(exclude={"fields_json", "buyer_org_id"}), fields=json.loads(entitlement.fields_json)
    )


def _subscription_fields(subscription: Subscription) -> dict[str, Any]:
    values = subscription.model_dump(exclude={"proof_location", "agreed_by", "created_by"})
    return {**values, "proof_required": services.proof_required(subscription)}


def subscription_view(subscription: Subscription) -> SubscriptionView:
    """The API shape of a subscription (never the proof's storage location)."""
    return SubscriptionView(**_subscription_fields(subscription))


def subscription_detail(record: services.SubscriptionRecord) -> SubscriptionDetail:
    """A subscription with its entitlement."""
    entitlement = entitlement_view(record.entitlement) if record.entitlement is not None else None
    return SubscriptionDetail(**_subscription_fields(record.subscription), entitlement=entitlement)


# --- qualifications ------------------------------------------------------------------------------------------------------


class QualificationController(Controller):
    path = "/api/buyers/qualifications"
    tags = ["subscriptions"]
    guards = [requires_person]

    @post(
        "/",
        summary="Submit a buyer qualification",
        description="A person of a buyer organisation submits its qualification to an operator: the business licence "
        "number (the 18-character unified social credit code, its check character verified per GB 32100-2015; "
        "400 `business_licence_number_invalid` otherwise), industry and a contact. Unknown operator: 404 "
        "`operator_not_found`. One already submitted or approved with that operator: 409 `qualification_exists` "
        "(submit again only after a rejection). Only an approved qualification lets the buyer take the operator's "
        "paid plans.",
        guards=[requires_buyer],
        status_code=HTTP_201_CREATED,
        responses=problems(401, 403, 404, 409),
    )
    async def submit(
        self, request: Request[Any, Any, Any], data: JSONBody[QualificationSubmit], db_session: DbSession
    ) -> QualificationView:
        return qualification_view(await services.submit_qualification(db_session, caller(request), data))

    @get(
        "/",
        summary="Buyer qualifications",
        description="A buyer sees its own; an operator those submitted to it (its review queue: `status=submitted`); "
        "regulators all; an auditor those of the operators its engagements in force cover (403 `outside_engagement`, recorded, without one). The owner takes no part in buyer onboarding: 403. Newest first.",
        guards=[requires_qualification_reader],
        responses=problems(401, 403),
    )
    async def list_qualifications(
        self,
        request: Request[Any, Any, Any],
        db_session: DbSession,
        status: FromQuery[QualificationStatus | None] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=500)] = 100,
        offset: Annotated[int, QueryParameter(ge=0, le=10**9)] = 0,
    ) -> Page[QualificationView]:
        rows, total = await services.list_qualifications(db_session, caller(request), status=status, limit=limit, offset=offset)
        return Page(items=[qualification_view(q) for q in rows], total=total)

    @get(
        "/{qualification_id:uuid}",
        summary="One buyer qualification",
        description="Another party's qualification: 404.",
        guards=[requires_qualification_reader],
        responses=problems(401, 403, 404),
    )
    async def get_qualification(
        self, request: Request[Any, Any, Any], db_session: DbSession, qualification_id: FromPath[uuid.UUID]
    ) -> QualificationView:
        return qualification_view(await services.get_qualification(db_session, caller(request), qualification_id))

    @post(
        "/{qualification_id:uuid}/approve",
        summary="Approve a buyer qualification",
        description="The operator it was submitted to approves it (a reason is optional). Only a submitted "
        "qualification: 409 `qualification_not_submitted` otherwise; another operator's: 404.",
        guards=[requires_operator],
        status_code=HTTP_200_OK,
        responses=problems(401, 403, 404, 409),
    )
    async def approve(
        self,
        request: Request[Any, Any, Any],
        db_session: DbSession,
        qualification_id: FromPath[uuid.UUID],
        data: JSONBody[Decision | None] = None,
    ) -> QualificationView:
        qualification = await services.decide_qualification(
            db_session, caller(request), qualification_id, True, data.reason if data else ""
        )
        return qualification_view(qualification)

    @post(
        "/{qualification_id:uuid}/reject",
        summary="Reject a buyer qualification",
        description="The operator it was submitted to rejects it with a written reason (400 `reason_required` when "
        "blank); the buyer may then submit again. Only a submitted qualification: 409 `qualification_not_submitted`.",
        guards=[requires_operator],
        status_code=HTTP_200_OK,
        responses=problems(401, 403, 404, 409),
    )
    async def reject(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[Decision],
        db_session: DbSession,
        qualification_id: FromPath[uuid.UUID],
    ) -> QualificationView:
        qualification = await services.decide_qualification(db_session, caller(request), qualification_id, False, data.reason)
        return qualification_view(qualification)


# --- the agreement -------------------------------------------------------------------------------------------------------


class AgreementController(Controller):
    path = "/api/subscriptions/agreement"
    tags = ["subscriptions"]

    @get(
        "/",
        summary="The current data use agreement",
        description="The version in effect, with its title and text in English and Chinese. Anyone may read it; "
        "a subscription must name this version (409 `agreement_outdated` otherwise).",
        opt={"accepts_token": True},
        responses=problems(),
    )
    async def current(self) -> AgreementView:
        agreement = services.current_agreement()
        return AgreementView(
            version=agreement.version,
            effective_on=agreement.effective_on,
            title=agreement.title,
            title_zh=agreement.title_zh,
            text=agreement.text,
            text_zh=agreement.text_zh,
        )


# --- subscriptions -------------------------------------------------------------------------------------------------------


@dataclass
class ProofUploadOperation(Operation):
    """OpenAPI of the proof upload: a multipart form with one ``file`` part (the handler reads it itself)."""

    def __post_init__(self) -> None:
        form = Schema(
            type=OpenAPIType.OBJECT,
            properties={"file": Schema(type=OpenAPIType.STRING, format=OpenAPIFormat.BINARY)},
            required=["file"],
        )
        self.request_body = RequestBody(
            content={"multipart/form-data": OpenAPIMediaType(schema=form)},
            description="The proof: a PDF, PNG or JPEG file in the form field `file`.",
            required=True,
        )


class UnsupportedUpload(DomainError):
    status, code, title = 415, "unsupported_media_type", "Unsupported media type"


def _file_part(body: bytes, boundary: bytes) -> tuple[str, bytes] | None:
    """The ``file`` part of a multipart/form-data body: its file name and bytes (None when absent)."""
    for chunk in body.split(b"--" + boundary)[1:]:
        if chunk.startswith(b"--"):
            break
        head, separator, content = chunk.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        if not separator:
            continue
        headers: Message = BytesHeaderParser().parsebytes(head + b"\r\n\r\n")
        if headers.get_param("name", header="content-disposition") != "file":
            continue
        return headers.get_filename() or "proof", content.removesuffix(b"\r\n")
    return None


async def _read_proof_upload(request: Request[Any, Any, Any], max_bytes: int) -> tuple[str, bytes]:
    """The uploaded file, read from the stream without ever holding more than the limit (413 beyond it)."""
    media_type, options = request.content_type
    boundary = options.get("boundary")
    if media_type != "multipart/form-data" or not boundary:
        raise UnsupportedUpload("Send the proof as multipart/form-data with the file in the field `file`.")
    limit = max_bytes + MULTIPART_OVERHEAD

    def too_large() -> services.ProofTooLarge:
        return services.ProofTooLarge(f"The proof is larger than the limit of {max_bytes} bytes.", limit=max_bytes)

    announced = request.headers.get("content-length")
    if announced is not None and announced.isdigit() and int(announced) > limit:
        raise too_large()
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_large()
    part = _file_part(bytes(body), boundary.encode("latin-1"))
    if part is None:
        raise InvalidInput("The form has no `file` field.", code="proof_missing_file")
    return part


class SubscriptionController(Controller):
    path = "/api/subscriptions"
    tags = ["subscriptions"]
    guards = [requires_person]

    @post(
        "/",
        summary="Subscribe to a plan",
        description="A buyer person subscribes to a plan for a declared purpose, accepting the current agreement. "
        "Refused, with nothing written: plan unknown, inactive or private and not offered to this buyer (404 "
        "`plan_not_found`); product not listed (409 `product_not_listed`); purpose not offered by the product or not "
        "permitted by its licence (400 `purpose_not_permitted`); licence not in force (409 `licence_not_in_force`); "
        "agreement version not the current one (409 `agreement_outdated`); a price above zero after the purpose's "
        "reduction, or a metered plan, without an approved qualification with the product's operator (403 "
        "`qualification_required`); an open subscription to the product already (409 `subscription_exists`). "
        "The licence's reduction for the purpose applies to the price. A reduced purpose (public welfare, academic "
        "research, or any purpose with a reduction) or an on-request plan makes the subscription "
        "`awaiting_approval` (upload the proof, the operator decides); otherwise a price above zero makes it "
        "`pending_payment` (billing completes it) and a free one `active` at once, with its entitlement.",
        guards=[requires_buyer],
        status_code=HTTP_201_CREATED,
        responses=problems(401, 403, 404, 409),
    )
    async def create(
        self, request: Request[Any, Any, Any], data: JSONBody[SubscriptionCreate], db_session: DbSession, state: State
    ) -> SubscriptionDetail:
        record = await services.create_subscription(db_session, caller(request), state.settings, data)
        return subscription_detail(record)

    @get(
        "/",
        summary="Subscriptions",
        description="A buyer sees its own; an operator those to its products; the owner those under its licences; "
        "regulators all; an auditor those of its engagements in force (operators and period; 403 `outside_engagement`, recorded, without one). Filters: status, product_id. Newest first.",
        guards=[requires_subscription_reader],
        responses=problems(401, 403),
    )
    async def list_subscriptions(
        self,
        request: Request[Any, Any, Any],
        db_session: DbSession,
        status: FromQuery[SubscriptionStatus | None] = None,
        product_id: FromQuery[uuid.UUID | None] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=500)] = 100,
        offset: Annotated[int, QueryParameter(ge=0, le=10**9)] = 0,
    ) -> Page[SubscriptionView]:
        rows, total = await services.list_subscriptions(
            db_session, caller(request), status=status, product_id=product_id, limit=limit, offset=offset
        )
        return Page(items=[subscription_view(s) for s in rows], total=total)

    @get(
        "/{subscription_id:uuid}",
        summary="One subscription, with its entitlement",
        description="Another party's subscription: 404. The entitlement (mode, fields, quota, valid until, ended) is "
        "null until the subscription first became active.",
        guards=[requires_subscription_reader],
        responses=problems(401, 403, 404),
    )
    async def get_subscription(
        self, request: Request[Any, Any, Any], db_session: DbSession, subscription_id: FromPath[uuid.UUID]
    ) -> SubscriptionDetail:
        return subscription_detail(await services.get_subscription(db_session, caller(request), subscription_id))

    @post(
        "/{subscription_id:uuid}/proof",
        summary="Upload the proof of a reduced purpose",
        description="The subscribing buyer uploads a PDF, PNG or JPEG (judged by its leading bytes: 400 "
        "`proof_type_not_accepted` otherwise) as multipart/form-data field `file`, while the subscription awaits "
        "approval (409 `subscription_not_awaiting_approval` otherwise). Larger than the platform's limit "
        "(`max_proof_bytes`): 413 `proof_too_large`. A new upload replaces the previous one; the ledger keeps its SHA-256.",
        guards=[requires_buyer],
        status_code=HTTP_200_OK,
        # The limit comes from the settings (max_proof_bytes), enforced while the body streams in.
        request_max_body_size=None,
        operation_class=ProofUploadOperation,
        responses=problems(401, 403, 404, 409, 413, 415),
    )
    async def upload_proof(
        self, request: Request[Any, Any, Any], db_session: DbSession, state: State, subscription_id: FromPath[uuid.UUID]
    ) -> SubscriptionView:
        settings = state.settings
        filename, content = await _read_proof_upload(request, settings.max_proof_bytes)
        subscription = await services.upload_proof(
            db_session, caller(request), settings, subscription_id, filename=filename, content=content
        )
        return subscription_view(subscription)

    @get(
        "/{subscription_id:uuid}/proof",
        summary="Download the proof of a reduced purpose",
        description="The subscribing buyer and the product's operator download the uploaded proof; others are "
        "refused (403) or do not find it (404 `subscription_not_found`, `proof_not_found`).",
        guards=[requires_proof_reader],
        responses=problems(401, 403, 404),
        media_type="application/octet-stream",
    )
    async def download_proof(
        self, request: Request[Any, Any, Any], db_session: DbSession, state: State, subscription_id: FromPath[uuid.UUID]
    ) -> File:
        proof = await services.read_proof(db_session, caller(request), state.settings, subscription_id)
        return File(
            path=proof.path,
            filename=proof.name,
            media_type=proof.media_type,
            headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "private, no-store"},
        )

    @post(
        "/{subscription_id:uuid}/approve",
        summary="Approve a subscription request",
        description="The product's operator accepts a subscription awaiting approval, having checked its proof when "
        "its purpose needs one (409 `proof_missing` before it is uploaded). It then awaits payment "
        "(`pending_payment`) when its price is above zero, or becomes `active` with its entitlement. 409 "
        "`subscription_not_awaiting_approval`, `product_not_listed`, `licence_not_in_force`.",
        guards=[requires_operator],
        status_code=HTTP_200_OK,
        responses=problems(401, 403, 404, 409),
    )
    async def approve(
        self,
        request: Request[Any, Any, Any],
        db_session: DbSession,
        subscription_id: FromPath[uuid.UUID],
        data: JSONBody[Decision | None] = None,
    ) -> SubscriptionDetail:
        record = await services.decide_subscription(
            db_session, caller(request), subscription_id, True, data.reason if data else ""
        )
        return subscription_detail(record)

    @post(
        "/{subscription_id:uuid}/reject",
        summary="Reject a subscription request",
        description="The product's operator turns a subscription awaiting approval down, with a written reason "
        "(400 `reason_required` when blank): `rejected`.",
        guards=[requires_operator],
        status_code=HTTP_200_OK,
        responses=problems(401, 403, 404, 409),
    )
    async def reject(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[Decision],
        db_session: DbSession,
        subscription_id: FromPath[uuid.UUID],
    ) -> SubscriptionDetail:
        record = await services.decide_subscription(db_session, caller(request), subscription_id, False, data.reason)
        return subscription_detail(record)

    @post(
        "/{subscription_id:uuid}/cancel",
        summary="Cancel a subscription",
        description="The subscribing buyer cancels an open subscription: `cancelled`, and its entitlement ends at "
        "once. 409 `subscription_not_open` when it already ended.",
        guards=[requires_buyer],
        status_code=HTTP_200_OK,
        responses=problems(401, 403, 404, 409),
    )
    async def cancel(
        self,
        request: Request[Any, Any, Any],
        db_session: DbSession,
        subscription_id: FromPath[uuid.UUID],
        data: JSONBody[Decision | None] = None,
    ) -> SubscriptionDetail:
        return subscription_detail(
            await services.cancel_subscription(db_session, caller(request), subscription_id, data.reason if data else "")
        )

    @post(
        "/{subscription_id:uuid}/revoke",
        summary="Revoke a subscription",
        description="The product's operator revokes an open subscription with a written reason (400 "
        "`reason_required` when blank): `revoked`, and its entitlement ends at once. 409 `subscription_not_open`.",
        guards=[requires_operator],
        status_code=HTTP_200_OK,
        responses=problems(401, 403, 404, 409),
    )
    async def revoke(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[Decision],
        db_session: DbSession,
        subscription_id: FromPath[uuid.UUID],
    ) -> SubscriptionDetail:
        return subscription_detail(await services.revoke_subscription(db_session, caller(request), subscription_id, data.reason))


#: Every subscriptions controller, composed by ``marketplace.app``.
CONTROLLERS: list[Any] = [QualificationController, AgreementController, SubscriptionController]
