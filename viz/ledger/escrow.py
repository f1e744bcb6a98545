"""Escrow: what an adapter version earned while taken down, held until the takedown is decided.

When a counter-notice is accepted (`viz market restore`), the creator is paid what was held;
when the takedown is upheld, each request's share goes back to the consumer who paid it. Every
release is one transfer per escrowed share, with the id `release/<seq of the escrowed share>`,
so releasing twice (or retrying after a crash) never pays anything twice.

A version with royalty shares (`viz.ledger.shares`) pays its creators as it would have paid
them when served: each escrowed share is divided by the version's shares (`pricing.split`,
exact to the micro-unit) into one linked group, its first transfer `release/<seq>` and the others
`release/<seq>/<n>`, so the once-only rule holds for the group as a whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from sqlalchemy import select
from sqlalchemy.orm import Session

from viz.errors import Conflict, InvalidInput, LedgerCorrupt
from viz.ledger.accounts import ESCROW, consumer_code, creator_code
from viz.ledger.book import Book
from viz.ledger.pricing import BPS, split
from viz.ledger.shares import version_shares
from viz.ledger.transfers import Transfer
from viz.store.schema import (
    Account,
    Adapter,
    AdapterVersion,
    LedgerAccount,
    LedgerTransfer,
    UsageEvent,
)

__all__ = ["Release", "release_escrow"]

DESTINATIONS = ("creator", "consumers")


@dataclass(frozen=True)
class Release:
    shares: int
    amount: int
    already_released: int


def release_escrow(session: Session, version: AdapterVersion, *, to: str) -> Release:
    """Pay what `version` earned in escrow to its creator (and contributors, by its royalty
    shares) or back to the consumers.

    Raises:
        InvalidInput: an unknown destination, or a version still taken down being paid to
            its creator (restore it first).
    """
    if to not in DESTINATIONS:
        raise InvalidInput(f"release escrow to one of {', '.join(DESTINATIONS)}, not {to!r}")
    if to == "creator" and version.status == "taken_down":
        raise InvalidInput(
            "this version is still taken down; restore it (viz market restore) before paying "
            "its escrow to the creator, or refund the consumers with --to consumers"
        )
    book = Book(session)  # the lock first: what follows is read as of the latest commit
    escrow_id = session.scalar(select(LedgerAccount.id).where(LedgerAccount.code == ESCROW))
    if escrow_id is None:
        return Release(0, 0, 0)
    shares = session.execute(
        select(LedgerTransfer.seq, LedgerTransfer.amount, LedgerTransfer.request_id)
        .where(
            LedgerTransfer.credit_id == escrow_id,
            LedgerTransfer.adapter_version_id == version.id,
            LedgerTransfer.kind == "escrow",
        )
        .order_by(LedgerTransfer.seq)
    ).all()
    owner = session.scalar(
        select(Account.name)
        .join(Adapter, Adapter.owner_id == Account.id)
        .where(Adapter.id == version.adapter_id)
    )
    consumers = dict(
        session.execute(
            select(UsageEvent.request_id, Account.name)
            .join(Account, UsageEvent.consumer_id == Account.id)
            .where(UsageEvent.request_id.in_([r for _, _, r in shares]))
        ).all()
    )
    creators = _creators(str(owner), version_shares(session, version.id))
    codes = {ESCROW} | (
        {creator_code(name) for name, _ in creators}
        if to == "creator"
        else {consumer_code(c) for c in consumers.values()}
    )
    book.open_accounts(codes)
    paid = replayed = 0
    for seq, amount, request_id in shares:
        if to == "consumers" and request_id not in consumers:
            raise LedgerCorrupt(f"escrowed share {seq} names request {request_id!r}, never metered")
        payees = (
            _divide(amount, creators)
            if to == "creator"
            else [(consumer_code(consumers[str(request_id)]), amount)]
        )
        try:
            posted = book.apply(_release_group(seq, request_id, version.id, payees))
        except Conflict as error:
            raise Conflict(
                f"escrowed share {seq} was already released to someone other than the {to}; "
                "a takedown's escrow is released once"
            ) from error
        if posted[0].replayed:
            replayed += 1
        else:
            paid += amount
    book.finish()
    return Release(len(shares) - replayed, paid, replayed)


def _release_group(
    seq: int, request_id: str | None, version_id: int, payees: list[tuple[str, int]]
) -> list[Transfer]:
    """The linked group releasing escrowed share `seq`: its first transfer's id is the same
    whoever is paid, so a share released to one side is never released to the other."""
    return [
        Transfer(
            id=f"release/{seq}" if number == 0 else f"release/{seq}/{number}",
            debit=ESCROW,
            credit=credit,
            amount=part,
            kind="release",
            request_id=request_id,
            adapter_version_id=version_id,
        )
        for number, (credit, part) in enumerate(payees)
    ]


def _creators(owner: str, shares: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """Who the version's earnings go to, in basis points: the owner's remainder (if any) first,
    then each contributor, the order settlement uses."""
    remainder = BPS - sum(bps for _, bps in shares)
    return ([(owner, remainder)] if remainder else []) + shares


def _divide(amount: int, creators: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """`amount` divided among `creators` by basis points, to the micro-unit, zero parts left
    out. With no shares the owner alone gets all of it."""
    values = [Fraction(amount * bps, BPS) for _, bps in creators]
    total, amounts, _ = split(values, fee_bps=0)
    assert total == amount, "the basis points of an owner and contributors add up to one"
    return [
        (creator_code(name), part)
        for (name, _), part in zip(creators, amounts, strict=True)
        if part
    ]
