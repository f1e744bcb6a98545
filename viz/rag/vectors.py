"""Vectors: a collection's chunk embeddings on disk, `vectors.f32`, float32, one row each,
append-only.

The file holds rows the index may not know of yet: vectors are appended and flushed before the
SQLite transaction that records how many rows are valid commits, so a crash between the two
leaves rows past that count, which `cut` removes on the next open.

    vectors = VectorFile(folder / "vectors.f32")
    vectors.cut(rows=120, dimension=384)       # drop rows no transaction committed
    vectors.append(embeddings)                 # flushed and fsynced before returning
    matrix = vectors.read(rows=130, dimension=384)
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from viz.errors import StorageCorrupt

__all__ = ["VECTORS_FILE", "VectorFile"]

VECTORS_FILE = "vectors.f32"
_ROW_ITEM_BYTES = 4  # float32


class VectorFile:
    """The append-only float32 matrix of one collection."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def append(self, vectors: np.ndarray) -> None:
        """Append rows and make them durable (flushed and fsynced) before returning."""
        with self.path.open("ab") as handle:
            handle.write(np.ascontiguousarray(vectors, dtype=np.float32).tobytes())
            handle.flush()
            os.fsync(handle.fileno())

    def read(self, rows: int, dimension: int) -> np.ndarray:
        """The first `rows` rows, shaped (rows, dimension).

        Raises:
            StorageCorrupt: the file holds fewer rows than the index records.
        """
        expected = rows * dimension
        if expected == 0:
            return np.zeros((0, max(dimension, 1)), np.float32)
        data = np.fromfile(self.path, dtype=np.float32, count=expected)
        if data.size != expected:
            raise StorageCorrupt(
                f"{self.path} holds fewer vectors than the index records; rebuild the "
                f"collection: delete {self.path.parent} and run viz rag index again"
            )
        return data.reshape(rows, dimension)

    def cut(self, rows: int, dimension: int) -> None:
        """Drop whatever lies past the first `rows` rows (appended, never committed)."""
        valid = rows * dimension * _ROW_ITEM_BYTES
        if self.path.is_file() and self.path.stat().st_size > valid:
            with self.path.open("r+b") as handle:
                handle.truncate(valid)
