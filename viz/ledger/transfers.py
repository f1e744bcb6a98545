"""Transfers: double entry, idempotent by id, linked groups, two-phase (pending -> post | void |
expire), hash-chained. The model is TigerBeetle's.

A `Book` is one ledger write transaction. Opening it takes the ledger's write lock; `apply`
checks a linked group of transfers against running balances in memory and stages them all or
none; `finish` writes what was staged in a few bulk statements and anchors the batch in the
public log. The caller's transaction commits it (or rolls everything back).

    with session_scope(engine) as session:
        book = Book(session)
        book.apply([Transfer("topup-1", debit="external", credit="consumer:ada", amount=5_000_000,
                             kind="topup")])
        book.finish()

Rules (each refusal names the problem and leaves no trace):
- an amount is a positive integer of micro-units, at most `AMOUNT_MAX`;
- a retry (same id, same fields) returns the first result; same id, other fields: `Conflict`;
- a debit may not take a limited account below zero (or its credit limit): `PaymentRequired`;
- a pending transfer reserves funds until posted (for at most its amount), voided, or expired;
  a resolved or expired pending transfer cannot be resolved again: `Conflict`.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from json.encoder import encode_basestring  # type: ignore[attr-defined]
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.orm import Session

from viz.errors import Conflict, InvalidInput, NotFound, PaymentRequired
from viz.ledger.accounts import UNLIMITED, open_ledger_accounts
from viz.log.store import append_entry
from viz.store.database import write_lock
from viz.store.schema import Base, LedgerAccount, LedgerPending, LedgerTransfer

__all__ = [
    "AMOUNT_MAX",
    "GENESIS",
    "PHASES",
    "RESOLVED_AS",
    "Book",
    "Posted",
    "Transfer",
    "chain_next",
    "canonical_line",
    "now_us",
    "insert_many",
    "posted_from_row",
]

AMOUNT_MAX = 10**15  # a billion units of a million micro-units: far above any sane transfer
TIMEOUT_MAX_S = 7 * 24 * 3600
PHASES = ("single", "pending", "post", "void", "expire")
GENESIS = "0" * 64
ID_PATTERN = re.compile(r"[A-Za-z0-9._:/@+-]{1,160}")
_CHUNK = 500
RESOLVED_AS = {"post": "posted", "void": "voided", "expire": "expired"}  # a pending, once resolved


def now_us() -> int:
    return time.time_ns() // 1000


@dataclass(frozen=True)
class Transfer:
    """What a client asks for. `post` and `void` name their pending transfer by `pending_id`
    and may leave `debit`/`credit` empty (they are the pending transfer's); a void's amount is
    0 or the pending amount. A pending transfer's `timeout_s` of 0 means it never expires."""

    id: str
    debit: str = ""
    credit: str = ""
    amount: int = 0
    kind: str = "transfer"
    phase: str = "single"
    pending_id: str | None = None
    timeout_s: int | None = None
    request_id: str | None = None
    adapter_version_id: int | None = None
    document_id: int | None = None
    memo: str = ""


@dataclass(frozen=True)
class Posted:
    """A stored transfer; `replayed` says it was the first result of an earlier call."""

    seq: int
    id: str
    debit: str
    credit: str
    amount: int
    phase: str
    kind: str
    pending_id: str | None
    request_id: str | None
    adapter_version_id: int | None
    document_id: int | None
    memo: str
    expires_at_us: int | None
    timestamp_us: int
    replayed: bool = False


def canonical_line(posted: Posted, pending_seq: int | None) -> bytes:
    """The bytes a transfer contributes to the hash chain: the compact JSON array (as
    `json.dumps(fields, separators=(",", ":"), ensure_ascii=False)` writes it) of
    [seq, id, debit, credit, amount, phase, pending_seq, expires_at_us, kind, request_id,
    adapter_version_id, document_id, memo, timestamp_us]."""
    fields = (
        posted.seq,
        posted.id,
        posted.debit,
        posted.credit,
        posted.amount,
        posted.phase,
        pending_seq,
        posted.expires_at_us,
        posted.kind,
        posted.request_id,
        posted.adapter_version_id,
        posted.document_id,
        posted.memo,
        posted.timestamp_us,
    )
    return ("[" + ",".join(map(_json, fields)) + "]").encode()


def _json(value: str | int | None) -> str:
    if value is None:
        return "null"
    if isinstance(value, str):
        return encode_basestring(value)  # what json.dumps(ensure_ascii=False) uses, in C
    return str(int(value))


def posted_from_row(row: LedgerTransfer, codes: dict[int, str], pending_id: str | None) -> Posted:
    """A stored transfer as the ledger speaks of it: accounts by code, its pending by id."""
    return Posted(
        seq=row.seq,
        id=row.transfer_id,
        debit=codes.get(row.debit_id, "?"),
        credit=codes.get(row.credit_id, "?"),
        amount=row.amount,
        phase=row.phase,
        kind=row.kind,
        pending_id=pending_id,
        request_id=row.request_id,
        adapter_version_id=row.adapter_version_id,
        document_id=row.document_id,
        memo=row.memo,
        expires_at_us=row.expires_at_us,
        timestamp_us=row.timestamp_us,
    )


def chain_next(previous: str, line: bytes) -> str:
    return hashlib.sha256(bytes.fromhex(previous) + line).hexdigest()


@dataclass
class _Account:
    id: int
    code: str
    kind: str
    credit_limit: int
    debits_pending: int
    debits_posted: int
    credits_pending: int
    credits_posted: int

    def available(self) -> int:
        return self.credits_posted + self.credit_limit - self.debits_posted - self.debits_pending


@dataclass
class _Pending:
    posted: Posted
    open: bool
    expires_at_us: int | None  # None: never expires


@dataclass
class _Group:
    """What one linked group changes: account sums are changed in place, with their values
    before the group saved to restore if any transfer of the group is refused."""

    saved: dict[str, tuple[int, int, int, int]] = field(default_factory=dict)
    pendings: dict[str, _Pending] = field(default_factory=dict)
    staged: list[Posted] = field(default_factory=list)

    def undo(self, accounts: dict[str, _Account]) -> None:
        for code, (dp, dpo, cp, cpo) in self.saved.items():
            account = accounts[code]
            account.debits_pending, account.debits_posted = dp, dpo
            account.credits_pending, account.credits_posted = cp, cpo


class Book:
    """One ledger write transaction (see the module docstring)."""

    def __init__(self, session: Session, *, now: int | None = None) -> None:
        write_lock(session, "ledger")
        self.session = session
        self.now_us = now_us() if now is None else now
        last = session.execute(
            select(LedgerTransfer.seq, LedgerTransfer.chain)
            .order_by(LedgerTransfer.seq.desc())
            .limit(1)
        ).first()
        self.first_seq = (last[0] if last else 0) + 1
        self.chain_before = last[1] if last else GENESIS
        self.staged: list[Posted] = []
        self._accounts: dict[str, _Account] = {}
        self._codes_by_id: dict[int, str] = {}
        self._known: dict[str, Posted] = {}  # transfers by id: loaded or staged
        self._absent: set[str] = set()  # ids looked up and not stored
        self._pendings: dict[str, _Pending] = {}
        self._changed: set[str] = set()

    # --- reading what is stored -------------------------------------------------------------

    def prefetch(self, transfer_ids: Sequence[str]) -> None:
        """Look up, in a few queries, the transfers a batch will ask about."""
        self._load_transfers(list(transfer_ids))

    def mark_new(self, transfer_ids: Sequence[str]) -> None:
        """Skip looking up ids the caller knows were never stored (the reserved ids of a usage
        event not yet recorded). A wrong claim cannot apply anything twice: the insert then
        fails on the unique transfer id and the whole transaction rolls back."""
        self._absent.update(i for i in transfer_ids if i not in self._known)

    def find(self, transfer_id: str) -> Posted | None:
        self._load_transfers([transfer_id])
        return self._known.get(transfer_id)

    def available(self, code: str) -> int:
        """What account `code` may still spend (it must exist, or be openable)."""
        self.open_accounts({code})
        return self._accounts[code].available()

    def pending_state(self, transfer_id: str) -> str:
        """`open`, `overdue`, or how it was resolved: `posted`, `voided`, `expired`."""
        return self._state(self._pending(transfer_id), _Group())

    def _state(self, pending: _Pending, group: _Group) -> str:
        if pending.open:
            expires = pending.expires_at_us
            return "open" if expires is None or expires > self.now_us else "overdue"
        pending_id = pending.posted.id
        for posted in [*group.staged, *self.staged, *self._resolutions(pending.posted.seq)]:
            if posted.pending_id == pending_id:
                return RESOLVED_AS[posted.phase]
        return "resolved"

    # --- staging ----------------------------------------------------------------------------

    def apply(self, transfers: Sequence[Transfer]) -> list[Posted]:
        """Stage a linked group: every transfer or none. Retries return the first results.

        Raises:
            InvalidInput, NotFound, PaymentRequired, Conflict: see the module docstring.
        """
        if not transfers:
            return []
        for transfer in transfers:
            _check_shape(transfer)
        ids = [t.id for t in transfers]
        if len(set(ids)) != len(ids):
            raise InvalidInput("a linked group names the same transfer id twice")
        self._load_transfers(ids)
        earlier = [self._known.get(i) for i in ids]
        if any(earlier):
            return self._replay(transfers, earlier)
        self._load_accounts({c for t in transfers for c in (t.debit, t.credit) if c})
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
            assert transfer.timeout_s is not None, "checked by _check_shape"
            expires = self.now_us + transfer.timeout_s * 1_000_000 if transfer.timeout_s else None
            debit.debits_pending += amount
            credit.credits_pending += amount
        else:
            debit.debits_posted += amount
            credit.credits_posted += amount
        posted = self._posted(transfer, seq, debit.code, credit.code, amount, expires)
        if transfer.phase == "pending":
            group.pendings[transfer.id] = _Pending(posted, open=True, expires_at_us=expires)
        return posted

    def _resolve(self, transfer: Transfer, seq: int, group: _Group) -> Posted:
        assert transfer.pending_id is not None, "checked by _check_shape"
        pending = group.pendings.get(transfer.pending_id) or self._pending(transfer.pending_id)
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

    def _pair(self, transfer: Transfer, group: _Group) -> tuple[_Account, _Account]:
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

    def _replay(self, transfers: Sequence[Transfer], earlier: list[Posted | None]) -> list[Posted]:
        results = []
        for transfer, posted in zip(transfers, earlier, strict=True):
            if posted is None:
                raise Conflict(
                    f"transfer {transfer.id!r} is new but others in its linked group were "
                    "stored before; a retry must repeat the whole group unchanged"
                )
            differences = _differences(transfer, posted)
            if differences:
                raise Conflict(
                    f"transfer id {transfer.id!r} was already used with other fields "
                    f"({', '.join(differences)}); a retry must repeat the same transfer, "
                    "a new transfer needs a new id"
                )
            results.append(replace(posted, replayed=True))
        return results

    # --- expiry -----------------------------------------------------------------------------

    def expire_overdue(self, limit: int = 1000) -> list[Posted]:
        """Release the funds of pending transfers past their timeout (at most `limit`)."""
        rows = self.session.execute(
            select(LedgerPending.seq)
            .where(
                LedgerPending.expires_at_us.is_not(None), LedgerPending.expires_at_us <= self.now_us
            )
            .order_by(LedgerPending.expires_at_us)
            .limit(limit)
        ).all()
        if not rows:
            return []
        seqs = [seq for (seq,) in rows]
        ids = self.session.execute(
            select(LedgerTransfer.seq, LedgerTransfer.transfer_id).where(
                LedgerTransfer.seq.in_(seqs)
            )
        ).all()
        expired = []
        for seq, transfer_id in ids:
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
        """Write the staged transfers, account sums and open pendings; log the batch.

        Returns the chain hash after the batch.
        """
        chain = self.chain_before
        if not self.staged:
            return chain
        rows = []
        ids = {code: account.id for code, account in self._accounts.items()}
        seq_of = {p.id: p.seq for p in self._known.values()}
        for posted in self.staged:
            pending_seq = seq_of[posted.pending_id] if posted.pending_id else None
            chain = chain_next(chain, canonical_line(posted, pending_seq))
            rows.append(
                {
                    "seq": posted.seq,
                    "transfer_id": posted.id,
                    "debit_id": ids[posted.debit],
                    "credit_id": ids[posted.credit],
                    "amount": posted.amount,
                    "phase": posted.phase,
                    "pending_seq": pending_seq,
                    "expires_at_us": posted.expires_at_us,
                    "kind": posted.kind,
                    "request_id": posted.request_id,
                    "adapter_version_id": posted.adapter_version_id,
                    "document_id": posted.document_id,
                    "memo": posted.memo,
                    "timestamp_us": posted.timestamp_us,
                    "chain": chain,
                }
            )
        session = self.session
        insert_many(session, "ledger_transfers", rows)
        opened = [
            {"seq": p.posted.seq, "expires_at_us": p.expires_at_us}
            for p in self._pendings.values()
            if p.open and p.posted.seq >= self.first_seq
        ]
        if opened:
            session.execute(insert(LedgerPending.metadata.tables["ledger_pending"]), opened)
        closed = [
            seq_of[p.pending_id]
            for p in self.staged
            if p.pending_id and seq_of[p.pending_id] < self.first_seq
        ]
        for start in range(0, len(closed), _CHUNK):
            session.execute(
                delete(LedgerPending).where(LedgerPending.seq.in_(closed[start : start + _CHUNK]))
            )
        session.execute(
            update(LedgerAccount),
            [
                {
                    "id": self._accounts[code].id,
                    "debits_pending": self._accounts[code].debits_pending,
                    "debits_posted": self._accounts[code].debits_posted,
                    "credits_pending": self._accounts[code].credits_pending,
                    "credits_posted": self._accounts[code].credits_posted,
                }
                for code in sorted(self._changed)
            ],
        )
        append_entry(
            session,
            "ledger.batch",
            {
                "first_seq": self.first_seq,
                "last_seq": self.staged[-1].seq,
                "transfers": len(self.staged),
                "usage_events": usage_events,
                "amount": sum(p.amount for p in self.staged if p.phase in ("single", "post")),
                "chain": chain,
            },
        )
        self.chain_before, self.first_seq = chain, self.staged[-1].seq + 1
        self.staged, self._changed = [], set()
        return chain

    # --- loading ----------------------------------------------------------------------------

    def _load_accounts(self, codes: set[str]) -> None:
        wanted = sorted(c for c in codes if c and c not in self._accounts)
        if not wanted:
            return
        for start in range(0, len(wanted), _CHUNK):
            for row in self.session.execute(
                select(LedgerAccount)
                .where(LedgerAccount.code.in_(wanted[start : start + _CHUNK]))
                .execution_options(populate_existing=True)
            ).scalars():
                self._remember(row)

    def open_accounts(self, codes: set[str]) -> None:
        """Open (and load) the accounts named `codes`; see `open_ledger_accounts`."""
        self._load_accounts(codes)
        missing = {c for c in codes if c not in self._accounts}
        if missing:
            open_ledger_accounts(self.session, missing)
            self._load_accounts(missing)

    def _remember(self, row: LedgerAccount) -> None:
        self._accounts[row.code] = _Account(
            id=row.id,
            code=row.code,
            kind=row.kind,
            credit_limit=row.credit_limit,
            debits_pending=row.debits_pending,
            debits_posted=row.debits_posted,
            credits_pending=row.credits_pending,
            credits_posted=row.credits_posted,
        )
        self._codes_by_id[row.id] = row.code

    def _load_transfers(self, transfer_ids: list[str]) -> None:
        wanted = [i for i in transfer_ids if i not in self._known and i not in self._absent]
        for start in range(0, len(wanted), _CHUNK):
            chunk = wanted[start : start + _CHUNK]
            rows = list(
                self.session.execute(
                    select(LedgerTransfer).where(LedgerTransfer.transfer_id.in_(chunk))
                ).scalars()
            )
            self._add_loaded(rows)
            self._absent.update(i for i in chunk if i not in self._known)

    def _add_loaded(self, rows: list[LedgerTransfer]) -> None:
        if not rows:
            return
        self._load_codes({r.debit_id for r in rows} | {r.credit_id for r in rows})
        pending_seqs = [r.pending_seq for r in rows if r.pending_seq is not None]
        pending_ids = {}
        if pending_seqs:
            pending_ids = dict(
                self.session.execute(
                    select(LedgerTransfer.seq, LedgerTransfer.transfer_id).where(
                        LedgerTransfer.seq.in_(pending_seqs)
                    )
                ).all()
            )
        for row in rows:
            pending_id = pending_ids.get(row.pending_seq) if row.pending_seq else None
            self._known[row.transfer_id] = posted_from_row(row, self._codes_by_id, pending_id)

    def _load_codes(self, account_ids: set[int]) -> None:
        wanted = [i for i in account_ids if i not in self._codes_by_id]
        if wanted:
            for row in self.session.execute(
                select(LedgerAccount).where(LedgerAccount.id.in_(wanted))
            ).scalars():
                if row.code not in self._accounts:
                    self._remember(row)
                self._codes_by_id[row.id] = row.code

    def _pending(self, transfer_id: str) -> _Pending:
        if transfer_id in self._pendings:
            return self._pendings[transfer_id]
        posted = self.find(transfer_id)
        if posted is None:
            raise NotFound(f"no pending transfer {transfer_id!r}")
        if posted.phase != "pending":
            raise InvalidInput(f"transfer {transfer_id!r} is not pending (it is {posted.phase})")
        is_open = (
            self.session.scalar(select(LedgerPending.seq).where(LedgerPending.seq == posted.seq))
            is not None
        )
        pending = _Pending(posted, open=is_open, expires_at_us=posted.expires_at_us)
        self._pendings[transfer_id] = pending
        return pending

    def _resolutions(self, pending_seq: int) -> list[Posted]:
        rows = list(
            self.session.execute(
                select(LedgerTransfer).where(LedgerTransfer.pending_seq == pending_seq)
            ).scalars()
        )
        self._add_loaded(rows)
        return [self._known[r.transfer_id] for r in rows]


def insert_many(session: Session, table: str, rows: list[dict[str, Any]]) -> None:
    """Bulk insert: SQLite takes the driver's executemany directly (SQLAlchemy's per-row
    parameter processing costs more than the insert); PostgreSQL gets SQLAlchemy's batched
    multi-row VALUES, which beats executemany over the wire."""
    columns = list(rows[0])
    if session.get_bind().dialect.name == "sqlite":
        statement = (
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
        )
        session.connection().exec_driver_sql(
            statement, [tuple(row[c] for c in columns) for row in rows]
        )
        return
    for start in range(0, len(rows), 5000):
        session.execute(insert(Base.metadata.tables[table]), rows[start : start + 5000])


def _check_shape(transfer: Transfer) -> None:
    """Refuse what no ledger state could make valid."""
    if not isinstance(transfer.id, str) or not ID_PATTERN.fullmatch(transfer.id):
        raise InvalidInput(
            f"transfer id {transfer.id!r} must be 1-160 characters of letters, digits and ._:/@+-"
        )
    if transfer.phase not in PHASES:
        raise InvalidInput(f"phase {transfer.phase!r} is not one of {', '.join(PHASES)}")
    for name, value, longest in (
        ("kind", transfer.kind, 16),
        ("memo", transfer.memo, 200),
        ("request id", transfer.request_id or "", 100),
        ("debit", transfer.debit, 80),
        ("credit", transfer.credit, 80),
    ):
        if not isinstance(value, str) or len(value) > longest:
            raise InvalidInput(f"{name} {value!r} must be text of at most {longest} characters")
    for tag, number in (
        ("adapter_version_id", transfer.adapter_version_id),
        ("document_id", transfer.document_id),
    ):
        if number is not None and (isinstance(number, bool) or not isinstance(number, int)):
            raise InvalidInput(f"{tag} {number!r} must be an integer id")
    amount = transfer.amount
    if isinstance(amount, bool) or not isinstance(amount, int):
        raise InvalidInput(f"amount {amount!r} must be an integer number of micro-units")
    if transfer.phase in ("void", "expire"):
        if amount < 0:
            raise InvalidInput(f"amount {amount} must not be negative")
    elif not 0 < amount <= AMOUNT_MAX:
        raise InvalidInput(
            f"amount {amount} must be a positive number of micro-units, at most {AMOUNT_MAX}"
        )
    if transfer.phase in ("post", "void", "expire"):
        if not transfer.pending_id:
            raise InvalidInput(f"a {transfer.phase} must name its pending transfer (pending_id)")
        return
    if transfer.pending_id:
        raise InvalidInput(f"a {transfer.phase} transfer cannot name a pending transfer")
    if not transfer.debit or not transfer.credit:
        raise InvalidInput(f"transfer {transfer.id!r} must name a debit and a credit account")
    if transfer.debit == transfer.credit:
        raise InvalidInput(f"transfer {transfer.id!r} debits and credits the same account")
    if transfer.phase == "pending":
        timeout = transfer.timeout_s
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, int)
            or not 0 <= timeout <= TIMEOUT_MAX_S
        ):
            raise InvalidInput(
                f"a pending transfer needs a timeout of 1..{TIMEOUT_MAX_S} seconds (0: none), "
                f"got {timeout!r}"
            )
    elif transfer.timeout_s is not None:
        raise InvalidInput("only a pending transfer takes a timeout")


def _differences(transfer: Transfer, posted: Posted) -> list[str]:
    given: dict[str, Any] = {
        "phase": transfer.phase,
        "kind": transfer.kind,
        "pending_id": transfer.pending_id,
        "request_id": transfer.request_id,
        "adapter_version_id": transfer.adapter_version_id,
        "document_id": transfer.document_id,
        "memo": transfer.memo,
    }
    if transfer.debit or transfer.phase in ("single", "pending"):
        given["debit"] = transfer.debit
    if transfer.credit or transfer.phase in ("single", "pending"):
        given["credit"] = transfer.credit
    if transfer.phase not in ("void", "expire") or transfer.amount:
        given["amount"] = transfer.amount
    differences = [name for name, value in given.items() if getattr(posted, name) != value]
    if transfer.phase == "pending" and posted.phase == "pending":
        stored = (
            0
            if posted.expires_at_us is None
            else (posted.expires_at_us - posted.timestamp_us) // 1_000_000
        )
        if stored != transfer.timeout_s:
            differences.append("timeout_s")
    return differences
