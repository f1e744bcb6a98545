"""Royalty shares: part of what an adapter version earns, paid to other creators.

A version built by merging other creators' adapters (an upstream merge) pays each contributing
creator a fixed share of its royalties, in basis points, for a recorded reason (the contribution
measured); the version's owner keeps the remainder.

    set_version_shares(session, merged, [(carol, 3000, "child qa@1.0.0 contributed 0.31 nats")])

Shares are set once, before the version has earned anything, and never change: like the version
itself they are immutable, so every micro-unit the version ever earns follows one split (escrow
released to its creators included). Setting them appends a `royalty_shares` entry to the public
log, so a contributor can check what they are owed. Settlement divides the version's exact value
by its shares before rounding (`viz.ledger.pricing.share_values`).
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from viz.errors import Conflict, InvalidInput
from viz.log.store import append_entry
from viz.store.database import write_lock
from viz.store.schema import Account, AdapterVersion, LedgerTransfer, VersionShare

__all__ = ["BPS", "SHARES_MAX", "set_version_shares", "shares_by_version", "version_shares"]

BPS = 10_000  # basis points in one: shares and the platform's fee are counted in them
SHARES_MAX = 32  # contributors of one version; each adds a line to every request it serves
REASON_CHARS_MAX = 500


def set_version_shares(
    session: Session, version: AdapterVersion, shares: Sequence[tuple[Account, int, str]]
) -> list[VersionShare]:
    """Record that `version` pays each (account, share_bps, reason) that share of its royalties.

    The owner keeps 10,000 basis points minus the sum, and is never listed. The shares and the
    public log entry are written in the caller's transaction: a refusal leaves nothing.

    Raises:
        Conflict: the version already has shares, or has already earned royalties.
        InvalidInput: a malformed share, a share of 0 or above 10,000 basis points, shares that
            sum above 10,000, an account listed twice, the owner listed, or too many shares.
    """
    label = f"{version.adapter.name}@{version.version}"
    write_lock(session, "ledger")  # settlements read shares under this lock: none runs between
    stored = version_shares(session, version.id)
    if stored:
        raise Conflict(
            f"{label} already has royalty shares ({_describe(stored)}); shares are immutable "
            "like the version: publish a new version to change them"
        )
    if (
        session.scalar(
            select(LedgerTransfer.seq)
            .where(LedgerTransfer.adapter_version_id == version.id)
            .limit(1)
        )
        is not None
    ):
        raise Conflict(
            f"{label} has already earned royalties; shares cover everything a version earns, so "
            "they are set before it serves a request: publish a new version with these shares"
        )
    owner = version.adapter.owner
    problems = _problems(owner, shares)
    if problems:
        raise InvalidInput(f"royalty shares of {label} refused: " + "; ".join(problems))
    rows = [
        VersionShare(
            adapter_version_id=version.id, account_id=account.id, share_bps=bps, reason=reason
        )
        for account, bps, reason in _ordered(shares)
    ]
    session.add_all(rows)
    session.flush()
    append_entry(
        session,
        "royalty_shares",
        {
            "adapter": version.adapter.name,
            "version": version.version,
            "creator": owner.name,
            "creator_bps": BPS - sum(bps for _, bps, _ in shares),
            "shares": [
                {"account": account.name, "share_bps": bps, "reason": reason}
                for account, bps, reason in _ordered(shares)
            ],
        },
    )
    return rows


def version_shares(session: Session, version_id: int) -> list[tuple[str, int]]:
    """The (account name, share_bps) of a version's contributors, largest share first; the
    owner keeps the rest. Empty: the owner keeps the whole royalty."""
    return list(shares_by_version(session, [version_id]).get(version_id, ()))


# Built once: constructing a statement costs more than running it (settling runs this for every
# request); `ids` expands to the list given.
_SHARES = (
    select(VersionShare.adapter_version_id, Account.name, VersionShare.share_bps)
    .join(Account, VersionShare.account_id == Account.id)
    .where(VersionShare.adapter_version_id.in_(bindparam("ids", expanding=True)))
    .order_by(VersionShare.adapter_version_id, VersionShare.share_bps.desc(), Account.name)
)


def shares_by_version(
    session: Session, version_ids: Sequence[int]
) -> dict[int, tuple[tuple[str, int], ...]]:
    """The shares of many versions in one query (versions without shares are absent), each
    ordered as `version_shares` orders them: the order their settlement lines take."""
    if not version_ids:
        return {}
    found: dict[int, list[tuple[str, int]]] = {}
    rows = session.execute(_SHARES, {"ids": sorted(set(version_ids))})
    for version_id, name, bps in rows:
        found.setdefault(version_id, []).append((name, bps))
    return {version_id: tuple(shares) for version_id, shares in found.items()}


# --- helpers --------------------------------------------------------------------------------


def _problems(owner: Account, shares: Sequence[tuple[Account, int, str]]) -> list[str]:
    """Every reason to refuse `shares`, so one attempt reports them all."""
    if not shares:
        return ["name at least one contributor; with no shares the owner keeps the whole royalty"]
    if len(shares) > SHARES_MAX:
        return [f"a version pays at most {SHARES_MAX} contributors, got {len(shares)}"]
    problems = []
    seen: set[int] = set()
    for account, bps, reason in shares:
        if account.id == owner.id:
            problems.append(
                f"{owner.name} owns the version: the owner keeps the remainder, do not list them"
            )
        elif account.id in seen:
            problems.append(f"{account.name} is listed twice; give each contributor one share")
        seen.add(account.id)
        if isinstance(bps, bool) or not isinstance(bps, int) or not 1 <= bps <= BPS:
            problems.append(f"{account.name}'s share {bps!r} must be 1..{BPS} basis points")
        if not isinstance(reason, str) or not reason.strip() or len(reason) > REASON_CHARS_MAX:
            problems.append(
                f"{account.name}'s reason must say why in 1..{REASON_CHARS_MAX} characters, such "
                "as 'child qa@1.0.0 contributed 0.31 nats'"
            )
    total = sum(bps for _, bps, _ in shares if isinstance(bps, int))
    if total > BPS:
        problems.append(
            f"the shares sum to {total} basis points, above the {BPS} of the whole royalty"
        )
    return problems


def _ordered(shares: Sequence[tuple[Account, int, str]]) -> list[tuple[Account, int, str]]:
    return sorted(shares, key=lambda share: (-share[1], share[0].name))


def _describe(shares: list[tuple[str, int]]) -> str:
    return ", ".join(f"{name} {bps} bps" for name, bps in shares)
