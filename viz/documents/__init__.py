"""Documents: creators' licensed source texts, the unit of provenance and of RAG attribution."""

from viz.documents.documents import (
    PERMISSIONS,
    DocumentInput,
    add_documents,
    get_document,
    list_documents,
    read_document_text,
)

__all__ = [
    "PERMISSIONS",
    "DocumentInput",
    "add_documents",
    "get_document",
    "list_documents",
    "read_document_text",
]
