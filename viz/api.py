"""The Python API: what the `viz` command does, callable from a program.

    from viz.api import generate
    stream = generate("What is QLoRA?", max_tokens=64)
    for piece in stream:
        print(piece, end="", flush=True)
    print(stream.finish_reason, stream.completion_tokens)

Loaded models are kept per (data folder, model, precision) for the life of the process
(`viz.models.loading.load_base_cached`); the embedder, rerankers and catalogue retrieval are
those of `viz.rag.cache`, the recommender that of `viz.routing.route`, re-exported here.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from viz.config import Settings
from viz.errors import NotFound
from viz.market.hierarchy import newest_approved
from viz.market.merge import materialise_version
from viz.models.generate import GenerationSettings, TokenStream, generate_text
from viz.models.loading import LoadedModel, load_base_cached
from viz.rag.answer import Answer, RagSettings, answer_question
from viz.rag.cache import load_embedder_cached, load_reranker_cached, retrieve_from_catalogue
from viz.rag.collection import collection_folder, open_collection
from viz.rag.rerank import DEFAULT_RERANKER, reranker_folder
from viz.rag.search import check_query
from viz.routing.route import recommend_route
from viz.store.database import open_database, session_scope
from viz.store.schema import Adapter
from viz.training.reader import reader_folder, with_reader

__all__ = [
    "ask",
    "find_reader",
    "generate",
    "load_base",
    "load_embedder_cached",
    "load_reranker_cached",
    "recommend_route",
    "retrieve_from_catalogue",
]


def load_base(
    model_id: str | None = None, *, precision: str = "fp32", settings: Settings | None = None
) -> LoadedModel:
    """Load a registered base model (the default one if `model_id` is None), cached in-process."""
    settings = settings or Settings()
    return load_base_cached(
        settings.database_url_resolved,
        settings.models_dir.resolve(),
        model_id or settings.default_base_model,
        precision,
    )


def generate(
    question: str,
    *,
    model: str | None = None,
    system: str | None = None,
    max_tokens: int = 256,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int | None = None,
    stop: tuple[str, ...] = (),
    precision: str = "fp32",
    settings: Settings | None = None,
) -> TokenStream:
    """Answer `question` with a base model; iterate the result to stream the text.

    Raises:
        InvalidInput, LimitExceeded: bad sampling options, or a prompt or answer over the limits.
        NotFound: unknown model id (the message lists the known ones).
    """
    settings = settings or Settings()
    options = GenerationSettings(max_tokens, temperature, top_p, seed, tuple(stop))
    options.check(max_tokens_limit=settings.generate_tokens_max)
    loaded = load_base(model, precision=precision, settings=settings)
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": question})
    return generate_text(
        loaded.model,
        loaded.tokenizer,
        messages,
        options,
        prompt_tokens_max=settings.prompt_tokens_max,
        max_tokens_limit=settings.generate_tokens_max,
    )


def ask(
    question: str,
    *,
    collection: str,
    top_k: int = 5,
    candidates: int = 20,
    mode: str = "hybrid",
    reranker: str = "default",
    model: str | None = None,
    max_tokens: int = 128,
    precision: str = "fp32",
    reader: str = "default",
    settings: Settings | None = None,
) -> Answer:
    """Answer `question` from collection `collection` with numbered, cited sources.

    `reader` is the grounded reader adapter merged into the base: "default" (VIZ_RAG_READER,
    when the catalogue publishes it for this base, else the adapter of that name trained in
    VIZ_HOME/adapters, else none), "none", or an adapter's name or folder.

    `candidates` = 0 skips reranking (the first stage's top `top_k` are the sources).

    Raises:
        NotFound: no such collection, model or reranker.
        InvalidInput: bad k / candidates / mode, an empty question or collection.
    """
    settings = settings or Settings()
    options = RagSettings(top_k=top_k, candidates=candidates, mode=mode)
    options.check()
    check_query(question)
    note = None
    default = reranker_folder(settings.home, DEFAULT_RERANKER)
    if reranker == "default" and candidates and not default.is_dir():
        options = RagSettings(top_k=top_k, candidates=0, mode=mode)  # a fresh home
        note = (
            f"no reranker is trained yet, so this was answered from {mode} retrieval alone; "
            f"train the default one with: viz rag train-reranker --name {DEFAULT_RERANKER}"
        )
    index = open_collection(collection_folder(settings.home, collection))
    try:
        loaded = load_base(model, precision=precision, settings=settings)
        engine = open_database(settings.database_url_resolved)
        try:
            retrieval = retrieve_from_catalogue(
                index, question, options, engine, settings, reranker=reranker, llm=loaded
            )
            with session_scope(engine) as session:
                folder = find_reader(session, settings, loaded.model_id, reader)
        finally:
            engine.dispose()
        if folder is not None:
            loaded = _merged_reader(loaded, folder)
        answer = answer_question(
            loaded.model,
            loaded.tokenizer,
            question,
            retrieval,
            max_tokens=max_tokens,
            prompt_tokens_max=settings.prompt_tokens_max,
        )
        return replace(answer, note=note)
    finally:
        index.close()


_MERGED: dict[tuple[str, str, str], LoadedModel] = {}


def _merged_reader(loaded: LoadedModel, folder: Path) -> LoadedModel:
    """The base with the reader merged, kept for the next question (one per reader)."""
    key = (loaded.model_id, loaded.precision, str(folder.resolve()))
    if key not in _MERGED:
        _MERGED.clear()  # one merged copy at a time: each is a whole model
        _MERGED[key] = with_reader(loaded, folder)
    return _MERGED[key]


def find_reader(session: Session, settings: Settings, base_id: str, reader: str) -> Path | None:
    """The reader adapter folder `ask` merges: the version of VIZ_RAG_READER (or the named
    adapter) a request would get for `base_id` (`newest_approved`), written once from its blobs
    to VIZ_HOME/cache/readers; else that adapter trained in VIZ_HOME/adapters; else None for
    "default". A folder path names itself.

    Raises:
        NotFound: a named reader found nowhere.
    """
    name = settings.rag_reader if reader == "default" else reader
    if reader == "none" or not name:
        return None
    adapter = session.scalar(select(Adapter).where(Adapter.name == name))
    version = newest_approved(adapter) if adapter is not None else None
    if adapter is not None and adapter.base_id == base_id and version is not None:
        folder = settings.home / "cache" / "readers" / version.weights_sha256[:16]
        if not folder.is_dir():
            staging = folder.with_name(f".{folder.name}.writing")
            shutil.rmtree(staging, ignore_errors=True)
            materialise_version(settings.blobs_dir, version, staging).rename(folder)
        return folder
    try:
        return reader_folder(settings.adapters_dir, name)
    except NotFound:
        if reader == "default":
            return None
        raise
