"""Catalogued documents into a collection: only those whose permissions allow `ai_inference`.

Documents are chosen by id, tag, owner or all of them; each refused one is reported with its
reason, and adding to a collection is incremental (see `viz.rag.collection`). At question time
`allowed_for_inference` is asked again, so a document whose permission was withdrawn after
indexing never reaches an answer.

    report = index_catalogue(session, "papers", Selection(all=True), home=settings.home,
                             blobs_dir=settings.blobs_dir, embedder=embedder)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from viz.documents import read_document_text
from viz.errors import InvalidInput, NotFound
from viz.rag.collection import (
    AddReport,
    CollectionSettings,
    SourceDocument,
    collection_folder,
    create_collection,
)
from viz.rag.embed import Embedder
from viz.store.schema import Account, Document, DocumentTag

__all__ = ["IngestReport", "Selection", "allowed_for_inference", "index_catalogue"]


@dataclass(frozen=True)
class Selection:
    """Which catalogued documents: ids, and/or a tag, and/or an owner; or all of them."""

    ids: tuple[int, ...] = ()
    tag: str | None = None
    owner: str | None = None
    all: bool = False

    def check(self) -> None:
        if not (self.ids or self.tag or self.owner or self.all):
            raise InvalidInput(
                "name the documents: --documents 1,2,3 or --documents all, --tag or --owner"
            )


@dataclass
class IngestReport:
    collection: str
    added: AddReport
    skipped: list[tuple[int, str]] = field(default_factory=list)  # (document id, why)


def select_documents(session: Session, selection: Selection) -> list[Document]:
    selection.check()
    query = select(Document).options(selectinload(Document.owner))
    if selection.ids:
        query = query.where(Document.id.in_(selection.ids))
    if selection.tag:
        query = query.where(Document.tags.any(DocumentTag.tag == selection.tag))
    if selection.owner:
        owner = session.scalar(select(Account).where(Account.name == selection.owner))
        if owner is None:
            raise NotFound(f"no account named {selection.owner!r}")
        query = query.where(Document.owner_id == owner.id)
    documents = list(session.scalars(query.order_by(Document.id)))
    missing = sorted(set(selection.ids) - {d.id for d in documents})
    if missing:
        raise NotFound(
            f"no document(s) {', '.join(map(str, missing))} in the catalogue "
            "(list them with: viz documents list)"
        )
    if not documents:
        raise NotFound("no catalogued document matches; add some with: viz documents add")
    return documents


def index_catalogue(
    session: Session,
    name: str,
    selection: Selection,
    *,
    home: Path,
    blobs_dir: Path,
    embedder: Embedder | Callable[[], Embedder],
    chunking: CollectionSettings | None = None,
    progress: Callable[[int], None] | None = None,
) -> IngestReport:
    """Add the selected documents that allow inference to collection `name` (created with
    `chunking` if new) under `home`, reading their text from `blobs_dir`. Documents that do not
    allow it are skipped and listed. `embedder` may be a function that loads it, called once
    the selection is known to be good."""
    documents = select_documents(session, selection)
    if not isinstance(embedder, Embedder):
        embedder = embedder()
    folder = collection_folder(home, name)
    collection = create_collection(folder, chunking or CollectionSettings())
    try:
        skipped = [
            (d.id, "its ai_inference permission is notAllowed")
            for d in documents
            if d.ai_inference != "allowed"
        ]
        sources = [
            SourceDocument(
                key=f"doc:{d.id}",
                title=d.title,
                text=read_document_text(blobs_dir, d),
                licence=d.licence,
                attribution=d.attribution or f"{d.title} ({d.owner.name})",
                document_id=d.id,
                sha256=d.sha256,
            )
            for d in documents
            if d.ai_inference == "allowed"
        ]
        added = collection.add(sources, embedder, progress=progress)
    finally:
        collection.close()
    return IngestReport(name, added, skipped)


def allowed_for_inference(session: Session, document_ids: list[int]) -> set[int]:
    """The ids among `document_ids` still in the catalogue and allowed for inference."""
    if not document_ids:
        return set()
    return set(
        session.scalars(
            select(Document.id).where(
                Document.id.in_(document_ids), Document.ai_inference == "allowed"
            )
        )
    )
