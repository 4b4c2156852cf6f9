"""PDF documents of billing for the HTTP interface: the record the caller may see (the same scoping as the JSON
reads, so a record of someone else is not found), the names printed on it, and the PDF drawn off the event loop."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass

from sqlmodel.ext.asyncio.session import AsyncSession

from billing import documents
from billing.services.invoices import get_invoice, payment_of
from billing.services.settlement import get_statement
from marketplace.catalog.models import Product
from marketplace.core.identity.models import Organisation
from marketplace.core.principal import Principal
from marketplace.subscriptions.models import Subscription


@dataclass(frozen=True)
class PdfFile:
    """A document to send: its file name and content."""

    filename: str
    content: bytes


async def _org_name(session: AsyncSession, org_id: uuid.UUID) -> documents.Name:
    org = await session.get(Organisation, org_id)
    return documents.Name(org.name, org.name_zh) if org is not None else documents.Name(str(org_id))


async def invoice_document(session: AsyncSession, principal: Principal, invoice_id: uuid.UUID) -> PdfFile:
    """An invoice the caller may see as a PDF (404 ``invoice_not_found`` otherwise), with the operator as issuer,
    the buyer organisation, the product, the subscription and the payment that settled it, if any."""
    invoice = await get_invoice(session, principal, invoice_id)
    issuer = await _org_name(session, invoice.operator_id)
    buyer = await _org_name(session, invoice.buyer_org_id)
    product = await session.get(Product, invoice.product_id)
    subscription = await session.get(Subscription, invoice.subscription_id)
    payment = await payment_of(session, invoice.id)
    content = await asyncio.to_thread(
        documents.invoice_pdf,
        invoice,
        issuer=issuer,
        buyer=buyer,
        product=documents.Name(product.name, product.name_zh) if product is not None else None,
        subscription_number=subscription.number if subscription is not None else None,
        payment=payment,
    )
    return PdfFile(f"{invoice.number}.pdf", content)


async def statement_document(session: AsyncSession, principal: Principal, statement_id: uuid.UUID) -> PdfFile:
    """A settlement statement the caller may see as a PDF (404 ``statement_not_found`` otherwise), issued by the
    operator to the owner."""
    statement = await get_statement(session, principal, statement_id)
    issuer = await _org_name(session, statement.operator_id)
    owner = await _org_name(session, statement.owner_org_id)
    content = await asyncio.to_thread(documents.statement_pdf, statement, issuer=issuer, owner=owner)
    return PdfFile(f"{statement.number}.pdf", content)
