"""A collection's SQLite tables (`index.sqlite`): the schema, and writing or deleting one
document's rows, chunks and full-text entries. `viz.rag.collection` decides when."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from viz.rag.chunking import Chunk

INDEX_FILE = "index.sqlite"
SCHEMA = """
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


def connect(folder: Path) -> sqlite3.Connection:
    connection = sqlite3.connect(folder / INDEX_FILE, check_same_thread=False)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA foreign_keys=ON")
    return connection


def insert_document(
    db: sqlite3.Connection, row: tuple[object, ...], chunks: list[Chunk], first_row: int
) -> None:
    """Insert a document's row (key first) and its chunks, whose vectors start at `first_row`."""
    key = row[0]
    db.execute("INSERT INTO documents VALUES (?, ?, ?, ?, ?, ?, ?)", row)
    for offset, chunk in enumerate(chunks):
        cursor = db.execute(
            'INSERT INTO chunks (key, ordinal, start, "end", text, vector_row) '
            "VALUES (?, ?, ?, ?, ?, ?)",
            (key, chunk.index, chunk.start, chunk.end, chunk.text, first_row + offset),
        )
        db.execute(
            "INSERT INTO chunks_fts (rowid, text, key) VALUES (?, ?, ?)",
            (cursor.lastrowid, chunk.text, key),
        )


def record_vectors(db: sqlite3.Connection, vector_rows: int, dimension: int) -> None:
    """Record how many vector rows are valid, and their dimension."""
    db.execute("UPDATE settings SET value = ? WHERE name = 'vector_rows'", (str(vector_rows),))
    db.execute("UPDATE settings SET value = ? WHERE name = 'dimension'", (str(dimension),))


def delete_document(db: sqlite3.Connection, key: str) -> int:
    """Delete a document's rows; the number of documents deleted (0 or 1)."""
    rows = db.execute("SELECT id, text, key FROM chunks WHERE key = ?", (key,)).fetchall()
    for id_, text, chunk_key in rows:
        db.execute(
            "INSERT INTO chunks_fts (chunks_fts, rowid, text, key) VALUES ('delete', ?, ?, ?)",
            (id_, text, chunk_key),
        )
    db.execute("DELETE FROM chunks WHERE key = ?", (key,))
    return db.execute("DELETE FROM documents WHERE key = ?", (key,)).rowcount
