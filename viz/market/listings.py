"""Document listings: an owner offers a document for RAG at a price per citation.

    listing = list_document(session, document_id, price_per_citation_micro=500, by=owner)

Listing and re-pricing are appended to the public log.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from viz.documents import get_document
from viz.errors import Forbidden, InvalidInput
from viz.log.store import append_entry
from viz.market.catalogue import PRICE_MAX_MICRO
from viz.store.schema import Account, DocumentListing

__all__ = ["list_document"]


def list_document(
    session: Session, document_id: int, *, price_per_citation_micro: int, by: Account
) -> DocumentListing:
    """Offer a document for RAG at a price per citation (its owner only; re-listing re-prices).

    Raises:
        Forbidden: `by` does not own the document, or its ai_inference is notAllowed.
        InvalidInput: a negative or absurd price.
    """
    document = get_document(session, document_id)
    if document.owner_id != by.id:
        raise Forbidden(
            f"document {document_id} belongs to {document.owner.name}; only its owner can list it"
        )
    if document.ai_inference != "allowed":
        raise Forbidden(
            f"document {document_id} has ai_inference notAllowed, so it cannot be "
            "retrieved or cited; it cannot be listed"
        )
    if not 0 <= price_per_citation_micro <= PRICE_MAX_MICRO:
        raise InvalidInput(
            f"price per citation {price_per_citation_micro} must be "
            f"0..{PRICE_MAX_MICRO} micro-units"
        )
    listing = session.scalar(
        select(DocumentListing).where(DocumentListing.document_id == document_id)
    )
    if listing is None:
        listing = DocumentListing(document_id=document_id)
        session.add(listing)
    listing.price_per_citation_micro = price_per_citation_micro
    session.flush()
    append_entry(
        session,
        "list_document",
        {
            "document": document_id,
            "sha256": document.sha256,
            "licence": document.licence,
            "owner": by.name,
            "price_per_citation_micro": price_per_citation_micro,
        },
    )
    return listing
