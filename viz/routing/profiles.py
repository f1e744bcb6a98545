"""Domain profiles: where an adapter sits in embedding space, so a query can be matched to it.

A profile is one unit vector (all-MiniLM-L6-v2, 384 floats) built when a version is published:

    profile = unit(DOCUMENTS_SHARE x centroid(training documents) + CARD_SHARE x card)

- the centroid is the mean of the unit embeddings of the training documents' chunks (the
  documents the manifest lists as `train`, found in the catalogue by sha256; at most
  CHUNKS_PER_DOCUMENT chunks from each of at most DOCUMENTS_MAX documents);
- the card is the embedding of "name: description. Tags: a, b".

An adapter trained outside this catalogue (its documents unknown here) gets the card alone, and
`profile_source` says so. Versions published before profiles existed get one on first use.

    build_profile(session, version, blobs_dir, embedder)     # sets version.profile
    vector = profile_vector(session, version, blobs_dir, embedder)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from viz.documents import read_document_text
from viz.market.hierarchy import training_document_hashes
from viz.rag.chunking import chunk_by_characters
from viz.store.schema import AdapterVersion, Document

__all__ = ["build_profile", "card_text", "profile_vector", "unit"]

DOCUMENTS_SHARE = 0.7
CARD_SHARE = 0.3
DOCUMENTS_MAX = 16
CHUNKS_PER_DOCUMENT = 12
CHUNK_CHARS = 1000


def card_text(version: AdapterVersion) -> str:
    adapter = version.adapter
    tags = ", ".join(t.tag for t in adapter.tags)
    text = f"{adapter.name.replace('-', ' ')}: {adapter.description}".strip()
    return f"{text}. Tags: {tags}" if tags else text


def build_profile(
    session: Session, version: AdapterVersion, blobs_dir: Path, embedder: Any
) -> bytes:
    """Compute and store `version`'s profile; returns the float32 bytes."""
    # deferred: torch is heavy
    import torch

    documents = _training_documents(session, version)
    chunks: list[str] = []
    for document in documents[:DOCUMENTS_MAX]:
        text = read_document_text(blobs_dir, document)
        pieces = chunk_by_characters(text, size=CHUNK_CHARS)
        step = max(1, len(pieces) // CHUNKS_PER_DOCUMENT)  # spread over the whole document
        chunks += [c.text for c in pieces[::step][:CHUNKS_PER_DOCUMENT]]
    card = embedder.encode([card_text(version)])[0]
    if chunks:
        centroid = unit(embedder.encode(chunks).mean(dim=0))
        vector = unit(DOCUMENTS_SHARE * centroid + CARD_SHARE * card)
        source = (
            f"{len(chunks)} chunks of {min(len(documents), DOCUMENTS_MAX)} training "
            "document(s) + card"
        )
    else:
        vector = card
        source = "card only (no training document of its manifest is in this catalogue)"
    version.profile = vector.to(torch.float32).numpy().tobytes()
    version.profile_source = source
    session.flush()
    return version.profile


def profile_vector(
    session: Session, version: AdapterVersion, blobs_dir: Path, embedder: Any
) -> Any:
    """The profile as a torch vector, built now if the version has none yet."""
    # deferred: torch is heavy
    import torch

    data = version.profile or build_profile(session, version, blobs_dir, embedder)
    return torch.frombuffer(bytearray(data), dtype=torch.float32)


def unit(vector: Any) -> Any:
    return vector / vector.norm().clamp_min(1e-12)


def _training_documents(session: Session, version: AdapterVersion) -> list[Document]:
    hashes = training_document_hashes(version, split="train")
    if not hashes:
        return []
    rows = session.scalars(select(Document).where(Document.sha256.in_(hashes)))
    found = {d.sha256: d for d in rows}
    return [found[h] for h in hashes if h in found]
