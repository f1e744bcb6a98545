"""Retrieval-augmented generation: documents chunked (`chunking`) and embedded (`embed`) into
collections on disk (`collection`, with their vectors in `vectors`), searched lexically, densely
or both (`search`), reranked (`rerank`), and grounded answers that cite, and pay for, their
sources (`answer`; `citations` parses which sources an answer cites, so which get paid).
`ingest` indexes catalogued documents whose licence allows it; `cache` keeps the process's
embedder and rerankers loaded."""

from viz.rag.answer import (
    CANNOT_FIND,
    Answer,
    RagSettings,
    Retrieval,
    Source,
    answer_question,
    cite,
    grounded_messages,
    retrieve,
)
from viz.rag.chunking import Chunk, check_sizes, chunk_by_characters, chunk_by_tokens
from viz.rag.citations import CANNOT_FIND_PHRASES, parse_citations, says_cannot_find
from viz.rag.embed import Embedder, default_embedder_folder, load_embedder
from viz.rag.ingest import IngestReport, Selection, allowed_for_inference, index_catalogue
from viz.rag.rerank import (
    DEFAULT_RERANKER,
    CrossEncoder,
    LLMScorer,
    Reranker,
    load_cross_encoder,
    load_reranker,
    rerank,
    reranker_folder,
)
from viz.rag.rerank_train import TrainingSettings, train_cross_encoder
from viz.rag.search import (
    MODES,
    Hit,
    IndexedChunk,
    bm25_order,
    check_query,
    reciprocal_rank_fusion,
    search,
)
from viz.rag.vectors import VectorFile

__all__ = [
    "CANNOT_FIND_PHRASES",
    "CANNOT_FIND",
    "DEFAULT_RERANKER",
    "MODES",
    "AddReport",
    "Answer",
    "Chunk",
    "Collection",
    "CollectionSettings",
    "CrossEncoder",
    "Embedder",
    "Hit",
    "IndexedChunk",
    "IngestReport",
    "LLMScorer",
    "RagSettings",
    "Reranker",
    "Retrieval",
    "Selection",
    "Source",
    "SourceDocument",
    "TrainingSettings",
    "VectorFile",
    "allowed_for_inference",
    "answer_question",
    "bm25_order",
    "check_query",
    "check_sizes",
    "chunk_by_characters",
    "chunk_by_tokens",
    "cite",
    "collection_folder",
    "create_collection",
    "default_embedder_folder",
    "grounded_messages",
    "index_catalogue",
    "list_collections",
    "load_cross_encoder",
    "load_embedder",
    "parse_citations",
    "says_cannot_find",
    "load_reranker",
    "open_collection",
    "reciprocal_rank_fusion",
    "rerank",
    "reranker_folder",
    "retrieve",
    "search",
    "train_cross_encoder",
]
