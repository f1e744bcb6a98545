"""Money in and out: top-ups from the outside world, payouts to creators, plain transfers.

A payout is two-phase, as a real one must be: a pending transfer reserves the creator's
earnings, the payment provider is called outside the ledger transaction, and the transfer is
posted when the provider confirms or voided when it fails. Viz calls no real provider: the
`PayoutProvider` protocol is the plug-in point, and `RecordOnly` (the default) records the
payout for a person to pay by hand.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from viz.errors import InvalidInput, VizError
from viz.ledger.accounts import (
    EXTERNAL,
    consumer_code,
    creator_code,
)
from viz.ledger.transfers import Book, Posted, Transfer
from viz.store.database import session_scope

__all__ = [
    "PayoutOrder",
    "PayoutResult",
    "PayoutProvider",
    "RecordOnly",
    "payout",
    "topup",
    "expire_overdue",
    "transfer",
    "transfer_group",
]

RESERVED_PREFIXES = ("usage/", "reserve/", "void/", "expire/", "payout/", "release/")
PAYOUT_TIMEOUT_S = 24 * 3600


def transfer(session: Session, request: Transfer) -> Posted:
    """Execute one client transfer (or replay it, if its id was used with the same fields).

    Raises:
        InvalidInput: a malformed transfer, or an id in a namespace Viz reserves.
        NotFound, PaymentRequired, Conflict: see `viz.ledger.transfers`.
    """
    return transfer_group(session, [request])[0]


def transfer_group(session: Session, requests: list[Transfer]) -> list[Posted]:
    """Execute linked transfers: all of them or none."""
    for request in requests:
        if request.id.startswith(RESERVED_PREFIXES):
            raise InvalidInput(
                f"transfer id {request.id!r} starts with a prefix Viz reserves "
                f"({', '.join(RESERVED_PREFIXES)}); choose another id"
            )
        if request.phase == "expire":
            raise InvalidInput("expiry is Viz's to record; void a pending transfer instead")
    book = Book(session)
    book.expire_overdue()
    posted = book.apply(requests)
    book.finish()
    return posted


def expire_overdue(session: Session, *, now_us: int | None = None) -> list[Posted]:
    """Record the expiry of every reservation past its timeout, releasing its funds."""
    book = Book(session, now=now_us)
    expired = book.expire_overdue(limit=1_000_000)
    book.finish()
    return expired


def topup(
    session: Session, name: str, amount: int, *, transfer_id: str = "", memo: str = ""
) -> Posted:
    """Credit consumer `name` with `amount` micro-units paid in from outside.

    Pass the same `transfer_id` to retry safely: a repeated top-up is not credited twice.
    """
    book = Book(session)
    book.open_accounts({EXTERNAL, consumer_code(name)})
    request = Transfer(
        id=transfer_id or f"topup-{uuid.uuid4().hex}",
        debit=EXTERNAL,
        credit=consumer_code(name),
        amount=amount,
        kind="topup",
        memo=memo,
    )
    if request.id.startswith(RESERVED_PREFIXES):
        raise InvalidInput(f"transfer id {request.id!r} starts with a prefix Viz reserves")
    (posted,) = book.apply([request])
    book.finish()
    return posted


@dataclass(frozen=True)
class PayoutOrder:
    """What a payment provider is asked to pay."""

    transfer_id: str
    creator: str
    amount: int


class PayoutProvider(Protocol):
    def send(self, order: PayoutOrder) -> str:
        """Pay `order` (idempotently by `transfer_id`); return the provider's reference.
        Raise VizError if the payment failed."""
        ...


class RecordOnly:
    """The default provider: pays nothing, so a person can pay the recorded amount by hand."""

    def send(self, order: PayoutOrder) -> str:
        return f"recorded-only:{order.transfer_id}"


@dataclass(frozen=True)
class PayoutResult:
    transfer_id: str
    amount: int
    reference: str


def payout(
    engine: Engine,
    creator: str,
    *,
    minimum: int = 1,
    provider: PayoutProvider | None = None,
) -> PayoutResult | None:
    """Pay creator `creator` everything available in its earnings account, if at least `minimum`.

    Returns None when there is less than `minimum` to pay.

    Raises:
        VizError: the provider failed (the reservation is voided; nothing is paid).
    """
    if isinstance(minimum, bool) or minimum < 1:
        raise InvalidInput(f"--min {minimum} must be at least 1 micro-unit")
    provider = provider or RecordOnly()
    transfer_id = f"payout/{creator}/{uuid.uuid4().hex}"
    with session_scope(engine) as session:
        book = Book(session)
        available = book.available(creator_code(creator))
        if available < minimum:
            return None
        book.apply(
            [
                Transfer(
                    id=transfer_id,
                    debit=creator_code(creator),
                    credit=EXTERNAL,
                    amount=available,
                    kind="payout",
                    phase="pending",
                    timeout_s=PAYOUT_TIMEOUT_S,
                )
            ]
        )
        book.finish()
    try:
        reference = provider.send(PayoutOrder(transfer_id, creator, available))
    except VizError:
        _resolve_payout(engine, transfer_id, "void", 0, "provider failed")
        raise
    _resolve_payout(engine, transfer_id, "post", available, reference)
    return PayoutResult(transfer_id, available, reference)


def _resolve_payout(engine: Engine, transfer_id: str, phase: str, amount: int, memo: str) -> None:
    with session_scope(engine) as session:
        book = Book(session)
        book.apply(
            [
                Transfer(
                    id=f"{transfer_id}/{phase}",
                    amount=amount,
                    kind="payout",
                    phase=phase,
                    pending_id=transfer_id,
                    memo=memo[:200],
                )
            ]
        )
        book.finish()
