"""Retrieval-augmented generation: chunking and indexing documents, retrieval, reranking and
grounded answers with paid citations (being built: chunking first)."""

from viz.rag.chunking import Chunk, check_sizes, chunk_by_characters, chunk_by_tokens

__all__ = ["Chunk", "check_sizes", "chunk_by_characters", "chunk_by_tokens"]
