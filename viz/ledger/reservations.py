"""Reservations: a request's funds held before it is served, and released if it fails.

    amount = quote(session, usage_with_max_tokens, fee_bps=1000)
    reserve(session, "req-1", "bob", amount)
    ... serve the request; settle it (`viz.ledger.settlement`), or on failure:
    void_reservation(session, "req-1")

A reservation is a pending transfer `reserve/<request id>` from the consumer to `clearing`, with
a timeout; settling posts it for the actual charge, which may not exceed what was reserved.
`reservation_state` tells the gateway where a request stands without taking the ledger's lock.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from viz.errors import Conflict
from viz.ledger.accounts import CLEARING, consumer_code
from viz.ledger.book import Book
from viz.ledger.pricing import Catalogue, price
from viz.ledger.transfers import RESOLVED_AS, Posted, Transfer
from viz.ledger.usage import Usage, check_request_id, check_usage
from viz.store.schema import LedgerPending, LedgerTransfer, UsageEvent

__all__ = ["quote", "reservation_state", "reserve", "void_reservation"]


def quote(session: Session, usage: Usage, *, fee_bps: int) -> int:
    """The charge `usage` would settle for: reserve it with `tokens_out` = max_tokens."""
    check_usage(usage)
    return price(usage, Catalogue.load(session, [usage]), fee_bps).charge


def reserve(
    session: Session,
    request_id: str,
    consumer: str,
    amount: int,
    *,
    timeout_s: int = 600,
    now_us: int | None = None,
    anchor: bool = True,
) -> Posted:
    """Hold `amount` of `consumer`'s funds for request `request_id` until it settles.

    Raises:
        PaymentRequired: the balance (plus credit limit) cannot cover `amount`.
    """
    check_request_id(request_id)
    book = Book(session, now=now_us, anchor=anchor)
    if session.scalar(select(UsageEvent.id).where(UsageEvent.request_id == request_id)):
        raise Conflict(f"request {request_id!r} was already settled; a new request needs a new id")
    book.expire_overdue()
    book.open_accounts({consumer_code(consumer), CLEARING})
    (posted,) = book.apply(
        [
            Transfer(
                id=f"reserve/{request_id}",
                debit=consumer_code(consumer),
                credit=CLEARING,
                amount=amount,
                kind="reserve",
                phase="pending",
                timeout_s=timeout_s,
                request_id=request_id,
            )
        ]
    )
    if posted.replayed and book.pending_state(posted.id) != "open":
        raise Conflict(
            f"request {request_id!r} was reserved before and that reservation is "
            f"{book.pending_state(posted.id)}; a new attempt needs a new request id"
        )
    book.finish()
    return posted


def reservation_state(session: Session, request_id: str) -> str | None:
    """Without locking: None (never reserved), `open`, `posted`, `voided` or `expired`."""
    row = session.execute(
        select(LedgerTransfer.seq, LedgerTransfer.expires_at_us).where(
            LedgerTransfer.transfer_id == f"reserve/{request_id}"
        )
    ).first()
    if row is None:
        return None
    if session.scalar(select(LedgerPending.seq).where(LedgerPending.seq == row[0])) is not None:
        return "open"
    phase = session.scalar(select(LedgerTransfer.phase).where(LedgerTransfer.pending_seq == row[0]))
    return RESOLVED_AS.get(str(phase), "expired")


def void_reservation(session: Session, request_id: str, *, anchor: bool = True) -> Posted:
    """Release a request's reservation (it failed before any token was charged).

    Raises:
        NotFound: no reservation for `request_id`.
        Conflict: it was already settled, voided or expired.
    """
    book = Book(session, anchor=anchor)
    (posted,) = book.apply(
        [
            Transfer(
                id=f"void/{request_id}",
                kind="void",
                phase="void",
                pending_id=f"reserve/{request_id}",
                request_id=request_id,
            )
        ]
    )
    book.finish()
    return posted
