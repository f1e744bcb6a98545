"""The corpus a base is pretrained on: catalogued documents admitted one by one, each refused
one named with its reason (issue 23: a base's provenance true by construction).

A document is admitted when its `ai_training` permission is `allowed`, the account pretraining
owns it, and its licence lets a base be trained on it and redistributed
(`viz.licences.pretraining_terms`: attribution carried to the card, share-alike terms to the
base's licence, non-commercial marking the base). Unlike an adapter's selection, where any
refusal stops the run, a pretraining selection goes on with what is admitted, and says what was
left out and why.

    corpus = admit_for_pretraining(session, account, tags=["qasper"])
    corpus.admitted, corpus.refused, corpus.licence()
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.orm import Session

from viz.documents import get_document, list_documents
from viz.errors import InvalidInput
from viz.licences import PretrainingTerms, base_licence, pretraining_terms
from viz.store.schema import Account, Document

__all__ = ["Corpus", "Refused", "admit_for_pretraining"]

DOCUMENTS_MAX = 100_000


@dataclass(frozen=True)
class Refused:
    document_id: int
    filename: str
    reason: str

    def __str__(self) -> str:
        return f"document {self.document_id} ({self.filename}): {self.reason}"


@dataclass(frozen=True)
class Corpus:
    """The admitted documents with the terms each passes on, and the refused ones."""

    admitted: tuple[tuple[Document, PretrainingTerms], ...]
    refused: tuple[Refused, ...]

    def licence(self, chosen: str | None = None) -> str:
        """The licence the base must carry (see `viz.licences.base_licence`)."""
        return base_licence([terms for _, terms in self.admitted], chosen=chosen)

    @property
    def non_commercial(self) -> bool:
        return any(terms.non_commercial for _, terms in self.admitted)

    def attributions(self) -> list[str]:
        """What the base's card must credit: each attribution document's attribution line."""
        return [
            document.attribution or f"{document.title} ({document.licence})"
            for document, terms in self.admitted
            if terms.attribution
        ]


def admit_for_pretraining(
    session: Session,
    account: Account,
    *,
    document_ids: Sequence[int] = (),
    owners: Sequence[Account] = (),
    tags: Sequence[str] = (),
) -> Corpus:
    """The documents named by id, owner or tag, admitted or refused one by one.

    Raises:
        InvalidInput: nothing selected, too many, or none admitted (every refusal named).
        NotFound: an unknown document id.
    """
    chosen: dict[int, Document] = {}
    for document_id in document_ids:
        chosen[document_id] = get_document(session, document_id)
    for owner in owners:
        chosen.update((d.id, d) for d in list_documents(session, owner=owner))
    for tag in tags:
        chosen.update((d.id, d) for d in list_documents(session, tag=tag))
    if not chosen:
        raise InvalidInput(
            "no documents selected; name them with --documents ID, --owner ACCOUNT or --tag TAG "
            "(see viz documents list)"
        )
    if len(chosen) > DOCUMENTS_MAX:
        raise InvalidInput(f"{len(chosen)} documents selected; the maximum is {DOCUMENTS_MAX}")
    admitted, refused = [], []
    for document in sorted(chosen.values(), key=lambda d: d.id):
        terms = pretraining_terms(document.licence)
        if document.ai_training != "allowed":
            reason = f"its ai_training permission is {document.ai_training}"
        elif document.owner_id != account.id:
            reason = (
                f"it belongs to {document.owner.name}, not {account.name}: pretrain only on "
                "your own documents"
            )
        elif not terms.admitted:
            reason = terms.reason
        else:
            admitted.append((document, terms))
            continue
        refused.append(Refused(document.id, document.filename, reason))
    if not admitted:
        raise InvalidInput(
            "no document can be pretrained on: " + "; ".join(map(str, refused)) + ". Choose "
            "your own documents under open licences whose ai_training permission is allowed"
        )
    return Corpus(tuple(admitted), tuple(refused))
