"""Content-addressed blob store: a file's bytes live at `<root>/<sha[:2]>/<sha>`.

Writes go to a temporary file in the same folder and are renamed into place, so a reader never
sees half a blob, and writing the same content twice is harmless.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from viz.errors import NotFound, StorageCorrupt

__all__ = ["blob_path", "put_blob", "read_blob", "sha256_bytes", "sha256_file"]

HASH_CHUNK_BYTES = 1024 * 1024


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def blob_path(root: Path, sha256: str) -> Path:
    assert len(sha256) == 64, sha256
    return root / sha256[:2] / sha256


def put_blob(root: Path, data: bytes) -> tuple[str, bool]:
    """Store `data`; return its sha256 and whether this call created the blob."""
    sha256 = sha256_bytes(data)
    path = blob_path(root, sha256)
    if path.exists():
        return sha256, False
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as temporary:
        temporary.write(data)
        temporary.flush()
        os.fsync(temporary.fileno())
    os.replace(temporary.name, path)
    return sha256, True


def read_blob(root: Path, sha256: str) -> bytes:
    """The bytes of blob `sha256`, checked against their hash.

    Raises:
        NotFound: no blob with that hash is stored.
        StorageCorrupt: the stored bytes no longer match their hash.
    """
    path = blob_path(root, sha256)
    if not path.exists():
        raise NotFound(f"blob {sha256} is missing from {root}; restore the data folder from backup")
    data = path.read_bytes()
    if sha256_bytes(data) != sha256:
        raise StorageCorrupt(f"blob {path} does not match its sha256 {sha256}; restore it")
    return data
