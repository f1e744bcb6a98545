"""Collections: a lexical (BM25) and a dense index over chunked documents, kept on disk and
grown incrementally.

A collection is a folder, `VIZ_HOME/rag/<name>/`, holding

- `index.sqlite`: the settings it was built with, one row per document (key, content hash,
  title, licence, attribution), one row per chunk (offsets and text), and an SQLite FTS5 table
  over the chunks, whose `bm25()` ranks the lexical hits (Okapi BM25, k1 = 1.2, b = 0.75, with
  the Porter stemmer);
- `vectors.f32`: the chunks' unit-length embeddings, float32, one row each, append-only.

Adding documents embeds and inserts only what is new: a document already indexed with the same
content hash is skipped, a changed one has its chunks replaced. Vectors are appended and flushed
before the SQLite transaction that records how many rows are valid commits, so a crash between
the two leaves rows past that count, which the next open cuts off.

Search is lexical, dense (cosine, brute force over the vectors) or hybrid, by reciprocal rank
fusion of the two (Cormack et al. 2009, k = 60). Any of them can be limited to some documents.

    collection = create_collection(folder, chunk_chars=1200, overlap=200)
    collection.add([SourceDocument("doc:1", "QLoRA", text, licence="CC-BY-4.0")], embedder)
    hits = collection.search("How much memory does QLoRA save?", k=5, mode="hybrid",
                             embedder=embedder)
"""

from __future__ import annotations

import hashlib
import os
import re
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from viz.errors import Conflict, InvalidInput, LimitExceeded, NotFound, StorageCorrupt
from viz.rag.chunking import Chunk, check_sizes, chunk_by_characters, chunk_by_tokens
from viz.rag.embed import Embedder

__all__ = [
    "MODES",
    "Collection",
    "CollectionSettings",
    "Hit",
    "IndexedChunk",
    "SourceDocument",
    "bm25_order",
    "check_query",
    "collection_folder",
    "create_collection",
    "list_collections",
    "open_collection",
    "reciprocal_rank_fusion",
]

MODES = ("lexical", "dense", "hybrid")
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
RRF_K = 60
K_MAX = 1000
QUERY_CHARS_MAX = 4000
QUERY_TERMS_MAX = 64
_WORD = re.compile(r"\w+", re.UNICODE)
_SCHEMA = """
CREATE TABLE IF NOT EXISTS settings (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS documents (
    key TEXT PRIMARY KEY, sha256 TEXT NOT NULL, title TEXT NOT NULL, licence TEXT NOT NULL,
    attribution TEXT NOT NULL, document_id INTEGER, chunks INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY, key TEXT NOT NULL REFERENCES documents(key), ordinal INTEGER NOT NULL,
    start INTEGER NOT NULL, "end" INTEGER NOT NULL, text TEXT NOT NULL,
    vector_row INTEGER NOT NULL UNIQUE
);
CREATE INDEX IF NOT EXISTS chunks_key ON chunks(key);
CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5(
    text, key UNINDEXED, content='chunks', content_rowid='id', tokenize='porter unicode61'
);
"""


@dataclass(frozen=True)
class SourceDocument:
    """A document as an index sees it. `key` is unique in a collection (`doc:<id>` for a
    catalogued document); `document_id` links back to the catalogue, for permissions and pay."""

    key: str
    title: str
    text: str
    licence: str = ""
    attribution: str = ""
    document_id: int | None = None
    sha256: str = ""


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


@dataclass(frozen=True)
class CollectionSettings:
    """How a collection chunks: by characters (`unit="chars"`) or by embedder tokens."""

    unit: str = "chars"
    size: int = 1200
    overlap: int = 0

    def check(self) -> None:
        if self.unit not in ("chars", "tokens"):
            raise InvalidInput(f"chunk unit {self.unit!r} must be 'chars' or 'tokens'")
        check_sizes(self.size, self.overlap)


@dataclass(frozen=True)
class AddReport:
    added: list[str]
    replaced: list[str]
    unchanged: list[str]
    chunks: int


def collection_folder(home: Path, name: str) -> Path:
    """Where collection `name` lives under VIZ_HOME (the name is checked)."""
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise InvalidInput(
            f"collection name {name!r} must be 1..64 lowercase letters, digits, '.', '_' or '-'"
            " (e.g. 'papers')"
        )
    return home / "rag" / name


def list_collections(home: Path) -> list[str]:
    root = home / "rag"
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "index.sqlite").is_file())


def create_collection(folder: Path, settings: CollectionSettings) -> Collection:
    """Create an empty collection in `folder`, or open it if it exists with the same settings.

    Raises:
        Conflict: it exists with other chunking settings (they would mix chunk sizes).
    """
    settings.check()
    if (folder / "index.sqlite").is_file():
        collection = open_collection(folder)
        if collection.settings != settings:
            raise Conflict(
                f"collection {folder.name!r} was built with {_describe(collection.settings)}, "
                f"not {_describe(settings)}; use another name or the same settings"
            )
        return collection
    folder.mkdir(parents=True, exist_ok=True)
    connection = _connect(folder)
    with connection:
        connection.executescript(_SCHEMA)
        connection.executemany(
            "INSERT INTO settings VALUES (?, ?)",
            [
                ("unit", settings.unit),
                ("size", str(settings.size)),
                ("overlap", str(settings.overlap)),
                ("vector_rows", "0"),
                ("dimension", "0"),
            ],
        )
    connection.close()
    return open_collection(folder)


def open_collection(folder: Path) -> Collection:
    """Open the collection in `folder`.

    Raises:
        NotFound: there is none; StorageCorrupt: its vectors are missing or short.
    """
    if not (folder / "index.sqlite").is_file():
        raise NotFound(
            f"no collection {folder.name!r}; build it with: viz rag index {folder.name} "
            "--documents all"
        )
    return Collection(folder, _connect(folder))


class Collection:
    """One collection on disk. Not thread-safe: use one per thread (opening is cheap)."""

    def __init__(self, folder: Path, connection: sqlite3.Connection) -> None:
        self.folder = folder
        self.name = folder.name
        self._db = connection
        values = dict(self._db.execute("SELECT name, value FROM settings"))
        self.settings = CollectionSettings(
            values["unit"], int(values["size"]), int(values["overlap"])
        )
        self._vector_rows = int(values["vector_rows"])
        self.dimension = int(values["dimension"])
        self._vectors: np.ndarray | None = None
        self._chunk_rows: tuple[np.ndarray, np.ndarray, list[str]] | None = None
        self._cut_uncommitted_vectors()

    # -- reading ---------------------------------------------------------------------------

    def documents(self, keys: Iterable[str] | None = None) -> list[dict[str, Any]]:
        """The indexed documents (only those with `keys`, if given), by key."""
        sql = "SELECT key, sha256, title, licence, attribution, document_id, chunks FROM documents"
        if keys is None:
            rows = self._db.execute(sql + " ORDER BY key").fetchall()
        else:
            wanted = sorted(set(keys))
            rows = []
            for start in range(0, len(wanted), 500):
                part = wanted[start : start + 500]
                marks = ",".join("?" * len(part))
                rows += self._db.execute(f"{sql} WHERE key IN ({marks})", part).fetchall()
            rows.sort()
        names = ("key", "sha256", "title", "licence", "attribution", "document_id", "chunks")
        return [dict(zip(names, row, strict=True)) for row in rows]

    def chunk_count(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM chunks").fetchone()[0])

    def chunks(self, key: str | None = None) -> list[IndexedChunk]:
        sql = 'SELECT id, key, ordinal, start, "end", text FROM chunks'
        rows = (
            self._db.execute(sql + " WHERE key = ? ORDER BY ordinal", (key,))
            if key is not None
            else self._db.execute(sql + " ORDER BY id")
        )
        return [IndexedChunk(*row) for row in rows]

    def chunks_by_id(self, ids: Iterable[int]) -> dict[int, IndexedChunk]:
        ids = list(ids)
        found: dict[int, IndexedChunk] = {}
        for start in range(0, len(ids), 500):
            part = ids[start : start + 500]
            marks = ",".join("?" * len(part))
            rows = self._db.execute(
                f'SELECT id, key, ordinal, start, "end", text FROM chunks WHERE id IN ({marks})',
                part,
            )
            found.update({row[0]: IndexedChunk(*row) for row in rows})
        return found

    # -- search ----------------------------------------------------------------------------

    def search(
        self,
        query: str,
        *,
        k: int,
        mode: str = "hybrid",
        embedder: Embedder | None = None,
        keys: Iterable[str] | None = None,
        depth: int | None = None,
    ) -> list[Hit]:
        """The best `k` chunks for `query`, best first. `keys` limits the documents searched.

        Hybrid fuses the lexical and dense top `depth` (default max(k, 50)) by RRF.

        Raises:
            InvalidInput: an empty query, a bad k or mode, an empty collection.
        """
        _check_query(query, k)
        self._refresh()
        if mode not in MODES:
            raise InvalidInput(f"search mode {mode!r} must be one of {', '.join(MODES)}")
        total = self.chunk_count()
        if total == 0:
            raise InvalidInput(
                f"collection {self.name!r} is empty; add documents with: viz rag index "
                f"{self.name} --documents ..."
            )
        if k > total:
            raise InvalidInput(
                f"k = {k} is more than the {total} chunks in collection {self.name!r}; ask for "
                f"at most {total}"
            )
        key_set = None if keys is None else set(keys)
        if mode == "lexical":
            return self.lexical(query, k, key_set)
        if embedder is None:
            raise InvalidInput(f"{mode} search needs the embedder")
        vector = embedder.encode([query])[0].numpy()
        if mode == "dense":
            return self.dense(vector, k, key_set)
        depth = max(k, depth or 50)
        return reciprocal_rank_fusion(
            [self.lexical(query, depth, key_set), self.dense(vector, depth, key_set)], k
        )

    def lexical(self, query: str, k: int, keys: set[str] | None = None) -> list[Hit]:
        """BM25 over the chunks (FTS5), any query word matching."""
        match = _match_expression(query)
        if not match:
            return []
        sql = (
            "SELECT rowid, -bm25(chunks_fts) AS score, key FROM chunks_fts WHERE chunks_fts MATCH ?"
        )
        arguments: list[Any] = [match]
        if keys is not None:
            if not keys:
                return []
            sql += f" AND key IN ({','.join('?' * len(keys))})"
            arguments.extend(sorted(keys))
        sql += " ORDER BY bm25(chunks_fts) LIMIT ?"
        arguments.append(k)
        rows = self._db.execute(sql, arguments).fetchall()
        chunks = self.chunks_by_id(row[0] for row in rows)
        return [Hit(chunks[row[0]], float(row[1]), rank) for rank, row in enumerate(rows, 1)]

    def dense(self, vector: np.ndarray, k: int, keys: set[str] | None = None) -> list[Hit]:
        """Cosine similarity against every (or every selected) chunk's vector."""
        ids, rows, chunk_keys = self._rows()
        if len(ids) == 0:
            return []
        if keys is not None:
            keep = np.fromiter((key in keys for key in chunk_keys), bool, len(chunk_keys))
            ids, rows = ids[keep], rows[keep]
            if len(ids) == 0:
                return []
        scores = self._matrix()[rows] @ vector.astype(np.float32)
        top = np.argsort(-scores, kind="stable")[:k]
        chunks = self.chunks_by_id(int(ids[i]) for i in top)
        return [Hit(chunks[int(ids[i])], float(scores[i]), rank) for rank, i in enumerate(top, 1)]

    # -- writing ---------------------------------------------------------------------------

    def add(
        self,
        documents: list[SourceDocument],
        embedder: Embedder,
        *,
        progress: Callable[[int], None] | None = None,
        batch_size: int = 32,
    ) -> AddReport:
        """Chunk, embed and index `documents`; unchanged ones are skipped, changed ones replaced.

        Each document is committed on its own, so an interrupted run keeps what it finished.
        `progress` is called with the number of chunks embedded so far.
        """
        if self.dimension and self.dimension != embedder.dimension:
            raise InvalidInput(
                f"collection {self.name!r} holds {self.dimension}-dimensional vectors; the "
                f"embedder makes {embedder.dimension}: use the embedder it was built with"
            )
        known = {d["key"]: d["sha256"] for d in self.documents()}
        added: list[str] = []
        replaced: list[str] = []
        unchanged: list[str] = []
        done = 0
        for document in documents:
            sha = document.sha256 or _sha256(document.text)
            if known.get(document.key) == sha:
                unchanged.append(document.key)
                continue
            chunks = self._chunk(document.text, embedder)
            vectors = (
                embedder.encode([c.text for c in chunks], batch_size=batch_size).numpy()
                if chunks
                else np.zeros((0, embedder.dimension), np.float32)
            )
            self._write(document, sha, chunks, vectors, embedder.dimension)
            (replaced if document.key in known else added).append(document.key)
            known[document.key] = sha
            done += len(chunks)
            if progress:
                progress(done)
        return AddReport(added, replaced, unchanged, done)

    def remove(self, keys: Iterable[str]) -> int:
        """Drop documents (and their chunks) from the index; their vector rows stay unused."""
        removed = 0
        with self._db:
            for key in keys:
                removed += self._delete(key)
        self._chunk_rows = None
        return removed

    def close(self) -> None:
        self._db.close()

    # -- internals -------------------------------------------------------------------------

    def _chunk(self, text: str, embedder: Embedder) -> list[Chunk]:
        if self.settings.unit == "tokens":
            return chunk_by_tokens(
                text, embedder.tokenizer, size=self.settings.size, overlap=self.settings.overlap
            )
        return chunk_by_characters(text, size=self.settings.size, overlap=self.settings.overlap)

    def _write(
        self,
        document: SourceDocument,
        sha: str,
        chunks: list[Chunk],
        vectors: np.ndarray,
        dimension: int,
    ) -> None:
        first_row = self._vector_rows
        path = self.folder / "vectors.f32"
        with path.open("ab") as handle:
            handle.write(np.ascontiguousarray(vectors, dtype=np.float32).tobytes())
            handle.flush()
            os.fsync(handle.fileno())
        with self._db:
            self._delete(document.key)
            self._db.execute(
                "INSERT INTO documents VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    document.key,
                    sha,
                    document.title,
                    document.licence,
                    document.attribution,
                    document.document_id,
                    len(chunks),
                ),
            )
            for offset, chunk in enumerate(chunks):
                cursor = self._db.execute(
                    'INSERT INTO chunks (key, ordinal, start, "end", text, vector_row) '
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        document.key,
                        chunk.index,
                        chunk.start,
                        chunk.end,
                        chunk.text,
                        first_row + offset,
                    ),
                )
                self._db.execute(
                    "INSERT INTO chunks_fts (rowid, text, key) VALUES (?, ?, ?)",
                    (cursor.lastrowid, chunk.text, document.key),
                )
            self._db.execute(
                "UPDATE settings SET value = ? WHERE name = 'vector_rows'",
                (str(first_row + len(chunks)),),
            )
            self._db.execute(
                "UPDATE settings SET value = ? WHERE name = 'dimension'", (str(dimension),)
            )
        self._vector_rows = first_row + len(chunks)
        self.dimension = dimension
        self._vectors = None
        self._chunk_rows = None

    def _delete(self, key: str) -> int:
        rows = self._db.execute("SELECT id, text, key FROM chunks WHERE key = ?", (key,)).fetchall()
        for id_, text, chunk_key in rows:
            self._db.execute(
                "INSERT INTO chunks_fts (chunks_fts, rowid, text, key) VALUES ('delete', ?, ?, ?)",
                (id_, text, chunk_key),
            )
        self._db.execute("DELETE FROM chunks WHERE key = ?", (key,))
        return self._db.execute("DELETE FROM documents WHERE key = ?", (key,)).rowcount

    def _matrix(self) -> np.ndarray:
        if self._vectors is None:
            path = self.folder / "vectors.f32"
            expected = self._vector_rows * self.dimension
            if expected == 0:
                self._vectors = np.zeros((0, max(self.dimension, 1)), np.float32)
            else:
                data = np.fromfile(path, dtype=np.float32, count=expected)
                if data.size != expected:
                    raise StorageCorrupt(
                        f"{path} holds fewer vectors than the index records; rebuild the "
                        f"collection: delete {self.folder} and run viz rag index again"
                    )
                self._vectors = data.reshape(self._vector_rows, self.dimension)
        return self._vectors

    def _rows(self) -> tuple[np.ndarray, np.ndarray, list[str]]:
        if self._chunk_rows is None:
            rows = self._db.execute("SELECT id, vector_row, key FROM chunks ORDER BY id").fetchall()
            self._chunk_rows = (
                np.array([r[0] for r in rows], dtype=np.int64),
                np.array([r[1] for r in rows], dtype=np.int64),
                [r[2] for r in rows],
            )
        return self._chunk_rows

    def _refresh(self) -> None:
        """Notice documents another process indexed since the vectors were read."""
        rows = self._db.execute("SELECT value FROM settings WHERE name = 'vector_rows'").fetchone()
        if int(rows[0]) != self._vector_rows:
            values = dict(self._db.execute("SELECT name, value FROM settings"))
            self._vector_rows = int(values["vector_rows"])
            self.dimension = int(values["dimension"])
            self._vectors = None
            self._chunk_rows = None

    def _cut_uncommitted_vectors(self) -> None:
        path = self.folder / "vectors.f32"
        valid = self._vector_rows * self.dimension * 4
        if path.is_file() and path.stat().st_size > valid:
            with path.open("r+b") as handle:
                handle.truncate(valid)


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


def check_query(query: str) -> None:
    """Raise InvalidInput for an empty question, LimitExceeded for one over the limit."""
    if not isinstance(query, str) or not query.strip():
        raise InvalidInput("the question is empty; ask something")
    if len(query) > QUERY_CHARS_MAX:
        raise LimitExceeded(f"the question is {len(query)} characters; at most {QUERY_CHARS_MAX}")


def _check_query(query: str, k: int) -> None:
    check_query(query)
    if isinstance(k, bool) or not isinstance(k, int) or not 0 < k <= K_MAX:
        raise InvalidInput(f"k = {k!r} must be an integer 1..{K_MAX}")


def _match_expression(query: str) -> str:
    """An FTS5 query matching any of the query's words (each quoted, so none is an operator)."""
    terms = list(dict.fromkeys(w.lower() for w in _WORD.findall(query)))[:QUERY_TERMS_MAX]
    return " OR ".join('"' + t.replace('"', "") + '"' for t in terms)


def _connect(folder: Path) -> sqlite3.Connection:
    connection = sqlite3.connect(folder / "index.sqlite", check_same_thread=False)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA foreign_keys=ON")
    return connection


def _describe(settings: CollectionSettings) -> str:
    return f"{settings.size}-{settings.unit} chunks with {settings.overlap} overlap"


def _sha256(text: str) -> str:

    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def bm25_order(texts: list[str], query: str, k: int) -> list[int]:
    """Indices of the `k` texts BM25 ranks best for `query` (an in-memory FTS5 table), for
    one-off rankings such as mining hard negatives."""
    connection = sqlite3.connect(":memory:")
    try:
        connection.execute("CREATE VIRTUAL TABLE t USING fts5(text, tokenize='porter unicode61')")
        connection.executemany(
            "INSERT INTO t (rowid, text) VALUES (?, ?)", [(i + 1, t) for i, t in enumerate(texts)]
        )
        match = _match_expression(query)
        if not match:
            return []
        rows = connection.execute(
            "SELECT rowid FROM t WHERE t MATCH ? ORDER BY bm25(t) LIMIT ?", (match, k)
        ).fetchall()
        return [row[0] - 1 for row in rows]
    finally:
        connection.close()
