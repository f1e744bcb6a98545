"""`viz rag` (collections, search, the reranker) and `viz ask` (a grounded, cited answer)."""

from __future__ import annotations

from pathlib import Path

import typer
from tqdm.auto import tqdm

from viz.api import ask as ask_api
from viz.api import load_embedder_cached
from viz.cli._context import session, state, table
from viz.errors import InvalidInput
from viz.rag.collection import (
    NAME_PATTERN,
    CollectionSettings,
    collection_folder,
    list_collections,
    open_collection,
)
from viz.rag.ingest import Selection, index_catalogue
from viz.rag.rerank import reranker_folder
from viz.rag.rerank_train import TrainingSettings, train_cross_encoder

app = typer.Typer(
    help="Retrieval: index catalogued documents, search them, train the reranker.\n\n"
    "Example: viz rag index papers --documents all --chunk-chars 1200"
)


@app.command("index")
def index(
    context: typer.Context,
    collection: str = typer.Argument(..., help="Collection name, e.g. papers"),
    documents: str = typer.Option(
        "", "--documents", "-d", help="Document ids (1,2,3) or 'all'; or use --tag / --owner"
    ),
    tag: str | None = typer.Option(None, help="Only documents with this tag"),
    owner: str | None = typer.Option(None, help="Only documents of this account"),
    chunk_chars: int | None = typer.Option(
        None, help="Chunk size in characters (default 1200; whole sentences, paragraph ends)"
    ),
    chunk_tokens: int | None = typer.Option(
        None, help="Chunk size in embedder tokens instead of characters"
    ),
    overlap: int = typer.Option(0, help="Overlap between chunks (same unit as the size)"),
) -> None:
    """Chunk, embed and index catalogued documents that allow ai_inference (the others are
    skipped and listed). Adding to an existing collection only indexes what is new.

    Example: viz rag index papers --documents all --chunk-chars 1200
    """
    if chunk_chars and chunk_tokens:
        raise InvalidInput("give --chunk-chars or --chunk-tokens, not both")
    chunking = (
        CollectionSettings("tokens", chunk_tokens, overlap)
        if chunk_tokens
        else CollectionSettings("chars", chunk_chars or 1200, overlap)
    )
    selection = Selection(_ids(documents), tag, owner, documents.strip() == "all")
    settings = state(context).settings
    with (
        session(context) as database,
        tqdm(desc=f"indexing {collection}", unit=" chunks", leave=False) as bar,
    ):

        def progress(done: int) -> None:
            bar.update(done - bar.n)

        report = index_catalogue(
            database,
            collection,
            selection,
            home=settings.home,
            blobs_dir=settings.blobs_dir,
            embedder=load_embedder_cached,
            chunking=chunking,
            progress=progress,
        )
    added = report.added
    typer.echo(
        f"{collection}: {len(added.added)} added, {len(added.replaced)} replaced, "
        f"{len(added.unchanged)} unchanged; {added.chunks} chunks embedded"
    )
    for document_id, why in report.skipped:
        typer.echo(f"skipped document {document_id}: {why}")


@app.command("list")
def list_(context: typer.Context) -> None:
    """Collections with their chunking, documents and chunks.

    Example: viz rag list
    """
    home = state(context).settings.home
    rows = []
    for name in list_collections(home):
        collection = open_collection(collection_folder(home, name))
        try:
            s = collection.settings
            rows.append(
                [
                    name,
                    f"{s.size} {s.unit}, overlap {s.overlap}",
                    str(len(collection.documents())),
                    str(collection.chunk_count()),
                ]
            )
        finally:
            collection.close()
    if not rows:
        typer.echo("no collections; build one with: viz rag index papers --documents all")
        return
    typer.echo(table(rows, ["collection", "chunks of", "documents", "chunks"]))


@app.command("search")
def search(
    context: typer.Context,
    collection: str = typer.Argument(..., help="Collection name"),
    query: str = typer.Argument(..., help="What to look for"),
    k: int = typer.Option(5, "--k", "-k", help="How many chunks"),
    mode: str = typer.Option("hybrid", help="lexical (BM25) | dense | hybrid (RRF)"),
) -> None:
    """Show the chunks the first stage retrieves (no reranking, no model).

    Example: viz rag search papers "How much memory does QLoRA save?" --mode lexical
    """
    index_ = open_collection(collection_folder(state(context).settings.home, collection))
    try:
        embedder = None if mode == "lexical" else load_embedder_cached()
        hits = index_.search(query, k=k, mode=mode, embedder=embedder)
        titles = {d["key"]: d["title"] for d in index_.documents({h.chunk.key for h in hits})}
    finally:
        index_.close()
    for hit in hits:
        snippet = " ".join(hit.chunk.text.split())[:160]
        typer.echo(f"{hit.rank}. {hit.score:.4f}  {titles[hit.chunk.key]} #{hit.chunk.ordinal}")
        typer.echo(f"   {snippet}")


@app.command("train-reranker")
def train_reranker(
    context: typer.Context,
    data: Path = typer.Option(
        ..., help="A QASPER-format folder (questions.json + papers/), e.g. qasper-train"
    ),
    name: str = typer.Option("minilm-qasper", help="Saved as VIZ_HOME/rerankers/NAME"),
    steps: int = typer.Option(500, help="Optimiser steps (16 pairs each)"),
    seed: int = typer.Option(0, help="Random seed: same seed and data, same reranker"),
    layers: int = typer.Option(1, help="MiniLM layers kept (1-6): fewer is faster"),
    max_tokens: int = typer.Option(128, help="Question + chunk tokens seen"),
    teacher: str | None = typer.Option(
        None,
        help="Distil from this trained reranker (a name in VIZ_HOME/rerankers or a folder), "
        "starting from its first layers",
    ),
) -> None:
    """Fine-tune a cross-encoder reranker from the shipped MiniLM on (question, gold chunk,
    BM25 hard negatives) triples. About 2 minutes on 2 CPU cores with the defaults; it reranks
    50 candidates in under 150 ms there (int8, or bf16 where the CPU has it).

    Example: viz rag train-reranker --data ../shared/data/qasper-train --steps 400 --seed 0

    Distilled from a 3-layer teacher:

    Example: viz rag train-reranker --data ../shared/data/qasper-train --layers 3 --max-tokens
    256 --name ce3 && viz rag train-reranker --data ../shared/data/qasper-train --teacher ce3
    """
    if not NAME_PATTERN.match(name):
        raise InvalidInput(f"reranker name {name!r} must be lowercase letters, digits, . _ -")
    home = state(context).settings.home
    if teacher is not None and not Path(teacher).is_dir():
        teacher = str(reranker_folder(home, teacher))
    settings = TrainingSettings(
        seed=seed, steps=steps, layers=layers, max_tokens=max_tokens, teacher=teacher
    )
    settings.check()
    out = reranker_folder(home, name)
    with tqdm(total=steps, desc=f"training {name}", unit=" steps") as bar:

        def progress(step: int, loss: float) -> None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}")

        manifest = train_cross_encoder(data, out, settings, progress=progress)
    typer.echo(
        f"saved {out} ({manifest['examples']} questions, loss {manifest['loss_first']} -> "
        f"{manifest['loss_last']}, {manifest['seconds']} s)"
    )


def ask(
    context: typer.Context,
    question: str = typer.Argument(..., help="The question"),
    collection: str = typer.Option(..., "--collection", "-c", help="Collection to search"),
    top_k: int = typer.Option(5, help="Sources given to the model"),
    rerank: int = typer.Option(20, help="Candidates to rerank (0: no reranking)"),
    reranker: str = typer.Option(
        "default", help="Trained reranker name, a cross-encoder folder, or 'llm'"
    ),
    mode: str = typer.Option("hybrid", help="First stage: lexical | dense | hybrid"),
    model: str | None = typer.Option(None, "--model", "-m", help="Base model id"),
    max_tokens: int = typer.Option(128, help="Most tokens in the answer"),
    reader: str = typer.Option(
        "default",
        help="Reader adapter merged into the base: default (the published VIZ_RAG_READER for "
        "this base, if any), none, or an adapter's name or folder",
    ),
) -> None:
    """Answer from a collection's documents, citing them as [n], then list the sources with
    their licence and attribution. Says so when the sources do not hold the answer.

    Example: viz ask "What does QLoRA quantise the base model to?" --collection papers
    """
    answer = ask_api(
        question,
        collection=collection,
        top_k=top_k,
        candidates=rerank,
        mode=mode,
        reranker=reranker,
        model=model,
        max_tokens=max_tokens,
        reader=reader,
        settings=state(context).settings,
    )
    typer.echo(answer.text)
    if answer.note:
        typer.echo(f"\nnote: {answer.note}", err=True)
    if not answer.sources:
        return
    typer.echo("\nSources:")
    for source in answer.sources:
        mark = "*" if source.number in answer.cited else " "
        document = f"document {source.document_id}" if source.document_id else source.hit.chunk.key
        typer.echo(
            f"{mark}[{source.number}] {source.title} ({document}, {source.licence}) "
            f"{source.attribution}".rstrip()
        )
    typer.echo(
        f"\n* cited ({answer.citation_mode}); {answer.prompt_tokens} prompt tokens; retrieve "
        f"{answer.retrieve_ms:.0f} ms, rerank {answer.rerank_ms:.0f} ms, generate "
        f"{answer.generate_ms:.0f} ms",
        err=True,
    )


def _ids(documents: str) -> tuple[int, ...]:
    text = documents.strip()
    if not text or text == "all":
        return ()
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError as error:
        raise InvalidInput(
            f"--documents {documents!r} must be document ids such as 1,2,3 or 'all'"
        ) from error
