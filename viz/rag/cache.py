"""The process's loaded embedder and rerankers, and retrieval over the catalogue with them.

Loading an embedder or a reranker takes seconds; the API server, the pages, the CLI and the
evaluations each load one per process through these functions (`viz.api` re-exports them).
"""

from __future__ import annotations

from functools import cache
from typing import Any

from sqlalchemy import Engine

from viz.config import Settings
from viz.rag.answer import RagSettings, Retrieval, retrieve
from viz.rag.collection import Collection
from viz.rag.embed import Embedder, load_embedder
from viz.rag.ingest import allowed_for_inference
from viz.rag.rerank import load_reranker
from viz.store.database import session_scope

__all__ = ["load_embedder_cached", "load_reranker_cached", "retrieve_from_catalogue"]


@cache
def load_embedder_cached() -> Embedder:
    """The default embedder, loaded once per process."""
    return load_embedder()


def load_reranker_cached(
    spec: str, settings: Settings, llm: Any = None, *, paths: bool = True
) -> Any:
    """A reranker by name, path (if `paths`) or `llm` (scoring with `llm`, a LoadedModel),
    loaded once per process."""
    key = (str(settings.home.resolve()), spec, id(llm) if spec == "llm" else 0, paths)
    if key not in _RERANKERS:
        _RERANKERS[key] = load_reranker(spec, settings.home, llm=llm, paths=paths)
    return _RERANKERS[key]


_RERANKERS: dict[tuple[str, str, int, bool], Any] = {}


def retrieve_from_catalogue(
    collection: Collection,
    question: str,
    options: RagSettings,
    database: Engine,
    settings: Settings,
    *,
    reranker: str,
    llm: Any = None,
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
