"""Storage: the SQL catalogue (SQLAlchemy 2 + Alembic) and the content-addressed blob store."""

from viz.store.blobs import blob_path, put_blob, read_blob, sha256_bytes, sha256_file
from viz.store.database import (
    current_revision,
    head_revision,
    open_database,
    session_scope,
    upgrade,
)

__all__ = [
    "blob_path",
    "current_revision",
    "head_revision",
    "open_database",
    "put_blob",
    "read_blob",
    "session_scope",
    "sha256_bytes",
    "sha256_file",
    "upgrade",
]
