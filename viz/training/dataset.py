"""Training sets from catalogued documents: permission checks, token windows, split by document.

Documents are chosen by id, owner or tag. A document is refused (named in the error) when its
`ai_training` permission is `notAllowed` or when it belongs to another account than the one
training. Each document is tokenised into windows of `sequence_length` tokens that overlap by
`overlap` tokens; whole documents go either to training or to the held-out set, so the held-out
perplexity measures text the adapter never saw.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from viz.documents import get_document, list_documents, read_document_text
from viz.errors import Forbidden, InvalidInput
from viz.market.licences import training_refusal
from viz.store.schema import Account, Document

__all__ = [
    "DocumentTokens",
    "TrainingSet",
    "build_training_set",
    "fingerprint",
    "tokenise_document",
    "select_documents",
    "windows",
]

MIN_WINDOW_TOKENS = 16
DOCUMENTS_MAX = 10_000


@dataclass(frozen=True)
class DocumentTokens:
    """One document's identity and its token windows."""

    document_id: int
    sha256: str
    licence: str
    title: str
    tokens: int
    windows: tuple[tuple[int, ...], ...]


@dataclass(frozen=True)
class TrainingSet:
    train: tuple[DocumentTokens, ...]
    held_out: tuple[DocumentTokens, ...]
    sequence_length: int
    overlap: int

    def train_windows(self) -> list[tuple[int, ...]]:
        return [window for document in self.train for window in document.windows]

    def held_out_windows(self) -> list[tuple[int, ...]]:
        return [window for document in self.held_out for window in document.windows]


def select_documents(
    session: Session,
    account: Account,
    *,
    document_ids: Sequence[int] = (),
    owners: Sequence[Account] = (),
    tags: Sequence[str] = (),
) -> list[Document]:
    """The documents named by id, owner or tag, checked for training permission.

    Raises:
        InvalidInput: nothing selected.
        NotFound: an unknown document id.
        Forbidden: a selected document may not be trained on by `account` (each one named).
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
    refused = []
    for document in sorted(chosen.values(), key=lambda d: d.id):
        if document.ai_training != "allowed":
            refused.append(
                f"document {document.id} ({document.filename}): ai_training is "
                f"{document.ai_training}"
            )
        elif reason := training_refusal(document.licence):
            refused.append(f"document {document.id} ({document.filename}): {reason}")
        elif document.owner_id != account.id:
            refused.append(
                f"document {document.id} ({document.filename}) belongs to "
                f"{document.owner.name}, not {account.name}"
            )
    if refused:
        raise Forbidden(
            "refused to train on: " + "; ".join(refused) + ". Train only on your own documents "
            "whose ai_training permission is allowed (drop these from the selection)"
        )
    return sorted(chosen.values(), key=lambda d: d.id)


def model_context_length(folder: Path) -> int:
    """The longest sequence the model in `folder` takes (its config's max_position_embeddings)."""
    # deferred: transformers is heavy
    from transformers import AutoConfig

    return int(getattr(AutoConfig.from_pretrained(folder), "max_position_embeddings", 2048))


def build_training_set(
    documents: list[Document],
    blobs_dir: Path,
    tokenizer: Any,
    *,
    sequence_length: int,
    overlap: int,
    held_out_fraction: float,
    context_length: int,
) -> TrainingSet:
    """Tokenise `documents` and split them into train and held-out sets by document.

    The split is deterministic: documents are ordered by sha256 and every k-th goes to held-out,
    so the same documents always give the same split.

    Raises:
        InvalidInput: bad window sizes, fewer than two documents, or no windows to train on.
    """
    problems = []
    if sequence_length < MIN_WINDOW_TOKENS:
        problems.append(f"sequence length {sequence_length} is below {MIN_WINDOW_TOKENS}")
    if sequence_length > context_length:
        problems.append(
            f"sequence length {sequence_length} is over the base model's context "
            f"of {context_length} tokens"
        )
    if not 0 <= overlap < sequence_length:
        problems.append(
            f"overlap {overlap} must be >= 0 and below the sequence length {sequence_length}"
        )
    if not 0.0 <= held_out_fraction < 1.0:
        problems.append(
            f"held-out fraction {held_out_fraction} must be 0 (no evaluation) or between 0 and 1"
        )
    if held_out_fraction > 0 and len(documents) < 2:
        problems.append(
            f"{len(documents)} document(s) selected; at least 2 are needed so whole "
            "documents can be held out for evaluation (or train with --held-out 0)"
        )
    if problems:
        raise InvalidInput("; ".join(problems))

    tokenised = [
        tokenise_document(d, blobs_dir, tokenizer, sequence_length, overlap) for d in documents
    ]
    tokenised.sort(key=lambda d: d.sha256)
    held_out_count = max(1, round(len(tokenised) * held_out_fraction)) if held_out_fraction else 0
    step = len(tokenised) / max(held_out_count, 1)
    held_out_indexes = {int(i * step) for i in range(held_out_count)}
    train = tuple(d for i, d in enumerate(tokenised) if i not in held_out_indexes)
    held_out = tuple(d for i, d in enumerate(tokenised) if i in held_out_indexes)
    if not any(d.windows for d in train):
        raise InvalidInput(
            f"the training documents give no window of {sequence_length} tokens; lower "
            "--sequence-length or add longer documents"
        )
    return TrainingSet(train, held_out, sequence_length, overlap)


def windows(ids: list[int], sequence_length: int, overlap: int) -> list[tuple[int, ...]]:
    """Windows of exactly `sequence_length` tokens, each starting `sequence_length - overlap`
    after the previous; the last one is aligned to the end so no tail is dropped."""
    if len(ids) < sequence_length:
        return []
    stride = sequence_length - overlap
    starts = list(range(0, len(ids) - sequence_length + 1, stride))
    if starts[-1] != len(ids) - sequence_length:
        starts.append(len(ids) - sequence_length)
    return [tuple(ids[start : start + sequence_length]) for start in starts]


def tokenise_document(
    document: Document, blobs_dir: Path, tokenizer: Any, sequence_length: int, overlap: int
) -> DocumentTokens:
    text = read_document_text(blobs_dir, document)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if tokenizer.eos_token_id is not None:
        ids = [*ids, tokenizer.eos_token_id]
    return DocumentTokens(
        document_id=document.id,
        sha256=document.sha256,
        licence=document.licence,
        title=document.title,
        tokens=len(ids),
        windows=tuple(windows(ids, sequence_length, overlap)),
    )


def fingerprint(training_set: TrainingSet, extra: Sequence[tuple[int, ...]] = ()) -> str:
    """A sha256 over the documents and their windows (plus any `extra` windows mixed in, such
    as a continual update's replay), so a resumed run can check it sees the same data."""
    digest = hashlib.sha256()
    for document in (*training_set.train, *training_set.held_out):
        digest.update(document.sha256.encode())
        digest.update(len(document.windows).to_bytes(4, "little"))
    for window in extra:
        digest.update(repr(window).encode())
    digest.update(f"{training_set.sequence_length}/{training_set.overlap}".encode())
    return digest.hexdigest()
