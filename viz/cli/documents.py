"""`viz documents`: ingest licensed text and PDFs and inspect the catalogue."""

from __future__ import annotations

from pathlib import Path

import typer

from viz.accounts import get_account
from viz.cli._context import session, state, table
from viz.documents import DocumentInput, add_documents, get_document, list_documents
from viz.documents import read_document_text as read_text

app = typer.Typer(
    help="Documents: creators' licensed texts and PDFs.\n\n"
    "Example: viz documents add paper.txt --owner ada --licence CC-BY-4.0"
)


@app.command("add")
def add(
    context: typer.Context,
    paths: list[Path] = typer.Argument(..., help="Text, markdown or PDF files (.txt, .md, .pdf)"),
    owner: str = typer.Option(..., help="Account that owns the documents"),
    licence: str = typer.Option(..., "--licence", "--license", help="SPDX expression"),
    attribution: str = typer.Option("", help="Attribution text required by the licence"),
    ai_training: str = typer.Option(
        "allowed", help="May adapters be trained on it? allowed | notAllowed"
    ),
    ai_inference: str = typer.Option(
        "allowed", help="May RAG retrieve and quote it? allowed | notAllowed"
    ),
    tag: list[str] = typer.Option([], "--tag", "-t", help="Tag (repeatable)"),
    skip_existing: bool = typer.Option(
        False, help="Skip files already catalogued instead of refusing the whole call"
    ),
) -> None:
    """Add documents. All files are checked first; if any is refused, none is added.

    A PDF is stored as the original file and its text is extracted; it must have a text layer
    (OCR scanned PDFs first) and no password.

    Example: viz documents add papers/*.txt --owner ai2 --licence CC-BY-4.0
    --attribution "Dasigi et al. 2021, QASPER" --tag nlp

    Example: viz documents add thesis.pdf --owner ada --licence CC-BY-4.0 --tag nlp
    """
    settings = state(context).settings
    details = DocumentInput(licence, attribution, ai_training, ai_inference, tuple(tag))
    with session(context) as database:
        added, skipped = add_documents(
            database,
            settings.blobs_dir,
            get_account(database, owner),
            paths,
            details,
            document_bytes_max=settings.document_bytes_max,
            documents_max=settings.documents_per_add_max,
            skip_existing=skip_existing,
        )
        for document in added:
            typer.echo(
                f"added document {document.id}: {document.filename} "
                f"({document.size_bytes} bytes, {document.licence})"
            )
        for document in skipped:
            typer.echo(f"skipped {document.filename}: already document {document.id}")
        typer.echo(f"{len(added)} added, {len(skipped)} skipped", err=True)


@app.command("list")
def list_(
    context: typer.Context,
    owner: str | None = typer.Option(None, help="Only this account's documents"),
    tag: str | None = typer.Option(None, help="Only documents with this tag"),
) -> None:
    """List documents.

    Example: viz documents list --owner ai2 --tag nlp
    """
    with session(context) as database:
        account = get_account(database, owner) if owner else None
        rows = [
            [
                str(d.id),
                d.owner.name,
                d.licence,
                str(d.size_bytes),
                ",".join(t.tag for t in d.tags),
                d.title[:60],
            ]
            for d in list_documents(database, owner=account, tag=tag)
        ]
    typer.echo(
        table(rows, ["id", "owner", "licence", "bytes", "tags", "title"])
        if rows
        else "no documents; add some with: viz documents add FILE --owner NAME --licence SPDX"
    )


@app.command("show")
def show(
    context: typer.Context,
    document_id: int = typer.Argument(..., help="Document id"),
    text: bool = typer.Option(False, "--text", help="Print the document's text too"),
) -> None:
    """Show a document's record (and its text, verified against its hash).

    Example: viz documents show 1 --text
    """
    settings = state(context).settings
    with session(context) as database:
        document = get_document(database, document_id)
        fields = {
            "document": str(document.id),
            "title": document.title,
            "file": document.filename,
            "owner": document.owner.name,
            "licence": document.licence,
            "attribution": document.attribution or "-",
            "ai_training": document.ai_training,
            "ai_inference": document.ai_inference,
            "sha256": document.sha256,
            "bytes": str(document.size_bytes),
            "type": document.media_type,
            "tags": ", ".join(t.tag for t in document.tags) or "-",
            "added": f"{document.created_at:%Y-%m-%d %H:%M:%S}",
        }
        for name, value in fields.items():
            typer.echo(f"{name + ':':13} {value}")
        if text:
            typer.echo("")
            typer.echo(read_text(settings.blobs_dir, document))
