"""Ledger accounts: who holds money, named by code.

| code            | kind     | holds                                             | limit       |
|-----------------|----------|---------------------------------------------------|-------------|
| `consumer:NAME` | consumer | what NAME has topped up and not yet spent         | credit limit|
| `creator:NAME`  | creator  | royalties NAME earned and was not yet paid out    | zero        |
| `platform`      | platform | the platform fee                                  | zero        |
| `escrow`        | escrow   | shares of adapters taken down, held until decided | zero        |
| `clearing`      | clearing | a request's charge between consumer and earners   | zero        |
| `external`      | external | the world outside: top-ups come from it, payouts go to it | none |

A balance is credits posted minus debits posted. Every kind but `external` refuses a debit that
would take debits (posted and pending) above credits posted plus its credit limit; every change
of a credit limit is appended to the public log.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from viz.errors import InvalidInput, NotFound
from viz.log.store import append_entry
from viz.store.database import write_lock
from viz.store.schema import Account, LedgerAccount

__all__ = [
    "CLEARING",
    "ESCROW",
    "EXTERNAL",
    "KINDS",
    "PLATFORM",
    "Balance",
    "balance_of",
    "consumer_code",
    "creator_code",
    "get_ledger_account",
    "open_ledger_accounts",
    "set_credit_limit",
]

PLATFORM = "platform"
ESCROW = "escrow"
CLEARING = "clearing"
EXTERNAL = "external"
SYSTEM = (PLATFORM, ESCROW, CLEARING, EXTERNAL)
KINDS = ("consumer", "creator", *SYSTEM)
UNLIMITED = ("external",)
CREDIT_LIMIT_MAX = 10**15


def consumer_code(name: str) -> str:
    return f"consumer:{name}"


def creator_code(name: str) -> str:
    return f"creator:{name}"


@dataclass(frozen=True)
class Balance:
    """An account's figures in micro-units; `available` is what it may still spend."""

    code: str
    kind: str
    posted: int
    pending_debits: int
    pending_credits: int
    credit_limit: int

    @property
    def available(self) -> int:
        return self.posted + self.credit_limit - self.pending_debits


def balance_of(account: LedgerAccount) -> Balance:
    return Balance(
        code=account.code,
        kind=account.kind,
        posted=account.credits_posted - account.debits_posted,
        pending_debits=account.debits_pending,
        pending_credits=account.credits_pending,
        credit_limit=account.credit_limit,
    )


def get_ledger_account(session: Session, code: str) -> LedgerAccount:
    """The ledger account named `code`.

    Raises:
        NotFound: no such ledger account (it is opened by its first top-up or earning).
    """
    account = session.scalar(select(LedgerAccount).where(LedgerAccount.code == code))
    if account is None:
        raise NotFound(
            f"no ledger account {code!r}; accounts open with their first top-up "
            "(viz ledger topup NAME AMOUNT) or their first earning"
        )
    return account


def open_ledger_accounts(session: Session, codes: set[str]) -> dict[str, int]:
    """Ids of the ledger accounts named `codes`, opening the missing ones (under the lock).

    Raises:
        NotFound: a consumer or creator code names no Viz account.
        InvalidInput: a code of no known kind.
    """
    ids: dict[str, int] = {}
    codes_list = sorted(codes)
    for start in range(0, len(codes_list), 500):
        chunk = codes_list[start : start + 500]
        rows = session.execute(
            select(LedgerAccount.code, LedgerAccount.id).where(LedgerAccount.code.in_(chunk))
        )
        ids.update({code: id_ for code, id_ in rows})
    missing = [code for code in codes_list if code not in ids]
    if not missing:
        return ids
    owners = _owners([code.partition(":")[2] for code in missing if ":" in code], session)
    new_rows: list[dict[str, Any]] = []
    for code in missing:
        kind, _, name = code.partition(":")
        if code in SYSTEM:
            new_rows.append({"code": code, "kind": code, "owner_id": None})
        elif kind in ("consumer", "creator") and name:
            if name not in owners:
                raise NotFound(f"no account named {name!r}; create it with: viz account create")
            new_rows.append({"code": code, "kind": kind, "owner_id": owners[name]})
        else:
            raise InvalidInput(
                f"{code!r} is not a ledger account; use consumer:NAME, creator:NAME, "
                f"or one of {', '.join(SYSTEM)}"
            )
    for row in new_rows:
        ids[row["code"]] = session.execute(
            insert(LedgerAccount).values(**row).returning(LedgerAccount.id)
        ).scalar_one()
    return ids


def set_credit_limit(session: Session, name: str, limit: int) -> LedgerAccount:
    """Let consumer `name` spend up to `limit` micro-units beyond its balance.

    Raises:
        InvalidInput: a negative or absurd limit, or one below what is already spent.
    """
    if isinstance(limit, bool) or not isinstance(limit, int) or not 0 <= limit <= CREDIT_LIMIT_MAX:
        raise InvalidInput(f"credit limit {limit} must be 0..{CREDIT_LIMIT_MAX} micro-units")
    write_lock(session, "ledger")
    code = consumer_code(name)
    open_ledger_accounts(session, {code})
    account = get_ledger_account(session, code)
    if account.debits_posted + account.debits_pending > account.credits_posted + limit:
        raise InvalidInput(
            f"{code} already owes {account.debits_posted - account.credits_posted} micro-units "
            f"(plus {account.debits_pending} reserved); a credit limit of {limit} is below that"
        )
    account.credit_limit = limit
    session.flush()
    append_entry(session, "ledger.credit_limit", {"account": code, "credit_limit": limit})
    return account


def _owners(names: list[str], session: Session) -> dict[str, int]:
    rows = session.execute(select(Account.name, Account.id).where(Account.name.in_(names)))
    return {name: id_ for name, id_ in rows}
