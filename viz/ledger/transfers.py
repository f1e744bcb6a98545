"""Transfers: what a client asks the ledger to move, what it stores, and the rules a transfer obeys.

Double entry, idempotent by id, linked groups, two-phase (pending -> post | void | expire),
hash-chained (`viz.ledger.chain`). The model is TigerBeetle's. A `viz.ledger.book.Book` applies
transfers inside one ledger write transaction:

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

This module holds the shapes and the checks that need no ledger state (`check_shape`, and
`replay` for retries); the book checks balances and pending states.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from viz.errors import Conflict, InvalidInput

__all__ = [
    "AMOUNT_MAX",
    "PHASES",
    "RESOLVED_AS",
    "TIMEOUT_MAX_S",
    "Posted",
    "Transfer",
    "check_shape",
    "now_us",
    "replay",
]

AMOUNT_MAX = 10**15  # a billion units of a million micro-units: far above any sane transfer
TIMEOUT_MAX_S = 7 * 24 * 3600
PHASES = ("single", "pending", "post", "void", "expire")
ID_PATTERN = re.compile(r"[A-Za-z0-9._:/@+-]{1,160}")
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


def check_shape(transfer: Transfer) -> None:
    """Refuse what no ledger state could make valid.

    Raises:
        InvalidInput: a malformed id, phase, text field, id number, amount, pending id, account
            pair or timeout.
    """
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


def replay(transfers: Sequence[Transfer], earlier: Sequence[Posted | None]) -> list[Posted]:
    """The first results of a retried linked group, each marked `replayed`.

    Raises:
        Conflict: part of the group is new, or a transfer differs from the stored one.
    """
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


def _differences(transfer: Transfer, posted: Posted) -> list[str]:
    """The fields in which a retried `transfer` differs from the `posted` one of the same id
    (fields a post or void may leave empty are compared only when given)."""
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
