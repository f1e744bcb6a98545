"""Retrieval-augmented generation: chunking and indexing documents, retrieval, reranking and
grounded answers with paid citations (`citations` parses which sources an answer cites)."""

from viz.rag.chunking import Chunk, check_sizes, chunk_by_characters, chunk_by_tokens
from viz.rag.citations import CANNOT_FIND_PHRASES, parse_citations, says_cannot_find
from viz.rag.embed import Embedder, default_embedder_folder, load_embedder

__all__ = [
    "CANNOT_FIND_PHRASES",
    "Chunk",
    "Embedder",
    "check_sizes",
    "chunk_by_characters",
    "chunk_by_tokens",
    "default_embedder_folder",
    "load_embedder",
    "parse_citations",
    "says_cannot_find",
]
