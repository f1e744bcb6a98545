"""Settlement: one served request becomes one usage event, settled once into royalties.

    reserve(session, "req-1", "bob", amount=quote(session, usage_with_max_tokens, fee_bps=1000))
    ... serve the request ...
    settle(session, Usage("req-1", "bob", base, tokens_in=12, tokens_out=40,
                          composition=(AdapterUse("qa", "1.0.0", weight="0.7"),)), fee_bps=1000)

Settling is one linked group of transfers: the charge moves from the consumer into `clearing`
(by posting the request's reservation when there is one, for the actual amount, which may not
exceed what was reserved; `viz.ledger.reservations`), then out of `clearing` to each adapter's
creator, each cited document's owner, the platform's fee, and to `escrow` for an adapter version
taken down. An approved version with royalty shares (`viz.ledger.shares`) pays several lines
instead of one: each contributor its share of the version's exact value, the owner the rest, all
labelled with the version (a taken-down version's whole value still goes to escrow as one line).
The split follows `viz.ledger.pricing`. A usage event is idempotent by request id
(`viz.ledger.usage_events`): settling it again with the same fields returns the first
settlement; other fields are refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from viz.errors import Conflict, InvalidInput, VizError
from viz.ledger.accounts import CLEARING, consumer_code
from viz.ledger.book import Book
from viz.ledger.pricing import BPS, Catalogue, Priced, price
from viz.ledger.transfers import Posted, Transfer
from viz.ledger.usage import Settlement, Usage, check_usage
from viz.ledger.usage_events import (
    canonical_usage,
    record_events,
    replay_settlement,
    stored_events,
)

__all__ = ["BATCH_MAX", "BatchOutcome", "settle", "settle_batch"]

BATCH_MAX = 50_000


@dataclass
class BatchOutcome:
    """What `settle_batch` did: the settlements made (or replayed), and each refusal."""

    settled: list[Settlement] = field(default_factory=list)
    refused: dict[str, VizError] = field(default_factory=dict)


def settle(
    session: Session,
    usage: Usage,
    *,
    fee_bps: int,
    now_us: int | None = None,
    anchor: bool = True,
) -> Settlement:
    """Settle one usage event (see the module docstring).

    Raises:
        InvalidInput, NotFound: a malformed usage, an unknown consumer, adapter or document.
        PaymentRequired: the consumer cannot pay and there is no reservation.
        Conflict: the request id was settled with other fields, or its reservation is gone.
    """
    outcome = settle_batch(session, [usage], fee_bps=fee_bps, now_us=now_us, anchor=anchor)
    if outcome.refused:
        raise outcome.refused[usage.request_id]
    return outcome.settled[0]


def settle_batch(
    session: Session,
    usages: Sequence[Usage],
    *,
    fee_bps: int,
    now_us: int | None = None,
    anchor: bool = True,
) -> BatchOutcome:
    """Settle many usage events in one transaction; each is its own linked group, so one
    refused event (reported in `refused`) leaves the others settled. `anchor=False` leaves
    anchoring the batch in the public log to the next anchor (`viz.ledger.anchors`)."""
    if not 0 <= fee_bps <= BPS:
        raise InvalidInput(f"platform fee {fee_bps} must be 0..{BPS} basis points")
    if len(usages) > BATCH_MAX:
        raise InvalidInput(f"a batch holds at most {BATCH_MAX} usage events, got {len(usages)}")
    outcome = BatchOutcome()
    valid: list[Usage] = []
    for usage in usages:
        try:
            check_usage(usage)
            valid.append(usage)
        except VizError as error:
            outcome.refused[usage.request_id] = error
    book = Book(session, now=now_us, anchor=anchor)
    previous = stored_events(session, [u.request_id for u in valid])
    catalogue = Catalogue.load(session, valid)
    # Priced first, so every account the batch moves is read in one statement (a usage that
    # cannot be priced is refused below, where it is priced again).
    prices: dict[str, Priced] = {}
    for usage in valid:
        if usage.request_id not in previous:
            with suppress(VizError):
                prices[usage.request_id] = price(usage, catalogue, fee_bps)
    book.open_accounts(
        {CLEARING}
        | {consumer_code(usage.consumer) for usage in valid if usage.request_id in prices}
        | {line.account for priced in prices.values() for line in priced.lines}
    )
    book.prefetch([f"reserve/{u.request_id}" for u in valid if u.request_id not in previous])
    fresh: list[tuple[Usage, str, Settlement]] = []
    seen: dict[str, tuple[str, Settlement]] = {}
    for usage in valid:
        canonical = canonical_usage(usage)
        earlier = previous.get(usage.request_id) or seen.get(usage.request_id)
        try:
            if earlier is not None:
                outcome.settled.append(replay_settlement(usage, canonical, *earlier))
                continue
            priced = prices.get(usage.request_id) or price(usage, catalogue, fee_bps)
            reserved = _settle_one(book, usage, priced)
        except VizError as error:
            outcome.refused[usage.request_id] = error
            continue
        settlement = Settlement(usage.request_id, priced.charge, priced.lines, reserved)
        seen[usage.request_id] = (canonical, settlement)
        fresh.append((usage, canonical, settlement))
        outcome.settled.append(settlement)
    if fresh:
        record_events(session, fresh, book.now_us, catalogue.consumers)
    book.finish(usage_events=len(fresh))
    return outcome


def _settle_one(book: Book, usage: Usage, priced: Priced) -> int:
    """Stage one event's linked group; returns what its reservation held (0: none)."""
    request = usage.request_id
    reservation, transfers = _charge(book, usage, priced.charge)
    book.mark_new(
        [t.id for t in transfers if t.id.startswith("usage/")]
        + [f"usage/{request}/{n}" for n in range(len(priced.lines))]
    )
    for number, line in enumerate(priced.lines):
        if line.amount:
            transfers.append(
                Transfer(
                    id=f"usage/{request}/{number}",
                    debit=CLEARING,
                    credit=line.account,
                    amount=line.amount,
                    kind=line.kind,
                    request_id=request,
                    adapter_version_id=line.adapter_version_id,
                    document_id=line.document_id,
                )
            )
    book.apply(transfers)
    return reservation.amount if reservation is not None else 0


def _charge(book: Book, usage: Usage, charge: int) -> tuple[Posted | None, list[Transfer]]:
    """The transfers that move `charge` from the consumer into `clearing`: by posting the
    request's reservation while it holds (voiding it for a charge of 0), else directly; and the
    reservation they post (None: charged directly)."""
    request = usage.request_id
    reservation, transfers = _holding_reservation(book, usage)
    if reservation is not None:
        transfers.append(
            Transfer(
                id=f"usage/{request}/charge",
                debit=consumer_code(usage.consumer),  # refused unless it is who reserved
                amount=charge,
                kind="charge",
                phase="post" if charge else "void",
                pending_id=reservation.id,
                request_id=request,
            )
        )
    elif charge:
        transfers.append(
            Transfer(
                id=f"usage/{request}/charge",
                debit=consumer_code(usage.consumer),
                credit=CLEARING,
                amount=charge,
                kind="charge",
                request_id=request,
            )
        )
    return reservation, transfers


def _holding_reservation(book: Book, usage: Usage) -> tuple[Posted | None, list[Transfer]]:
    """The request's reservation if it still holds its funds (None: never reserved, or it
    outlived its hold), and the transfer that expires an overdue one.

    Raises:
        InvalidInput: another consumer reserved the request.
        Conflict: the reservation was voided: the request was declared failed.
    """
    request = usage.request_id
    reservation = book.find(f"reserve/{request}")
    state = book.pending_state(reservation.id) if reservation is not None else None
    if reservation is not None and reservation.debit != consumer_code(usage.consumer):
        raise InvalidInput(
            f"request {request!r} was reserved by {reservation.debit}, not "
            f"{consumer_code(usage.consumer)}; usage is settled by who reserved"
        )
    if state == "voided":
        raise Conflict(
            f"the reservation of request {request!r} was voided (the request was declared "
            "failed); its usage cannot be settled"
        )
    if state not in ("overdue", "expired"):
        return reservation, []
    # The request outlived its hold: release it (if not yet done) and charge directly,
    # so tokens served are never free; the balance check applies again.
    assert reservation is not None
    if state == "expired":
        return None, []
    expire = Transfer(
        id=f"expire/{reservation.seq}",
        kind="expire",
        phase="expire",
        pending_id=reservation.id,
    )
    return None, [expire]
