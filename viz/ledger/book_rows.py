"""The book's storage: the rows of `ledger_transfers`, `ledger_pending` and `ledger_accounts` it
reads and writes, and `Loaded`, what one book has read, so each row is read once per transaction.

`viz.ledger.book.Book` stages transfers against `Loaded` and writes each batch with
`write_batch`, in a few bulk statements. Every `IN (...)` list holds at most `CHUNK` ids, well
under any driver's limit on bound parameters.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import bindparam, delete, insert, select, update
from sqlalchemy.orm import Session

from viz.errors import InvalidInput, NotFound
from viz.ledger.accounts import open_ledger_accounts
from viz.ledger.chain import GENESIS
from viz.ledger.transfers import Posted
from viz.store.schema import Base, LedgerAccount, LedgerPending, LedgerTransfer

__all__ = [
    "CHUNK",
    "Loaded",
    "LoadedAccount",
    "LoadedPending",
    "account_rows",
    "accounts_by_id",
    "chain_head",
    "insert_many",
    "is_open_pending",
    "overdue_pending_seqs",
    "posted_from_row",
    "resolution_rows",
    "transfer_ids_by_seq",
    "transfer_row",
    "transfer_rows",
    "write_batch",
]

CHUNK = 500
INSERT_ROWS_MAX = 5000  # rows per multi-row INSERT on PostgreSQL


# --- what a book has read ----------------------------------------------------------------


@dataclass
class LoadedAccount:
    """An account's sums as the book sees them: read once, then changed in place by staging."""

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
class LoadedPending:
    posted: Posted
    open: bool
    expires_at_us: int | None  # None: never expires


@dataclass
class Loaded:
    """What one book has read (and staged): accounts by code, transfers and pendings by id."""

    session: Session
    accounts: dict[str, LoadedAccount] = field(default_factory=dict)
    codes_by_id: dict[int, str] = field(default_factory=dict)
    known: dict[str, Posted] = field(default_factory=dict)  # transfers by id: loaded or staged
    absent: set[str] = field(default_factory=set)  # ids looked up and not stored
    pendings: dict[str, LoadedPending] = field(default_factory=dict)

    def load_accounts(self, codes: Iterable[str]) -> None:
        wanted = sorted(c for c in codes if c and c not in self.accounts)
        for row in account_rows(self.session, wanted):
            self._remember(row)

    def open_accounts(self, codes: set[str]) -> None:
        """Open (and load) the accounts named `codes`; see `open_ledger_accounts`."""
        self.load_accounts(codes)
        missing = {c for c in codes if c not in self.accounts}
        if missing:
            open_ledger_accounts(self.session, missing)
            self.load_accounts(missing)

    def load_transfers(self, transfer_ids: list[str]) -> None:
        wanted = [i for i in transfer_ids if i not in self.known and i not in self.absent]
        for start in range(0, len(wanted), CHUNK):
            chunk = wanted[start : start + CHUNK]
            self._add_loaded(transfer_rows(self.session, chunk))
            self.absent.update(i for i in chunk if i not in self.known)

    def mark_new(self, transfer_ids: Iterable[str]) -> None:
        self.absent.update(i for i in transfer_ids if i not in self.known)

    def find(self, transfer_id: str) -> Posted | None:
        self.load_transfers([transfer_id])
        return self.known.get(transfer_id)

    def pending(self, transfer_id: str) -> LoadedPending:
        """Pending transfer `transfer_id`, and whether it still holds its funds.

        Raises:
            NotFound: no such transfer.
            InvalidInput: it is not a pending transfer.
        """
        if transfer_id in self.pendings:
            return self.pendings[transfer_id]
        posted = self.find(transfer_id)
        if posted is None:
            raise NotFound(f"no pending transfer {transfer_id!r}")
        if posted.phase != "pending":
            raise InvalidInput(f"transfer {transfer_id!r} is not pending (it is {posted.phase})")
        is_open = is_open_pending(self.session, posted.seq)
        pending = LoadedPending(posted, open=is_open, expires_at_us=posted.expires_at_us)
        self.pendings[transfer_id] = pending
        return pending

    def resolutions(self, pending_seq: int) -> list[Posted]:
        """The stored transfers that resolved pending transfer `pending_seq`."""
        rows = resolution_rows(self.session, pending_seq)
        self._add_loaded(rows)
        return [self.known[r.transfer_id] for r in rows]

    def _remember(self, row: LedgerAccount) -> None:
        self.accounts[row.code] = LoadedAccount(
            id=row.id,
            code=row.code,
            kind=row.kind,
            credit_limit=row.credit_limit,
            debits_pending=row.debits_pending,
            debits_posted=row.debits_posted,
            credits_pending=row.credits_pending,
            credits_posted=row.credits_posted,
        )
        self.codes_by_id[row.id] = row.code

    def _add_loaded(self, rows: list[LedgerTransfer]) -> None:
        if not rows:
            return
        self._load_codes({r.debit_id for r in rows} | {r.credit_id for r in rows})
        pending_seqs = [r.pending_seq for r in rows if r.pending_seq is not None]
        pending_ids = transfer_ids_by_seq(self.session, pending_seqs) if pending_seqs else {}
        for row in rows:
            pending_id = pending_ids.get(row.pending_seq) if row.pending_seq else None
            self.known[row.transfer_id] = posted_from_row(row, self.codes_by_id, pending_id)

    def _load_codes(self, account_ids: set[int]) -> None:
        wanted = [i for i in account_ids if i not in self.codes_by_id]
        if wanted:
            for row in accounts_by_id(self.session, wanted):
                if row.code not in self.accounts:
                    self._remember(row)
                self.codes_by_id[row.id] = row.code


# --- reading --------------------------------------------------------------------------------

# The statements every ledger transaction runs, built once (building one costs more than running
# it on SQLite); the expanding parameters take lists.
_CHAIN_HEAD = (
    select(LedgerTransfer.seq, LedgerTransfer.chain).order_by(LedgerTransfer.seq.desc()).limit(1)
)
_ACCOUNTS_BY_CODE = (
    select(LedgerAccount)
    .where(LedgerAccount.code.in_(bindparam("codes", expanding=True)))
    .execution_options(populate_existing=True)
)
_ACCOUNTS_BY_ID = select(LedgerAccount).where(
    LedgerAccount.id.in_(bindparam("ids", expanding=True))
)
_TRANSFERS_BY_ID = select(LedgerTransfer).where(
    LedgerTransfer.transfer_id.in_(bindparam("ids", expanding=True))
)
_OPEN_PENDING = select(LedgerPending.seq).where(LedgerPending.seq == bindparam("seq"))
_OVERDUE = (
    select(LedgerPending.seq)
    .where(
        LedgerPending.expires_at_us.is_not(None),
        LedgerPending.expires_at_us <= bindparam("now"),
    )
    .order_by(LedgerPending.expires_at_us)
    .limit(bindparam("limit"))
)


def chain_head(session: Session) -> tuple[int, str]:
    """(seq, chain hash) of the last stored transfer; (0, GENESIS) for an empty ledger."""
    last = session.execute(_CHAIN_HEAD).first()
    return (last[0], last[1]) if last else (0, GENESIS)


def account_rows(session: Session, codes: Sequence[str]) -> list[LedgerAccount]:
    """The stored accounts named `codes` (missing ones are absent), freshly read."""
    rows: list[LedgerAccount] = []
    for start in range(0, len(codes), CHUNK):
        rows += session.execute(
            _ACCOUNTS_BY_CODE, {"codes": list(codes[start : start + CHUNK])}
        ).scalars()
    return rows


def accounts_by_id(session: Session, account_ids: Sequence[int]) -> list[LedgerAccount]:
    return list(session.execute(_ACCOUNTS_BY_ID, {"ids": list(account_ids)}).scalars())


def transfer_rows(session: Session, transfer_ids: Sequence[str]) -> list[LedgerTransfer]:
    """The stored transfers with these ids (at most `CHUNK` of them)."""
    assert len(transfer_ids) <= CHUNK, "the book loads transfers a chunk at a time"
    return list(session.execute(_TRANSFERS_BY_ID, {"ids": list(transfer_ids)}).scalars())


def transfer_ids_by_seq(session: Session, seqs: Sequence[int]) -> dict[int, str]:
    return dict(
        session.execute(
            select(LedgerTransfer.seq, LedgerTransfer.transfer_id).where(
                LedgerTransfer.seq.in_(seqs)
            )
        ).all()
    )


def is_open_pending(session: Session, seq: int) -> bool:
    """Whether pending transfer `seq` still holds its funds (a row in `ledger_pending`)."""
    return session.scalar(_OPEN_PENDING, {"seq": seq}) is not None


def resolution_rows(session: Session, pending_seq: int) -> list[LedgerTransfer]:
    """The transfers that resolved pending transfer `pending_seq` (at most one is stored)."""
    return list(
        session.execute(
            select(LedgerTransfer).where(LedgerTransfer.pending_seq == pending_seq)
        ).scalars()
    )


def overdue_pending_seqs(session: Session, now_us: int, limit: int) -> list[int]:
    """Open pending transfers past their timeout at `now_us`, the longest overdue first."""
    rows = session.execute(_OVERDUE, {"now": now_us, "limit": limit}).all()
    return [seq for (seq,) in rows]


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


# --- writing --------------------------------------------------------------------------------


def transfer_row(
    posted: Posted, account_ids: dict[str, int], pending_seq: int | None, chain: str
) -> dict[str, Any]:
    """The `ledger_transfers` row of a staged transfer, with the chain hash after it."""
    return {
        "seq": posted.seq,
        "transfer_id": posted.id,
        "debit_id": account_ids[posted.debit],
        "credit_id": account_ids[posted.credit],
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


def write_batch(
    session: Session,
    transfers: list[dict[str, Any]],
    *,
    opened: list[dict[str, Any]],
    closed: list[int],
    sums: list[dict[str, Any]],
) -> None:
    """Write one batch: its transfer rows, the pendings it opened (`seq`, `expires_at_us`), the
    earlier pendings it closed (by seq), and the new sums of the accounts it changed."""
    insert_many(session, "ledger_transfers", transfers)
    if opened:
        session.execute(insert(LedgerPending.metadata.tables["ledger_pending"]), opened)
    for start in range(0, len(closed), CHUNK):
        session.execute(
            delete(LedgerPending).where(LedgerPending.seq.in_(closed[start : start + CHUNK]))
        )
    session.execute(update(LedgerAccount), sums)


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
    for start in range(0, len(rows), INSERT_ROWS_MAX):
        session.execute(insert(Base.metadata.tables[table]), rows[start : start + INSERT_ROWS_MAX])
