"""Anchoring the ledger's hash chain in the public log: one `ledger.batch` entry per span.

A `ledger.batch` entry names a span of transfers (`first_seq`..`last_seq`) and the chain hash
after its last transfer; the entries cover 1..N in order (`viz ledger verify` checks it). A write
that anchors at once (`Book(session)`, the default) covers everything since the last anchor. The
gateway's writes defer (`Book(session, anchor=False)`: three statements fewer per transaction)
and its keeper anchors every VIZ_LEDGER_ANCHOR_INTERVAL_S, so a span is anchored within that
interval. A crash between anchors leaves transfers whose chain verifies but no entry names yet:
`viz ledger verify` reports them (as a problem once they are older than ANCHOR_GRACE_S) and the
next anchor, or `viz ledger anchor`, covers them.

    with session_scope(engine) as session:
        anchor_ledger(session)   # None when every transfer is anchored already
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from viz.ledger.book_rows import chain_head
from viz.log.store import append_entry
from viz.store.database import write_lock
from viz.store.schema import LedgerTransfer, LogEntry

__all__ = ["ANCHOR_GRACE_S", "anchor_ledger", "anchor_span", "last_anchored", "unanchored"]

ANCHOR_GRACE_S = 60  # an unanchored transfer older than this is a finding of `verify`
POSTED_PHASES = ("single", "post")


def last_anchored(session: Session) -> int:
    """The last transfer seq a `ledger.batch` entry names (0: none yet)."""
    data = session.scalar(
        select(LogEntry.data)
        .where(LogEntry.kind == "ledger.batch")
        .order_by(LogEntry.index.desc())
        .limit(1)
    )
    return int(json.loads(data)["last_seq"]) if data else 0


def anchor_span(
    session: Session, last_seq: int, chain: str, *, known: dict[str, Any] | None = None
) -> LogEntry | None:
    """Anchor transfers (last anchored + 1)..`last_seq`, whose chain ends at `chain`, in the
    caller's transaction (which holds the ledger's write lock). `known` is what the caller
    counted for the span starting at `known["first_seq"]` (its transfers, amount, usage events);
    a span reaching further back is counted from the stored transfers."""
    covered = last_anchored(session)
    if last_seq <= covered:
        return None
    entry: dict[str, Any] = {"first_seq": covered + 1, "last_seq": last_seq}
    if known is not None and known["first_seq"] == covered + 1:
        entry.update(known)
    else:
        entry["transfers"] = last_seq - covered
        entry["amount"] = int(  # PostgreSQL sums to a Decimal
            session.scalar(
                select(func.coalesce(func.sum(LedgerTransfer.amount), 0)).where(
                    LedgerTransfer.seq > covered,
                    LedgerTransfer.seq <= last_seq,
                    LedgerTransfer.phase.in_(POSTED_PHASES),
                )
            )
            or 0
        )
    entry["chain"] = chain
    return append_entry(session, "ledger.batch", entry)


def unanchored(session: Session) -> int:
    """How many transfers no `ledger.batch` entry covers yet (read without the write lock)."""
    return chain_head(session)[0] - last_anchored(session)


def anchor_ledger(session: Session) -> LogEntry | None:
    """Anchor every transfer not anchored yet in one entry; None if there were none."""
    write_lock(session, "ledger")
    last_seq, chain = chain_head(session)
    return anchor_span(session, last_seq, chain)
