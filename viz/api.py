"""The Python API: what the `viz` command does, callable from a program.

    from viz.api import generate
    stream = generate("What is QLoRA?", max_tokens=64)
    for piece in stream:
        print(piece, end="", flush=True)
    print(stream.finish_reason, stream.completion_tokens)

Loaded models are kept per (data folder, model, precision) for the life of the process.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from viz.config import Settings
from viz.models.generate import GenerationSettings, TokenStream, generate_text
from viz.models.loading import LoadedModel, load_model
from viz.models.registry import get_base_model
from viz.rag.answer import Answer, RagSettings, Retrieval, answer_question, retrieve
from viz.rag.collection import Collection, collection_folder, open_collection
from viz.rag.embed import Embedder, load_embedder
from viz.rag.ingest import allowed_for_inference
from viz.rag.rerank import load_reranker
from viz.rag.search import check_query
from viz.routing.options import RouteRequest
from viz.routing.recommend import Recommendation, recommend
from viz.routing.speed import load_calibration
from viz.store.database import open_database, session_scope

__all__ = [
    "ask",
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
    return _load(
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
    settings: Settings | None = None,
) -> Answer:
    """Answer `question` from collection `collection` with numbered, cited sources.

    `candidates` = 0 skips reranking (the first stage's top `top_k` are the sources).

    Raises:
        NotFound: no such collection, model or reranker.
        InvalidInput: bad k / candidates / mode, an empty question or collection.
    """
    settings = settings or Settings()
    options = RagSettings(top_k=top_k, candidates=candidates, mode=mode)
    options.check()
    check_query(question)
    index = open_collection(collection_folder(settings.home, collection))
    try:
        loaded = load_base(model, precision=precision, settings=settings)
        engine = open_database(settings.database_url_resolved)
        try:
            retrieval = retrieve_from_catalogue(
                index, question, options, engine, settings, reranker=reranker, llm=loaded
            )
        finally:
            engine.dispose()
        return answer_question(
            loaded.model,
            loaded.tokenizer,
            question,
            retrieval,
            max_tokens=max_tokens,
            prompt_tokens_max=settings.prompt_tokens_max,
        )
    finally:
        index.close()


def retrieve_from_catalogue(
    collection: Collection,
    question: str,
    options: RagSettings,
    database: Engine,
    settings: Settings,
    *,
    reranker: str,
    llm: LoadedModel | None = None,
    paths: bool = True,
) -> Retrieval:
    """Retrieve (and rerank, if `options.candidates`) with the process's cached embedder and
    reranker, dropping documents the catalogue no longer allows for inference."""
    embedder = load_embedder_cached() if options.mode != "lexical" else None
    scorer = (
        load_reranker_cached(reranker, settings, llm, paths=paths) if options.candidates else None
    )
    with session_scope(database) as session:
        return retrieve(
            collection,
            question,
            options,
            embedder=embedder,
            reranker=scorer,
            allowed=lambda ids: allowed_for_inference(session, ids),
        )


@cache
def load_embedder_cached() -> Embedder:
    """The default embedder, loaded once per process."""
    return load_embedder()


def load_reranker_cached(
    spec: str, settings: Settings, llm: LoadedModel | None = None, *, paths: bool = True
) -> Any:
    """A reranker by name, path (if `paths`) or `llm` (scoring with `llm`), loaded once per
    process."""
    key = (str(settings.home.resolve()), spec, id(llm) if spec == "llm" else 0, paths)
    if key not in _RERANKERS:
        _RERANKERS[key] = load_reranker(spec, settings.home, llm=llm, paths=paths)
    return _RERANKERS[key]


_RERANKERS: dict[tuple[str, str, int, bool], Any] = {}


@cache
def _load(database_url: str, models_dir: Path, model_id: str, precision: str) -> LoadedModel:
    engine = open_database(database_url)
    try:
        with session_scope(engine) as session:
            record = get_base_model(session, model_id)
    finally:
        engine.dispose()
    return load_model(record, models_dir, precision=precision)


def recommend_route(
    session: Any, settings: Settings, request: RouteRequest, *, caller: Any = None
) -> Recommendation:
    """The recommender with this process's embedder and this machine's cached calibration."""
    return recommend(
        session,
        request,
        embedder=load_embedder_cached(),
        calibration=load_calibration(settings.home),
        blobs_dir=settings.blobs_dir,
        models_dir=settings.models_dir,
        default_base=settings.default_base_model,
        caller=caller,
    )
