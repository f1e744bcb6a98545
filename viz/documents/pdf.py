"""PDF documents: the text and title inside a PDF, extracted with pypdf.

The catalogue stores a PDF's original bytes (its sha256 is the provenance), so the text is
extracted again each time it is read; `read_pdf` is deterministic for the same bytes. Every way a
PDF can fail (not a PDF, damaged, encrypted, only images) becomes an `InvalidInput` naming the
next step: pypdf raises many exception types on damaged files, and none of them may reach a user
as a traceback.
"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from viz.errors import InvalidInput, LimitExceeded

if TYPE_CHECKING:
    from pypdf import PdfReader

__all__ = ["PDF_PAGES_MAX", "PdfContent", "pdf_text", "read_pdf"]

PDF_PAGES_MAX = 5000
"""Pages one PDF may have; the byte limit alone does not bound extraction time."""
PDF_HEADER_BYTES_MAX = 1024
"""The `%PDF-` header must start within this many bytes, as PDF readers allow."""
PAGE_SEPARATOR = "\n\n"
LIGATURES = str.maketrans({"ﬀ": "ff", "ﬁ": "fi", "ﬂ": "fl", "ﬃ": "ffi", "ﬄ": "ffl", "ﬅ": "st"})
CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u00ad]")
HYPHENATED_BREAK = re.compile(r"(?<=[a-z])-[ \t]*\n[ \t]*(?=[a-z])")
SPACE_RUN = re.compile(r"[ \t\u00a0]+")
BLANK_LINE_RUN = re.compile(r"\n{3,}")


@dataclass(frozen=True)
class PdfContent:
    text: str
    title: str
    """The metadata title, or "" when the PDF has none."""


def pdf_text(data: bytes) -> str:
    """The text of a PDF: its pages in order, separated by a blank line, whitespace tidied.

    Raises:
        InvalidInput: not a PDF, damaged, encrypted, or without extractable text.
        LimitExceeded: more than `PDF_PAGES_MAX` pages.
    """
    return read_pdf(data).text


def read_pdf(data: bytes) -> PdfContent:
    """The text (as `pdf_text` gives it) and the metadata title of a PDF.

    Messages name the problem and the next step but not the file; the caller adds that.

    Raises:
        InvalidInput: not a PDF, damaged, encrypted, or without extractable text.
        LimitExceeded: more than `PDF_PAGES_MAX` pages.
    """
    # deferred: pypdf costs ~0.1 s that only PDF work should pay
    from pypdf import PdfReader

    if b"%PDF-" not in data[:PDF_HEADER_BYTES_MAX]:
        raise InvalidInput("not a PDF (no %PDF- header); export it again as a PDF with text")
    with _quiet_pypdf():
        try:
            reader = PdfReader(io.BytesIO(data))
            if reader.is_encrypted and not _opens_without_password(reader):
                raise InvalidInput("is an encrypted PDF; decrypt it first (e.g. qpdf --decrypt)")
            pages = len(reader.pages)
            if pages > PDF_PAGES_MAX:
                raise LimitExceeded(
                    f"has {pages} pages; a PDF may have at most {PDF_PAGES_MAX} (split it)"
                )
            texts = [_tidy(page.extract_text()) for page in reader.pages]
            title = _metadata_title(reader)
        except (InvalidInput, LimitExceeded):
            raise
        except Exception as error:  # noqa: BLE001 - pypdf raises many types on damaged files
            raise InvalidInput(
                f"is a damaged PDF ({type(error).__name__}: {str(error)[:200]}); "
                "export it again as a PDF with text"
            ) from error
    text = PAGE_SEPARATOR.join(page for page in texts if page)
    if not text:
        raise InvalidInput(
            f"has no extractable text in its {pages} page(s) (a scanned image?); "
            "OCR it first (e.g. ocrmypdf) and add the result"
        )
    return PdfContent(text, title)


def _tidy(text: str) -> str:
    """Clean one page: ligatures spelled out, words split across lines rejoined ("exam-\\nple"
    becomes "example"), runs of spaces collapsed, line breaks and blank lines kept."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").translate(LIGATURES)
    text = CONTROL_CHARACTERS.sub("", text)
    text = HYPHENATED_BREAK.sub("", text)
    lines = [SPACE_RUN.sub(" ", line).strip() for line in text.split("\n")]
    return BLANK_LINE_RUN.sub("\n\n", "\n".join(lines)).strip()


def _opens_without_password(reader: PdfReader) -> bool:
    """True for PDFs encrypted only to restrict permissions, whose user password is empty."""
    # deferred: pypdf costs ~0.1 s that only PDF work should pay
    from pypdf import PasswordType

    try:
        return reader.decrypt("") != PasswordType.NOT_DECRYPTED
    except Exception:  # noqa: BLE001 - an unsupported cipher means it cannot be opened
        return False


def _metadata_title(reader: PdfReader) -> str:
    metadata = reader.metadata
    title = metadata.title if metadata is not None else None
    return " ".join(title.split()) if isinstance(title, str) else ""


@contextmanager
def _quiet_pypdf() -> Iterator[None]:
    """Silence pypdf's warnings about damaged files while reading: the error we raise says it."""
    logger = logging.getLogger("pypdf")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
