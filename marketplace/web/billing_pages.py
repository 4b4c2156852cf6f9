"""Billing pages: the buyer's invoices, an invoice as a printable document and a payment's receipt with its ledger
proof (for every party the billing services let see them), the operator's billing console (transfers to record,
payments and refunds, money received per month, settlement statements) and the owner's settlements (franchise fee
income per operator and month, statements to acknowledge, computing a month).

Every read and write goes through the billing services (``billing.services`` and ``billing.services.reports``),
which scope it to the caller; a refusal is shown beside the form that caused it, in the page language.
"""

from __future__ import annotations

import base64
import json
import uuid
from datetime import date
from decimal import Decimal
from typing import Any

from litestar import Controller, Request, get, post
from litestar.datastructures import FormMultiDict, State
from litestar.params import FromPath
from litestar.response import Redirect, Template
from litestar.status_codes import HTTP_303_SEE_OTHER
from sqlmodel.ext.asyncio.session import AsyncSession

import supervision.services as ledger
from billing import services
from billing.models import Invoice, InvoiceStatus, StatementStatus
from billing.services import reports
from billing.services.invoices import product_names
from marketplace.core.errors import DomainError, InvalidInput, NotFound
from marketplace.core.http import DbSession
from marketplace.core.principal import OrgKind, Principal, Role
from marketplace.web.billing_forms import UNPAID, Failure, amount, failure, money, refusal_message
from marketplace.web.buyer_pages import localised
from marketplace.web.charts import Chart, stacked_bars
from marketplace.web.i18n import gettext_ as _
from marketplace.web.pages import _n, forbidden_page, login_redirect, page
from supervision import merkle
from supervision.note import NoteError, open_checkpoint

#: What a page says after a form went through (``?done=<key>``: no user input is shown from the address).
DONE = {
    "transfer": _n("Transfer recorded: the invoice is paid and the subscription is active."),
    "refund": _n("Refund recorded."),
    "computed": _n("Statements computed."),
    "issued": _n("Statement issued to the data authority."),
    "acknowledged": _n("Statement acknowledged."),
}


def money_chart(monthly: reports.MonthlyMoney) -> Chart:
    """Money received per month in one currency (refunds are in the table beside it)."""
    values = [Decimal(amount(m, monthly.currency)) for m in monthly.received_minor]
    return stacked_bars(monthly.months, {_("Received"): values}, unit=f" {monthly.currency}")


def fee_chart(income: reports.FeeIncome, names: dict[uuid.UUID, str]) -> Chart:
    """Franchise fees per operator (one series each) and month in one currency."""
    series = {
        names.get(o.operator_id, str(o.operator_id)[:8]): [Decimal(amount(m, income.currency)) for m in o.amounts_minor]
        for o in income.operators
    }
    return stacked_bars(income.months, series, unit=f" {income.currency}")


def this_and_last_month() -> tuple[str, str]:
    """``YYYY-MM`` of the current month and of the one before."""
    last, this = reports.month_labels(2)
    return this, last


def _caller(request: Request[Any, Any, Any]) -> Principal | Redirect:
    principal: Principal | None = request.scope.get("user")
    if principal is None:
        return login_redirect(request)
    return principal


def _party(request: Request[Any, Any, Any], kind: OrgKind, refusal: str) -> Principal | Template | Redirect:
    who = _caller(request)
    if isinstance(who, Principal) and who.org_kind is not kind:
        return forbidden_page(request, refusal)
    return who


def refusal_page(request: Request[Any, Any, Any], exc: DomainError) -> Template:
    """The error page of a refusal, its detail in the page language."""
    return page(
        request,
        "error.html",
        status_code=exc.status,
        status=exc.status,
        code=exc.code,
        title=exc.title,
        detail=refusal_message(exc),
    )


def _text(form: FormMultiDict, key: str, limit: int = 2000) -> str:
    return str(form.get(key, "")).strip()[:limit]


def _done(request: Request[Any, Any, Any]) -> str | None:
    key = request.query_params.get("done")
    return _(DONE[key]) if key in DONE else None


class BillingPageController(Controller):
    include_in_schema = False

    # --- the buyer's invoices, an invoice, a receipt ----------------------------------------------------------------

    @get("/buyer/invoices")
    async def buyer_invoices(self, request: Request[Any, Any, Any], db_session: DbSession) -> Template | Redirect:
        """The buyer organisation's invoices, newest first."""
        who = _party(request, OrgKind.buyer, _("Invoices of subscriptions belong to enterprise buyers."))
        if not isinstance(who, Principal):
            return who
        invoices, total = await services.list_invoices(db_session, who, limit=200)
        products = await product_names(db_session, [i.product_id for i in invoices])
        payments = await reports.payments_of_invoices(db_session, who, [i.id for i in invoices])
        due: dict[str, int] = {}
        for invoice in invoices:
            if invoice.status in UNPAID:
                due[invoice.currency] = due.get(invoice.currency, 0) + invoice.amount_minor
        return page(
            request,
            "buyer/invoices.html",
            invoices=invoices,
            total=total,
            names={pid: localised(p, "name") for pid, p in products.items()},
            payments=payments,
            unpaid=sum(1 for i in invoices if i.status in UNPAID),
            overdue=sum(1 for i in invoices if i.status is InvoiceStatus.overdue),
            due=[money(minor, currency) for currency, minor in sorted(due.items())],
            money=money,
        )

    @get("/billing/invoices/{invoice_id:uuid}")
    async def invoice(
        self, request: Request[Any, Any, Any], db_session: DbSession, invoice_id: FromPath[uuid.UUID]
    ) -> Template | Redirect:
        """An invoice as a printable document, for every party that may see it (404 otherwise)."""
        who = _caller(request)
        if not isinstance(who, Principal):
            return who
        try:
            invoice = await services.get_invoice(db_session, who, invoice_id)
        except DomainError as exc:
            return refusal_page(request, exc)
        payment = await services.payment_of(db_session, invoice.id)
        parties = await reports.organisations(db_session, {invoice.operator_id, invoice.buyer_org_id})
        products = await product_names(db_session, [invoice.product_id])
        return page(
            request,
            "billing/invoice.html",
            invoice=invoice,
            lines=services.invoice_lines(invoice),
            payment=payment,
            issuer=parties.get(invoice.operator_id),
            buyer=parties.get(invoice.buyer_org_id),
            product_name=localised(products[invoice.product_id], "name") if invoice.product_id in products else "",
            localised=localised,
            money=money,
            unpaid=invoice.status in UNPAID,
        )

    @get("/billing/receipts/{payment_id:uuid}")
    async def receipt(
        self, request: Request[Any, Any, Any], db_session: DbSession, state: State, payment_id: FromPath[uuid.UUID]
    ) -> Template | Redirect:
        """A payment's receipt: the payment, its invoice, the ledger index of ``payment.received`` and the inclusion
        proof of that event, checked here against the signed checkpoint (or the current tree)."""
        who = _caller(request)
        if not isinstance(who, Principal):
            return who
        try:
            found = await services.receipt(db_session, who, payment_id)
        except DomainError as exc:
            return refusal_page(request, exc)
        entry = await ledger.get_entry(db_session, found.ledger_index)
        verified = True
        try:
            merkle.verify_inclusion(found.ledger_index, found.tree_size, entry.leaf_hash, found.inclusion_proof, found.root_hash)
            if found.checkpoint_note is not None:
                checkpoint = open_checkpoint(found.checkpoint_note, state.ledger_signer.verifier)
                verified = checkpoint.size == found.tree_size and checkpoint.root == found.root_hash
        except (merkle.ProofError, NoteError):
            verified = False
        refunds = await services.list_refunds(db_session, found.payment)
        parties = await reports.organisations(db_session, {found.payment.operator_id, found.payment.buyer_org_id})
        return page(
            request,
            "billing/receipt.html",
            payment=found.payment,
            invoice=found.invoice,
            refunds=refunds,
            issuer=parties.get(found.payment.operator_id),
            buyer=parties.get(found.payment.buyer_org_id),
            ledger_index=found.ledger_index,
            tree_size=found.tree_size,
            root_hash=base64.b64encode(found.root_hash).decode(),
            leaf_hash=base64.b64encode(entry.leaf_hash).decode(),
            proof=[base64.b64encode(h).decode() for h in found.inclusion_proof],
            checkpoint_note=found.checkpoint_note,
            verified=verified,
            localised=localised,
            money=money,
        )

    # --- the operator's billing console ------------------------------------------------------------------------------

    def _operator(self, request: Request[Any, Any, Any]) -> Principal | Template | Redirect:
        return _party(request, OrgKind.operator, _("The billing console belongs to franchised operators."))

    @get("/operator/billing")
    async def operator_billing(self, request: Request[Any, Any, Any], db_session: DbSession) -> Template | Redirect:
        """Invoices to collect, payments and refunds, money received per month, settlement statements."""
        who = self._operator(request)
        if not isinstance(who, Principal):
            return who
        return await self._operator_page(request, db_session, who)

    async def _operator_page(
        self,
        request: Request[Any, Any, Any],
        session: AsyncSession,
        who: Principal,
        status_code: int = 200,
        failed: Failure | None = None,
    ) -> Template:
        unpaid: list[Invoice] = []
        for status in UNPAID:
            rows, _total = await services.list_invoices(session, who, status=status, limit=200)
            unpaid += rows
        unpaid.sort(key=lambda i: (i.due_at, i.number))
        payments, payment_count = await reports.list_payments(session, who, limit=20)
        monthly = await reports.money_by_month(session, who, months=6)
        statements = await services.list_statements(session, who)
        products = await product_names(session, [i.product_id for i in unpaid] + [p.invoice.product_id for p in payments])
        buyers = await reports.organisations(
            session, {i.buyer_org_id for i in unpaid} | {p.payment.buyer_org_id for p in payments}
        )
        this_month, last_month = this_and_last_month()
        return page(
            request,
            "operator/billing.html",
            status_code=status_code,
            unpaid=unpaid,
            payments=payments,
            payment_count=payment_count,
            monthly=[(m, money_chart(m)) for m in monthly],
            statements=statements,
            mismatches={s.id: json.loads(s.mismatches_json or "[]") for s in statements},
            names={pid: localised(p, "name") for pid, p in products.items()},
            buyers={oid: localised(o, "name") for oid, o in buyers.items()},
            this_month=this_month,
            last_month=last_month,
            today=date.today().isoformat(),
            is_admin=who.role is Role.admin,
            request_key=lambda: uuid.uuid4().hex,
            failed=failed,
            done=None if failed else _done(request),
            money=money,
            amount=amount,
        )

    async def _operator_refused(
        self, request: Request[Any, Any, Any], session: AsyncSession, who: Principal, failed: Failure, status: int
    ) -> Template:
        await session.rollback()
        return await self._operator_page(request, session, who, status, failed)

    @post("/operator/billing/invoices/{invoice_id:uuid}/transfer")
    async def record_transfer(
        self, request: Request[Any, Any, Any], db_session: DbSession, invoice_id: FromPath[uuid.UUID]
    ) -> Template | Redirect:
        """Record the bank transfer that paid an invoice: the subscription becomes active at once."""
        who = self._operator(request)
        if not isinstance(who, Principal):
            return who
        form = await request.form()
        values = {key: _text(form, key, 255) for key in ("amount", "reference", "received_on")}
        name = f"transfer-{invoice_id}"
        try:
            received_on = date.fromisoformat(values["received_on"]) if values["received_on"] else None
        except ValueError:
            failed = failure(name, InvalidInput("Not a date.", code="invalid_date"), values)
            return await self._operator_refused(request, db_session, who, failed, 400)
        try:
            await services.record_transfer(
                db_session, who, invoice_id, amount=values["amount"], reference=values["reference"], received_on=received_on
            )
        except DomainError as exc:
            return await self._operator_refused(request, db_session, who, failure(name, exc, values), exc.status)
        return Redirect("/operator/billing?done=transfer#payments", status_code=HTTP_303_SEE_OTHER)

    @post("/operator/billing/payments/{payment_id:uuid}/refund")
    async def refund(
        self, request: Request[Any, Any, Any], db_session: DbSession, state: State, payment_id: FromPath[uuid.UUID]
    ) -> Template | Redirect:
        """Refund part or all of a payment, with a reason; a full refund may end the buyer's access. The form's key
        makes a repeated submission answer the refund already made."""
        who = self._operator(request)
        if not isinstance(who, Principal):
            return who
        form = await request.form()
        values = {key: _text(form, key) for key in ("amount", "reason", "request_key")}
        values["end_access"] = "1" if form.get("end_access") else ""
        key = values["request_key"][:190] or uuid.uuid4().hex
        try:
            await services.refund_payment(
                db_session,
                who,
                payment_id,
                amount=values["amount"] or None,
                reason=values["reason"],
                end_access=bool(values["end_access"]),
                request_key=f"page-{key}",
                gateway=state.get("refund_gateway"),
            )
        except DomainError as exc:
            failed = failure(f"refund-{payment_id}", exc, values)
            return await self._operator_refused(request, db_session, who, failed, exc.status)
        return Redirect("/operator/billing?done=refund#payments", status_code=HTTP_303_SEE_OTHER)

    @post("/operator/billing/settlements")
    async def operator_settle(self, request: Request[Any, Any, Any], db_session: DbSession) -> Template | Redirect:
        """Compute (again) the draft statements of a month (this month or the last)."""
        who = self._operator(request)
        if not isinstance(who, Principal):
            return who
        form = await request.form()
        values = {"period": _text(form, "period", 20)}
        try:
            await services.settle_operator_month(db_session, who, values["period"])
        except DomainError as exc:
            return await self._operator_refused(request, db_session, who, failure("settle", exc, values), exc.status)
        return Redirect("/operator/billing?done=computed#statements", status_code=HTTP_303_SEE_OTHER)

    @post("/operator/billing/settlements/{statement_id:uuid}/issue")
    async def issue(
        self, request: Request[Any, Any, Any], db_session: DbSession, statement_id: FromPath[uuid.UUID]
    ) -> Template | Redirect:
        """Issue a draft statement to the owner: the month is closed."""
        who = self._operator(request)
        if not isinstance(who, Principal):
            return who
        try:
            await services.issue_statement(db_session, who, statement_id)
        except DomainError as exc:
            failed = failure(f"statement-{statement_id}", exc)
            return await self._operator_refused(request, db_session, who, failed, exc.status)
        return Redirect("/operator/billing?done=issued#statements", status_code=HTTP_303_SEE_OTHER)

    # --- the owner's settlements -------------------------------------------------------------------------------------

    def _owner(self, request: Request[Any, Any, Any]) -> Principal | Template | Redirect:
        return _party(request, OrgKind.owner, _("Settlements with operators are the data authority's page."))

    @get("/owner/settlements")
    async def owner_settlements(self, request: Request[Any, Any, Any], db_session: DbSession) -> Template | Redirect:
        """Franchise fee income per operator and month, statements to acknowledge, computing a month."""
        who = self._owner(request)
        if not isinstance(who, Principal):
            return who
        return await self._owner_page(request, db_session, who)

    async def _owner_page(
        self,
        request: Request[Any, Any, Any],
        session: AsyncSession,
        who: Principal,
        status_code: int = 200,
        failed: Failure | None = None,
    ) -> Template:
        statements = await services.list_statements(session, who)
        income = await reports.fee_income_by_month(session, who, months=6)
        operators = await reports.licensed_operators(session, who)
        named = await reports.organisations(
            session, {s.operator_id for s in statements} | {o.operator_id for i in income for o in i.operators}
        )
        names = {oid: localised(org, "name") for oid, org in named.items()}
        this_month, last_month = this_and_last_month()
        return page(
            request,
            "owner/settlements.html",
            status_code=status_code,
            statements=statements,
            to_acknowledge=[s for s in statements if s.status is StatementStatus.issued],
            income=[(i, fee_chart(i, names)) for i in income],
            operators=[(o.id, localised(o, "name")) for o in operators],
            names=names,
            this_month=this_month,
            last_month=last_month,
            is_admin=who.role is Role.admin,
            failed=failed,
            done=None if failed else _done(request),
            money=money,
        )

    async def _owner_refused(
        self, request: Request[Any, Any, Any], session: AsyncSession, who: Principal, failed: Failure, status: int
    ) -> Template:
        await session.rollback()
        return await self._owner_page(request, session, who, status, failed)

    @post("/owner/settlements/{statement_id:uuid}/acknowledge")
    async def acknowledge(
        self, request: Request[Any, Any, Any], db_session: DbSession, statement_id: FromPath[uuid.UUID]
    ) -> Template | Redirect:
        """Acknowledge an issued statement."""
        who = self._owner(request)
        if not isinstance(who, Principal):
            return who
        try:
            await services.acknowledge_statement(db_session, who, statement_id)
        except DomainError as exc:
            return await self._owner_refused(request, db_session, who, failure(f"statement-{statement_id}", exc), exc.status)
        return Redirect("/owner/settlements?done=acknowledged#acknowledge", status_code=HTTP_303_SEE_OTHER)

    @post("/owner/settlements")
    async def owner_settle(self, request: Request[Any, Any, Any], db_session: DbSession) -> Template | Redirect:
        """Compute (again) the draft statements of one licensed operator's month."""
        who = self._owner(request)
        if not isinstance(who, Principal):
            return who
        form = await request.form()
        values = {"operator_id": _text(form, "operator_id", 64), "period": _text(form, "period", 20)}
        try:
            operator_id = uuid.UUID(values["operator_id"]) if values["operator_id"] else None
        except ValueError:
            failed = failure("settle", NotFound("No such operator.", code="operator_not_found"), values)
            return await self._owner_refused(request, db_session, who, failed, 404)
        try:
            await services.settle_operator_month(db_session, who, values["period"], operator_id)
        except DomainError as exc:
            return await self._owner_refused(request, db_session, who, failure("settle", exc, values), exc.status)
        return Redirect("/owner/settlements?done=computed#statements", status_code=HTTP_303_SEE_OTHER)
