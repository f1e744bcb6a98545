"""Reading the ledger: balances, an account's history, a creator's earnings statement, and
what the marketplace's dashboards chart: earnings and payouts per day, spending per adapter and
per day, requests that paid an adapter per day.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

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
    UsageEvent,
)

__all__ = [
    "Earnings",
    "Entry",
    "Spending",
    "Statement",
    "balances",
    "earnings",
    "history",
    "requests_per_day",
    "resolve_codes",
    "spending",
    "statement",
]

HISTORY_MAX = 10_000
PAYOUTS_SHOWN_MAX = 100
RECENT_SHOWN_MAX = 20


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


# --- what the dashboards chart ----------------------------------------------------------------
@dataclass(frozen=True)
class Earnings:
    """A creator's statement, earnings per day (one series per adapter or cited document) and
    newest payouts."""

    statement: Statement
    per_day: dict[str, dict[date, int]]  # series name -> day (UTC) -> micro-units
    payouts: list[tuple[datetime, int, str, str]]  # when, amount, phase, memo; newest first


def earnings(session: Session, name: str, *, since_us: int, rows_max: int) -> Earnings | None:
    """What creator `name` earned per day since `since_us` (from the newest `rows_max` credits)
    and was paid out; None while `name` has no creator ledger account."""
    ledger = session.scalar(select(LedgerAccount).where(LedgerAccount.code == creator_code(name)))
    if ledger is None:
        return None
    rows = session.execute(
        select(LedgerTransfer.timestamp_us, LedgerTransfer.amount, Adapter.name, Document.title)
        .outerjoin(AdapterVersion, LedgerTransfer.adapter_version_id == AdapterVersion.id)
        .outerjoin(Adapter, AdapterVersion.adapter_id == Adapter.id)
        .outerjoin(Document, LedgerTransfer.document_id == Document.id)
        .where(
            LedgerTransfer.credit_id == ledger.id,
            LedgerTransfer.phase == "single",
            LedgerTransfer.kind.in_(("royalty", "release", "citation")),
            LedgerTransfer.timestamp_us >= since_us,
        )
        .order_by(LedgerTransfer.seq.desc())
        .limit(rows_max)
    )
    per_day: dict[str, dict[date, int]] = defaultdict(lambda: defaultdict(int))
    for timestamp_us, amount, adapter_name, title in rows:
        label = adapter_name or f"document: {(title or '')[:40]}"
        per_day[label][_day(timestamp_us)] += amount
    payouts = [
        (_when(t.timestamp_us), t.amount, t.phase, t.memo)
        for t in session.scalars(
            select(LedgerTransfer)
            .where(LedgerTransfer.debit_id == ledger.id, LedgerTransfer.kind == "payout")
            .order_by(LedgerTransfer.seq.desc())
            .limit(PAYOUTS_SHOWN_MAX)
        )
    ]
    return Earnings(statement(session, name), dict(per_day), payouts)


@dataclass(frozen=True)
class Spending:
    """A consumer's balance, and what their requests cost per adapter and per day."""

    balance: Balance | None  # None: no consumer ledger account yet
    per_adapter: list[tuple[str, int, int, int]]  # adapter, requests, tokens, micro-units paid
    per_day: dict[date, int]  # day (UTC) -> micro-units charged
    recent: list[dict[str, Any]]  # the newest requests, newest first


def spending(session: Session, account: Account, *, since_us: int, rows_max: int) -> Spending:
    """What consumer `account` spent since `since_us`, from its newest `rows_max` usage events:
    per adapter (requests, tokens, what the adapter's lines were paid), per day, and the newest
    requests."""
    ledger = session.scalar(
        select(LedgerAccount).where(LedgerAccount.code == consumer_code(account.name))
    )
    events = session.scalars(
        select(UsageEvent)
        .where(UsageEvent.consumer_id == account.id, UsageEvent.occurred_at_us >= since_us)
        .order_by(UsageEvent.id.desc())
        .limit(rows_max)
    ).all()
    per_adapter: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    per_day: dict[date, int] = defaultdict(int)
    for event in events:
        per_day[_day(event.occurred_at_us)] += event.charge
        lines = json.loads(event.settlement_json)["lines"]
        adapters = {line["adapter"] for line in lines if line["adapter"]} or {event.base_id}
        for adapter in adapters:
            figures = per_adapter[adapter]
            figures[0] += 1
            figures[1] += event.tokens_in + event.tokens_out
            figures[2] += sum(line["amount"] for line in lines if line["adapter"] == adapter)
    return Spending(
        balance=balance_of(ledger) if ledger is not None else None,
        per_adapter=sorted(
            ((name, *figures) for name, figures in per_adapter.items()),  # type: ignore[misc]
            key=lambda row: (-row[1], row[0]),
        ),
        per_day=dict(per_day),
        recent=[_recent(event) for event in events[:RECENT_SHOWN_MAX]],
    )


def requests_per_day(
    session: Session, version_ids: list[int], *, since_us: int, rows_max: int
) -> dict[date, int]:
    """Requests that paid these adapter versions (one royalty line each) per day since
    `since_us`, from the newest `rows_max` royalty lines."""
    per_day: dict[date, int] = defaultdict(int)
    seen: set[str | None] = set()  # a version with royalty shares pays several lines a request
    for request_id, timestamp_us in session.execute(
        select(LedgerTransfer.request_id, LedgerTransfer.timestamp_us)
        .where(
            LedgerTransfer.adapter_version_id.in_(version_ids),
            LedgerTransfer.kind == "royalty",
            LedgerTransfer.phase == "single",
            LedgerTransfer.timestamp_us >= since_us,
        )
        .order_by(LedgerTransfer.seq.desc())
        .limit(rows_max)
    ):
        if request_id not in seen:
            seen.add(request_id)
            per_day[_day(timestamp_us)] += 1
    return dict(per_day)


def _recent(event: UsageEvent) -> dict[str, Any]:
    composition = json.loads(event.input_json)["composition"]
    return {
        "when": _when(event.occurred_at_us),
        "request_id": event.request_id,
        "model": ", ".join(f"{name}@{version}" for name, version, _ in composition)
        or event.base_id,
        "tokens_in": event.tokens_in,
        "tokens_out": event.tokens_out,
        "charge": event.charge,
    }


def _when(timestamp_us: int) -> datetime:
    return datetime.fromtimestamp(timestamp_us / 1e6, UTC)


def _day(timestamp_us: int) -> date:
    return _when(timestamp_us).date()
