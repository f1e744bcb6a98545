"""The catalogue's pages: the catalogue itself (search, filters, the domain tree), the
playground's adapter names, and a document's provenance.

Every function takes an open session and the viewer (None when logged out) and returns only
what that viewer may see: private adapters to their owner.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from viz.errors import NotFound
from viz.market.catalogue import search_adapters
from viz.market.hierarchy import USABLE, visible_clause, walk_parents
from viz.routing.hierarchy import Node, adapter_tree, walk
from viz.store.schema import (
    Account,
    Adapter,
    AdapterTag,
    AdapterVersion,
    BaseModel,
    Document,
    DocumentListing,
)

__all__ = [
    "ADAPTERS_SHOWN_MAX",
    "CataloguePage",
    "CatalogueQuery",
    "CatalogueRow",
    "adapter_names",
    "catalogue_page",
    "document_page",
    "lineage",
    "parents_by_name",
]

SEARCH_CHARS_MAX = 200
ADAPTERS_SHOWN_MAX = 500  # rows on the catalogue page, names in the playground


@dataclass(frozen=True)
class CatalogueQuery:
    text: str = ""
    base: str = ""
    tag: str = ""
    licence: str = ""
    price_max: int | None = None  # micro-units per 1k output tokens
    domain: str = ""  # an adapter name: itself and its descendants


@dataclass(frozen=True)
class CatalogueRow:
    name: str
    version: str
    owner: str
    base: str
    parent: str | None
    tags: list[str]
    licence: str
    price_in: int
    price_out: int
    description: str


@dataclass(frozen=True)
class CataloguePage:
    query: CatalogueQuery
    rows: list[CatalogueRow]
    bases: list[str]
    tags: list[str]
    licences: list[str]
    tree: list[Node]  # the hierarchy of every base, as `viz routing tree` shows it


def catalogue_page(
    session: Session, query: CatalogueQuery, viewer: Account | None
) -> CataloguePage:
    """The newest usable version of each adapter the viewer may see that matches `query`."""
    found = search_adapters(
        session,
        text=query.text[:SEARCH_CHARS_MAX],
        tags=(query.tag,) if query.tag else (),
        base_id=query.base or None,
        licence=query.licence or None,
        price_out_max_micro=query.price_max,
        viewer=viewer,
        limit=ADAPTERS_SHOWN_MAX,
    )
    bases = list(session.scalars(select(BaseModel.id).order_by(BaseModel.id)))
    tree = [root for base in bases for root in adapter_tree(session, base, caller=viewer)]
    if query.domain:  # the domain's adapter and everything below it
        under = {n.name for node in walk(tree) if node.name == query.domain for n in walk([node])}
        found = [v for v in found if v.adapter.name in under]
    parents = parents_by_name(session)
    rows = [
        CatalogueRow(
            name=v.adapter.name,
            version=v.version,
            owner=v.adapter.owner.name,
            base=v.adapter.base_id,
            parent=parents.get(v.adapter.name),
            tags=[t.tag for t in v.adapter.tags],
            licence=v.licence,
            price_in=v.price_in_micro,
            price_out=v.price_out_micro,
            description=v.adapter.description,
        )
        for v in found
    ]
    visible = visible_clause(viewer)
    return CataloguePage(
        query=query,
        rows=rows,
        bases=bases,
        tags=list(
            session.scalars(
                select(AdapterTag.tag)
                .join(Adapter, AdapterTag.adapter_id == Adapter.id)
                .where(visible)
                .distinct()
                .order_by(AdapterTag.tag)
            )
        ),
        licences=list(
            session.scalars(
                select(AdapterVersion.licence)
                .join(Adapter)
                .where(visible, AdapterVersion.status.in_(USABLE))
                .distinct()
                .order_by(AdapterVersion.licence)
            )
        ),
        tree=tree,
    )


def adapter_names(session: Session, viewer: Account | None) -> list[str]:
    """Names of the adapters the viewer may use, for the playground's suggestions."""
    found = search_adapters(session, viewer=viewer, limit=ADAPTERS_SHOWN_MAX)
    return sorted(v.adapter.name for v in found)


def parents_by_name(session: Session) -> dict[str, str | None]:
    """Every adapter's name -> its parent's name (None for an adapter trained on a base)."""
    parent = Adapter.__table__.alias("parent")
    return {
        name: parent_name
        for name, parent_name in session.execute(
            select(Adapter.name, parent.c.name).outerjoin(parent, Adapter.parent_id == parent.c.id)
        )
    }


def lineage(name: str, parents: dict[str, str | None]) -> list[str]:
    """`name`, its parent, its grandparent... (the hierarchy's one parent walk, stopping at a
    loop or the depth limit, which publish refuses anyway)."""
    return [name, *walk_parents(name, parents.get, strict=False)]


def document_page(session: Session, sha_or_id: str, viewer: Account | None) -> dict[str, Any]:
    """A document's provenance: owner, licence, attribution, permissions, listing, and the
    adapters whose published manifests name it.

    Raises:
        NotFound: no such document.
    """
    query = select(Document)
    if sha_or_id.isascii() and sha_or_id.isdigit():
        query = query.where(Document.id == int(sha_or_id))
    else:
        query = query.where(Document.sha256 == sha_or_id.lower())
    document = session.scalar(query)
    if document is None:
        raise NotFound(f"no document {sha_or_id!r}; documents are named by id or sha256")
    listing = session.scalar(
        select(DocumentListing).where(DocumentListing.document_id == document.id)
    )
    adapters = sorted(
        {
            f"{adapter.name}@{version.version}"
            for version, adapter in session.execute(
                select(AdapterVersion, Adapter)
                .join(Adapter)
                .where(
                    AdapterVersion.manifest_json.contains(document.sha256),
                    visible_clause(viewer),
                )
            )
        }
    )
    return {
        "id": document.id,
        "sha256": document.sha256,
        "title": document.title,
        "filename": document.filename,
        "owner": document.owner.name,
        "licence": document.licence,
        "attribution": document.attribution,
        "media_type": document.media_type,
        "size_bytes": document.size_bytes,
        "ai_training": document.ai_training,
        "ai_inference": document.ai_inference,
        "tags": [t.tag for t in document.tags],
        "added": document.created_at,
        "price_per_citation": listing.price_per_citation_micro if listing else None,
        "adapters": adapters,
    }
