"""`Idempotency-Key`: a retry returns the first answer and is never charged twice, on any
replica and after any restart (Stripe's rule; the keys live in `idempotency_keys`).

    found = claim(session, account, key, fingerprint(path, body), lease_id, fee_bps=1000)
    # a str: the request id to run this attempt as; a dict: the stored answer to replay
    finished(session, request_id, answer)   # in the settling transaction (None: it failed)

A key belongs to one account and one request body. Its first attempt runs as
`idem-<account>-<sha256(key)[:32]>`; an attempt that failed (nothing answered, whatever was
streamed settled) lets the next retry run as `<id>.1`, `<id>.2`, ... An attempt whose process
died (its lease lapsed) is resolved at once by the retry that finds it. Answers are kept for
VIZ_IDEMPOTENCY_TTL_S, the newest VIZ_IDEMPOTENCY_KEYS_MAX / VIZ_IDEMPOTENCY_BYTES_MAX of them.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from viz.errors import Conflict, InvalidInput
from viz.ledger.requests import request_state
from viz.serving.leases import lease_alive, resolve
from viz.store.gateway import IdempotencyKey
from viz.store.schema import Account

__all__ = ["ATTEMPTS_MAX", "KEY_CHARS_MAX", "claim", "evict", "fingerprint", "finished"]

ATTEMPTS_MAX = 20
KEY_CHARS_MAX = 255


def fingerprint(endpoint: str, body: dict[str, Any]) -> dict[str, str]:
    """What a retry must repeat: the endpoint and each body field, hashed."""
    fields = {"endpoint": endpoint, **body}
    return {
        name: hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]
        for name, value in fields.items()
    }


def claim(
    session: Session,
    account: Account,
    key: str,
    fields: dict[str, str],
    lease_id: str,
    *,
    fee_bps: int,
) -> str | dict[str, Any]:
    """The request id this attempt runs as, or the stored answer of the one that succeeded.

    Raises:
        InvalidInput: the key is empty or too long, or was first used with another body.
        Conflict: the key is another account's, an attempt with it is still running, or its
            answer was charged but is no longer kept.
    """
    if not 0 < len(key) <= KEY_CHARS_MAX or not key.isprintable():
        raise InvalidInput(
            f"Idempotency-Key has {len(key)} characters; use 1 to {KEY_CHARS_MAX} printable "
            "ones (a UUID per request is the usual choice)"
        )
    digest = hashlib.sha256(key.encode()).hexdigest()
    row = session.get(IdempotencyKey, digest, with_for_update=True)
    base = f"idem-{account.id}-{digest[:32]}"
    if row is None:
        attempt, request_id = _free_id(session, base, 0)
        row = IdempotencyKey(
            key_sha256=digest,
            account_id=account.id,
            body_json=json.dumps(fields, sort_keys=True),
            state="running",
            attempt=attempt,
            request_id=request_id,
            lease_id=lease_id,
            answer_bytes=0,
        )
        session.add(row)
        try:
            session.flush()
        except IntegrityError as error:  # a concurrent first attempt with the same key
            raise Conflict(
                "a request with this Idempotency-Key is still running; retry in a few seconds"
            ) from error
        return request_id
    if row.account_id != account.id:
        raise Conflict(
            "this Idempotency-Key was used by another account; keys must be unique: "
            "send a new one (a UUID per request)"
        )
    stored = json.loads(row.body_json)
    differs = sorted(k for k in set(stored) | set(fields) if stored.get(k) != fields.get(k))
    if differs:
        raise InvalidInput(
            f"this Idempotency-Key was first used with a different request ({', '.join(differs)} "
            "differ); repeat the first request exactly, or use a new key for a new request"
        )
    if row.state == "answered" and row.answer is not None:
        return dict(json.loads(row.answer))
    if row.state == "evicted":
        raise Conflict(
            "the request with this Idempotency-Key was answered and charged once, but its stored "
            "answer was evicted (older than VIZ_IDEMPOTENCY_TTL_S or past the "
            "VIZ_IDEMPOTENCY_KEYS_MAX / _BYTES_MAX bounds); use a new key to ask again"
        )
    if row.state == "running":
        if lease_alive(session, row.lease_id):
            raise Conflict(
                "a request with this Idempotency-Key is still running; retry in a few seconds"
            )
        resolve(session, row.request_id, fee_bps=fee_bps)  # its process died: settle, void
    row.attempt, row.request_id = _free_id(session, base, row.attempt + 1)
    row.state, row.lease_id, row.finished_at_us = "running", lease_id, None
    return row.request_id


def _free_id(session: Session, base: str, first: int) -> tuple[int, str]:
    """The first attempt number from `first` whose request id the ledger has never seen."""
    for number in range(first, ATTEMPTS_MAX):
        request_id = base if number == 0 else f"{base}.{number}"
        state = request_state(session, request_id)
        if state == "charged":
            raise Conflict(
                "a request with this Idempotency-Key was already answered and charged, and its "
                "answer is no longer kept; use a new key for a new request"
            )
        if state == "open":
            raise Conflict(
                "a request with this Idempotency-Key is still running; retry in a few seconds"
            )
        if state is None:
            return number, request_id
    raise Conflict(f"{ATTEMPTS_MAX} attempts with this Idempotency-Key failed; use a new key")


def finished(session: Session, request_id: str, answer: dict[str, Any] | None) -> None:
    """Store the answer of the attempt `request_id` (None: it failed, a retry runs again)."""
    data = json.dumps(answer).encode() if answer is not None else None
    session.execute(
        update(IdempotencyKey)
        .where(IdempotencyKey.request_id == request_id)
        .values(
            state="answered" if data is not None else "failed",
            answer=data,
            answer_bytes=len(data or b""),
            lease_id=None,
            finished_at_us=time.time_ns() // 1000,
        )
    )


def evict(
    session: Session, *, ttl_s: int, keys_max: int, bytes_max: int, now_us: int | None = None
) -> int:
    """Delete keys finished over `ttl_s` ago; then evict the oldest answers past the count and
    byte bounds (the key stays, so a retry learns it was answered). Returns answers dropped."""
    now_us = now_us if now_us is not None else time.time_ns() // 1000
    old = IdempotencyKey.finished_at_us < now_us - ttl_s * 1_000_000
    result = session.execute(delete(IdempotencyKey).where(old))
    dropped = int(result.rowcount or 0)  # type: ignore[attr-defined]
    kept = IdempotencyKey.answer.is_not(None)
    count, total = session.execute(
        select(func.count(), func.coalesce(func.sum(IdempotencyKey.answer_bytes), 0)).where(kept)
    ).one()
    if count <= keys_max and total <= bytes_max:
        return dropped
    oldest = session.execute(
        select(IdempotencyKey.key_sha256, IdempotencyKey.answer_bytes)
        .where(kept)
        .order_by(IdempotencyKey.finished_at_us)
    )
    evicted = []
    for digest, size in oldest:
        if count <= keys_max and total <= bytes_max:
            break
        evicted.append(digest)
        count, total = count - 1, total - size
    for start in range(0, len(evicted), 500):
        session.execute(
            update(IdempotencyKey)
            .where(IdempotencyKey.key_sha256.in_(evicted[start : start + 500]))
            .values(state="evicted", answer=None, answer_bytes=0)
        )
    return dropped + len(evicted)
