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

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from viz.errors import InvalidInput, VizError
from viz.ledger.accounts import (
    CLEARING,
    ESCROW,
    EXTERNAL,
    consumer_code,
    creator_code,
)
from viz.ledger.book import Book
from viz.ledger.transfers import Posted, Transfer
from viz.store.database import session_scope
from viz.store.schema import LedgerAccount, LedgerPending, LedgerTransfer

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
CLIENT_KINDS = ("transfer", "correction", "refund", "topup")
SYSTEM_ONLY = (CLEARING, ESCROW)  # only settlement and escrow release move money through these


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
        _check_client(request)
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
    _check_client(request)
    (posted,) = book.apply([request])
    book.finish()
    return posted


def _check_client(request: Transfer) -> None:
    """What a client transfer may not do: use Viz's ids, kinds, tags or settlement accounts."""
    if not isinstance(request.id, str) or request.id.startswith(RESERVED_PREFIXES):
        raise InvalidInput(
            f"transfer id {request.id!r} must be text not starting with a prefix Viz reserves "
            f"({', '.join(RESERVED_PREFIXES)}); choose another id"
        )
    if request.phase == "expire":
        raise InvalidInput("expiry is Viz's to record; void a pending transfer instead")
    if request.kind not in CLIENT_KINDS:
        raise InvalidInput(
            f"transfer kind {request.kind!r} is Viz's own; use one of {', '.join(CLIENT_KINDS)}"
        )
    if request.request_id or request.adapter_version_id or request.document_id:
        raise InvalidInput(
            "request ids, adapter versions and documents are set by metering, not by a client "
            "transfer; settle usage with viz.ledger.settle"
        )
    for code in (request.debit, request.credit):
        if code in SYSTEM_ONLY:
            raise InvalidInput(f"{code} moves money only during settlement and escrow release")


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

    A payout whose outcome was never recorded (the provider's answer was lost, or the process
    died) is first sent again under its own id, for the provider to answer idempotently, and
    settled from that answer: a payout is never sent twice under two ids. Returns None when
    there is less than `minimum` to pay.

    Raises:
        VizError: the provider refused (the reservation is voided; nothing is paid), or its
            answer was lost (the reservation stays; run the payout again to settle it).
    """
    if isinstance(minimum, bool) or not isinstance(minimum, int) or minimum < 1:
        raise InvalidInput(f"--min {minimum!r} must be at least 1 micro-unit")
    provider = provider or RecordOnly()
    for order in _unsettled_payouts(engine, creator):
        _send(engine, provider, order)
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
                    timeout_s=0,  # never expires: only the provider's answer settles it
                )
            ]
        )
        book.finish()
    reference = _send(engine, provider, PayoutOrder(transfer_id, creator, available))
    return PayoutResult(transfer_id, available, reference)


def _send(engine: Engine, provider: PayoutProvider, order: PayoutOrder) -> str:
    try:
        reference = provider.send(order)
    except VizError:
        _resolve_payout(engine, order.transfer_id, "void", 0, "provider refused")
        raise
    except Exception as error:  # noqa: BLE001 - any other failure leaves the outcome unknown
        raise VizError(
            f"payout {order.transfer_id} of {order.amount} micro-units: the provider's answer "
            f"was lost ({type(error).__name__}); it stays reserved. Run the payout again: it is "
            "re-sent under the same id and settled from the provider's answer"
        ) from error
    _resolve_payout(engine, order.transfer_id, "post", order.amount, reference)
    return reference


def _unsettled_payouts(engine: Engine, creator: str) -> list[PayoutOrder]:
    with session_scope(engine) as session:
        rows = session.execute(
            select(LedgerTransfer.transfer_id, LedgerTransfer.amount)
            .join(LedgerPending, LedgerPending.seq == LedgerTransfer.seq)
            .join(LedgerAccount, LedgerTransfer.debit_id == LedgerAccount.id)
            .where(LedgerTransfer.kind == "payout", LedgerAccount.code == creator_code(creator))
            .order_by(LedgerTransfer.seq)
        ).all()
    return [PayoutOrder(transfer_id, creator, amount) for transfer_id, amount in rows]


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
