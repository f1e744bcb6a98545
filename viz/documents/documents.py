"""Documents: a creator's licensed source text, content-addressed and deduplicated.

`add_documents` validates every file first (readable UTF-8 text or a PDF with extractable text,
within the size limit, not a duplicate, a valid SPDX licence) and only then writes blobs and rows
in one transaction, so a failed call leaves nothing half-written.

A PDF is stored as its original bytes, so its sha256 is the file the creator holds; its text is
extracted (`viz.documents.pdf`) whenever it is read.

Permissions follow the spirit of the CAWG training-and-data-mining assertion: `ai_training`
(may it be used to train adapters?) and `ai_inference` (may RAG retrieve and quote it?), each
`allowed` or `notAllowed`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from viz.documents.pdf import read_pdf
from viz.errors import Conflict, InvalidInput, LimitExceeded, NotFound
from viz.licences import normalise_licence
from viz.store.blobs import blob_path, put_blob, read_blob, sha256_bytes
from viz.store.schema import Account, Document, DocumentTag

__all__ = [
    "PERMISSIONS",
    "DocumentInput",
    "add_documents",
    "get_document",
    "list_documents",
    "read_document_text",
]

PERMISSIONS = ("allowed", "notAllowed")
PDF_MEDIA_TYPE = "application/pdf"
MEDIA_TYPES = {
    ".txt": "text/plain",
    ".text": "text/plain",
    ".md": "text/markdown",
    ".markdown": "text/markdown",
    ".pdf": PDF_MEDIA_TYPE,
}
TITLE_CHARS_MAX = 200
ATTRIBUTION_CHARS_MAX = 2000
TAG_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.:-]{0,63}$")
TAGS_PER_DOCUMENT_MAX = 32


@dataclass(frozen=True)
class DocumentInput:
    """What the creator says about the files being added (the same for every file)."""

    licence: str
    attribution: str = ""
    ai_training: str = "allowed"
    ai_inference: str = "allowed"
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Candidate:
    path: Path
    data: bytes
    sha256: str
    title: str
    media_type: str


def add_documents(
    session: Session,
    blobs_dir: Path,
    owner: Account,
    paths: list[Path],
    details: DocumentInput,
    *,
    document_bytes_max: int,
    documents_max: int,
    skip_existing: bool = False,
) -> tuple[list[Document], list[Document]]:
    """Ingest `paths` for `owner`; return (added, already catalogued and skipped).

    Every problem with every file is reported at once, and nothing is stored if there is one.

    Raises:
        InvalidInput: a bad licence, permission or tag, a missing, binary or empty file, or a
            PDF that is damaged, encrypted or has no extractable text.
        LimitExceeded: too many files, or a file over `document_bytes_max`.
        Conflict: a file is already catalogued (unless `skip_existing`).
    """
    if not paths:
        raise InvalidInput("no files given; name one or more .txt, .md or .pdf files")
    if len(paths) > documents_max:
        raise LimitExceeded(
            f"{len(paths)} files given; one call takes at most {documents_max} "
            "(set VIZ_DOCUMENTS_PER_ADD_MAX to raise it)"
        )
    licence, tags = _check_details(details)
    candidates = _read_candidates(paths, document_bytes_max)
    existing = _existing_by_sha(session, [c.sha256 for c in candidates])
    unique = _drop_repeats(candidates)
    duplicates = [c for c in unique if c.sha256 in existing]
    if duplicates and not skip_existing:
        named = ", ".join(
            f"{c.path} is document {existing[c.sha256].id} ({existing[c.sha256].filename})"
            for c in duplicates
        )
        raise Conflict(
            f"already catalogued: {named}; nothing was added (use --skip-existing to add the rest)"
        )

    new = [c for c in unique if c.sha256 not in existing]
    added = _store(session, blobs_dir, owner, new, details, licence, tags)
    return added, [existing[c.sha256] for c in duplicates]


def _store(
    session: Session,
    blobs_dir: Path,
    owner: Account,
    candidates: list[_Candidate],
    details: DocumentInput,
    licence: str,
    tags: list[str],
) -> list[Document]:
    """Put each candidate's bytes in the blob store and add its catalogue row; on any failure,
    remove the blobs this call created."""
    created_blobs: list[Path] = []
    added: list[Document] = []
    try:
        for candidate in candidates:
            _, created = put_blob(blobs_dir, candidate.data)
            if created:
                created_blobs.append(blob_path(blobs_dir, candidate.sha256))
            document = Document(
                sha256=candidate.sha256,
                owner_id=owner.id,
                filename=candidate.path.name[:255],
                title=candidate.title,
                media_type=candidate.media_type,
                size_bytes=len(candidate.data),
                licence=licence,
                attribution=details.attribution,
                ai_training=details.ai_training,
                ai_inference=details.ai_inference,
                tags=[DocumentTag(tag=tag) for tag in tags],
            )
            session.add(document)
            added.append(document)
        session.flush()
    except BaseException:
        for path in created_blobs:
            path.unlink(missing_ok=True)
        raise
    return added


def get_document(session: Session, document_id: int) -> Document:
    document = session.get(Document, document_id, options=[selectinload(Document.tags)])
    if document is None:
        raise NotFound(f"no document with id {document_id}; list them with: viz documents list")
    return document


def list_documents(
    session: Session, *, owner: Account | None = None, tag: str | None = None
) -> list[Document]:
    query = select(Document).options(selectinload(Document.tags), selectinload(Document.owner))
    if owner is not None:
        query = query.where(Document.owner_id == owner.id)
    if tag is not None:
        query = query.where(Document.tags.any(DocumentTag.tag == tag))
    return list(session.scalars(query.order_by(Document.id)))


def read_document_text(blobs_dir: Path, document: Document) -> str:
    """The document's text (extracted, for a PDF), its bytes verified against its sha256."""
    data = read_blob(blobs_dir, document.sha256)
    if document.media_type == PDF_MEDIA_TYPE:
        return read_pdf(data).text
    return data.decode("utf-8")


def _check_details(details: DocumentInput) -> tuple[str, list[str]]:
    problems = []
    licence = ""
    try:
        licence = normalise_licence(details.licence)
    except InvalidInput as error:
        problems.append(error.message)
    for name in ("ai_training", "ai_inference"):
        value = getattr(details, name)
        if value not in PERMISSIONS:
            problems.append(f"{name} is {value!r}; use 'allowed' or 'notAllowed'")
    if len(details.attribution) > ATTRIBUTION_CHARS_MAX:
        problems.append(
            f"attribution is {len(details.attribution)} characters; maximum {ATTRIBUTION_CHARS_MAX}"
        )
    tags = sorted(set(details.tags))
    bad_tags = [tag for tag in tags if not TAG_PATTERN.match(tag)]
    if bad_tags:
        problems.append(
            f"tag(s) {', '.join(map(repr, bad_tags))} not valid: use lowercase letters, digits, "
            "'.', '_', ':' or '-' (e.g. 'nlp' or 'lang:en')"
        )
    if len(tags) > TAGS_PER_DOCUMENT_MAX:
        problems.append(f"{len(tags)} tags given; the maximum is {TAGS_PER_DOCUMENT_MAX}")
    if problems:
        raise InvalidInput("; ".join(problems))
    return licence, tags


def _read_candidates(paths: list[Path], document_bytes_max: int) -> list[_Candidate]:
    """Read every file, reporting every problem at once (LimitExceeded if all are sizes)."""
    candidates, problems = [], []
    for path in paths:
        try:
            candidates.append(_read_candidate(path, document_bytes_max))
        except (InvalidInput, LimitExceeded) as error:
            problems.append(error)
    if problems:
        kind = (
            LimitExceeded if all(isinstance(p, LimitExceeded) for p in problems) else InvalidInput
        )
        raise kind("; ".join(p.message for p in problems))
    return candidates


def _read_candidate(path: Path, document_bytes_max: int) -> _Candidate:
    media_type = MEDIA_TYPES.get(path.suffix.lower())
    if media_type is None:
        raise InvalidInput(
            f"{path}: unsupported file type {path.suffix or '(none)'!r}; Viz ingests "
            f"{', '.join(sorted(MEDIA_TYPES))} files (convert other formats to text first)"
        )
    if not path.is_file():
        raise InvalidInput(f"{path}: no such file")
    size = path.stat().st_size
    if size > document_bytes_max:
        raise LimitExceeded(
            f"{path}: {size} bytes is over the {document_bytes_max}-byte limit "
            "(split the document or set VIZ_DOCUMENT_BYTES_MAX)"
        )
    try:
        data = path.read_bytes()
    except OSError as error:
        raise InvalidInput(f"{path}: cannot be read ({error.strerror})") from error
    if not data.strip():
        raise InvalidInput(f"{path}: is empty")
    if media_type == PDF_MEDIA_TYPE:
        try:
            pdf = read_pdf(data)
        except (InvalidInput, LimitExceeded) as error:
            raise type(error)(f"{path}: {error.message}") from error
        title = pdf.title[:TITLE_CHARS_MAX] or _title(pdf.text, path)
    else:
        title = _title(_decode_text(path, data), path)
    return _Candidate(path, data, sha256_bytes(data), title, media_type)


def _decode_text(path: Path, data: bytes) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise InvalidInput(
            f"{path}: not UTF-8 text (byte {error.start} is invalid); save it as UTF-8"
        ) from error
    if "\x00" in text:
        raise InvalidInput(f"{path}: contains NUL bytes, so it is not a text file")
    if not text.strip():
        raise InvalidInput(f"{path}: is empty")
    return text


def _title(text: str, path: Path) -> str:
    for line in text.splitlines():
        line = line.strip().lstrip("#").strip()
        if line:
            return line[:TITLE_CHARS_MAX]
    return path.stem


def _existing_by_sha(session: Session, hashes: list[str]) -> dict[str, Document]:
    rows = session.scalars(select(Document).where(Document.sha256.in_(hashes)))
    return {document.sha256: document for document in rows}


def _drop_repeats(candidates: list[_Candidate]) -> list[_Candidate]:
    seen: dict[str, _Candidate] = {}
    for candidate in candidates:
        seen.setdefault(candidate.sha256, candidate)
    return list(seen.values())
