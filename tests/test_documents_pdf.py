"""PDF documents: a creator adds their own papers as PDFs; Viz keeps the original file (its hash
is the provenance) and reads its text for RAG and training. Bad PDFs are refused at add time with
a message saying what to do, and nothing is stored.

The PDFs are made in the test: text pages drawn with matplotlib (TrueType fonts, so pypdf can map
glyphs back to text), a blank page and encryption with pypdf, and bytes that are no PDF at all.
"""

from __future__ import annotations

import io
import random
from pathlib import Path

import matplotlib
import pytest
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure
from pypdf import PdfWriter
from sqlalchemy import Engine
from typer.testing import CliRunner

from viz.accounts import create_account, get_account
from viz.cli import app
from viz.documents import DocumentInput, add_documents, list_documents, read_document_text
from viz.documents.pdf import pdf_text
from viz.errors import InvalidInput
from viz.store import session_scope
from viz.store.blobs import sha256_bytes
from viz.training.dataset import tokenise_document

PAGES = [
    ["On the Analytical Engine", "It weaves algebraical pat-", "terns just as the loom."],
    ["The ﬁrst program computed", "Bernoulli numbers."],
]
# What pypdf 7.1 extracts from PAGES: the split word rejoined, the ligature spelled out, pages
# separated by a blank line.
TEXT = (
    "On the Analytical Engine\nIt weaves algebraical patterns just as the loom.\n\n"
    "The first program computed\nBernoulli numbers."
)
LIMITS = {"document_bytes_max": 10**7, "documents_max": 10}


def write_pdf(path: Path, pages: list[list[str]], *, title: str | None = None) -> Path:
    """A PDF with one page per list, one line of text per string."""
    buffer = io.BytesIO()
    metadata = {"Title": title} if title else None
    with matplotlib.rc_context({"pdf.fonttype": 42}), PdfPages(buffer, metadata=metadata) as pdf:
        for lines in pages:
            figure = Figure(figsize=(5, 3))
            for row, line in enumerate(lines):
                figure.text(0.05, 0.85 - 0.12 * row, line)
            pdf.savefig(figure)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer.getvalue())
    return path


def write_blank_pdf(path: Path) -> Path:
    """What a scan looks like to a text extractor: pages without text."""
    writer = PdfWriter()
    writer.add_blank_page(width=612, height=792)
    writer.write(path)
    return path


def write_encrypted_pdf(path: Path, source: Path, *, user_password: str) -> Path:
    writer = PdfWriter(clone_from=source)
    writer.encrypt(user_password, "owner-secret", algorithm="AES-128")
    writer.write(path)
    return path


@pytest.fixture
def catalogue(sqlite_engine: Engine, tmp_path: Path) -> dict:  # type: ignore[type-arg]
    with session_scope(sqlite_engine) as session:
        create_account(session, "ada")
    return {"engine": sqlite_engine, "blobs": tmp_path / "blobs", "in": tmp_path / "in"}


def add(catalogue: dict, paths: list[Path]) -> list[tuple[str, str, str, int]]:  # type: ignore[type-arg]
    """Add `paths` as ada; return (title, media type, sha256, size) of each document added."""
    with session_scope(catalogue["engine"]) as session:
        ada = get_account(session, "ada")
        added, _ = add_documents(
            session, catalogue["blobs"], ada, paths, DocumentInput("CC-BY-4.0"), **LIMITS
        )
        return [(d.title, d.media_type, d.sha256, d.size_bytes) for d in added]


def stored(catalogue: dict) -> tuple[int, list[Path]]:  # type: ignore[type-arg]
    """How many documents are catalogued, and the blob files on disk."""
    with session_scope(catalogue["engine"]) as session:
        count = len(list_documents(session))
    blobs = catalogue["blobs"]
    return count, sorted(p for p in blobs.rglob("*") if p.is_file()) if blobs.exists() else []


def test_a_pdf_is_stored_as_the_original_file_and_read_as_text(catalogue) -> None:
    paper = write_pdf(catalogue["in"] / "engine.pdf", PAGES, title="Sketch of the Engine")

    (added,) = add(catalogue, [paper])

    data = paper.read_bytes()
    assert added == ("Sketch of the Engine", "application/pdf", sha256_bytes(data), len(data))
    with session_scope(catalogue["engine"]) as session:
        (document,) = list_documents(session)
        assert read_document_text(catalogue["blobs"], document) == TEXT
    assert pdf_text(data) == TEXT


def test_a_pdf_without_a_metadata_title_is_titled_by_its_first_line(catalogue) -> None:
    paper = write_pdf(catalogue["in"] / "untitled.pdf", PAGES)

    ((title, *_),) = add(catalogue, [paper])

    assert title == "On the Analytical Engine"


def test_a_pdf_with_only_an_owner_password_is_readable(catalogue) -> None:
    plain = write_pdf(catalogue["in"] / "plain" / "engine.pdf", PAGES)
    locked = write_encrypted_pdf(catalogue["in"] / "engine.pdf", plain, user_password="")

    (added,) = add(catalogue, [locked])

    assert added[2] == sha256_bytes(locked.read_bytes())
    with session_scope(catalogue["engine"]) as session:
        (document,) = list_documents(session)
        assert read_document_text(catalogue["blobs"], document) == TEXT


def test_pdf_text_flows_into_training(catalogue) -> None:
    add(catalogue, [write_pdf(catalogue["in"] / "engine.pdf", PAGES)])

    class CharacterTokenizer:
        eos_token_id = 0

        def __call__(self, text: str, add_special_tokens: bool) -> dict[str, list[int]]:
            return {"input_ids": [ord(character) for character in text]}

    with session_scope(catalogue["engine"]) as session:
        (document,) = list_documents(session)
        tokens = tokenise_document(
            document, catalogue["blobs"], CharacterTokenizer(), sequence_length=16, overlap=0
        )
    assert tokens.tokens == len(TEXT) + 1
    assert "".join(map(chr, tokens.windows[0])) == TEXT[:16]


def _not_a_pdf(folder: Path) -> Path:
    path = folder / "notes.pdf"
    path.write_bytes(random.Random(0).randbytes(4000))
    return path


def _damaged(folder: Path) -> Path:
    data = write_pdf(folder / "whole" / "paper.pdf", PAGES).read_bytes()
    path = folder / "paper.pdf"
    path.write_bytes(data[: len(data) // 3])
    return path


def _encrypted(folder: Path) -> Path:
    plain = write_pdf(folder / "plain" / "secret.pdf", PAGES)
    return write_encrypted_pdf(folder / "secret.pdf", plain, user_password="pw")


def _scanned(folder: Path) -> Path:
    return write_blank_pdf(folder / "scan.pdf")


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (_not_a_pdf, r"notes\.pdf: not a PDF .*export it again as a PDF with text"),
        (_damaged, r"paper\.pdf: is a damaged PDF .*export it again as a PDF with text"),
        (_encrypted, r"secret\.pdf: is an encrypted PDF; decrypt it first"),
        (_scanned, r"scan\.pdf: has no extractable text .*OCR it first"),
    ],
    ids=["not-a-pdf", "damaged", "encrypted", "scanned"],
)
def test_a_bad_pdf_is_refused_and_nothing_is_stored(catalogue, make, expected) -> None:
    catalogue["in"].mkdir(parents=True)
    path = make(catalogue["in"])

    with pytest.raises(InvalidInput, match=expected):
        add(catalogue, [path])

    assert stored(catalogue) == (0, [])


def test_a_good_text_file_beside_a_bad_pdf_is_not_added_either(catalogue) -> None:
    catalogue["in"].mkdir(parents=True)
    notes = catalogue["in"] / "notes.txt"
    notes.write_text("Notes on the engine.\n", encoding="utf-8")
    scan = write_blank_pdf(catalogue["in"] / "scan.pdf")

    with pytest.raises(InvalidInput, match="scan.pdf") as refused:
        add(catalogue, [notes, scan])

    assert "notes.txt" not in refused.value.message
    assert stored(catalogue) == (0, [])


def test_the_cli_adds_a_pdf_and_refuses_a_scan_without_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VIZ_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("VIZ_DATABASE_URL", raising=False)
    runner = CliRunner()
    paper = write_pdf(tmp_path / "in" / "engine.pdf", PAGES, title="Sketch of the Engine")
    scan = write_blank_pdf(tmp_path / "in" / "scan.pdf")
    assert runner.invoke(app, ["account", "create", "ada"]).exit_code == 0
    owner = ["--owner", "ada", "--licence", "CC-BY-4.0"]

    refused = runner.invoke(app, ["documents", "add", str(scan), *owner])
    added = runner.invoke(app, ["documents", "add", str(paper), *owner])
    shown = runner.invoke(app, ["documents", "show", "1", "--text"])

    assert refused.exit_code == 2
    assert "OCR it first" in refused.output and "Traceback" not in refused.output
    assert added.exit_code == 0, added.output
    assert "added document 1: engine.pdf" in added.output
    assert "application/pdf" in shown.output and "Sketch of the Engine" in shown.output
    assert TEXT in shown.output
