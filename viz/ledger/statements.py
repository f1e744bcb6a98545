"""Reading the ledger: balances, an account's history, a creator's earnings statement."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session, aliased

from viz.errors import InvalidInput, NotFound
from viz.ledger.accounts import (
    SYSTEM,
    Balance,
    balance_of,
    consumer_code,
    creator_code,
    get_ledger_account,
)
from viz.store.schema import (
    Account,
    Adapter,
    AdapterVersion,
    Document,
    LedgerAccount,
    LedgerTransfer,
)

__all__ = ["Entry", "Statement", "balances", "history", "resolve_codes", "statement"]

HISTORY_MAX = 10_000


def resolve_codes(session: Session, name_or_code: str) -> list[str]:
    """The ledger accounts a user means: `ada` is consumer:ada and creator:ada (those open),
    a code such as `creator:ada` or `platform` is itself.

    Raises:
        NotFound: nothing by that name has a ledger account.
    """
    if ":" in name_or_code or name_or_code in SYSTEM:
        return [get_ledger_account(session, name_or_code).code]
    codes = [consumer_code(name_or_code), creator_code(name_or_code)]
    found = list(
        session.scalars(
            select(LedgerAccount.code)
            .where(LedgerAccount.code.in_(codes))
            .order_by(LedgerAccount.code.desc())
        )
    )
    if not found:
        exists = session.scalar(select(Account.id).where(Account.name == name_or_code))
        raise NotFound(
            f"{name_or_code!r} has no ledger account yet; top it up with: "
            f"viz ledger topup {name_or_code} AMOUNT"
            if exists
            else f"no account or ledger account named {name_or_code!r}"
        )
    return found


def balances(session: Session, name_or_code: str) -> list[Balance]:
    return [
        balance_of(get_ledger_account(session, code))
        for code in resolve_codes(session, name_or_code)
    ]


@dataclass(frozen=True)
class Entry:
    """One transfer as seen from one account: `amount` is signed (+ credit, - debit)."""

    seq: int
    transfer_id: str
    kind: str
    phase: str
    amount: int
    counterparty: str
    request_id: str | None
    memo: str
    timestamp_us: int


def history(session: Session, code: str, *, limit: int = 50) -> list[Entry]:
    """The newest `limit` transfers of account `code`, newest first."""
    if not 0 < limit <= HISTORY_MAX:
        raise InvalidInput(f"--limit {limit} must be 1..{HISTORY_MAX}")
    account = get_ledger_account(session, code)
    debit = aliased(LedgerAccount)
    credit = aliased(LedgerAccount)
    rows = session.execute(
        select(LedgerTransfer, debit.code, credit.code)
        .join(debit, LedgerTransfer.debit_id == debit.id)
        .join(credit, LedgerTransfer.credit_id == credit.id)
        .where(or_(LedgerTransfer.debit_id == account.id, LedgerTransfer.credit_id == account.id))
        .order_by(LedgerTransfer.seq.desc())
        .limit(limit)
    )
    entries = []
    for transfer, debit_code, credit_code in rows:
        outgoing = debit_code == code
        entries.append(
            Entry(
                seq=transfer.seq,
                transfer_id=transfer.transfer_id,
                kind=transfer.kind,
                phase=transfer.phase,
                amount=-transfer.amount if outgoing else transfer.amount,
                counterparty=credit_code if outgoing else debit_code,
                request_id=transfer.request_id,
                memo=transfer.memo,
                timestamp_us=transfer.timestamp_us,
            )
        )
    return entries


@dataclass(frozen=True)
class Statement:
    """A creator's earnings: per adapter version and per document, paid out, and left."""

    creator: str
    per_adapter: list[tuple[str, int, int]]  # name@version, requests, micro-units
    per_document: list[tuple[str, int, int]]  # "id title", citations, micro-units
    earned: int
    paid_out: int
    pending_payout: int
    balance: int


def statement(session: Session, name: str) -> Statement:
    """What creator `name` earned, per adapter and per document, and what was paid out."""
    account = get_ledger_account(session, creator_code(name))
    earned = (LedgerTransfer.credit_id == account.id) & (LedgerTransfer.phase == "single")
    per_adapter = [
        (f"{adapter}@{version}", requests, amount)
        for adapter, version, requests, amount in session.execute(
            select(
                Adapter.name,
                AdapterVersion.version,
                func.count(LedgerTransfer.seq),
                func.sum(LedgerTransfer.amount),
            )
            .join(AdapterVersion, LedgerTransfer.adapter_version_id == AdapterVersion.id)
            .join(Adapter, AdapterVersion.adapter_id == Adapter.id)
            .where(earned, LedgerTransfer.kind.in_(("royalty", "release")))
            .group_by(Adapter.name, AdapterVersion.version)
            .order_by(func.sum(LedgerTransfer.amount).desc(), Adapter.name)
        )
    ]
    per_document = [
        (f"{document_id} {title}", citations, amount)
        for document_id, title, citations, amount in session.execute(
            select(
                Document.id,
                Document.title,
                func.count(LedgerTransfer.seq),
                func.sum(LedgerTransfer.amount),
            )
            .join(Document, LedgerTransfer.document_id == Document.id)
            .where(earned, LedgerTransfer.kind == "citation")
            .group_by(Document.id, Document.title)
            .order_by(func.sum(LedgerTransfer.amount).desc(), Document.id)
        )
    ]
    paid_out = session.scalar(
        select(func.coalesce(func.sum(LedgerTransfer.amount), 0)).where(
            LedgerTransfer.debit_id == account.id,
            LedgerTransfer.kind == "payout",
            LedgerTransfer.phase == "post",
        )
    )
    return Statement(
        creator=name,
        per_adapter=per_adapter,
        per_document=per_document,
        earned=account.credits_posted,
        paid_out=int(paid_out or 0),
        pending_payout=account.debits_pending,
        balance=account.credits_posted - account.debits_posted,
    )
