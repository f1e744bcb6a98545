"""The book: one ledger write transaction that applies transfers against running balances.

Opening a `Book` takes the ledger's write lock; `apply` checks a linked group of transfers
(`viz.ledger.transfers` for the rules) against the account sums and pending transfers it holds
in memory and stages them all or none; `finish` writes what was staged in a few bulk statements
(`viz.ledger.book_rows`), extends the hash chain (`viz.ledger.chain`) and anchors the batch in
the public log (`viz.ledger.anchors`; `anchor=False` leaves that to the gateway's keeper). The
caller's transaction commits it (or rolls everything back).

    with session_scope(engine) as session:
        book = Book(session)
        book.apply([Transfer("topup-1", debit="external", credit="consumer:ada", amount=5_000_000,
                             kind="topup")])
        book.finish()
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy.orm import Session

from viz.errors import Conflict, InvalidInput, NotFound, PaymentRequired
from viz.ledger.accounts import UNLIMITED
from viz.ledger.anchors import anchor_span
from viz.ledger.book_rows import (
    Loaded,
    LoadedAccount,
    LoadedPending,
    chain_head,
    overdue_pending_seqs,
    transfer_ids_by_seq,
    transfer_row,
    write_batch,
)
from viz.ledger.chain import canonical_line, chain_next
from viz.ledger.transfers import (
    RESOLVED_AS,
    Posted,
    Transfer,
    check_shape,
    now_us,
    replay,
)
from viz.store.database import write_lock

__all__ = ["Book"]


@dataclass
class _Group:
    """What one linked group changes: account sums are changed in place, with their values
    before the group saved to restore if any transfer of the group is refused."""

    saved: dict[str, tuple[int, int, int, int]] = field(default_factory=dict)
    pendings: dict[str, LoadedPending] = field(default_factory=dict)
    staged: list[Posted] = field(default_factory=list)

    def undo(self, accounts: dict[str, LoadedAccount]) -> None:
        for code, (dp, dpo, cp, cpo) in self.saved.items():
            account = accounts[code]
            account.debits_pending, account.debits_posted = dp, dpo
            account.credits_pending, account.credits_posted = cp, cpo


class Book:
    """One ledger write transaction (see the module docstring)."""

    def __init__(self, session: Session, *, now: int | None = None, anchor: bool = True) -> None:
        write_lock(session, "ledger")
        self.session, self.anchor = session, anchor
        self.now_us = now_us() if now is None else now
        last_seq, self.chain_before = chain_head(session)
        self.first_seq = last_seq + 1
        self.staged: list[Posted] = []
        self._loaded = Loaded(session)
        # What was read or staged, changed in place by staging (see `Loaded`).
        self._accounts = self._loaded.accounts
        self._known = self._loaded.known
        self._pendings = self._loaded.pendings
        self._changed: set[str] = set()

    # --- reading what is stored -------------------------------------------------------------

    def prefetch(self, transfer_ids: Sequence[str]) -> None:
        """Look up, in a few queries, the transfers a batch will ask about."""
        self._loaded.load_transfers(list(transfer_ids))

    def mark_new(self, transfer_ids: Sequence[str]) -> None:
        """Skip looking up ids the caller knows were never stored (the reserved ids of a usage
        event not yet recorded). A wrong claim cannot apply anything twice: the insert then
        fails on the unique transfer id and the whole transaction rolls back."""
        self._loaded.mark_new(transfer_ids)

    def find(self, transfer_id: str) -> Posted | None:
        return self._loaded.find(transfer_id)

    def open_accounts(self, codes: set[str]) -> None:
        """Open (and load) the accounts named `codes`; see `open_ledger_accounts`."""
        self._loaded.open_accounts(codes)

    def available(self, code: str) -> int:
        """What account `code` may still spend (it must exist, or be openable)."""
        self.open_accounts({code})
        return self._accounts[code].available()

    def pending_state(self, transfer_id: str) -> str:
        """`open`, `overdue`, or how it was resolved: `posted`, `voided`, `expired`."""
        return self._state(self._loaded.pending(transfer_id), _Group())

    def _state(self, pending: LoadedPending, group: _Group) -> str:
        if pending.open:
            expires = pending.expires_at_us
            return "open" if expires is None or expires > self.now_us else "overdue"
        pending_id = pending.posted.id
        for posted in [*group.staged, *self.staged, *self._loaded.resolutions(pending.posted.seq)]:
            if posted.pending_id == pending_id:
                return RESOLVED_AS[posted.phase]
        return "resolved"

    # --- staging ----------------------------------------------------------------------------

    def apply(self, transfers: Sequence[Transfer]) -> list[Posted]:
        """Stage a linked group: every transfer or none. Retries return the first results.

        Raises:
            InvalidInput, NotFound, PaymentRequired, Conflict: see `viz.ledger.transfers`.
        """
        if not transfers:
            return []
        for transfer in transfers:
            check_shape(transfer)
        ids = [t.id for t in transfers]
        if len(set(ids)) != len(ids):
            raise InvalidInput("a linked group names the same transfer id twice")
        self._loaded.load_transfers(ids)
        earlier = [self._known.get(i) for i in ids]
        if any(earlier):
            return replay(transfers, earlier)
        self._loaded.load_accounts({c for t in transfers for c in (t.debit, t.credit) if c})
        group = _Group()
        seq = self.first_seq + len(self.staged)
        try:
            for transfer in transfers:
                group.staged.append(self._stage(transfer, seq, group))
                seq += 1
        except BaseException:
            group.undo(self._accounts)
            raise
        self._changed.update(group.saved)
        self._pendings.update(group.pendings)
        for posted in group.staged:
            self._known[posted.id] = posted
        self.staged.extend(group.staged)
        return group.staged

    def _stage(self, transfer: Transfer, seq: int, group: _Group) -> Posted:
        if transfer.phase in ("post", "void", "expire"):
            return self._resolve(transfer, seq, group)
        debit, credit = self._pair(transfer, group)
        amount = transfer.amount
        if debit.kind not in UNLIMITED and debit.available() < amount:
            raise PaymentRequired(
                f"insufficient funds: {debit.code} has {debit.available()} micro-units "
                f"available and {transfer.kind} {transfer.id!r} needs {amount}"
                + (
                    f"; top up with: viz ledger topup {debit.code.partition(':')[2]} AMOUNT"
                    if debit.kind == "consumer"
                    else ""
                )
            )
        expires = None
        if transfer.phase == "pending":
            assert transfer.timeout_s is not None, "checked by check_shape"
            expires = self.now_us + transfer.timeout_s * 1_000_000 if transfer.timeout_s else None
            debit.debits_pending += amount
            credit.credits_pending += amount
        else:
            debit.debits_posted += amount
            credit.credits_posted += amount
        posted = self._posted(transfer, seq, debit.code, credit.code, amount, expires)
        if transfer.phase == "pending":
            group.pendings[transfer.id] = LoadedPending(posted, open=True, expires_at_us=expires)
        return posted

    def _resolve(self, transfer: Transfer, seq: int, group: _Group) -> Posted:
        assert transfer.pending_id is not None, "checked by check_shape"
        pending = group.pendings.get(transfer.pending_id) or self._loaded.pending(
            transfer.pending_id
        )
        original = pending.posted
        state = self._state(pending, group)
        if state != "open" and not (state == "overdue" and transfer.phase == "expire"):
            raise Conflict(
                f"pending transfer {transfer.pending_id!r} "
                + ("is past its timeout" if state == "overdue" else f"was already {state}")
                + f"; it cannot be {RESOLVED_AS[transfer.phase]} now"
            )
        for given, stored, side in (
            (transfer.debit, original.debit, "debit"),
            (transfer.credit, original.credit, "credit"),
        ):
            if given and given != stored:
                raise InvalidInput(
                    f"{transfer.phase} {transfer.id!r} names {side} {given!r}, but pending "
                    f"transfer {transfer.pending_id!r} has {stored!r}"
                )
        if transfer.phase == "post":
            if transfer.amount > original.amount:
                raise InvalidInput(
                    f"cannot post {transfer.amount} micro-units: pending transfer "
                    f"{transfer.pending_id!r} reserved only {original.amount}"
                )
            amount = transfer.amount
        else:
            if transfer.amount not in (0, original.amount):
                raise InvalidInput(
                    f"a {transfer.phase} releases the whole {original.amount} micro-units "
                    f"reserved by {transfer.pending_id!r}; give amount 0 or {original.amount}"
                )
            amount = original.amount
        debit, credit = self._pair(
            replace(transfer, debit=original.debit, credit=original.credit), group
        )
        debit.debits_pending -= original.amount
        credit.credits_pending -= original.amount
        if transfer.phase == "post":
            debit.debits_posted += amount
            credit.credits_posted += amount
        group.pendings[transfer.pending_id] = replace(pending, open=False)
        return self._posted(
            transfer, seq, debit.code, credit.code, amount, None, pending_id=transfer.pending_id
        )

    def _pair(self, transfer: Transfer, group: _Group) -> tuple[LoadedAccount, LoadedAccount]:
        accounts = []
        for code in (transfer.debit, transfer.credit):
            account = self._accounts.get(code)
            if account is None:
                raise NotFound(
                    f"transfer {transfer.id!r} names ledger account {code!r}, which does "
                    "not exist; accounts open with a top-up or an earning"
                )
            if code not in group.saved:
                group.saved[code] = (
                    account.debits_pending,
                    account.debits_posted,
                    account.credits_pending,
                    account.credits_posted,
                )
            accounts.append(account)
        return accounts[0], accounts[1]

    def _posted(
        self,
        transfer: Transfer,
        seq: int,
        debit: str,
        credit: str,
        amount: int,
        expires: int | None,
        *,
        pending_id: str | None = None,
    ) -> Posted:
        return Posted(
            seq=seq,
            id=transfer.id,
            debit=debit,
            credit=credit,
            amount=amount,
            phase=transfer.phase,
            kind=transfer.kind,
            pending_id=pending_id,
            request_id=transfer.request_id,
            adapter_version_id=transfer.adapter_version_id,
            document_id=transfer.document_id,
            memo=transfer.memo,
            expires_at_us=expires,
            timestamp_us=self.now_us,
        )

    # --- expiry -----------------------------------------------------------------------------

    def expire_overdue(self, limit: int = 1000) -> list[Posted]:
        """Release the funds of pending transfers past their timeout (at most `limit`)."""
        seqs = overdue_pending_seqs(self.session, self.now_us, limit)
        if not seqs:
            return []
        expired = []
        for seq, transfer_id in transfer_ids_by_seq(self.session, seqs).items():
            if self.pending_state(transfer_id) == "overdue":
                expired += self.apply(
                    [
                        Transfer(
                            id=f"expire/{seq}",
                            phase="expire",
                            pending_id=transfer_id,
                            kind="expire",
                        )
                    ]
                )
        return expired

    # --- writing ----------------------------------------------------------------------------

    def finish(self, *, usage_events: int = 0) -> str:
        """Write the staged transfers, account sums and open pendings; anchor them in the log
        (with any span deferred before them) unless the book defers anchoring.

        Returns the chain hash after the batch.
        """
        if not self.staged:
            return self.chain_before
        seq_of = {p.id: p.seq for p in self._known.values()}
        rows, chain = self._chained_rows(seq_of)
        write_batch(
            self.session,
            rows,
            opened=[
                {"seq": p.posted.seq, "expires_at_us": p.expires_at_us}
                for p in self._pendings.values()
                if p.open and p.posted.seq >= self.first_seq
            ],
            closed=[
                seq_of[p.pending_id]
                for p in self.staged
                if p.pending_id and seq_of[p.pending_id] < self.first_seq
            ],
            sums=[self._sums(code) for code in sorted(self._changed)],
        )
        if self.anchor:
            known = {
                "first_seq": self.first_seq,
                "transfers": len(self.staged),
                "usage_events": usage_events,
                "amount": sum(p.amount for p in self.staged if p.phase in ("single", "post")),
            }
            anchor_span(self.session, self.staged[-1].seq, chain, known=known)
        self.chain_before, self.first_seq = chain, self.staged[-1].seq + 1
        self.staged, self._changed = [], set()
        return chain

    def _chained_rows(self, seq_of: dict[str, int]) -> tuple[list[dict[str, Any]], str]:
        """The staged transfers' rows, each with the chain hash after it; the last hash."""
        chain = self.chain_before
        ids = {code: account.id for code, account in self._accounts.items()}
        rows = []
        for posted in self.staged:
            pending_seq = seq_of[posted.pending_id] if posted.pending_id else None
            chain = chain_next(chain, canonical_line(posted, pending_seq))
            rows.append(transfer_row(posted, ids, pending_seq, chain))
        return rows, chain

    def _sums(self, code: str) -> dict[str, int]:
        account = self._accounts[code]
        return {
            "id": account.id,
            "debits_pending": account.debits_pending,
            "debits_posted": account.debits_posted,
            "credits_pending": account.credits_pending,
            "credits_posted": account.credits_posted,
        }
