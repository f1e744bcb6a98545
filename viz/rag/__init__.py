"""Retrieval-augmented generation: chunking and indexing documents, retrieval, reranking and
grounded answers with paid citations (being built: chunking and the embedder first)."""

from viz.rag.chunking import Chunk, check_sizes, chunk_by_characters, chunk_by_tokens
from viz.rag.embed import Embedder, default_embedder_folder, load_embedder

__all__ = [
    "Chunk",
    "Embedder",
    "check_sizes",
    "chunk_by_characters",
    "chunk_by_tokens",
    "default_embedder_folder",
    "load_embedder",
]
