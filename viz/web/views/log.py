"""The transparency log's page: the latest signed checkpoint, the newest entries, and one
entry's inclusion proof checked as an auditor would."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from viz.log.store import prove_entry, sign_checkpoint, verify_proof
from viz.store.schema import LogEntry

__all__ = ["ENTRIES_SHOWN_MAX", "log_page"]

ENTRIES_SHOWN_MAX = 20


def log_page(session: Session, log_key: Path, index: int | None) -> dict[str, Any]:
    """The latest signed checkpoint, the newest entries, and (if asked) one entry's inclusion
    proof checked against that checkpoint.

    Raises:
        NotFound: `index` is not in the log.
    """
    checkpoint = sign_checkpoint(session, log_key)
    entries = session.scalars(
        select(LogEntry).order_by(LogEntry.index.desc()).limit(ENTRIES_SHOWN_MAX)
    ).all()
    checked: dict[str, Any] | None = None
    if index is not None:
        proof = prove_entry(session, index, log_key)
        try:
            verify_proof(proof)
            verdict = "verified"
        except Exception as error:  # shown to the auditor, never hidden
            verdict = f"does not verify: {error}"
        checked = {**proof, "verdict": verdict}
    return {
        "checkpoint": checkpoint,
        "entries": [(e.index, e.kind, e.created_at, e.data) for e in entries],
        "checked": checked,
    }
