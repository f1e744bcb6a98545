"""Search: what a hit is, the query limits, and the rankings a collection combines.

Search is lexical (BM25 through SQLite FTS5: Okapi BM25, k1 = 1.2, b = 0.75, with the Porter
stemmer), dense (cosine, brute force over unit-length vectors) or hybrid, by reciprocal rank
fusion of the two (Cormack et al. 2009, k = 60). The collection (`viz.rag.collection`) owns the
tables and the vectors; this module checks a query, ranks, and fuses:

    hits = search(collection, "How does QLoRA save memory?", k=5, mode="hybrid",
                  embedder=embedder)                   # what Collection.search runs
    fused = reciprocal_rank_fusion([lexical_hits, dense_hits], k=5)
    order = bm25_order(texts, question, k=40)          # a one-off in-memory BM25 ranking
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from viz.errors import InvalidInput, LimitExceeded
from viz.rag.embed import Embedder

__all__ = [
    "K_MAX",
    "MODES",
    "QUERY_CHARS_MAX",
    "RRF_K",
    "Hit",
    "IndexedChunk",
    "Searchable",
    "bm25_order",
    "check_k",
    "check_query",
    "dense_rows",
    "lexical_rows",
    "match_expression",
    "reciprocal_rank_fusion",
    "search",
]

MODES = ("lexical", "dense", "hybrid")
RRF_K = 60
K_MAX = 1000
QUERY_CHARS_MAX = 4000
QUERY_TERMS_MAX = 64
_WORD = re.compile(r"\w+", re.UNICODE)


@dataclass(frozen=True)
class IndexedChunk:
    id: int
    key: str
    ordinal: int
    start: int
    end: int
    text: str


@dataclass(frozen=True)
class Hit:
    chunk: IndexedChunk
    score: float
    rank: int  # 1-based


class Searchable(Protocol):
    """What `search` needs of a collection (`viz.rag.collection.Collection` is one)."""

    name: str

    def refresh(self) -> None: ...

    def chunk_count(self) -> int: ...

    def lexical(self, query: str, k: int, keys: set[str] | None = None) -> list[Hit]: ...

    def dense(self, vector: np.ndarray, k: int, keys: set[str] | None = None) -> list[Hit]: ...


def search(
    collection: Searchable,
    query: str,
    *,
    k: int,
    mode: str = "hybrid",
    embedder: Embedder | None = None,
    keys: Iterable[str] | None = None,
    depth: int | None = None,
) -> list[Hit]:
    """The best `k` chunks of `collection` for `query`, best first. `keys` limits the documents
    searched. Hybrid fuses the lexical and dense top `depth` (default max(k, 50)) by RRF.

    Raises:
        InvalidInput: an empty query, a bad k or mode, an empty collection.
    """
    check_query(query)
    check_k(k)
    collection.refresh()
    if mode not in MODES:
        raise InvalidInput(f"search mode {mode!r} must be one of {', '.join(MODES)}")
    total = collection.chunk_count()
    name = collection.name
    if total == 0:
        raise InvalidInput(
            f"collection {name!r} is empty; add documents with: viz rag index "
            f"{name} --documents ..."
        )
    if k > total:
        raise InvalidInput(
            f"k = {k} is more than the {total} chunks in collection {name!r}; ask for "
            f"at most {total}"
        )
    key_set = None if keys is None else set(keys)
    if mode == "lexical":
        return collection.lexical(query, k, key_set)
    if embedder is None:
        raise InvalidInput(f"{mode} search needs the embedder")
    vector = embedder.encode([query])[0].numpy()
    if mode == "dense":
        return collection.dense(vector, k, key_set)
    depth = max(k, depth or 50)
    return reciprocal_rank_fusion(
        [collection.lexical(query, depth, key_set), collection.dense(vector, depth, key_set)], k
    )


def lexical_rows(
    connection: sqlite3.Connection, query: str, k: int, keys: set[str] | None = None
) -> list[tuple[int, float]]:
    """(chunk id, BM25 score) of the best `k` chunks in a collection's `chunks_fts` table, any
    query word matching, best first."""
    match = match_expression(query)
    if not match:
        return []
    sql = "SELECT rowid, -bm25(chunks_fts) AS score, key FROM chunks_fts WHERE chunks_fts MATCH ?"
    arguments: list[Any] = [match]
    if keys is not None:
        if not keys:
            return []
        sql += f" AND key IN ({','.join('?' * len(keys))})"
        arguments.extend(sorted(keys))
    sql += " ORDER BY bm25(chunks_fts) LIMIT ?"
    arguments.append(k)
    rows = connection.execute(sql, arguments).fetchall()
    return [(row[0], float(row[1])) for row in rows]


def dense_rows(
    matrix: Callable[[], np.ndarray],
    ids: np.ndarray,
    rows: np.ndarray,
    chunk_keys: list[str],
    vector: np.ndarray,
    k: int,
    keys: set[str] | None = None,
) -> list[tuple[int, float]]:
    """(chunk id, cosine) of the best `k` chunks, best first (ties by chunk order). Chunk
    `ids[i]` (of document `chunk_keys[i]`) has its unit vector in row `rows[i]` of `matrix()`,
    which is read only when some chunk is searched."""
    if len(ids) == 0:
        return []
    if keys is not None:
        keep = np.fromiter((key in keys for key in chunk_keys), bool, len(chunk_keys))
        ids, rows = ids[keep], rows[keep]
        if len(ids) == 0:
            return []
    scores = matrix()[rows] @ vector.astype(np.float32)
    top = np.argsort(-scores, kind="stable")[:k]
    return [(int(ids[i]), float(scores[i])) for i in top]


def check_query(query: str) -> None:
    """Raise InvalidInput for an empty question, LimitExceeded for one over the limit."""
    if not isinstance(query, str) or not query.strip():
        raise InvalidInput("the question is empty; ask something")
    if len(query) > QUERY_CHARS_MAX:
        raise LimitExceeded(f"the question is {len(query)} characters; at most {QUERY_CHARS_MAX}")


def check_k(k: int) -> None:
    """Raise InvalidInput unless `k` is an integer 1..K_MAX."""
    if isinstance(k, bool) or not isinstance(k, int) or not 0 < k <= K_MAX:
        raise InvalidInput(f"k = {k!r} must be an integer 1..{K_MAX}")


def match_expression(query: str) -> str:
    """An FTS5 query matching any of the query's words (each quoted, so none is an operator)."""
    terms = list(dict.fromkeys(w.lower() for w in _WORD.findall(query)))[:QUERY_TERMS_MAX]
    return " OR ".join('"' + t.replace('"', "") + '"' for t in terms)


def reciprocal_rank_fusion(rankings: list[list[Hit]], k: int, *, rrf_k: int = RRF_K) -> list[Hit]:
    """Fuse rankings: score(chunk) = sum over rankings of 1 / (rrf_k + rank)."""
    scores: dict[int, float] = {}
    chunks: dict[int, IndexedChunk] = {}
    for ranking in rankings:
        for hit in ranking:
            scores[hit.chunk.id] = scores.get(hit.chunk.id, 0.0) + 1.0 / (rrf_k + hit.rank)
            chunks[hit.chunk.id] = hit.chunk
    order = sorted(scores, key=lambda id_: (-scores[id_], id_))[:k]
    return [Hit(chunks[id_], scores[id_], rank) for rank, id_ in enumerate(order, 1)]


def bm25_order(texts: list[str], query: str, k: int) -> list[int]:
    """Indices of the `k` texts BM25 ranks best for `query` (an in-memory FTS5 table), for
    one-off rankings such as mining hard negatives."""
    connection = sqlite3.connect(":memory:")
    try:
        connection.execute("CREATE VIRTUAL TABLE t USING fts5(text, tokenize='porter unicode61')")
        connection.executemany(
            "INSERT INTO t (rowid, text) VALUES (?, ?)", [(i + 1, t) for i, t in enumerate(texts)]
        )
        match = match_expression(query)
        if not match:
            return []
        rows = connection.execute(
            "SELECT rowid FROM t WHERE t MATCH ? ORDER BY bm25(t) LIMIT ?", (match, k)
        ).fetchall()
        return [row[0] - 1 for row in rows]
    finally:
        connection.close()
