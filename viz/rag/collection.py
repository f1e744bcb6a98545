"""Collections: a lexical (BM25) and a dense index over chunked documents, kept on disk and
grown incrementally.

A collection is a folder, `VIZ_HOME/rag/<name>/`, holding

- `index.sqlite`: the settings it was built with, one row per document (key, content hash,
  title, licence, attribution), one row per chunk (offsets and text), and an SQLite FTS5 table
  over the chunks, whose `bm25()` ranks the lexical hits;
- `vectors.f32`: the chunks' unit-length embeddings (`viz.rag.vectors`).

Adding documents embeds and inserts only what is new: a document already indexed with the same
content hash is skipped, a changed one has its chunks replaced. Each document is committed on
its own, after its vectors are durable.

Search is lexical, dense or hybrid (`viz.rag.search` says how each ranks). Any of them can be
limited to some documents.

    collection = create_collection(folder, CollectionSettings("chars", 1200, 200))
    collection.add([SourceDocument("doc:1", "QLoRA", text, licence="CC-BY-4.0")], embedder)
    hits = collection.search("How much memory does QLoRA save?", k=5, mode="hybrid",
                             embedder=embedder)
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from viz.errors import Conflict, InvalidInput, NotFound
from viz.rag._tables import (
    INDEX_FILE,
    SCHEMA,
    connect,
    delete_document,
    insert_document,
    record_vectors,
)
from viz.rag.chunking import Chunk, check_sizes, chunk_by_characters, chunk_by_tokens
from viz.rag.embed import Embedder
from viz.rag.search import Hit, IndexedChunk, dense_rows, lexical_rows, search
from viz.rag.vectors import VECTORS_FILE, VectorFile

__all__ = [
    "NAME_PATTERN",
    "AddReport",
    "Collection",
    "CollectionSettings",
    "SourceDocument",
    "collection_folder",
    "create_collection",
    "list_collections",
    "open_collection",
]

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")


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
    return sorted(p.name for p in root.iterdir() if (p / INDEX_FILE).is_file())


def create_collection(folder: Path, settings: CollectionSettings) -> Collection:
    """Create an empty collection in `folder`, or open it if it exists with the same settings.

    Raises:
        Conflict: it exists with other chunking settings (they would mix chunk sizes).
    """
    settings.check()
    if (folder / INDEX_FILE).is_file():
        collection = open_collection(folder)
        if collection.settings != settings:
            raise Conflict(
                f"collection {folder.name!r} was built with {_describe(collection.settings)}, "
                f"not {_describe(settings)}; use another name or the same settings"
            )
        return collection
    folder.mkdir(parents=True, exist_ok=True)
    connection = connect(folder)
    with connection:
        connection.executescript(SCHEMA)
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
    if not (folder / INDEX_FILE).is_file():
        raise NotFound(
            f"no collection {folder.name!r}; build it with: viz rag index {folder.name} "
            "--documents all"
        )
    return Collection(folder, connect(folder))


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
        self._vector_file = VectorFile(folder / VECTORS_FILE)
        self._vector_file.cut(self._vector_rows, self.dimension)

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

    # -- search (`viz.rag.search` ranks) -----------------------------------------------------

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
        return search(self, query, k=k, mode=mode, embedder=embedder, keys=keys, depth=depth)

    def lexical(self, query: str, k: int, keys: set[str] | None = None) -> list[Hit]:
        """BM25 over the chunks (FTS5), any query word matching."""
        rows = lexical_rows(self._db, query, k, keys)
        chunks = self.chunks_by_id(row[0] for row in rows)
        return [Hit(chunks[row[0]], row[1], rank) for rank, row in enumerate(rows, 1)]

    def dense(self, vector: np.ndarray, k: int, keys: set[str] | None = None) -> list[Hit]:
        """Cosine similarity against every (or every selected) chunk's vector."""
        ids, rows, chunk_keys = self._rows()
        top = dense_rows(self._matrix, ids, rows, chunk_keys, vector, k, keys)
        chunks = self.chunks_by_id(id_ for id_, _ in top)
        return [Hit(chunks[id_], score, rank) for rank, (id_, score) in enumerate(top, 1)]

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
                removed += delete_document(self._db, key)
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
        self._vector_file.append(vectors)
        row = (
            document.key,
            sha,
            document.title,
            document.licence,
            document.attribution,
            document.document_id,
            len(chunks),
        )
        with self._db:
            delete_document(self._db, document.key)
            insert_document(self._db, row, chunks, first_row)
            record_vectors(self._db, first_row + len(chunks), dimension)
        self._vector_rows = first_row + len(chunks)
        self.dimension = dimension
        self._vectors = None
        self._chunk_rows = None

    def _matrix(self) -> np.ndarray:
        if self._vectors is None:
            self._vectors = self._vector_file.read(self._vector_rows, self.dimension)
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

    def refresh(self) -> None:
        """Notice documents another process indexed since the vectors were read."""
        rows = self._db.execute("SELECT value FROM settings WHERE name = 'vector_rows'").fetchone()
        if int(rows[0]) != self._vector_rows:
            values = dict(self._db.execute("SELECT name, value FROM settings"))
            self._vector_rows = int(values["vector_rows"])
            self.dimension = int(values["dimension"])
            self._vectors = None
            self._chunk_rows = None


def _describe(settings: CollectionSettings) -> str:
    return f"{settings.size}-{settings.unit} chunks with {settings.overlap} overlap"


def _sha256(text: str) -> str:

    return hashlib.sha256(text.encode("utf-8")).hexdigest()
