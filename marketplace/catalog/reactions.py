"""How the catalog reacts to other domains' events (through the core publish/subscribe hook).

The hook hands every domain event to ``on_domain_event`` inside the transaction that published it, so a product
follows its listing review atomically: submitted -> its review is recorded; approved -> listed (and searchable);
rejected or withdrawn (the licence stopped before a decision) -> draft; delisted (the licence was suspended,
revoked or expired) -> delisted (and no longer searchable). A review moves a product only when it is the product's
own current review, so a listing review submitted by hand under some product's id never moves it.
"""

from __future__ import annotations

import uuid

from sqlmodel.ext.asyncio.session import AsyncSession

from marketplace.catalog.models import Product, ProductStatus
from marketplace.catalog.search import reindex_product
from marketplace.core.events import DomainEvent, publish
from marketplace.core.types import utcnow

#: Review event -> (the product status it applies to, the status it leads to, the catalog event it publishes).
_MOVES: dict[str, tuple[ProductStatus, ProductStatus, str]] = {
    "listing.approved": (ProductStatus.in_review, ProductStatus.listed, "product.listed"),
    "listing.rejected": (ProductStatus.in_review, ProductStatus.draft, "product.returned_to_draft"),
    "listing.withdrawn": (ProductStatus.in_review, ProductStatus.draft, "product.returned_to_draft"),
    "listing.delisted": (ProductStatus.listed, ProductStatus.delisted, "product.delisted"),
}


def _review_id(event: DomainEvent) -> str | None:
    return event.subjects.get("review") or event.subjects.get("listing_review")


async def _product_of(session: AsyncSession, event: DomainEvent) -> Product | None:
    try:
        product_id = uuid.UUID(str(event.payload.get("product_ref", "")))
    except ValueError:
        return None  # a review submitted by hand, not for a catalog product
    return await session.get(Product, product_id)


async def on_domain_event(session: AsyncSession, event: DomainEvent) -> None:
    """Keep products in step with their listing reviews (approved -> listed, rejected -> draft, delisted)."""
    if not event.type.startswith("listing."):
        return  # the hook sees every event of the platform: leave the others at once
    if event.type == "listing.submitted":
        product = await _product_of(session, event)
        review = _review_id(event)
        if product is not None and review and product.status is ProductStatus.in_review and product.operator_id in event.orgs:
            product.review_id = uuid.UUID(review)
            session.add(product)
        return
    move = _MOVES.get(event.type)
    if move is None:
        return
    product = await _product_of(session, event)
    review = _review_id(event)
    if product is None or review is None or product.review_id is None or str(product.review_id) != review:
        return
    before, after, published = move
    if product.status is not before:
        return
    now = utcnow()
    product.status = after
    product.updated_at = now
    if after is ProductStatus.listed:
        product.listed_at = now
    session.add(product)
    await reindex_product(session, product)
    await publish(
        session,
        DomainEvent(
            published,
            event.actor,
            orgs=event.orgs,
            subjects={"product": str(product.id), "licence": str(product.licence_id), "review": review},
            payload={"status": after.value, "previous": before.value, "cause": event.type, "reason": event.payload.get("reason")},
        ),
    )
