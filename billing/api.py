"""Billing HTTP interface under ``/api/billing``: checkout, invoices, payments and refunds, receipts, settlement
statements. Controllers parse, call a service and shape the answer."""

from __future__ import annotations

import base64
import json
import uuid
from typing import Annotated, Any

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED

from billing import services
from billing.models import Invoice, InvoiceStatus, Payment, Refund, SettlementStatement, StatementStatus
from billing.schemas import (
    CheckoutRequest,
    CheckoutView,
    InvoiceLineView,
    InvoiceList,
    InvoiceView,
    PaymentView,
    ReceiptView,
    RefundCreate,
    RefundView,
    SettlementRun,
    StatementLineView,
    StatementList,
    StatementView,
    TransferRecord,
)
from billing.services import documents_data, stripe_events
from billing.services.documents_data import PdfFile
from billing.services.settlement import operator_names
from marketplace.core.errors import InvalidInput
from marketplace.core.http import (
    DbSession,
    caller,
    problems,
    requires_all,
    requires_buyer,
    requires_operator,
    requires_party,
    requires_person,
    requires_scope,
)
from marketplace.core.principal import OrgKind

#: Invoices and payments: every party reads its share (buyer programs with the ``billing:read`` scope).
requires_billing_reader = requires_party(OrgKind.buyer, OrgKind.operator, OrgKind.owner, OrgKind.regulator, OrgKind.auditor)
#: Statements: the operator, the owner and supervisors.
requires_statement_reader = requires_party(OrgKind.operator, OrgKind.owner, OrgKind.regulator, OrgKind.auditor)
TOKEN = {"accepts_token": True}


def invoice_view(invoice: Invoice, payment_id: uuid.UUID | None = None) -> InvoiceView:
    """The API shape of an invoice."""
    c = invoice.currency
    return InvoiceView(
        **invoice.model_dump(exclude={"lines_json", "amount_minor", "owner_org_id", "plan_id", "created_by", "voided_at"}),
        amount=services.to_decimal(invoice.amount_minor, c),
        lines=[
            InvoiceLineView(
                description=line.description,
                description_zh=line.description_zh,
                quantity=line.quantity,
                unit_price=services.to_decimal(line.unit_minor, c),
                amount=services.to_decimal(line.amount_minor, c),
            )
            for line in services.invoice_lines(invoice)
        ],
        payment_id=payment_id,
    )


def payment_view(payment: Payment) -> PaymentView:
    """The API shape of a payment."""
    c = payment.currency
    return PaymentView(
        **payment.model_dump(include={"id", "invoice_id", "subscription_id", "buyer_org_id", "operator_id", "gateway"}),
        currency=c,
        amount=services.to_decimal(payment.amount_minor, c),
        fee=None if payment.fee_minor is None else services.to_decimal(payment.fee_minor, c),
        refunded=services.to_decimal(payment.refunded_minor, c),
        reference=payment.reference,
        received_at=payment.received_at,
        ledger_index=payment.ledger_index,
    )


def refund_view(refund: Refund) -> RefundView:
    """The API shape of a refund."""
    return RefundView(
        **refund.model_dump(include={"id", "payment_id", "currency", "reason", "ends_access", "created_at", "ledger_index"}),
        amount=services.to_decimal(refund.amount_minor, refund.currency),
    )


def statement_view(statement: SettlementStatement, operator_name: str) -> StatementView:
    """The API shape of a settlement statement (money as decimal strings)."""
    c = statement.currency
    return StatementView(
        id=statement.id,
        number=statement.number,
        operator_id=statement.operator_id,
        operator_name=operator_name,
        owner_org_id=statement.owner_org_id,
        period=statement.period,
        currency=c,
        gross=services.to_decimal(statement.gross_minor, c),
        refunds=services.to_decimal(statement.refunds_minor, c),
        payment_fees=services.to_decimal(statement.fees_minor, c),
        franchise_fee=services.to_decimal(statement.franchise_fee_minor, c),
        net=services.to_decimal(statement.net_minor, c),
        payments=statement.payments,
        refund_count=statement.refunds,
        lines=[
            StatementLineView(
                licence_id=line["licence_id"],
                licence_number=line["licence_number"],
                fee_rate=line["fee_rate"],
                payments=line["payments"],
                gross=services.to_decimal(line["gross_minor"], c),
                refunds=services.to_decimal(line["refunds_minor"], c),
                payment_fees=services.to_decimal(line["fees_minor"], c),
                franchise_fee=services.to_decimal(line["franchise_fee_minor"], c),
            )
            for line in json.loads(statement.lines_json)
        ],
        mismatches=json.loads(statement.mismatches_json),
        status=statement.status,
        computed_at=statement.computed_at,
        issued_at=statement.issued_at,
        acknowledged_at=statement.acknowledged_at,
    )


async def _statements_answer(db_session: DbSession, rows: list[SettlementStatement]) -> StatementList:
    names = await operator_names(db_session, rows)
    return StatementList(items=[statement_view(s, names.get(s.operator_id, "")) for s in rows], total=len(rows))


async def _statement_answer(db_session: DbSession, statement: SettlementStatement) -> StatementView:
    return (await _statements_answer(db_session, [statement])).items[0]


def _request_key(request: Request[Any, Any, Any]) -> str:
    key = request.headers.get("idempotency-key", "").strip()
    if len(key) > 200:
        raise InvalidInput("The Idempotency-Key header is at most 200 characters.", code="invalid_idempotency_key")
    return key or f"auto-{uuid.uuid4()}"


def _pdf(document: PdfFile) -> Response[bytes]:
    """A PDF answered as a download named after its record's number."""
    return Response(
        document.content,
        media_type="application/pdf",
        headers={"Content-Disposition": f'attachment; filename="{document.filename}"'},
    )


class BillingController(Controller):
    """Checkout, invoices, payments, refunds and receipts."""

    path = "/api/billing"
    tags = ["billing"]

    @post(
        "/checkout",
        summary="Pay a subscription waiting for payment",
        description="The buyer chooses how to pay a `pending_payment` subscription. `invoice`: a numbered invoice is "
        "issued, paid by bank transfer and recorded by the operator. `stripe` (when configured): the invoice and a "
        "Stripe Checkout page (`checkout_url`); monthly and metered plans become Stripe subscriptions that Stripe "
        "renews. Asking again answers the same invoice. Refused: 404 `subscription_not_found`, 409 "
        "`subscription_not_payable`, `method_not_available` (Stripe not configured), `gateway_error`.",
        guards=[requires_all(requires_buyer, requires_person)],
        status_code=HTTP_201_CREATED,
        responses=problems(403, 404, 409),
    )
    async def checkout(
        self, request: Request[Any, Any, Any], db_session: DbSession, state: State, data: JSONBody[CheckoutRequest]
    ) -> CheckoutView:
        invoice = await services.checkout(
            db_session, caller(request), state.settings, state.get("stripe_gateway"), data.subscription_id, data.method
        )
        return CheckoutView(invoice=invoice_view(invoice), checkout_url=invoice.checkout_url)

    @post(
        "/portal",
        summary="Open Stripe's customer portal",
        description="A link to Stripe's customer portal for the buyer's organisation (cards, Stripe invoices, "
        "cancelling a Stripe subscription, which ends it here too). 409 `method_not_available` without Stripe.",
        guards=[requires_all(requires_buyer, requires_person)],
        status_code=HTTP_200_OK,
        responses=problems(403, 409),
    )
    async def portal(self, request: Request[Any, Any, Any], db_session: DbSession, state: State) -> dict[str, str]:
        url = await services.portal_link(db_session, caller(request), state.settings, state.get("stripe_gateway"))
        return {"url": url}

    @get(
        "/invoices",
        summary="Invoices",
        description="Invoices the caller may see, newest first: a buyer its own (programs need the `billing:read` "
        "scope), an operator those of its products, the owner those under its licences, supervisors all.",
        guards=[requires_all(requires_billing_reader, requires_scope("billing:read"))],
        opt=TOKEN,
        responses=problems(401, 403),
    )
    async def invoices(
        self,
        request: Request[Any, Any, Any],
        db_session: DbSession,
        status: FromQuery[InvoiceStatus | None] = None,
        subscription_id: FromQuery[uuid.UUID | None] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=200)] = 50,
        offset: Annotated[int, QueryParameter(ge=0, le=10**9)] = 0,
    ) -> InvoiceList:
        rows, total = await services.list_invoices(
            db_session, caller(request), status=status, subscription_id=subscription_id, limit=limit, offset=offset
        )
        return InvoiceList(items=[invoice_view(i) for i in rows], total=total)

    @get(
        "/invoices/{invoice_id:uuid}",
        summary="One invoice",
        guards=[requires_all(requires_billing_reader, requires_scope("billing:read"))],
        opt=TOKEN,
        responses=problems(401, 403, 404),
    )
    async def invoice(
        self, request: Request[Any, Any, Any], db_session: DbSession, invoice_id: FromPath[uuid.UUID]
    ) -> InvoiceView:
        invoice = await services.get_invoice(db_session, caller(request), invoice_id)
        payment = await services.payment_of(db_session, invoice.id)
        return invoice_view(invoice, payment.id if payment else None)

    @get(
        "/invoices/{invoice_id:uuid}/pdf",
        summary="One invoice as PDF",
        description='The invoice as a PDF document (`Content-Disposition: attachment; filename="<number>.pdf"`), '
        "for the same readers as the invoice: issuer (the operator), buyer, number, dates, lines in English and "
        "Chinese, total, currency, status, the ledger index of `invoice.issued`, and, for an open bank-transfer "
        "invoice, how to pay it. Chinese is written when the server has a CJK font, else the document is in English.",
        guards=[requires_all(requires_billing_reader, requires_scope("billing:read"))],
        opt=TOKEN,
        responses=problems(401, 403, 404),
        media_type="application/pdf",
    )
    async def invoice_pdf(
        self, request: Request[Any, Any, Any], db_session: DbSession, invoice_id: FromPath[uuid.UUID]
    ) -> Response[bytes]:
        document = await documents_data.invoice_document(db_session, caller(request), invoice_id)
        return _pdf(document)

    @post(
        "/invoices/{invoice_id:uuid}/payments",
        summary="Record a bank transfer received",
        description="The operator records the transfer that paid one of its invoices: the amount must be the "
        "invoice's (400 `amount_mismatch`), the bank reference is recorded once (409 `payment_reference_used`). "
        "The subscription becomes active (or is renewed) in the same transaction, and `payment.received` goes to "
        "the ledger. Refused: 404 `invoice_not_found`, 409 `invoice_not_payable` / `not_a_transfer`.",
        guards=[requires_all(requires_operator, requires_person)],
        status_code=HTTP_201_CREATED,
        responses=problems(403, 404, 409),
    )
    async def record_transfer(
        self,
        request: Request[Any, Any, Any],
        db_session: DbSession,
        invoice_id: FromPath[uuid.UUID],
        data: JSONBody[TransferRecord],
    ) -> PaymentView:
        payment = await services.record_transfer(
            db_session, caller(request), invoice_id, amount=data.amount, reference=data.reference, received_on=data.received_on
        )
        return payment_view(payment)

    @get(
        "/payments/{payment_id:uuid}",
        summary="One payment and its refunds",
        guards=[requires_all(requires_billing_reader, requires_person)],
        responses=problems(401, 403, 404),
    )
    async def payment(
        self, request: Request[Any, Any, Any], db_session: DbSession, payment_id: FromPath[uuid.UUID]
    ) -> dict[str, Any]:
        payment = await services.get_payment(db_session, caller(request), payment_id)
        refunds = await services.list_refunds(db_session, payment)
        return {"payment": payment_view(payment), "refunds": [refund_view(r) for r in refunds]}

    @post(
        "/payments/{payment_id:uuid}/refunds",
        summary="Refund a payment",
        description="An administrator of the operator refunds part or all (amount omitted) of a payment, with a "
        "reason; `end_access` (with a refund of everything left) revokes the subscription at once. An "
        "`Idempotency-Key` header makes a retried request answer the same refund. Refused: 409 "
        "`refund_exceeds_payment` (more than is left), 400 `end_access_needs_full_refund`.",
        guards=[requires_all(requires_operator, requires_person)],
        status_code=HTTP_201_CREATED,
        responses=problems(403, 404, 409),
    )
    async def refund(
        self,
        request: Request[Any, Any, Any],
        db_session: DbSession,
        state: State,
        payment_id: FromPath[uuid.UUID],
        data: JSONBody[RefundCreate],
    ) -> RefundView:
        refund = await services.refund_payment(
            db_session,
            caller(request),
            payment_id,
            amount=data.amount,
            reason=data.reason,
            end_access=data.end_access,
            request_key=_request_key(request),
            gateway=state.get("refund_gateway"),
        )
        return refund_view(refund)

    @get(
        "/receipts/{payment_id:uuid}",
        summary="A payment's receipt with its ledger proof",
        description="The payment, the ledger index of its `payment.received` event and the inclusion proof (base64 "
        "hashes, RFC 9162) against the latest signed checkpoint covering it, or the current tree.",
        guards=[requires_all(requires_billing_reader, requires_scope("billing:read"))],
        opt=TOKEN,
        responses=problems(401, 403, 404, 409),
    )
    async def receipt(
        self, request: Request[Any, Any, Any], db_session: DbSession, payment_id: FromPath[uuid.UUID]
    ) -> ReceiptView:
        found = await services.receipt(db_session, caller(request), payment_id)
        return ReceiptView(
            payment=payment_view(found.payment),
            invoice_number=found.invoice.number,
            ledger_index=found.ledger_index,
            tree_size=found.tree_size,
            root_hash=base64.b64encode(found.root_hash).decode(),
            inclusion_proof=[base64.b64encode(h).decode() for h in found.inclusion_proof],
            checkpoint=found.checkpoint_note,
            proof_against="checkpoint" if found.checkpoint_note else "current_tree",
        )


class SettlementController(Controller):
    """Monthly settlement statements between operators and the owner."""

    path = "/api/billing/settlements"
    tags = ["billing"]

    @get(
        "",
        summary="Settlement statements",
        description="Each statement: operator, period, gross, refunds, payment fees, franchise fee, net and status "
        "(money as decimal strings). An operator sees its own, the owner those owed to it, supervisors all.",
        guards=[requires_statement_reader],
        responses=problems(401, 403),
    )
    async def list_statements(
        self,
        request: Request[Any, Any, Any],
        db_session: DbSession,
        period: Annotated[str | None, QueryParameter(pattern=r"^\d{4}-(0[1-9]|1[0-2])$")] = None,
        status: FromQuery[StatementStatus | None] = None,
    ) -> StatementList:
        rows = await services.list_statements(db_session, caller(request), period=period, status=status)
        return await _statements_answer(db_session, rows)

    @post(
        "/run",
        summary="Compute a month's draft statements",
        description="An administrator of the operator (its own) or of the owner (naming `operator_id`) computes the "
        "month's drafts, reconciled against the payment records; drafts are computed again on each run. Refused: "
        "409 `period_closed` once a statement of the month is issued, 400 `invalid_period`.",
        guards=[requires_all(requires_party(OrgKind.operator, OrgKind.owner), requires_person)],
        status_code=HTTP_200_OK,
        responses=problems(403, 404, 409),
    )
    async def run(
        self, request: Request[Any, Any, Any], db_session: DbSession, state: State, data: JSONBody[SettlementRun]
    ) -> StatementList:
        gateway = state.get("stripe_gateway")
        reconcile = stripe_events.stripe_reconciler(gateway) if gateway is not None else None
        rows = await services.settle_operator_month(db_session, caller(request), data.period, data.operator_id, reconcile)
        return await _statements_answer(db_session, rows)

    @get("/{statement_id:uuid}", summary="One statement", guards=[requires_statement_reader], responses=problems(401, 403, 404))
    async def statement(
        self, request: Request[Any, Any, Any], db_session: DbSession, statement_id: FromPath[uuid.UUID]
    ) -> StatementView:
        statement = await services.get_statement(db_session, caller(request), statement_id)
        return await _statement_answer(db_session, statement)

    @get(
        "/{statement_id:uuid}/csv",
        summary="A statement as CSV",
        guards=[requires_statement_reader],
        responses=problems(401, 403, 404),
        media_type="text/csv",
    )
    async def statement_csv(
        self, request: Request[Any, Any, Any], db_session: DbSession, statement_id: FromPath[uuid.UUID]
    ) -> Response[str]:
        statement = await services.get_statement(db_session, caller(request), statement_id)
        names = await operator_names(db_session, [statement])
        return Response(
            services.statement_csv(statement, names.get(statement.operator_id, "")),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{statement.number}.csv"'},
        )

    @get(
        "/{statement_id:uuid}/pdf",
        summary="A statement as PDF",
        description='The statement as a PDF document (`Content-Disposition: attachment; filename="<number>.pdf"`): '
        "operator, owner, period, status, one line per licence (fee rate, payments, gross, refunds, payment fees, "
        "franchise fee) with the totals and the operator's net, reconciliation differences and the ledger index.",
        guards=[requires_statement_reader],
        responses=problems(401, 403, 404),
        media_type="application/pdf",
    )
    async def statement_pdf(
        self, request: Request[Any, Any, Any], db_session: DbSession, statement_id: FromPath[uuid.UUID]
    ) -> Response[bytes]:
        document = await documents_data.statement_document(db_session, caller(request), statement_id)
        return _pdf(document)

    @post(
        "/{statement_id:uuid}/issue",
        summary="Issue a draft statement to the owner",
        guards=[requires_all(requires_operator, requires_person)],
        status_code=HTTP_200_OK,
        responses=problems(403, 404, 409),
    )
    async def issue(
        self, request: Request[Any, Any, Any], db_session: DbSession, statement_id: FromPath[uuid.UUID]
    ) -> StatementView:
        statement = await services.issue_statement(db_session, caller(request), statement_id)
        return await _statement_answer(db_session, statement)

    @post(
        "/{statement_id:uuid}/acknowledge",
        summary="Acknowledge an issued statement (owner)",
        guards=[requires_all(requires_party(OrgKind.owner), requires_person)],
        status_code=HTTP_200_OK,
        responses=problems(403, 404, 409),
    )
    async def acknowledge(
        self, request: Request[Any, Any, Any], db_session: DbSession, statement_id: FromPath[uuid.UUID]
    ) -> StatementView:
        statement = await services.acknowledge_statement(db_session, caller(request), statement_id)
        return await _statement_answer(db_session, statement)


class StripeWebhookController(Controller):
    """Stripe's events, signed with the endpoint's secret."""

    path = "/api/billing/webhooks"
    tags = ["billing"]

    @post(
        "/stripe",
        summary="Stripe webhook endpoint",
        description="Stripe's events. The `Stripe-Signature` header is verified on the raw body with the configured "
        "secret and the SDK's tolerance (400 `invalid_signature`, nothing written); each event is processed once "
        "(its id stored with its effect); an event about an object not known yet is answered 409 "
        "`unknown_object` so that Stripe retries it; unknown types are acknowledged and ignored. Without Stripe "
        "configured: 400 `webhook_not_configured`.",
        status_code=HTTP_200_OK,
        responses=problems(409),
        opt={"accepts_token": False},
    )
    async def stripe_webhook(self, request: Request[Any, Any, Any], db_session: DbSession, state: State) -> dict[str, str]:
        payload = await request.body()
        outcome = await stripe_events.receive(
            db_session, state.settings, state.get("stripe_gateway"), payload, request.headers.get("stripe-signature", "")
        )
        return {"outcome": outcome}


BILLING_CONTROLLERS = [BillingController, SettlementController, StripeWebhookController]
