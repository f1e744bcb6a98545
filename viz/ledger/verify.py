"""`viz ledger verify`: recompute everything the ledger stores from its transfers, and check it
against the public log.

Checks, each an explicit comparison (never `assert`: `python -O` would drop it):
1. transfers are numbered 1..N with no gap, and each one's chain hash is
   SHA-256(previous chain || its canonical line);
2. every transfer is well formed: a positive amount, two different accounts; a post, void or
   expiry names a pending transfer with the same accounts and resolves it once; a post takes
   at most what was reserved, a void or expiry releases exactly that;
3. each account's stored sums equal the sums of its transfers, so debits equal credits;
4. no limited account is below zero (or its credit limit), counting reservations;
5. the open reservations are exactly the pending transfers not yet resolved;
6. `clearing` nets to zero: every charge was paid out in full;
7. each usage event was paid by its own consumer, and its charge and settlement lines equal
   the chained transfers that moved it (so the events are bound to the chain);
8. the `ledger.batch` entries of the public log cover transfers 1..N in order, and each
   names the chain hash at its last transfer (a tail of transfers not anchored yet is reported,
   and is a problem once its oldest is ANCHOR_GRACE_S old: see `viz.ledger.anchors`); each
   account's kind matches its code and its credit limit is the last one logged.

It holds the ledger's write lock while it reads, so it sees one consistent state (writers wait:
about 3 s per 100,000 transfers). What it cannot see alone: the transfers, the chain and the log
rewritten together. Compare a signed checkpoint saved earlier (`viz log consistency`) for that.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from viz.errors import LedgerCorrupt
from viz.ledger.accounts import CLEARING, KINDS, UNLIMITED, consumer_code
from viz.ledger.anchors import ANCHOR_GRACE_S
from viz.ledger.book_rows import posted_from_row
from viz.ledger.chain import GENESIS, canonical_line, chain_next
from viz.ledger.transfers import now_us as current_us
from viz.log.hashing import leaf_hash
from viz.store.database import write_lock
from viz.store.schema import (
    Account,
    LedgerAccount,
    LedgerPending,
    LedgerTransfer,
    LogEntry,
    UsageEvent,
)

__all__ = ["Report", "verify_ledger"]

PROBLEMS_SHOWN = 20


@dataclass
class Report:
    transfers: int = 0
    accounts: int = 0
    usage_events: int = 0
    batches: int = 0
    chain: str = GENESIS
    total_posted: int = 0
    unanchored: int = 0  # transfers after the last ledger.batch entry (anchored within seconds)
    problems: list[str] = field(default_factory=list)


def verify_ledger(
    session: Session, *, raise_on_problem: bool = True, now_us: int | None = None
) -> Report:
    """Check every invariant (see the module docstring); `now_us` is when an unanchored tail
    is judged (default: now).

    Raises:
        LedgerCorrupt: any check failed; the message lists the first problems.
    """
    write_lock(session, "ledger")
    report = Report()
    problems = report.problems
    accounts = {row.id: row for row in session.scalars(select(LedgerAccount))}
    code = {id_: row.code for id_, row in accounts.items()}
    report.accounts = len(accounts)
    sums: dict[int, list[int]] = defaultdict(lambda: [0, 0, 0, 0])  # dp, dpo, cp, cpo
    pendings: dict[int, LedgerTransfer] = {}
    resolved: set[int] = set()
    charged: dict[str, int] = defaultdict(int)  # request id -> consumer -> clearing
    charged_from: dict[str, str] = {}  # request id -> the account its charge debited
    split_lines: dict[str, list[tuple[str, int]]] = defaultdict(list)  # clearing -> earners
    chain_at: dict[int, str] = {}
    chain = GENESIS
    expected_seq = 1
    query = select(LedgerTransfer).order_by(LedgerTransfer.seq).execution_options(yield_per=5000)
    for row in session.scalars(query):
        if row.seq != expected_seq:
            problems.append(f"transfer numbering jumps from {expected_seq - 1} to {row.seq}")
            expected_seq = row.seq
        expected_seq += 1
        pending = pendings.get(row.pending_seq) if row.pending_seq is not None else None
        posted = posted_from_row(row, code, pending.transfer_id if pending is not None else None)
        chain = chain_next(chain, canonical_line(posted, row.pending_seq))
        if chain != row.chain:
            problems.append(f"transfer {row.seq} ({row.transfer_id}) breaks the hash chain")
            chain = row.chain  # report each broken link once
        chain_at[row.seq] = chain
        _check_transfer(row, pending, resolved, problems)
        debit, credit = sums[row.debit_id], sums[row.credit_id]
        if row.phase == "pending":
            pendings[row.seq] = row
            debit[0] += row.amount
            credit[2] += row.amount
        elif row.phase in ("post", "void", "expire") and pending is not None:
            resolved.add(pending.seq)
            debit[0] -= pending.amount
            credit[2] -= pending.amount
        if row.phase in ("single", "post"):
            debit[1] += row.amount
            credit[3] += row.amount
            report.total_posted += row.amount
            if row.request_id and row.kind == "charge":
                charged[row.request_id] += row.amount
                charged_from[row.request_id] = posted.debit
            elif row.request_id and posted.debit == CLEARING:
                split_lines[row.request_id].append((posted.credit, row.amount))
    report.transfers = expected_seq - 1
    report.chain = chain
    _check_accounts(accounts, sums, problems)
    _check_open_pendings(session, pendings, resolved, problems)
    report.usage_events = _check_usage(session, charged, charged_from, split_lines, problems)
    report.batches, report.unanchored = _check_log(
        session, chain_at, report.transfers, problems, now_us
    )
    _check_account_settings(session, accounts, problems)
    if problems and raise_on_problem:
        shown = "\n  ".join(problems[:PROBLEMS_SHOWN])
        more = len(problems) - PROBLEMS_SHOWN
        raise LedgerCorrupt(
            f"the ledger fails {len(problems)} check(s):\n  {shown}"
            + (f"\n  ... and {more} more" if more > 0 else "")
        )
    return report


def _check_transfer(
    row: LedgerTransfer, pending: LedgerTransfer | None, resolved: set[int], problems: list[str]
) -> None:
    name = f"transfer {row.seq} ({row.transfer_id})"
    if row.amount <= 0:
        problems.append(f"{name} moves {row.amount}, not a positive amount")
    if row.debit_id == row.credit_id:
        problems.append(f"{name} debits and credits the same account")
    if row.phase in ("single", "pending"):
        if row.pending_seq is not None:
            problems.append(f"{name} is {row.phase} but names a pending transfer")
        return
    if row.phase not in ("post", "void", "expire"):
        problems.append(f"{name} has unknown phase {row.phase!r}")
        return
    if pending is None:
        problems.append(f"{name} resolves {row.pending_seq}, which is no earlier pending transfer")
        return
    if pending.seq in resolved:
        problems.append(f"{name} resolves pending transfer {pending.seq} a second time")
    if (row.debit_id, row.credit_id) != (pending.debit_id, pending.credit_id):
        problems.append(f"{name} moves between other accounts than its pending transfer")
    if row.phase == "post" and row.amount > pending.amount:
        problems.append(f"{name} posts {row.amount}, more than the {pending.amount} reserved")
    if row.phase != "post" and row.amount != pending.amount:
        problems.append(f"{name} releases {row.amount}, not the {pending.amount} reserved")


def _check_accounts(
    accounts: dict[int, LedgerAccount], sums: dict[int, list[int]], problems: list[str]
) -> None:
    totals = [0, 0, 0, 0]
    for id_, account in accounts.items():
        stored = [
            account.debits_pending,
            account.debits_posted,
            account.credits_pending,
            account.credits_posted,
        ]
        recomputed = sums.get(id_, [0, 0, 0, 0])
        if stored != recomputed:
            problems.append(
                f"account {account.code} stores sums {stored} (debits pending, debits posted, "
                f"credits pending, credits posted); its transfers add up to {recomputed}"
            )
        totals = [a + b for a, b in zip(totals, stored, strict=True)]
        if account.kind not in UNLIMITED:
            spent = account.debits_posted + account.debits_pending
            if spent > account.credits_posted + account.credit_limit:
                problems.append(
                    f"account {account.code} is overdrawn: {spent} debited or reserved against "
                    f"{account.credits_posted} credited and a credit limit of "
                    f"{account.credit_limit}"
                )
        if account.code == CLEARING and account.credits_posted != account.debits_posted:
            problems.append(
                f"clearing holds {account.credits_posted - account.debits_posted} posted "
                "micro-units; every charge must be split out in full"
            )
    if totals[0] != totals[2] or totals[1] != totals[3]:
        problems.append(
            f"debits {totals[1]} (pending {totals[0]}) do not equal credits {totals[3]} "
            f"(pending {totals[2]})"
        )


def _check_open_pendings(
    session: Session,
    pendings: dict[int, LedgerTransfer],
    resolved: set[int],
    problems: list[str],
) -> None:
    stored = dict(session.execute(select(LedgerPending.seq, LedgerPending.expires_at_us)).all())
    expected = {seq: row.expires_at_us for seq, row in pendings.items() if seq not in resolved}
    if stored != expected:
        extra = sorted(set(stored) - set(expected))[:5]
        missing = sorted(set(expected) - set(stored))[:5]
        problems.append(
            f"open reservations disagree with the transfers: listed but resolved {extra}, "
            f"unresolved but not listed {missing}"
        )


def _check_usage(
    session: Session,
    charged: dict[str, int],
    charged_from: dict[str, str],
    split_lines: dict[str, list[tuple[str, int]]],
    problems: list[str],
) -> int:
    count = 0
    rows = session.execute(
        select(
            UsageEvent.request_id, UsageEvent.charge, UsageEvent.settlement_json, Account.name
        ).join(Account, UsageEvent.consumer_id == Account.id)
    ).yield_per(5000)
    events = set()
    for request_id, charge, settlement_json, consumer in rows:
        count += 1
        events.add(request_id)
        lines = json.loads(settlement_json)["lines"]
        moved = [(line["account"], line["amount"]) for line in lines if line["amount"]]
        for label, value in (
            ("moved from its consumer", charged.get(request_id, 0)),
            ("split out of clearing", sum(a for _, a in split_lines.get(request_id, []))),
            ("in its settlement lines", sum(line["amount"] for line in lines)),
        ):
            if value != charge:
                problems.append(
                    f"usage event {request_id} charged {charge} but {value} was {label}"
                )
        if charge and charged_from.get(request_id) != consumer_code(consumer):
            problems.append(
                f"usage event {request_id} names consumer {consumer}, but its charge debited "
                f"{charged_from.get(request_id)}"
            )
        if moved != split_lines.get(request_id, []):
            problems.append(
                f"usage event {request_id}'s settlement lines differ from its transfers"
            )
    for request_id in sorted((set(charged) | set(split_lines)) - events)[:PROBLEMS_SHOWN]:
        problems.append(f"transfers of request {request_id} have no usage event")
    return count


def _check_account_settings(
    session: Session, accounts: dict[int, LedgerAccount], problems: list[str]
) -> None:
    limits: dict[str, int] = {}
    for (data,) in session.execute(
        select(LogEntry.data).where(LogEntry.kind == "ledger.credit_limit").order_by(LogEntry.index)
    ):
        change = json.loads(data)
        limits[change["account"]] = change["credit_limit"]
    for account in accounts.values():
        prefix = account.code.partition(":")[0]
        expected_kind = prefix if prefix in ("consumer", "creator") else account.code
        if account.kind != expected_kind or expected_kind not in KINDS:
            problems.append(f"account {account.code} has kind {account.kind!r}")
        if account.credit_limit != limits.get(account.code, 0):
            problems.append(
                f"account {account.code} has credit limit {account.credit_limit}, but the log "
                f"last set it to {limits.get(account.code, 0)}"
            )


def _check_log(
    session: Session,
    chain_at: dict[int, str],
    transfers: int,
    problems: list[str],
    now_us: int | None,
) -> tuple[int, int]:
    """The ledger.batch entries checked; returns (entries, transfers not anchored yet)."""
    covered = 0
    batches = 0
    entries = session.execute(
        select(LogEntry.index, LogEntry.data, LogEntry.leaf_hash)
        .where(LogEntry.kind == "ledger.batch")
        .order_by(LogEntry.index)
    )
    for index, data, stored_hash in entries:
        batches += 1
        if leaf_hash(data.encode()).hex() != stored_hash:
            problems.append(f"log entry {index} does not hash to its stored leaf hash")
        batch = json.loads(data)
        first, last = batch.get("first_seq"), batch.get("last_seq")
        if first != covered + 1 or not isinstance(last, int) or last < first:
            problems.append(
                f"log entry {index} covers transfers {first}..{last}, expected to start at "
                f"{covered + 1}"
            )
        elif chain_at.get(last) != batch.get("chain"):
            problems.append(
                f"log entry {index} anchors chain {batch.get('chain')} at transfer {last}, "
                f"but the transfers hash to {chain_at.get(last)}"
            )
        covered = last if isinstance(last, int) else covered
    if covered > transfers:
        problems.append(
            f"the public log anchors transfers 1..{covered} but the ledger holds {transfers}"
        )
    elif covered < transfers:
        oldest = session.scalar(
            select(LedgerTransfer.timestamp_us).where(LedgerTransfer.seq == covered + 1)
        )
        age_s = ((current_us() if now_us is None else now_us) - (oldest or 0)) / 1e6
        if age_s > ANCHOR_GRACE_S:
            problems.append(
                f"the public log anchors transfers 1..{covered} but the ledger holds "
                f"{transfers}; the first unanchored one is {age_s:.0f} s old (a gateway "
                "anchors every few seconds; after a crash run: viz ledger anchor)"
            )
    return batches, transfers - covered
